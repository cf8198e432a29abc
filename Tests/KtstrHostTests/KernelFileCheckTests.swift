import Foundation
import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrHost

/// `KernelImage.validate(path:)`: a bad --kernel is named before any machine starts, in one
/// line, instead of "No such file" from qemu, "kernel too old" or a "kernel panic".
@Suite struct KernelFileCheckTests {
    static let cachedDir = NSHomeDirectory() + "/.cache/ktstr/kernels/7.3.4+deb13-cloud-amd64"
    static let cachedBzImage = cachedDir + "/vmlinuz"
    static let cachedVmlinux = cachedDir + "/vmlinux"

    /// A temporary directory removed when `body` returns.
    static func withTempDir<T>(_ body: (String) throws -> T) throws -> T {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ktstr-kcheck-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        return try body(dir)
    }

    static func cause(_ path: String) -> KernelFileError.Cause? {
        do { try KernelImage.validate(path: path); return nil } catch { return error.cause }
    }

    /// ELF64 LE with one PT_LOAD inside the file, for `machine`.
    static func elf(machine: UInt16) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 0x300)
        b.putBytes([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], at: 0)
        b.putLE(UInt16(2), at: 16); b.putLE(machine, at: 18); b.putLE(UInt32(1), at: 20)
        b.putLE(UInt64(0x100_0000), at: 24); b.putLE(UInt64(64), at: 32)
        b.putLE(UInt16(64), at: 52); b.putLE(UInt16(56), at: 54); b.putLE(UInt16(1), at: 56)
        b.putLE(UInt32(1), at: 64); b.putLE(UInt64(0x200), at: 72); b.putLE(UInt64(0x100_0000), at: 88)
        b.putLE(UInt64(0x100), at: 96); b.putLE(UInt64(0x100), at: 104)
        return b
    }

    @Test func devNullIsNotARegularFile() {
        #expect(Self.cause("/dev/null") == .notRegularFile("character device"))
        let line = KernelFileError(path: "/dev/null", cause: .notRegularFile("character device")).description
        #expect(!line.contains("\n") && line.contains("/dev/null") && line.contains("--kernel"))
    }

    @Test func missingEmptyAndDirectory() throws {
        #expect(Self.cause("/nonexistent/vmlinuz") == .missing)
        try Self.withTempDir { dir in
            #expect(Self.cause(dir) == .notRegularFile("directory"))
            let empty = dir + "/empty"
            try Data().write(to: URL(fileURLWithPath: empty))
            #expect(Self.cause(empty) == .empty)
        }
    }

    @Test func textFileIsNotAKernel() throws {
        try Self.withTempDir { dir in
            for (name, text) in [("short", "#!/bin/sh\necho hi\n"), ("long", String(repeating: "not a kernel at all\n", count: 200))] {
                let p = dir + "/" + name
                try Data(text.utf8).write(to: URL(fileURLWithPath: p))
                guard case let .image(.notAKernel(why)) = Self.cause(p) else {
                    Issue.record("\(name): \(String(describing: Self.cause(p)))"); continue
                }
                #expect(why.contains("text"))
            }
        }
    }

    @Test func elfForAnotherMachine() throws {
        try Self.withTempDir { dir in
            let arm = dir + "/vmlinux-arm64", x86 = dir + "/vmlinux-x86"
            try Data(Self.elf(machine: 183)).write(to: URL(fileURLWithPath: arm))
            try Data(Self.elf(machine: 62)).write(to: URL(fileURLWithPath: x86))
            #expect(Self.cause(arm) == .image(.notX86_64(machine: 183)))
            #expect(Self.cause(x86) == nil)
            // Program headers past the end of the file.
            var cut = Self.elf(machine: 62)
            cut.putLE(UInt64(0x1000), at: 32)
            try Data(cut).write(to: URL(fileURLWithPath: x86))
            guard case .image(.truncated(what: "program headers", _, _)) = Self.cause(x86) else {
                Issue.record("\(String(describing: Self.cause(x86)))"); return
            }
        }
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: cachedBzImage), "no cached kernel: run `ktstr kernel fetch`"))
    func truncatedBzImage() throws {
        let full = try Data(contentsOf: URL(fileURLWithPath: Self.cachedBzImage))
        try Self.withTempDir { dir in
            let p = dir + "/vmlinuz"
            for size in [full.count / 2, full.count - 1, 20_000, 600, 300] {
                try full.prefix(size).write(to: URL(fileURLWithPath: p))
                guard case let .image(.truncated(what, needed, have)) = Self.cause(p) else {
                    Issue.record("\(size) bytes: \(String(describing: Self.cause(p)))"); continue
                }
                #expect(have == size && needed > size, "\(what)")
                let line = KernelFileError(path: p, cause: .image(.truncated(what: what, needed: needed, size: have))).description
                #expect(!line.contains("\n") && line.contains("truncated") && line.contains(p))
            }
        }
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: cachedBzImage), "no cached kernel: run `ktstr kernel fetch`"))
    func cachedKernelPasses() throws {
        try KernelImage.validate(path: Self.cachedBzImage)
        if FileManager.default.fileExists(atPath: Self.cachedVmlinux) { try KernelImage.validate(path: Self.cachedVmlinux) }
    }

    /// SchedulerRun refuses the file before the agent, the backend or any machine.
    @Test func schedulerRunRefusesBeforeAnyMachine() async {
        await #expect(throws: KernelFileError(path: "/dev/null", cause: .notRegularFile("character device"))) {
            try await SchedulerRun.run(vm: VMConfig(kernel: "/dev/null"), scheduler: .none, workload: .idle,
                                       duration: .seconds(1), artifactsDirectory: nil, log: .silent)
        }
    }

    /// `ktstr run --kernel BAD`: exit status 1 and one line on stderr naming the problem.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: ktstrCLI), "needs a built `ktstr` (swift build)"))
    func cliExitsOneWithOneLine() throws {
        try Self.withTempDir { dir in
            let text = dir + "/notes.txt"
            try Data(String(repeating: "hello\n", count: 200).utf8).write(to: URL(fileURLWithPath: text))
            let arm = dir + "/vmlinux-arm64"
            try Data(Self.elf(machine: 183)).write(to: URL(fileURLWithPath: arm))
            for (kernel, expected) in [("/dev/null", "not a regular file"), (text, "text"), (arm, "not x86-64"),
                                       (dir + "/missing", "no such file")] {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: ktstrCLI)
                p.arguments = ["run", "--kernel", kernel, "--scheduler", "none", "--workload", "idle"]
                let err = Pipe(), out = Pipe()
                p.standardError = err
                p.standardOutput = out
                try p.run()
                let data = err.fileHandleForReading.readDataToEndOfFile()
                _ = out.fileHandleForReading.readDataToEndOfFile()
                p.waitUntilExit()
                let stderr = String(decoding: data, as: UTF8.self)
                #expect(p.terminationStatus == 1, "\(kernel): rc \(p.terminationStatus), stderr \(stderr)")
                #expect(stderr.hasSuffix("\n") && stderr.dropLast().contains("\n") == false, "\(kernel): \(stderr)")
                #expect(stderr.contains(kernel) && stderr.contains(expected), "\(kernel): \(stderr)")
            }
        }
    }
}

/// The `ktstr` CLI built next to the tests (`.build/debug/ktstr`).
let ktstrCLI: String = {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    return root.appendingPathComponent(".build/debug/ktstr").path
}()
