import Foundation
import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrQEMU
@testable import KtstrSchedExt
@testable import KtstrProtocol
@testable import KtstrHost

/// The pure parts of `ktstr bench boot`: statistics, options, the baseline's qemu arguments
/// and initramfs. The measurement itself runs qemu and is exercised by running the command.
@Suite struct BenchBootTests {
    @Test func summaryOfAnOddCount() throws {
        let s = try #require(BenchSummary([5, 1, 4, 2, 3]))
        #expect(s == BenchSummary(count: 5, min: 1, median: 3, p90: 5, max: 5))
    }

    @Test func summaryOfAnEvenCountAveragesTheMiddle() throws {
        let s = try #require(BenchSummary([10, 40, 20, 30]))
        #expect(s.median == 25)
        #expect(s.p90 == 40)  // rank ceil(3.6) = 4
        let ten = try #require(BenchSummary((1...10).map(Double.init)))
        #expect(ten.p90 == 9) // rank 9 of 10
        #expect(ten.median == 5.5)
    }

    @Test func summaryOfNothingIsNil() {
        #expect(BenchSummary([]) == nil)
        #expect(BenchSummary([7])?.p90 == 7)
    }

    @Test func ratioIsOfMedians() throws {
        let base = try #require(BenchSummary([1000, 2000, 3000]))
        let other = try #require(BenchSummary([5000, 1000, 9000]))
        #expect(other.ratio(over: base) == 2.5)
        #expect(base.ratio(over: BenchSummary(count: 1, min: 0, median: 0, p90: 0, max: 0)) == nil)
    }

    @Test func scheduleInterleavesTheVariants() {
        let s = interleavedSchedule(["A", "B", "C"], iterations: 2)
        #expect(s.map(\.variant) == ["A", "B", "C", "A", "B", "C"])
        #expect(s.map(\.iteration) == [1, 1, 1, 2, 2, 2])
        #expect(interleavedSchedule(["A"], iterations: 0).isEmpty)
    }

    @Test func reportRatiosAndText() {
        let a = BenchBootReport.Variant(name: "A", what: "base", wallSamples: [100, 200, 300], bootSamples: nil)
        let b = BenchBootReport.Variant(name: "B", what: "ktstr", wallSamples: [300, 400, 500], bootSamples: [50])
        let r = BenchBootReport(iterations: 3, cpus: 2, memoryMiB: 512, kernel: "k", kernelCmdline: "c",
                                loadBefore: "1 1 1", loadAfter: "2 2 2", baseline: a, others: [b])
        #expect(r.ratios == ["B/A": 2])
        #expect(r.text.contains("ratio of medians B/A: 2.00x"))
        #expect(r.variants.map(\.boot?.median) == [nil, 50])
    }

    @Test func optionsDefaultsAndForms() throws {
        #expect(try BenchBootOptions.parse([]) == BenchBootOptions())
        let o = try BenchBootOptions.parse(["--iterations", "3", "--cpus=4", "--memory", "1024", "--json"])
        #expect(o.iterations == 3 && o.cpus == 4 && o.memoryMiB == 1024 && o.json)
        let d = BenchBootOptions()
        #expect(d.iterations == 5 && d.cpus == 2 && d.memoryMiB == 512 && !d.json)
    }

    @Test(arguments: [["--iterations"], ["--iterations", "x"], ["--cpus", "0"], ["--memory=64"],
                      ["--iterations", "0"], ["--vcpus", "2"], ["extra"]])
    func optionsRejectBadInput(_ argv: [String]) {
        #expect(throws: BenchBootOptions.UsageError.self) { try BenchBootOptions.parse(argv) }
    }

    @Test func baselineArgumentsMatchKtstrQEMUWhereTheyMust() {
        let t = Topology(llcs: 1, coresPerLLC: 2, threadsPerCore: 1)
        let b = BootBaseline(qemuPath: "/usr/bin/qemu-system-x86_64", kernelPath: "/k/vmlinuz", topology: t, memoryMiB: 512)
        let args = b.arguments(initrdPath: "/tmp/x/initrd.cpio", consolePath: "/tmp/x/console.log")
        let ktstr = QEMUMachine(.init(qemuPath: "/usr/bin/qemu-system-x86_64", kernelPath: "/k/vmlinuz", initrdFD: 9,
                                      kernelCmdline: BootBaseline.kernelCmdline, topology: t, memoryMiB: 512,
                                      accelerator: .tcg, console: { _ in }, channel: { _ in }), log: .silent)
            .arguments()
        func value(_ flag: String, _ a: [String]) -> String? { a.firstIndex(of: flag).map { a[$0 + 1] } }
        for flag in ["-accel", "-m", "-smp", "-kernel", "-append", "-cpu"] {
            #expect(value(flag, args) == value(flag, ktstr), "\(flag)")
        }
        for flag in ["-nographic", "-nodefaults", "-no-reboot", "-no-user-config"] { #expect(args.contains(flag)) }
        #expect(value("-M", args) == "pc")
        #expect(value("-initrd", args) == "/tmp/x/initrd.cpio")
        #expect(value("-serial", args) == "file:/tmp/x/console.log")
        #expect(!args.contains("-object") && !args.contains("-mon") && !args.contains("-chardev"))
        #expect(BootBaseline.kernelCmdline.hasPrefix(QEMUMachine.baseCmdline + " " + SchedulerRun.cmdlineExtras))
    }

    @Test func baselineInitramfsHoldsOnlyTheMinimalInit() throws {
        let b = BootBaseline(qemuPath: "q", kernelPath: "k", topology: .flat(2), memoryMiB: 512, marker: "MARK")
        let recs = try #require(InitramfsReader.records(b.initramfs))
        let files = recs.filter { $0.mode & 0o170000 == 0o100000 }
        #expect(files.map(\.name) == ["init"])
        #expect(files.first?.mode == 0o100755)
        let elf = MinimalInit.elf(message: "MARK\n")
        #expect(Array(elf[0..<4]) == [0x7f, 0x45, 0x4c, 0x46])
        #expect(Array(elf.suffix(5)) == Array("MARK\n".utf8))
        #expect(b.initramfs.count < 1024)
    }
}

private let benchQEMU = try? Provisioning.qemuBinary()

/// One real baseline sample: qemu TCG boots the default kernel to the minimal init, which
/// prints the marker (checked by `measure`) and reboots (qemu exits with status 0).
@Suite(.enabled(if: benchQEMU != nil, "qemu-system-x86_64 not on PATH — apt install qemu-system-x86"),
       .enabled(if: defaultKernel != nil, "default kernel not cached — run `swift run ktstr kernel fetch`"))
struct BenchBootBaselineTests {
    @Test(.timeLimit(.minutes(3)))
    func baselineBootsToTheMinimalInitAndExits() throws {
        let k = try #require(defaultKernel)
        let b = BootBaseline(qemuPath: try #require(benchQEMU), kernelPath: k.image, topology: .flat(2), memoryMiB: 256,
                             marker: "KTSTR-BENCH-\(UUID().uuidString.prefix(8))")
        let ms = try b.measure(timeout: .seconds(120))
        #expect(ms > 100 && ms < 120_000)
        FileHandle.standardError.write(Data("BenchBootBaselineTests: baseline boot took \(Int(ms)) ms\n".utf8))
    }
}
