import Foundation
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

/// One scheduler run: plan → initramfs → machine → agent channel → `RunOutcome`
/// (docs/PROTOCOLS.md "KtstrHost entry point").
public enum SchedulerRun {
    public enum RunError: Error, CustomStringConvertible, Equatable {
        case setup(String)
        /// A scheduler was asked for and the kernel's BTF has no sched_ext (checked before boot).
        case kernelWithoutSchedExt(kernel: String)
        public var description: String {
            switch self {
            case let .setup(why): why
            case let .kernelWithoutSchedExt(kernel):
                "the kernel has no sched_ext (no scx_sched in its BTF) — use a kernel built with CONFIG_SCHED_CLASS_EXT (kernel: \(kernel))"
            }
        }
    }

    /// Throws `kernelWithoutSchedExt` when a scheduler is requested and the kernel's BTF
    /// (cached; the monitor parses the same) has no sched_ext. No vmlinux, or a BTF that
    /// cannot be read: no verdict here (the run itself will tell).
    public static func requireSchedExt(vmlinux: String?, kernel: String, schedulerRequested: Bool) throws(RunError) {
        guard schedulerRequested, let vmlinux, !KernelCapabilities.hasSchedExt(vmlinux: vmlinux) else { return }
        throw .kernelWithoutSchedExt(kernel: kernel)
    }

    /// Extra kernel arguments for every QEMU run (after `QEMUMachine.baseCmdline`).
    static let cmdlineExtras = "loglevel=4 mitigations=off edd=off"

    /// `partialOutcomeOnCancel`: when the task is cancelled after the VM started, return what
    /// the run had so far (with a `.cancelled` problem) instead of throwing CancellationError;
    /// the CLI prints it on Ctrl-C. Cancelled before the VM started, it throws either way.
    /// `scenario`: the agent runs it instead of `workload` (its `durationMillis`, when set,
    /// replaces `duration`); the outcome then has the report, cgroup shares and checks.
    public static func run(vm: VMConfig, scheduler: SchedulerSpec, workload: WorkloadSpec, duration: Duration,
                           artifactsDirectory: String?, log: Log, partialOutcomeOnCancel: Bool = false,
                           live: LiveOptions = LiveOptions(), scenario: Scenario? = nil) async throws -> RunOutcome {
        try await run(vm: vm, scheduler: scheduler, workload: workload, duration: duration,
                      artifactsDirectory: artifactsDirectory, log: log, agentPath: nil,
                      partialOutcomeOnCancel: partialOutcomeOnCancel, live: live, scenario: scenario)
    }

    /// One try on one backend; `run` (KVMFallback.swift) calls it once more on qemu when
    /// KVMMachine failed before the agent's hello (`KVMFallback.BeforeHello`).
    /// `agentPath` replaces the provisioned agent (tests: a program that is not the agent, to
    /// check what a guest that dies early yields). `fallbackFrom`: the retry's problem, recorded
    /// before the artifacts are written. `allowFallback` false: report a KVMMachine failure as
    /// the outcome (the doctor's self-test).
    static func attempt(vm: VMConfig, scheduler: SchedulerSpec, workload: WorkloadSpec, duration: Duration,
                        artifactsDirectory: String?, log: Log, agentPath: String?, settings: KtstrSettings,
                        partialOutcomeOnCancel: Bool, onMachine: (@Sendable (any Machine) -> Void)?,
                        live: LiveOptions, scenario: Scenario?, fallbackFrom: String? = nil,
                        allowFallback: Bool = true) async throws -> RunOutcome {
        try Task.checkCancellation()
        // Checked before any conversion: nan, inf or a negative timeout must be a usage error,
        // not a trap in Int(_:) or a run blamed on the guest.
        guard vm.timeoutSeconds.isFinite, vm.timeoutSeconds > 0, vm.timeoutSeconds <= VMConfig.maxTimeoutSeconds else {
            throw RunError.setup("timeout \(vm.timeoutSeconds) s: must be more than 0 and at most \(Int(VMConfig.maxTimeoutSeconds)) s")
        }
        let kernel = try Provisioning.kernel(explicit: vm.kernel, registry: vm.registry)
        // Before any machine: a bad file is named here, not blamed on a "kernel panic" later.
        try KernelImage.validate(path: kernel.image)
        if kernel.config == nil { log.warning(Provisioning.missingKernelConfigAdvice(kernel)) }
        let agent = try agentPath ?? Provisioning.agentBinary()
        let decision = try BackendSelection.decide(vm.backend, settings: settings)
        log.info("backend \(decision.backend.rawValue): \(decision.why)")
        if let w = decision.warning { log.warning(w) }
        let fallback = try KVMFallback.Policy(backend: decision.backend, settings: settings, timeoutSeconds: vm.timeoutSeconds,
                                              allowed: allowFallback)

        let sched = try resolve(scheduler)
        try requireSchedExt(vmlinux: kernel.vmlinux, kernel: kernel.image, schedulerRequested: sched != nil)
        let durationMillis = scenario?.durationMillis ?? millis(duration)
        let attach = BackendSelection.attachTimeoutMillis(decision.backend)
        let plan = RunPlan(
            scheduler: sched.map { RunPlan.Scheduler(path: InitramfsAssembler.schedulerGuestPath, args: $0.args, name: $0.name) },
            workload: RunPlan.Workload(kind: workload.kind, count: workload.count,
                                       periodMicros: workload.periodMicros, cgroup: workload.cgroup),
            durationMillis: durationMillis, kallsyms: FailureMonitor.requiredSymbols, attachTimeoutMillis: attach,
            deadlineMillis: max(5000, Int(vm.timeoutSeconds * 1000) - 5000), scenario: scenario)
        let assembler = InitramfsAssembler(agentPath: agent, schedulerPath: sched?.path, planJSON: plan.encoded(), kernel: kernel)
        let qemuPath = decision.backend == .kvm ? "" : try Provisioning.qemuBinary()
        let coldCmdline = QEMUMachine.baseCmdline + " " + cmdlineExtras + extraCmdline(settings)
        // QEMU runs restore a boot snapshot (docs/DESIGN-NOTES.md "Boot snapshots"), except with
        // KTSTR_SNAPSHOT=off, VMConfig.bootSnapshot false or a stand-in agent.
        let snapshotConfig: SnapshotCache.Configuration? = decision.backend != .kvm && settings.snapshotEnabled && vm.bootSnapshot != false
            && agentPath == nil
            ? SnapshotCache.Configuration(qemuPath: qemuPath, kernelImage: kernel.image, commandLine: coldCmdline,
                                          topology: vm.topology, memoryMiB: vm.memoryMiB,
                                          accelerator: decision.backend == .qemuKVM ? .kvm : .tcg,
                                          agentPath: agent, kallsyms: plan.kallsyms)
            : nil

        let units = try await VMSlots.shared.acquire(vcpus: vm.cpus)
        defer { Task { await VMSlots.shared.release(units) } }
        try Task.checkCancellation()
        // Built (once per configuration, under a lock) inside this run's VM slot.
        let snapshot = await prepareSnapshot(snapshotConfig, log: log)

        let monitor = FailureMonitor(log: log)
        monitor.prepare(vmlinux: kernel.vmlinux) // parse BTF during the boot, not at hello
        let monitorQueue = DispatchQueue(label: "ktstr.monitor")
        let machineBox = MachineBox()
        let sampler = liveSampler(vm, kernel: kernel, watchdog: live.watchdogTimeout, log: log)
        let collector = RunCollector(log: log, onMessage: { sampler?.mark(for: $0) }) { syms in
            // Off the reader thread: the monitor may take a while, the pipe must keep draining.
            monitorQueue.async {
                guard let m = machineBox.machine else { return }
                // KTSTR_MONITOR=off: no failure monitor (diagnosis: does freezing change the run?).
                if settings.monitorEnabled { monitor.start(machine: m, kallsyms: syms, vmlinux: kernel.vmlinux) }
                sampler?.start(machine: m, kallsyms: syms, vmlinux: kernel.vmlinux, cpus: vm.cpus)
            }
        }
        let console: ByteSink = { collector.consoleBytes($0) }
        let collect: ByteSink = { collector.channelBytes($0) }
        let channel: ByteSink = fallback.fault == .noHello ? KVMFallback.cutChannel : collect
        let qemuConfig = QEMUMachine.Configuration(
            qemuPath: qemuPath, kernelPath: kernel.image, initrdFD: nil, kernelCmdline: coldCmdline,
            topology: vm.topology, memoryMiB: vm.memoryMiB, accelerator: decision.backend == .qemuKVM ? .kvm : .tcg,
            console: console, channel: channel)
        // The cold machine (and the initrd fd qemu reads, kept open until the run ends).
        let initrdBox = InitrdBox()
        let coldMachine: @Sendable () throws -> any Machine = {
            let image = try assembler.assemble()
            log.debug("initramfs: \(image.bytes.count >> 10) KiB, \(image.files.count) files")
            if decision.backend == .kvm {
                let boot = KVMMachine.bootImage(image: kernel.image, vmlinux: kernel.vmlinux)
                if let note = boot.note { log.info(note) }
                return try fallback.guardBoot {
                    try KVMMachine(KVMMachineConfiguration(
                        kernel: boot.path, initrd: image.bytes, commandLineExtra: extraCmdline(settings), topology: vm.topology,
                        memoryMiB: vm.memoryMiB, console: console, channel: channel, log: log))
                }
            }
            let file = try UnlinkedFile(contents: image.bytes)
            initrdBox.file = file
            var c = qemuConfig
            c.initrdFD = file.fd
            return QEMUMachine(c, log: log)
        }
        let snapshotUse = SnapshotUseBox(snapshot.use)

        let started = ContinuousClock.now
        // The live handle (during: closure, watchdog override) starts once the scheduler enabled.
        let writes = BPFWriteLog { w in sampler?.mark(.bpfWrite, w.markerLabel) }, watchdog = WatchdogBox()
        let liveTask: Task<[String], Never>? = live.isEmpty || sched == nil || !settings.monitorEnabled ? nil : Task {
            await runLive(live, monitor: monitor, collector: collector, cpuCount: vm.cpus, started: started,
                          writes: writes, watchdog: watchdog, log: log)
        }
        let exit: MachineExit
        let timeout = Duration.milliseconds(Int(vm.timeoutSeconds * 1000))
        let helloWatch = fallback.watchHello(collector: collector, kill: { machineBox.kill() }, log: log)
        defer { helloWatch?.cancel() }
        do {
            exit = try await withTaskCancellationHandler {
                try await Blocking.run {
                    if let boot = snapshot.boot {
                        do {
                            var a = assembler
                            a.omitGuestPaths = boot.guestPaths
                            let archive = try a.assemble().bytes
                            let m = try SnapshotRestore.start(boot, config: qemuConfig, archive: archive, collector: collector,
                                                              created: { machineBox.machine = $0; onMachine?($0) },
                                                              cancelled: { machineBox.cancelled }, log: log)
                            snapshotUse.restored(at: collector.restoredState, started: started)
                            return m.wait(timeout: timeout)
                        } catch {
                            guard !machineBox.cancelled else { throw error }
                            log.warning("boot snapshot \(boot.key): restore failed, booting cold: \(error)")
                            snapshotUse.fellBack("restore failed: \(error)")
                            collector.reset()
                            SnapshotCache.discard(boot, log: log)
                        }
                    }
                    let machine = try coldMachine()
                    machineBox.machine = machine
                    onMachine?(machine)
                    try fallback.guardBoot { try machine.start() }
                    // A kill that came before qemu existed did not reach it.
                    if machineBox.cancelled { machine.kill() }
                    return machine.wait(timeout: timeout)
                }
            } onCancel: {
                machineBox.kill()
            }
        } catch {
            // A kill from the cancellation handler makes start() fail: report the cancellation
            // (or, when asked, the outcome so far: the guest may have said hello already).
            machineBox.kill()
            if !(Task.isCancelled && partialOutcomeOnCancel) { liveTask?.cancel(); try Task.checkCancellation() }
            guard Task.isCancelled else { liveTask?.cancel(); throw error }
            exit = .killed
        }
        // The initrd fd must stay open until qemu has read it: keep the owner alive to here.
        withExtendedLifetime(initrdBox) {}
        let wall = ContinuousClock.now - started
        let sampled = sampler?.finish() // first: the RAM it would read next is no longer a running guest
        liveTask?.cancel()
        let liveProblems = await liveTask?.value ?? []
        let watchdogReport = watchdog.finish()
        let dump = monitorQueue.sync { monitor.finish() }
        // Everything of this try has stopped: a KVMMachine that never reached the agent makes
        // way for the retry on qemu instead of becoming the outcome.
        try fallback.checkHello(collector: collector, machine: machineBox.machine, exit: exit, watch: helloWatch)
        var outcome = assemble(collector: collector, backend: decision.backend, started: started, wall: wall,
                               exit: exit, dump: dump, memoryExit: monitor.schedulerExit, expectScheduler: sched != nil)
        if let scenario {
            outcome.applyScenario(scenario)
        } else {
            outcome.requestedWorkers = min(workload.count, 256) * (workload.kind == .pingPong ? 2 : 1)
        }
        outcome.checkTopology(requested: vm.topology)
        // A monitor that could not even start must not look like "no failure happened".
        if dump == nil, let why = monitor.setupProblem { outcome.problems.append(RunProblem(.failureMonitorUnavailable, why)) }
        if let sampled { outcome.addTimeline(sampled.timeline, stalls: sampled.stalls) }
        if !live.isEmpty, liveTask == nil {
            outcome.problems.append(RunProblem(.liveHandle, sched == nil ? "no scheduler: nothing live to do" : "KTSTR_MONITOR=off: no live handle"))
        }
        outcome.problems += liveProblems.map { RunProblem(.liveHandle, $0) }
        let written = writes.all
        outcome.bpfWrites = written.isEmpty ? nil : written
        outcome.watchdogOverride = watchdogReport
        if let w = watchdogReport { outcome.problems += w.problems.map { RunProblem(.liveHandle, "watchdog override: \($0)") } }
        outcome.schedulerEnabledMillis = collector.liveState.enabledAt.map { millis($0 - started) }
        outcome.exitSeenMillis = monitor.exitSeenAt.map { millis($0 - started) }
        if Task.isCancelled { outcome.problems.append(RunProblem(.cancelled)) }
        if decision.backend == .kvm, let machine = machineBox.machine { outcome.unhandledAccesses = machine.unhandledAccesses }
        outcome.snapshot = snapshotUse.value
        if let from = fallbackFrom { outcome.problems.append(KVMFallback.problem(from, retriedOn: decision)) }
        if let dir = artifactsDirectory { RunArtifacts.write(outcome, to: dir, log: log) }
        if !partialOutcomeOnCancel { try Task.checkCancellation() }
        return outcome
    }

    /// The live sampler for `vm` (nil when `sampleIntervalMillis` is 0), with the kernel's HZ.
    static func liveSampler(_ vm: VMConfig, kernel: KernelArtifacts, watchdog: Duration?, log: Log) -> TimelineSampler? {
        var o = TimelineSampler.Options()
        if let i = vm.sampleIntervalMillis { guard i > 0 else { return nil }; o.intervalMillis = i }
        if let t = vm.hostStallThresholdMillis {
            o.stallThresholdMillis = t
        } else if let w = watchdog {
            // A shortened kernel watchdog must not beat the host's own detector to it.
            o.stallThresholdMillis = min(o.stallThresholdMillis, max(100, SchedulerRun.millis(w) / 2))
        }
        o.hz = TimelineSampler.hz(kernelConfig: kernel.config)
        return TimelineSampler(log: log, options: o)
    }

    /// `KTSTR_CMDLINE` appends kernel arguments (debugging: `loglevel=7`, `sched_ext.*`).
    static func extraCmdline(_ settings: KtstrSettings) -> String {
        settings.extraCmdline.map { " " + $0 } ?? ""
    }

    struct ResolvedScheduler { var path: String; var args: [String]; var name: String }

    static func resolve(_ s: SchedulerSpec) throws -> ResolvedScheduler? {
        switch s {
        case .none: return nil
        case let .simple(args): return ResolvedScheduler(path: try Provisioning.scheduler("simple"), args: args, name: "simple")
        case let .fault(args): return ResolvedScheduler(path: try Provisioning.scheduler("fault"), args: args, name: "fault")
        case let .binary(path, args):
            guard FileManager.default.isExecutableFile(atPath: path) else {
                throw RunError.setup("scheduler \(path) is not an executable file — pass the path of a built scheduler")
            }
            return ResolvedScheduler(path: path, args: args, name: (path as NSString).lastPathComponent)
        }
    }

    /// `memoryExit`: the exit record the monitor read from guest memory; it wins over the
    /// agent's report (loader line, kernel log), which fills only what memory left empty.
    static func assemble(collector: RunCollector, backend: BackendKind, started: ContinuousClock.Instant, wall: Duration,
                         exit: MachineExit, dump: FailureDump?, memoryExit: SchedulerExit? = nil,
                         expectScheduler: Bool) -> RunOutcome {
        let snap = collector.snapshot
        var o = RunOutcome(backend: backend, wallMillis: millis(wall), failureDump: dump,
                           consoleTail: collector.consoleTail, machineExit: exit)
        if let h = snap.helloAt { o.bootMillis = millis(h - started) }
        var sawDone = false
        var agentExit: SchedulerExit?
        var failedToLoad: String?, noExitInformation: String?
        for m in snap.messages {
            switch m {
            case let .hello(release, _, _, topology): o.kernelRelease = release; o.guestTopology = topology
            case let .schedulerExit(e): agentExit = e
            case let .workers(w): o.workers = w
            case let .scenario(r): o.scenario = r
            case let .log(_, text): o.schedulerLog = text
            case let .problem(p, kind):
                switch kind {
                case .schedulerFailedToLoad: failedToLoad = p
                case .noExitInformation: noExitInformation = p
                case .workloadCutShort: o.problems.append(RunProblem(.workloadCutShort, p))
                case nil: o.problems.append(RunProblem(.agentReported, p))
                }
            case .done: sawDone = true
            default: break
            }
        }
        o.schedulerExit = mergeExit(memory: memoryExit, agent: agentExit)
        // An exit the kernel recorded means the scheduler did attach: that exit is the result.
        if let why = failedToLoad, o.schedulerExit == nil {
            o.problems.append(RunProblem(.schedulerFailedToLoad, lastLines(of: o.schedulerLog) ?? why))
        }
        if let why = noExitInformation, o.schedulerExit == nil { o.problems.append(RunProblem(.noSchedulerExit, why)) }
        // Name a guest kernel crash in one line (the console tail has the details).
        for marker in ["Kernel panic - not syncing:", "Oops:", "BUG:"] {
            if let line = o.consoleTail.split(whereSeparator: \.isNewline).first(where: { $0.contains(marker) }) {
                o.problems.append(RunProblem(.guestKernelCrash, line.drop { $0 != "]" }.dropFirst().trimmingCharacters(in: .whitespaces)))
            }
        }
        if snap.helloAt == nil {
            o.problems.append(RunProblem(.guestNeverSaidHello))
        } else if !sawDone {
            o.problems.append(RunProblem(.agentDidNotFinish, exit.description))
        }
        // The agent explains a missing exit itself (start failure, no exit information);
        // only a silent run gets this generic one.
        if expectScheduler, o.schedulerExit == nil, snap.helloAt != nil,
           !o.problems.contains(where: { [.agentReported, .schedulerFailedToLoad, .noSchedulerExit].contains($0.kind) }) {
            o.problems.append(RunProblem(.noSchedulerExit))
        }
        if case .timeout = exit { o.problems.append(RunProblem(.timeout)) }
        return o
    }

    /// Memory's record, with text it could not read taken from the agent's report of the
    /// same kind; the agent's report alone when memory has none.
    static func mergeExit(memory: SchedulerExit?, agent: SchedulerExit?) -> SchedulerExit? {
        guard var m = memory else { return agent }
        if let a = agent, a.kind == m.kind {
            if m.message.isEmpty { m.message = a.message }
            if m.reason.isEmpty { m.reason = a.reason }
            if m.code == nil { m.code = a.code }
        }
        return m
    }

    /// The last few non-empty lines of a scheduler's log (where libbpf and the verifier say
    /// why a load failed), or nil when it printed nothing.
    static func lastLines(of log: String?, count: Int = 4, maxCharacters: Int = 600) -> String? {
        let lines = (log ?? "").split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !lines.isEmpty else { return nil }
        let text = lines.suffix(count).joined(separator: " | ")
        return text.count > maxCharacters ? "…" + String(text.suffix(maxCharacters)) : text
    }

    static func millis(_ d: Duration) -> Int {
        Int(d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000)
    }
}

/// The machine, once created, for the hello callback (set before the machine starts). After
/// `kill()` (cancellation) every machine set here is killed at once, also one made later
/// (a cold boot after a failed restore).
final class MachineBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value: (any Machine)?
    private var killed = false
    var machine: (any Machine)? {
        get { lock.lock(); defer { lock.unlock() }; return value }
        set {
            lock.lock()
            value = newValue
            let dead = killed
            lock.unlock()
            if dead { newValue?.kill() }
        }
    }
    var cancelled: Bool { lock.lock(); defer { lock.unlock() }; return killed }
    func kill() {
        lock.lock()
        killed = true
        let m = value
        lock.unlock()
        m?.kill()
    }
}

/// The cold machine's initrd file, owned until the run ends.
final class InitrdBox: @unchecked Sendable {
    var file: UnlinkedFile?
}

/// A file with no name: written to /dev/shm (or /tmp), unlinked at once, kept as an fd.
/// qemu reads it as /proc/self/fd/N; nothing remains on disk whatever happens.
final class UnlinkedFile: @unchecked Sendable {
    let fd: Int32

    init(contents: [UInt8]) throws {
        let dir = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        let path = "\(dir)/ktstr-initrd-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SchedulerRun.RunError.setup("cannot create \(path): \(String(cString: strerror(errno))) — free space in \(dir)") }
        unlink(path)
        self.fd = fd
        var off = 0
        while off < contents.count {
            let n = contents[off...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                close(fd)
                throw SchedulerRun.RunError.setup("cannot write the initramfs: \(String(cString: strerror(errno)))")
            }
            off += n
        }
    }

    deinit { close(fd) }
}

/// Runs blocking work (qemu start + wait) on its own thread, off the cooperative pool.
enum Blocking {
    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { cont in
            let t = Thread { cont.resume(with: Result { try body() }) }
            t.name = "ktstr-vm-wait"
            t.start()
        }
    }
}
