import Foundation
import KtstrVMM
import KtstrMachine
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

/// The baseline of `ktstr bench boot`: a plain `qemu-system-x86_64 -accel tcg` boot of the
/// same kernel, with the same machine, CPU model, topology, memory size and kernel command
/// line as a ktstr QEMU run, to an initramfs holding only `MinimalInit` (prints a marker,
/// reboots at once; `-no-reboot` turns that into qemu's exit).
///
/// What differs from `QEMUMachine`, because the baseline has no agent: no memory-backend-file
/// in /dev/shm (plain anonymous RAM), no COM2 channel, no QMP monitor, no `sh` watchdog
/// wrapper, the console goes to a file instead of a pipe, and the initramfs is one ~250-byte
/// file instead of the agent, its libraries and the scheduler.
public struct BootBaseline: Sendable {
    public var qemuPath: String
    public var kernelPath: String
    public var topology: Topology
    public var memoryMiB: Int
    /// Printed by the init; a sample without it is invalid (the init never ran).
    public let marker: String

    public enum BaselineError: Error, CustomStringConvertible {
        case setup(String)
        case invalidSample(String)
        public var description: String {
            switch self {
            case let .setup(why): "bench boot baseline: \(why)"
            case let .invalidSample(why): "bench boot baseline: invalid sample: \(why)"
            }
        }
    }

    public init(qemuPath: String, kernelPath: String, topology: Topology, memoryMiB: Int,
                marker: String = "KTSTR-BENCH-INIT-DONE") {
        self.qemuPath = qemuPath; self.kernelPath = kernelPath; self.topology = topology
        self.memoryMiB = memoryMiB; self.marker = marker
    }

    /// The command line of a ktstr QEMU run (base + extras + `KTSTR_CMDLINE`).
    public static var kernelCmdline: String {
        QEMUMachine.baseCmdline + " " + SchedulerRun.cmdlineExtras + SchedulerRun.extraCmdline(.current)
    }

    /// The initramfs: `/init` only.
    public var initramfs: [UInt8] { MinimalInit.initramfs(message: marker + "\n") }

    /// qemu's arguments (without the binary).
    public func arguments(initrdPath: String, consolePath: String) -> [String] {
        let t = topology
        // Same TCG threading as ktstr's own runs (QEMUMachine), or the comparison is unfair.
        return ["-accel", "tcg,thread=\(QEMUMachine.TCGThreads.from().rawValue)",
                "-M", "pc",
                "-m", "\(memoryMiB)M",
                "-smp", "\(t.vcpuCount),sockets=\(t.llcs),cores=\(t.coresPerLLC),threads=\(t.threadsPerCore)",
                "-nographic", "-nodefaults", "-no-reboot", "-no-user-config",
                "-kernel", kernelPath,
                "-append", Self.kernelCmdline,
                "-serial", "file:\(consolePath)",
                "-cpu", "qemu64,+rdrand",
                "-initrd", initrdPath]
    }

    /// One boot: spawn → qemu's exit, in milliseconds. qemu is killed after `timeout`; the
    /// temporary directory (initrd, console, stderr) is removed whatever happens.
    public func measure(timeout: Duration) throws -> Double {
        var template = Array((NSTemporaryDirectory() + "/ktstr-bench-boot-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else {
            throw BaselineError.setup("mkdtemp in \(NSTemporaryDirectory()): \(String(cString: strerror(errno))) — free space there")
        }
        let dir = String(cString: made)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let initrd = dir + "/initrd.cpio", console = dir + "/console.log", errPath = dir + "/stderr.log"
        do {
            try Data(initramfs).write(to: URL(fileURLWithPath: initrd))
        } catch {
            throw BaselineError.setup("cannot write \(initrd): \(error)")
        }
        guard FileManager.default.createFile(atPath: errPath, contents: nil),
              let errFile = FileHandle(forWritingAtPath: errPath) else { throw BaselineError.setup("cannot open \(errPath)") }
        defer { try? errFile.close() }

        let p = Process()
        p.executableURL = URL(fileURLWithPath: qemuPath)
        p.arguments = arguments(initrdPath: initrd, consolePath: console)
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        p.standardError = errFile
        let exited = DispatchSemaphore(value: 0)
        p.terminationHandler = { _ in exited.signal() }
        let clock = ContinuousClock()
        let t0 = clock.now
        do { try p.run() } catch {
            throw BaselineError.setup("cannot start \(qemuPath): \(error) — check that qemu-system-x86 is installed")
        }
        let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
        if exited.wait(timeout: .now() + seconds) == .timedOut {
            kill(p.processIdentifier, SIGKILL)
            exited.wait()
            throw BaselineError.invalidSample("qemu did not exit within \(timeout); killed it — console tail: \(tail(console))")
        }
        let took = clock.now - t0
        let wall = Double(took.components.seconds) * 1e3 + Double(took.components.attoseconds) / 1e15
        guard p.terminationReason == .exit, p.terminationStatus == 0 else {
            let err = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
            throw BaselineError.invalidSample("qemu ended with status \(p.terminationStatus): \(Self.oneLine(err))")
        }
        guard let text = try? String(contentsOfFile: console, encoding: .utf8), text.contains(marker) else {
            throw BaselineError.invalidSample("the init's marker \(marker) is not on the console (the init did not run) — console tail: \(tail(console))")
        }
        return wall
    }

    private func tail(_ path: String) -> String {
        let t = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        return Self.oneLine(String(t.suffix(400)))
    }

    /// Multi-line text (stderr, console) as one line, for one-line errors.
    static func oneLine(_ text: String) -> String {
        text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }.joined(separator: "; ")
    }
}
