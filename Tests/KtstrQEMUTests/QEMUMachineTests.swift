import Foundation
import Glibc
import Testing
@testable import KtstrMachine
@testable import KtstrQEMU
@testable import KtstrHost
@testable import KtstrProtocol

/// qemu + the default kernel (+ the agent where noted), no scheduler needed.
enum QEMUEnv {
    static let missing: String? = {
        do {
            _ = try Provisioning.qemuBinary()
            _ = try Provisioning.kernel()
            return nil
        } catch { return "\(error)" }
    }()
    static let missingAgent: String? = {
        if let m = missing { return m }
        do { _ = try Provisioning.agentBinary(); return nil } catch { return "\(error) (run `swift run ktstr setup`)" }
    }()

    /// Processes and /dev/shm files a machine would leave: `tag` is its instance name, or
    /// `ktstr-<pid>-` for every machine of a process.
    static func leftovers(pid: pid_t) -> [String] { leftovers(tag: "ktstr-\(pid)-") }

    static func leftovers(tag: String) -> [String] {
        var out: [String] = []
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] where Int(entry) != nil {
            guard let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { continue }
            let cmd = String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
            if cmd.contains("qemu-system"), cmd.contains(tag) { out.append("process \(entry): \(cmd.prefix(80))") }
        }
        for f in (try? FileManager.default.contentsOfDirectory(atPath: "/dev/shm")) ?? [] where f.hasPrefix(tag) {
            out.append("/dev/shm/\(f)")
        }
        return out
    }

    static let vm = VMConfig(cpus: 2, memoryMiB: 256, timeoutSeconds: 120)
}

@Suite(.serialized, .timeLimit(.minutes(5)))
struct QEMUMachineTests {
    @Test(.enabled(if: QEMUEnv.missingAgent == nil, Comment(rawValue: QEMUEnv.missingAgent ?? "")))
    func freezeGivesRegistersAndGuestMemoryIsShared() async throws {
        let kernel = try Provisioning.kernel()
        // Long enough that the freeze lands before the agent powers off even on a loaded host
        // (4 s was not: other suites' VMs can delay this task by seconds after the hello).
        let plan = RunPlan(scheduler: nil, workload: .init(kind: .idle, count: 0), durationMillis: 15_000,
                           kallsyms: ["init_top_pgt"], attachTimeoutMillis: 1000)
        // A slot like every run's, so this VM does not boot on top of all the others.
        let units = try await VMSlots.shared.acquire(vcpus: 2)
        defer { Task { await VMSlots.shared.release(units) } }
        let image = try InitramfsAssembler(agentPath: try Provisioning.agentBinary(), schedulerPath: nil,
                                           planJSON: plan.encoded()).assemble()
        let initrd = try UnlinkedFile(contents: image.bytes)
        let collector = RunCollector(log: .silent) { _ in }
        let m = QEMUMachine(.init(qemuPath: try Provisioning.qemuBinary(), kernelPath: kernel.image, initrdFD: initrd.fd,
                                  kernelCmdline: QEMUMachine.baseCmdline, topology: .flat(2), memoryMiB: 256,
                                  accelerator: .tcg, console: { collector.consoleBytes($0) },
                                  channel: { collector.channelBytes($0) }), log: .silent)
        defer { m.kill(); withExtendedLifetime(initrd) {} }
        try m.start()
        let deadline = ContinuousClock.now + .seconds(90)
        while collector.snapshot.helloAt == nil, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        try #require(collector.snapshot.helloAt != nil, "no hello: \(collector.consoleTail.suffix(1000))")

        let regs = try m.freeze(timeout: .seconds(10))
        #expect(regs.map(\.cpu) == [0, 1])
        for r in regs {
            #expect(r.cr3 != 0 && r.cr0.map { $0 & 0x8000_0001 == 0x8000_0001 } == true, "cpu \(r.cpu) not in paged protected mode")
            #expect(r.efer.map { $0 & 0x400 != 0 } == true, "cpu \(r.cpu) not in long mode")
        }
        // The kernel's banner is in guest RAM as the host maps it (nokaslr: image at 16 MiB).
        let ram = Data(try m.guestMemory.readBytes(at: 0, count: 96 << 20))
        #expect(ram.range(of: Data("Linux version 7.".utf8)) != nil)
        try m.thaw()
        let exit = try await Blocking.run { m.wait(timeout: .seconds(120)) }
        #expect(exit == .shutdown)
        #expect(QEMUEnv.leftovers(tag: m.instanceName).isEmpty)
    }

    @Test(.enabled(if: QEMUEnv.missing == nil, Comment(rawValue: QEMUEnv.missing ?? "")))
    func aGuestThatDiesEarlyStillYieldsAnOutcome() async throws {
        // /bin/false as /init: it exits, the kernel panics (panic=-1 reboots), qemu exits.
        let name = Locked<String>("")
        let o = try await SchedulerRun.run(vm: QEMUEnv.vm, scheduler: .none, workload: .idle, duration: .seconds(1),
                                           artifactsDirectory: nil, log: .silent, agentPath: "/bin/false",
                                           onMachine: { name.value = ($0 as? QEMUMachine)?.instanceName ?? "" })
        #expect(o.kernelRelease == nil)
        #expect(o.problems.contains(.guestNeverSaidHello))
        #expect(o.problems.contains { $0.kind == .guestKernelCrash && $0.detail?.hasPrefix("Kernel panic - not syncing:") == true },
                "\(o.problems)")
        #expect(o.consoleTail.contains("Kernel panic") || o.consoleTail.contains("kill init"), "\(o.consoleTail.suffix(500))")
        #expect(!name.value.isEmpty && QEMUEnv.leftovers(tag: name.value).isEmpty)
    }

    @Test(.enabled(if: QEMUEnv.missingAgent == nil, Comment(rawValue: QEMUEnv.missingAgent ?? "")))
    func cancellationKillsTheVMAndLeavesNothing() async throws {
        let name = Locked<String>("")
        let run = Task {
            try await SchedulerRun.run(vm: QEMUEnv.vm, scheduler: .none, workload: .spinners(1), duration: .seconds(60),
                                       artifactsDirectory: nil, log: .silent, agentPath: nil,
                                       onMachine: { name.value = ($0 as? QEMUMachine)?.instanceName ?? "" })
        }
        // Wait until this run's qemu is really up (other suites' VMs may hold the slots first).
        let deadline = ContinuousClock.now + .seconds(300)
        while name.value.isEmpty || QEMUEnv.leftovers(tag: name.value).isEmpty, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
        }
        try #require(!name.value.isEmpty && !QEMUEnv.leftovers(tag: name.value).isEmpty, "qemu never showed up")
        let t0 = ContinuousClock.now
        run.cancel()
        await #expect(throws: CancellationError.self) { try await run.value }
        #expect(ContinuousClock.now - t0 < .seconds(10))
        #expect(QEMUEnv.leftovers(tag: name.value).isEmpty, "\(QEMUEnv.leftovers(tag: name.value))")
    }

    @Test(.enabled(if: QEMUEnv.missingAgent == nil, Comment(rawValue: QEMUEnv.missingAgent ?? "")))
    func cancellationWhileWaitingForASlotIsImmediate() async throws {
        // Hold every slot of the shared pool, then cancel a run queued behind them.
        let held = try await VMSlots.shared.acquire(vcpus: 1 << 20)
        let run = Task {
            try await SchedulerRun.run(vm: QEMUEnv.vm, scheduler: .none, workload: .idle, duration: .seconds(1),
                                       artifactsDirectory: nil, log: .silent)
        }
        try await Task.sleep(for: .milliseconds(500))
        run.cancel()
        await #expect(throws: CancellationError.self) { try await run.value }
        await VMSlots.shared.release(held)
    }

    /// The test process dying (SIGKILL: no deinit, no handler) must not leave qemu running:
    /// the sh wrapper's watchdog sees EOF on its stdin pipe and kills qemu.
    @Test(.enabled(if: QEMUEnv.missingAgent == nil && FileManager.default.isExecutableFile(atPath: ktstrBinary),
                   "needs the agent and a built `ktstr` (swift build)"))
    func qemuDiesWithItsHostProcess() async throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: ktstrBinary)
        p.arguments = ["run", "--scheduler", "none", "--workload", "idle", "--duration", "120", "--memory", "256"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        let child = p.processIdentifier
        let deadline = ContinuousClock.now + .seconds(30)
        while QEMUEnv.leftovers(pid: child).isEmpty, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
        try #require(!QEMUEnv.leftovers(pid: child).isEmpty, "the child's qemu never showed up")
        kill(child, SIGKILL)
        p.waitUntilExit()
        let gone = ContinuousClock.now + .seconds(10)
        while !QEMUEnv.leftovers(pid: child).isEmpty, ContinuousClock.now < gone { try await Task.sleep(for: .milliseconds(100)) }
        #expect(QEMUEnv.leftovers(pid: child).isEmpty, "\(QEMUEnv.leftovers(pid: child))")
    }
}

/// Ctrl-C / SIGTERM on `ktstr run`: the VM stops, one line says what was interrupted, the
/// exit status is 128 + the signal, and `--json` still prints the partial outcome.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct CLIInterruptionTests {
    @Test(.enabled(if: QEMUEnv.missingAgent == nil && FileManager.default.isExecutableFile(atPath: ktstrBinary),
                   "needs the agent and a built `ktstr` (swift build)"),
          arguments: [SIGINT, SIGTERM])
    func aSignalStopsTheRunAndSaysSo(_ sig: Int32) async throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: ktstrBinary)
        p.arguments = ["run", "--scheduler", "none", "--workload", "idle", "--duration", "120", "--memory", "256", "--json"]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let child = p.processIdentifier
        let deadline = ContinuousClock.now + .seconds(60)
        while QEMUEnv.leftovers(pid: child).isEmpty, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
        try #require(!QEMUEnv.leftovers(pid: child).isEmpty, "the child's qemu never showed up")
        let t0 = ContinuousClock.now
        kill(child, sig)
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(ContinuousClock.now - t0 < .seconds(15))
        #expect(p.terminationStatus == 128 + sig, "stderr: \(stderr)")
        let last = try #require(stderr.split(separator: "\n").last.map(String.init))
        #expect(last.hasPrefix("ktstr run: interrupted by \(sig == SIGINT ? "SIGINT" : "SIGTERM")"), "\(last)")
        let outcome = try JSONDecoder().decode(RunOutcome.self, from: stdout)
        #expect(outcome.problems.contains(.cancelled), "\(outcome.problems)")
        #expect(QEMUEnv.leftovers(pid: child).isEmpty, "\(QEMUEnv.leftovers(pid: child))")
    }
}

/// The `ktstr` CLI built next to the tests (`.build/debug/ktstr`).
let ktstrBinary: String = {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    return root.appendingPathComponent(".build/debug/ktstr").path
}()

/// A value shared with a @Sendable callback.
final class Locked<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var v: T
    init(_ v: T) { self.v = v }
    var value: T {
        get { lock.lock(); defer { lock.unlock() }; return v }
        set { lock.lock(); v = newValue; lock.unlock() }
    }
}
