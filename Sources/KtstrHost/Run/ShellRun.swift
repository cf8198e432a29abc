import Foundation
import Glibc
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

/// `ktstr shell`: boots the guest with the scheduler loaded and runs busybox's sh on the
/// console (plan mode `shell`, docs/PROTOCOLS.md). The guest's console output between the
/// agent's markers goes to `output`; `inputFD` (the user's terminal, already raw) goes to the
/// guest's COM1 input. QEMU only: the console needs an input path (a socketpair, see
/// docs/SECURITY.md); where `auto` would pick KVMMachine, qemu runs with KVM instead.
public enum ShellRun {
    /// Ctrl-] on the input: kill the VM (the way out of a guest that stopped listening).
    public static let escapeByte: UInt8 = 0x1D

    public struct Result: Sendable {
        /// The shell's exit status (exit code, or 128 + signal); nil when it never ran to the end.
        public var status: Int?
        /// How the run went (scheduler exit, problems, console tail).
        public var outcome: RunOutcome
        /// The user pressed the escape byte and the VM was killed.
        public var escaped: Bool
    }

    /// `command`: `sh -c command` (no input is forwarded); nil: interactive.
    public static func run(vm: VMConfig, scheduler: SchedulerSpec, command: String?, term: String?, rows: Int?, columns: Int?,
                           inputFD: Int32?, output: @escaping @Sendable ([UInt8]) -> Void, log: Log) async throws -> Result {
        try Task.checkCancellation()
        guard vm.timeoutSeconds.isFinite, vm.timeoutSeconds > 0, vm.timeoutSeconds <= VMConfig.maxTimeoutSeconds else {
            throw SchedulerRun.RunError.setup("timeout \(vm.timeoutSeconds) s: must be more than 0 and at most \(Int(VMConfig.maxTimeoutSeconds)) s")
        }
        let kernel = try Provisioning.kernel(explicit: vm.kernel, registry: vm.registry)
        try KernelImage.validate(path: kernel.image)
        if kernel.config == nil { log.warning(Provisioning.missingKernelConfigAdvice(kernel)) }
        let agent = try Provisioning.agentBinary()
        let busybox = try Provisioning.busyboxBinary()
        let decision = try BackendSelection.decide(vm.backend)
        let accelerator: QEMUMachine.Accelerator = decision.backend == .qemuTCG ? .tcg : .kvm
        log.info("backend qemu-\(accelerator.rawValue) (\(decision.why))")
        let sched = try SchedulerRun.resolve(scheduler)
        try SchedulerRun.requireSchedExt(vmlinux: kernel.vmlinux, kernel: kernel.image, schedulerRequested: sched != nil)

        var plan = RunPlan(
            scheduler: sched.map { RunPlan.Scheduler(path: InitramfsAssembler.schedulerGuestPath, args: $0.args, name: $0.name) },
            workload: RunPlan.Workload(kind: .idle, count: 0), durationMillis: 0, kallsyms: [],
            attachTimeoutMillis: accelerator == .tcg ? 30_000 : 10_000)
        plan.shell = RunPlan.Shell(command: command, term: term, rows: rows, columns: columns)
        var assembler = InitramfsAssembler(agentPath: agent, schedulerPath: sched?.path, planJSON: plan.encoded(), kernel: kernel)
        assembler.extraFiles = [(busybox, RunPlan.Shell.busyboxPath)]
        let image = try assembler.assemble()

        let units = try await VMSlots.shared.acquire(vcpus: vm.cpus)
        defer { Task { await VMSlots.shared.release(units) } }
        try Task.checkCancellation()

        let collector = RunCollector(log: log) { _ in }
        let filter = ShellConsoleFilter.Box()
        let console: ByteSink = { bytes in
            collector.consoleBytes(bytes)
            let shown = filter.feed(bytes)
            if !shown.isEmpty { output(shown) }
        }
        let file = try UnlinkedFile(contents: image.bytes)
        var config = QEMUMachine.Configuration(
            qemuPath: try Provisioning.qemuBinary(), kernelPath: kernel.image, initrdFD: file.fd,
            kernelCmdline: QEMUMachine.baseCmdline + " " + SchedulerRun.cmdlineExtras + SchedulerRun.extraCmdline(.current),
            topology: vm.topology, memoryMiB: vm.memoryMiB, accelerator: accelerator,
            console: console, channel: { collector.channelBytes($0) })
        config.consoleInput = command == nil
        let machine = QEMUMachine(config, log: log)

        let escaped = Flag()
        let finished = Flag()
        let started = ContinuousClock.now
        let exit: MachineExit
        do {
            exit = try await withTaskCancellationHandler {
                try await Blocking.run {
                    try machine.start()
                    if command == nil, let fd = inputFD {
                        let t = Thread { forward(from: fd, to: machine, finished: finished, escaped: escaped) }
                        t.name = "ktstr-shell-input"
                        t.start()
                    }
                    defer { finished.set() }
                    return machine.wait(timeout: .milliseconds(Int(vm.timeoutSeconds * 1000)))
                }
            } onCancel: {
                machine.kill()
            }
        } catch {
            machine.kill()
            finished.set()
            try Task.checkCancellation()
            throw error
        }
        withExtendedLifetime(file) {}
        let rest = filter.flush()
        if !rest.isEmpty { output(rest) }
        var outcome = SchedulerRun.assemble(collector: collector, backend: machine.backend, started: started,
                                            wall: ContinuousClock.now - started, exit: exit, dump: nil,
                                            expectScheduler: sched != nil)
        var status: Int?
        for m in collector.snapshot.messages { if case let .shellExit(s) = m { status = s } }
        if Task.isCancelled { outcome.problems.append(RunProblem(.cancelled)) }
        return Result(status: status, outcome: outcome, escaped: escaped.isSet)
    }

    /// Copies the user's input to COM1 until the VM is gone. Ctrl-] kills the VM; end of input
    /// sends Ctrl-D (the shell's end of input) once.
    static func forward(from fd: Int32, to machine: QEMUMachine, finished: Flag, escaped: Flag) {
        var buf = [UInt8](repeating: 0, count: 4096)
        while !finished.isSet {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let r = poll(&p, 1, 200)
            if r < 0 && errno == EINTR { continue }
            guard r >= 0 else { return }
            if r == 0 { continue }
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            guard n > 0 else {
                machine.sendToConsole([0x04])
                return
            }
            let chunk = Array(buf[0..<n])
            if let i = chunk.firstIndex(of: escapeByte) {
                machine.sendToConsole(Array(chunk[..<i]))
                escaped.set()
                machine.kill()
                return
            }
            machine.sendToConsole(chunk)
        }
    }

    final class Flag: @unchecked Sendable {
        private let lock = NSLock()
        private var value = false
        func set() { lock.lock(); value = true; lock.unlock() }
        var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
    }
}

/// What of the guest console the user sees in `ktstr shell`: nothing up to the agent's begin
/// marker (boot messages) and its line end, everything up to the end marker, nothing after
/// (scheduler stop, power off). Markers split across reads are found: a tail that could start
/// a marker is held back until the next bytes decide.
public struct ShellConsoleFilter: Sendable {
    enum State: Sendable { case before, lineEnd, passing, after }
    private var state = State.before
    private var pending: [UInt8] = []
    private static let begin = Array(RunPlan.Shell.beginMarker.utf8)
    private static let end = Array(RunPlan.Shell.endMarker.utf8)

    public init() {}

    /// Whether the end marker has been seen.
    public var ended: Bool { if case .after = state { true } else { false } }

    public mutating func feed<C: Collection>(_ bytes: C) -> [UInt8] where C.Element == UInt8 {
        var out: [UInt8] = []
        var input = pending + bytes
        pending = []
        while !input.isEmpty {
            switch state {
            case .after:
                return out
            case .before:
                if let r = Self.find(Self.begin, in: input) {
                    input = Array(input[r...])
                    state = .lineEnd
                } else {
                    // Keep only what could be the start of the marker (the console is noise here).
                    pending = Self.heldBack(input, for: Self.begin).map { Array(input[$0...]) } ?? []
                    return out
                }
            case .lineEnd:
                // The newline the agent wrote after the marker: "\n", or "\r\n" through ONLCR.
                if input[0] == 0x0D, input.count == 1 { pending = input; return out }
                if input[0] == 0x0D, input[1] == 0x0A { input.removeFirst(2) } else if input[0] == 0x0A { input.removeFirst() }
                state = .passing
            case .passing:
                if let r = Self.find(Self.end, in: input) {
                    out += input[..<(r - Self.end.count)]
                    state = .after
                    return out
                }
                let keep = Self.heldBack(input, for: Self.end) ?? input.count
                out += input[..<keep]
                pending = Array(input[keep...])
                return out
            }
        }
        return out
    }

    /// What is held back once the console ends (a partial marker that never completed).
    public mutating func flush() -> [UInt8] {
        defer { pending = [] }
        if case .passing = state { return pending }
        return []
    }

    /// The index just past the first occurrence of `marker`.
    static func find(_ marker: [UInt8], in b: [UInt8]) -> Int? {
        guard b.count >= marker.count else { return nil }
        var i = 0
        while i + marker.count <= b.count {
            if b[i] == marker[0], b[i..<(i + marker.count)].elementsEqual(marker) { return i + marker.count }
            i += 1
        }
        return nil
    }

    /// The start of the longest suffix of `b` that is a proper prefix of `marker`, if any.
    static func heldBack(_ b: [UInt8], for marker: [UInt8]) -> Int? {
        for len in stride(from: min(marker.count - 1, b.count), through: 1, by: -1)
            where b[(b.count - len)...].elementsEqual(marker[..<len]) {
            return b.count - len
        }
        return nil
    }

    /// A locked filter for the console reader thread.
    final class Box: @unchecked Sendable {
        private let lock = NSLock()
        private var filter = ShellConsoleFilter()
        func feed(_ b: ArraySlice<UInt8>) -> [UInt8] { lock.lock(); defer { lock.unlock() }; return filter.feed(b) }
        func flush() -> [UInt8] { lock.lock(); defer { lock.unlock() }; return filter.flush() }
    }
}

extension Provisioning {
    /// Busybox for `ktstr shell` (Debian's busybox-static: /bin/busybox, a static binary).
    public static func busyboxBinary() throws -> String {
        for p in ["/bin/busybox", "/usr/bin/busybox"] where FileManager.default.isExecutableFile(atPath: p) { return p }
        throw ProvisioningError.missing(what: "busybox not found (ktstr shell puts it into the guest)",
                                        fix: "apt-get install busybox-static (or run `swift run ktstr setup` as root)")
    }
}
