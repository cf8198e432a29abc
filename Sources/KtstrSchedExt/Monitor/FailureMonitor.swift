import Foundation
import Synchronization
import KtstrMachine
import KtstrProtocol

/// Watches a running guest for a sched_ext failure and captures a `FailureDump` from the
/// frozen guest. One per run: the run orchestration creates it, calls `start` once the agent's
/// hello has delivered the kernel symbols, and `finish` when the VM is done.
///
/// On its own thread (never the cooperative pool) it re-resolves `scx_root` and reads
/// `exit_kind` every `pollInterval`. On a kind ≥ SCX_EXIT_ERROR it waits (bounded) until the
/// kernel has written the exit message and backtrace, freezes the vCPUs, reads exit info,
/// per-CPU runqueues and BPF maps, thaws, then symbolizes the backtrace and picks up the
/// kernel's dump text (written by an irq_work just after the exit).
public final class FailureMonitor: @unchecked Sendable {
    /// Symbols the agent must look up in /proc/kallsyms and report in its hello.
    public static let requiredSymbols: [String] = [
        "scx_root", "page_offset_base", "phys_base", "__start_BTF", "__stop_BTF",
        "__per_cpu_offset", "runqueues", "map_idr", "init_top_pgt", "_text", "_end",
    ] + GuestKallsyms.symbolNames + ["kallsyms_relative_base", "bpf_kallsyms", "jiffies"]
        // The watchdog override (WatchdogOverride): 7.1+ has the interval, older kernels the timeout.
        + ["scx_watchdog_interval", "scx_watchdog_timestamp", "scx_watchdog_timeout"]

    public struct Options: Sendable {
        public var pollInterval: Duration = .milliseconds(5)
        /// Failure seen → exit info complete: longer means freeze anyway (msg may be partial).
        public var settleTimeout: Duration = .milliseconds(500)
        public var freezeTimeout: Duration = .seconds(3)
        /// After the thaw, how long to wait for the kernel's dump text to be complete.
        public var lateDumpTimeout: Duration = .seconds(3)
        /// `finish()` never waits longer than this for the monitor thread.
        public var finishTimeout: Duration = .seconds(30)
        /// A full System.map / kallsyms text for symbolization when the guest tables are unusable.
        public var systemMap: String?
        /// When the guest's BTF was not parsed ahead (`prepare(vmlinux:)`), freeze the guest
        /// while parsing it at hello time (0.3–3 s) instead of racing the scheduler.
        public var pauseGuestWhileParsing = true
        public init() {}
    }

    private struct State {
        var stop = false
        var dump: FailureDump?
        var watchTriggered = false
        var setupProblem: String?
        /// The last exit record read from guest memory (any kind; errors from the dump).
        var exit: SchedulerExit?
        /// Freeze/thaw failures outside a capture (the hello-time BTF pause): go into the dump.
        var notes: [String] = []
        /// The guest kernel, once resolved (live handles read and write through it).
        var context: KernelContext?
        /// Host time the exit record or dump was first stored.
        var exitSeenAt: ContinuousClock.Instant?
    }

    let log: Log
    let options: Options
    private let state = Mutex(State())
    private let done = DispatchSemaphore(value: 0)
    /// Signalled by a watchpoint trigger and by `finish`: the poll loop wakes at once.
    private let wake = DispatchSemaphore(value: 0)
    private let started = Mutex(false)

    public init(log: Log = .default) { self.log = log; self.options = Options() }
    public init(log: Log = .default, options: Options) { self.log = log; self.options = options }

    /// Parses the kernel's BTF in the background (call it before the boot): the hello-time
    /// setup then finds it cached instead of parsing while the scheduler is already attaching.
    public func prepare(vmlinux: String?) {
        guard let vmlinux else { return }
        let log = self.log
        let t = Thread {
            let t0 = ContinuousClock.now
            do { _ = try BTFCache.shared.load(vmlinux: vmlinux) } catch { log.debug("monitor: BTF warm-up: \(error)"); return }
            log.debug("monitor: BTF of \(vmlinux) parsed in \(ContinuousClock.now - t0)")
        }
        t.name = "ktstr-btf-warmup"
        t.start()
    }

    /// Begin watching. `kallsyms` are the addresses from the agent's hello; `vmlinux` is the
    /// guest kernel's ELF when known (BTF source if guest memory has none).
    public func start(machine: any Machine, kallsyms: [String: UInt64], vmlinux: String?) {
        let first = started.withLock { s -> Bool in defer { s = true }; return !s }
        guard first else { log.warning("monitor: start called twice; ignored"); return }
        let thread = Thread { [self] in
            defer { done.signal() }
            run(machine: machine, symbols: kallsyms, vmlinux: vmlinux)
        }
        thread.name = "ktstr-monitor"
        thread.start()
    }

    /// Stop watching; the dump when a failure was caught, else nil.
    public func finish() -> FailureDump? {
        state.withLock { $0.stop = true }
        wake.signal()
        if started.withLock({ $0 }) {
            let ms = Int(options.finishTimeout.components.seconds * 1000)
            if done.wait(timeout: .now() + .milliseconds(ms)) == .timedOut {
                log.warning("monitor: thread did not stop within \(ms) ms; returning what it has")
            } else {
                done.signal() // finish may be called again
            }
        }
        return state.withLock { $0.dump }
    }

    /// The dump, if one was captured already (the run continues after it).
    public var currentDump: FailureDump? { state.withLock { $0.dump } }

    /// How the scheduler exited, as the kernel recorded it in `scx_sched->exit_info`: read for
    /// every exit kind (a clean exit needs no freeze, only its record, read before the
    /// scx_sched is freed). nil when no exit was seen (none happened, or the monitor could
    /// not watch). Complete after `finish()`.
    public var schedulerExit: SchedulerExit? { state.withLock { $0.exit } }

    /// Why the monitor could not watch at all (no BTF, symbols missing...), for the run's
    /// `problems`: without it a failed scheduler's missing dump would go unexplained.
    public var setupProblem: String? { state.withLock { $0.setupProblem } }

    var stopping: Bool { state.withLock { $0.stop } }

    /// The guest kernel's address space and types, once the monitor has resolved them at
    /// hello (nil before, and when it could not: `setupProblem`).
    public var kernelContext: KernelContext? { state.withLock { $0.context } }

    /// When the host first saw the scheduler's exit record (host clock), nil when none.
    public var exitSeenAt: ContinuousClock.Instant? { state.withLock { $0.exitSeenAt } }

    /// Waits (polling, bounded) until the kernel context is resolved or setup failed.
    public func waitForContext(timeout: Duration) async -> KernelContext? {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let (ctx, failed, stop) = state.withLock { ($0.context, $0.setupProblem != nil, $0.stop) }
            if let ctx { return ctx }
            if failed || stop { return nil }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return nil
    }

    private func run(machine: any Machine, symbols: [String: UInt64], vmlinux: String?) {
        let ctx: KernelContext
        let t0 = ContinuousClock.now
        let pause = options.pauseGuestWhileParsing
        let log = self.log
        do {
            ctx = try KernelContext.resolve(memory: machine.guestMemory, symbols: symbols, vmlinux: vmlinux, log: log) { parse in
                // The BTF was not parsed during the boot: hold the guest still meanwhile, so a
                // scheduler cannot attach and fail before the monitor watches.
                guard pause else { return parse() }
                do { _ = try machine.freeze(timeout: .seconds(3)) } catch {
                    self.state.withLock { $0.notes.append("freeze for the hello-time BTF parse failed (\(error)): parsed with the guest running") }
                    return parse()
                }
                let t = ContinuousClock.now
                parse()
                do { try machine.thaw() } catch {
                    log.warning("monitor: thaw after the BTF parse failed: \(error)")
                    self.state.withLock { $0.notes.append("thaw after the hello-time BTF parse failed: \(error)") }
                }
                log.info("monitor: guest paused \(ContinuousClock.now - t) while its BTF was parsed")
            }
        } catch {
            log.warning("\(error)")
            state.withLock { $0.setupProblem = "\(error)" }
            return
        }
        state.withLock { $0.context = ctx }
        log.info("monitor: watching scx_root after \(ContinuousClock.now - t0) of setup (BTF from \(ctx.btfSource))")
        let reader = ScxReader(space: ctx.space, layout: ctx.layout, symbols: symbols)
        let watch = machine as? ExitKindWatchpoint
        var armedFor: UInt64 = 0
        let interval = options.pollInterval
        // scx_root as of the last poll. When it changes, the scheduler it pointed to may have
        // failed and been torn down between two polls (a loaded host can stall this thread
        // longer than the kernel's disable path takes): that scx_sched is freed only after an
        // RCU grace period, so its exit_kind is still readable and is checked once.
        var lastSched: UInt64 = 0
        while !stopping {
            let current = (try? reader.schedPointer()) ?? 0
            if lastSched != 0, current != lastSched {
                log.debug("monitor: scx_root 0x\(String(lastSched, radix: 16)) -> 0x\(String(current, radix: 16))")
                if let kind = failureKind(reader, lastSched, ctx.layout) {
                    state.withLock { if $0.exitSeenAt == nil { $0.exitSeenAt = .now } }
                    let dump = capture(machine: machine, ctx: ctx, reader: reader, sched: lastSched, kind: kind,
                                       detectedBy: "poll (after scx_root changed)")
                    store(dump)
                    return
                }
                recordExit(reader, lastSched, ctx.layout)
            }
            lastSched = current
            if let sched = current == 0 ? nil : current {
                if sched != armedFor { log.debug("monitor: scx_root -> 0x\(String(sched, radix: 16))") }
                if let watch, sched != armedFor {
                    let kva = sched &+ UInt64(ctx.layout.schedExitKind)
                    let armed = (try? ctx.space.translate(kva)).map { gpa in
                        watch.armExitKindWatchpoint(kva: kva, gpa: gpa, threshold: UInt32(ExitKind.errorThreshold)) { [weak self] _ in
                            self?.state.withLock { $0.watchTriggered = true }
                            self?.wake.signal()
                        }
                    } ?? false
                    log.debug("monitor: watchpoint on exit_kind \(armed ? "armed" : "unavailable; polling")")
                }
                armedFor = sched
                if let kind = failureKind(reader, sched, ctx.layout) {
                    let byWatch = state.withLock { $0.watchTriggered }
                    state.withLock { if $0.exitSeenAt == nil { $0.exitSeenAt = .now } }
                    let dump = capture(machine: machine, ctx: ctx, reader: reader, sched: sched, kind: kind,
                                       detectedBy: byWatch ? "watchpoint" : "poll")
                    store(dump)
                    return
                }
                recordExit(reader, sched, ctx.layout)
            }
            let micros = Int(interval.components.seconds) * 1_000_000 + Int(interval.components.attoseconds / 1_000_000_000_000)
            _ = wake.wait(timeout: .now() + .microseconds(max(100, micros)))
        }
        // Stopping (the VM is gone, its RAM still mapped): a clean exit that settled after the
        // last poll is still in the last scx_sched seen.
        if lastSched != 0 { recordExit(reader, lastSched, ctx.layout) }
    }

    /// Keeps a captured dump, with the notes taken before it, and its exit as the exit record.
    private func store(_ dump: FailureDump) {
        state.withLock { s in
            var d = dump
            d.problems = s.notes + d.problems
            s.dump = d
            if s.exitSeenAt == nil { s.exitSeenAt = .now }
            s.exit = SchedulerExit(kind: d.kind, kindValue: d.kindValue, code: d.exitCode, reason: d.reason ?? "",
                                   message: d.message ?? "", source: .memory)
        }
    }

    /// Reads the exit record of `sched` when it has exited with a settled, known kind (clean or
    /// error; errors are captured first by the callers). The kind is `exit_kind`, or
    /// `exit_info->kind` once the disable work has stored DONE there.
    private func recordExit(_ reader: ScxReader, _ sched: UInt64, _ layout: ScxLayout) {
        guard let raw = try? reader.exitKind(sched: sched), raw != ExitKind.none.value else { return }
        var kind = raw
        if raw == ExitKind.done.value {
            guard let recorded = try? reader.exitInfoKind(sched: sched) else { return }
            kind = recorded
        }
        guard kind != ExitKind.none.value, kind != ExitKind.done.value, isKnown(kind, layout),
              reader.exitInfoSettled(sched: sched, kind: kind) else { return }
        let exit = reader.readExitRecord(sched: sched, kind: kind)
        let changed = state.withLock { s -> Bool in
            defer { s.exit = exit; if s.exitSeenAt == nil { s.exitSeenAt = .now } }
            return s.exit != exit
        }
        if changed { log.debug("monitor: exit record \(exit.kind) (\(kind)) code \(exit.code.map(String.init) ?? "?")") }
    }

    /// A value the kernel's enum names (or the table, without BTF names): not a torn read.
    private func isKnown(_ kind: Int, _ layout: ScxLayout) -> Bool {
        layout.exitKindNames.isEmpty ? ExitKind(value: kind) != nil : layout.exitKindNames[Int64(kind)] != nil
    }

    /// The error kind `sched` exited with, or nil. `exit_kind` holds it only from the exit
    /// until the disable work starts, which then stores SCX_EXIT_DONE there (7.x); the kind
    /// stays in `exit_info->kind`, so a DONE is looked up there (a stall exit's disable work
    /// often starts before the next poll).
    private func failureKind(_ reader: ScxReader, _ sched: UInt64, _ layout: ScxLayout) -> Int? {
        guard let kind = try? reader.exitKind(sched: sched) else { return nil }
        if isFailure(kind, layout) { return kind }
        guard kind == ExitKind.done.value, let recorded = try? reader.exitInfoKind(sched: sched),
              isFailure(recorded, layout) else { return nil }
        return recorded
    }

    /// A value the kernel's enum does not name is a torn or stale read (a scheduler being
    /// freed), not a failure: only known kinds trigger when BTF names them.
    private func isFailure(_ kind: Int, _ layout: ScxLayout) -> Bool {
        kind >= ExitKind.errorThreshold && (layout.exitKindNames.isEmpty || layout.exitKindNames[Int64(kind)] != nil)
    }
}
