import Foundation
import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrQEMU
@testable import KtstrSchedExt
@testable import KtstrProtocol
@testable import KtstrHost

/// The hand-assembled PID 1 now lives in KtstrVMM (shared with `ktstr bench boot`).
typealias TinyInit = MinimalInit

let kvmReason = KVMSystem.unavailableReason()
let defaultKernel = try? Provisioning.kernel(explicit: nil)
let hasHardwareVirtualization = CPUID.hostHasHardwareVirtualization()

extension Duration {
    var secondsDouble: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// Boots the real default kernel on KVMMachine. Where KVM emulates the kernel (nested PVM,
/// no vmx/svm) only early-boot milestones are reachable, so that is what runs there.
@Suite(.serialized,
       .enabled(if: kvmReason == nil, Comment(rawValue: kvmReason ?? "")),
       .enabled(if: defaultKernel != nil, "default kernel not cached — run `swift run ktstr kernel fetch`"))
struct LinuxBootTests {
    static func boot(_ kernel: String, extra: String, initrd: [UInt8]? = nil, topology: Topology = .flat(1),
                     memoryMiB: Int = 160, mask: CPUIDMaskPolicy, channel: ConsoleRecorder? = nil) throws -> (KVMMachine, ConsoleRecorder) {
        let console = ConsoleRecorder()
        let m = try KVMMachine(KVMMachineConfiguration(kernel: kernel, initrd: initrd, commandLineExtra: extra,
                                                       topology: topology, memoryMiB: memoryMiB,
                                                       console: console.sink, channel: channel?.sink,
                                                       cpuidMask: mask, log: .default))
        try m.start()
        return (m, console)
    }

    static func elapsed(_ r: ConsoleRecorder.WaitResult, _ what: String, _ console: ConsoleRecorder) throws -> Double {
        guard case let .found(t) = r else {
            Issue.record("\(what): \(r) — console tail:\n\(console.tail())")
            throw CancellationError()
        }
        return t.secondsDouble
    }

    @Test(.timeLimit(.minutes(7)))
    func earlyBootShowsBannerAndCommandLine() throws {
        let k = try #require(defaultKernel)
        let (path, _) = KVMMachine.bootImage(image: k.image, vmlinux: k.vmlinux)
        let marker = "ktstr.marker=\(UUID().uuidString.prefix(8).lowercased())"
        let (m, console) = try Self.boot(path, extra: marker, topology: Topology(llcs: 1, coresPerLLC: 2, threadsPerCore: 2),
                                         mask: .emulatedKernelCode)
        defer { m.kill(); _ = m.wait(timeout: .seconds(15)) }
        #expect(m.commandLine.contains(marker))
        #expect(m.commandLine.contains("noxsave"))
        // Freeze and thaw mid-boot: one snapshot per vCPU, the BSP in 64-bit mode on our (or
        // the kernel's) page tables, the AP still waiting for INIT/SIPI; then boot goes on.
        Thread.sleep(forTimeInterval: 3)
        let snaps = try m.freeze(timeout: .seconds(10))
        #expect(snaps.map(\.cpu) == [0, 1, 2, 3])
        #expect(snaps[0].cr3 != 0 && snaps[0].rip != 0)
        #expect((snaps[0].efer ?? 0) & EntryState.eferLMA != 0)
        try m.thaw()
        let banner = try Self.elapsed(console.waitFor("Linux version 7.3.4", timeout: .seconds(300)), "banner", console)
        let echo = try Self.elapsed(console.waitFor(marker, timeout: .seconds(300)), "command line echo", console)
        let line = console.text.split(separator: "\n").first { $0.contains(marker) }.map(String.init) ?? ""
        #expect(line.contains("Command line: console=ttyS0"))
        // SMP description: the kernel counts the MADT's CPUs and our CPUID topology leaves.
        let cpus = try Self.elapsed(console.waitFor("Allowing 4 present CPUs", timeout: .seconds(300)), "CPU count", console)
        let text = console.text
        #expect(text.contains("ACPI: Using ACPI (MADT) for SMP configuration information"))
        #expect(text.contains("CPU topo: Max. threads per core:   2"))
        #expect(text.contains("CPU topo: Num. cores per package:     2"))
        FileHandle.standardError.write(Data("LinuxBootTests: 4 CPUs (1x2x2) discovered after \(String(format: "%.1f", cpus)) s\n".utf8))
        FileHandle.standardError.write(Data("LinuxBootTests: \(path): banner after \(String(format: "%.1f", banner)) s, Command line echo after \(String(format: "%.1f", echo)) s\n".utf8))
    }

    /// KVMMachine snapshot and restore of a real kernel mid-boot: frozen right after its
    /// banner, saved, and restored twice; each copy boots on from there to the next milestone
    /// (the ACPI CPU count), with a console that starts empty (no second banner).
    @Test(.timeLimit(.minutes(8)))
    func earlyBootSnapshotRestoresTwiceAndReachesTheNextMilestone() throws {
        let k = try #require(defaultKernel)
        let (path, _) = KVMMachine.bootImage(image: k.image, vmlinux: k.vmlinux)
        let topology = Topology(llcs: 1, coresPerLLC: 2, threadsPerCore: 1)
        let milestone = "Allowing 2 present CPUs"
        let (m, console) = try Self.boot(path, extra: "", topology: topology, mask: .emulatedKernelCode)
        defer { m.kill(); _ = m.wait(timeout: .seconds(15)) }
        _ = try Self.elapsed(console.waitFor("Linux version 7.3.4", timeout: .seconds(300)), "banner", console)
        let dir = try ProvisioningFiles.scratchDirectory(in: NSTemporaryDirectory(), prefix: "ktstr-kvm-snapshot")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = try m.freeze(timeout: .seconds(10))
        try m.snapshot(to: dir)
        let before = console.text
        m.kill()
        _ = m.wait(timeout: .seconds(15))
        try #require(!before.contains(milestone), "the boot passed the milestone before the snapshot: nothing left to show")

        let copies = try (0..<2).map { _ in
            let recorder = ConsoleRecorder()
            let r = try KVMMachine.restore(from: dir, configuration: KVMMachineConfiguration(
                kernel: path, topology: topology, memoryMiB: 160, console: recorder.sink, cpuidMask: .emulatedKernelCode))
            try r.start()
            return (r, recorder)
        }
        defer { for (r, _) in copies { r.kill(); _ = r.wait(timeout: .seconds(15)) } }
        for (n, (_, recorder)) in copies.enumerated() {
            let t = try Self.elapsed(recorder.waitFor(milestone, timeout: .seconds(300)), "copy \(n): \(milestone)", recorder)
            #expect(!recorder.text.contains("Linux version"), "copy \(n) printed a second banner: \(recorder.tail())")
            FileHandle.standardError.write(Data("LinuxBootTests: restored copy \(n) reached '\(milestone)' after \(String(format: "%.1f", t)) s\n".utf8))
        }
    }

    /// The bzImage path on this host: its decompressor runs (and prints) from our 64-bit
    /// entry with our zero page and command line, before it needs what the emulator lacks.
    @Test(.timeLimit(.minutes(3)),
          .enabled(if: !hasHardwareVirtualization, "vmx/svm present: the full boot below covers the bzImage"))
    func bzImageDecompressorStartsOnEmulatedKVM() throws {
        let k = try #require(defaultKernel)
        let (m, console) = try Self.boot(k.image, extra: "", mask: .emulatedKernelCode)
        defer { m.kill(); _ = m.wait(timeout: .seconds(15)) }
        // Printed by arch/x86/boot/compressed/kaslr.c when it parsed our command line.
        let t = try Self.elapsed(console.waitFor("KASLR disabled: 'nokaslr' on cmdline.", timeout: .seconds(120)), "decompressor message", console)
        FileHandle.standardError.write(Data("LinuxBootTests: bzImage decompressor message after \(String(format: "%.1f", t)) s\n".utf8))
    }

    @Test(.timeLimit(.minutes(3)),
          .enabled(if: hasHardwareVirtualization, "no vmx/svm: KVM cannot run a stock kernel here"))
    func bootsToInitWhichPrintsAMarkerAndReboots() throws {
        let k = try #require(defaultKernel)
        let marker = "KTSTR-INIT-\(UUID().uuidString.prefix(8))"
        let channel = ConsoleRecorder()
        let (m, console) = try Self.boot(k.image, extra: "loglevel=4", initrd: TinyInit.initramfs(message: marker + "\n"),
                                         topology: Topology(llcs: 1, coresPerLLC: 2, threadsPerCore: 1),
                                         memoryMiB: 256, mask: .automatic, channel: channel)
        let exit = m.wait(timeout: .seconds(120))
        #expect(exit == .shutdown, "\(exit): \(m.stopDetail ?? "") — console tail:\n\(console.tail())")
        #expect(console.text.contains(marker), "console tail:\n\(console.tail())")
        #expect(channel.text.contains(marker), "COM2 got: \(channel.text)")
    }
}

@Suite struct TinyInitTests {
    @Test func isAStaticELFWithTheMessage() throws {
        let b = TinyInit.elf(message: "hello\n")
        #expect(Array(b[0..<4]) == [0x7f, 0x45, 0x4c, 0x46])
        #expect(b.le(UInt64.self, at: 24) == 0x40_0000 + 120)
        #expect(b.le(UInt64.self, at: 96) == UInt64(b.count))
        #expect(Array(b.suffix(6)) == Array("hello\n".utf8))
        let recs = try #require(InitramfsReader.records(TinyInit.initramfs(message: "x")))
        #expect(recs.first { $0.name == "init" }?.mode == 0o100755)
    }
}
