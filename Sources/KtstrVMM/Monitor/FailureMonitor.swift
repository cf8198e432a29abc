import Foundation
import Synchronization

/// A machine that can latch a write to `scx_sched.exit_kind` in hardware (KVM's DR0 slot-0
/// watchpoint, where debug registers work). The monitor arms it whenever `scx_root` resolves
/// to a new scheduler; polling stays on as the fallback (PVM and QEMU never fire).
///
/// Hook for KVMMachine (kvm branch: `VCPURunner.watchExitKind(guestVirtual:host:onTrigger:)`):
/// ```swift
/// extension KVMMachine: ExitKindWatchpoint {
///     func armExitKindWatchpoint(kva: UInt64, gpa: UInt64, onTrigger: @escaping @Sendable (Int) -> Void) -> Bool {
///         guard debugRegistersWork, let host = try? guestMemory.hostAddress(of: gpa, length: 4) else { return false }
///         runner.watchExitKind(guestVirtual: kva, host: host) { onTrigger(Int(Int32(bitPattern: $0))) }
///         return true
///     }
/// }
/// ```
public protocol ExitKindWatchpoint: AnyObject, Sendable {
    /// Arms a 4-byte write watchpoint on `kva` (guest-physical `gpa`, for the host-side value
    /// gate); `onTrigger` runs (on any thread, e.g. the vCPU's: it must not freeze) with the
    /// stored value when a write leaves a value ≥ 1024. Returns false when the machine cannot
    /// watch (no working debug registers).
    func armExitKindWatchpoint(kva: UInt64, gpa: UInt64, onTrigger: @escaping @Sendable (Int) -> Void) -> Bool
}

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
        "__per_cpu_offset", "runqueues", "map_idr", "init_top_pgt",
    ] + GuestKallsyms.symbolNames + ["bpf_kallsyms"]

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
        public init() {}
    }

    private struct State {
        var stop = false
        var dump: FailureDump?
        var watchTriggered = false
    }

    private let log: Log
    private let options: Options
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

    private var stopping: Bool { state.withLock { $0.stop } }

    private func run(machine: any Machine, symbols: [String: UInt64], vmlinux: String?) {
        let ctx: KernelContext
        let t0 = ContinuousClock.now
        do { ctx = try KernelContext.resolve(memory: machine.guestMemory, symbols: symbols, vmlinux: vmlinux, log: log) } catch {
            log.warning("\(error)")
            return
        }
        log.info("monitor: watching scx_root after \(ContinuousClock.now - t0) of setup (BTF from \(ctx.btfSource))")
        let reader = ScxReader(space: ctx.space, layout: ctx.layout, symbols: symbols)
        let watch = machine as? ExitKindWatchpoint
        var armedFor: UInt64 = 0
        let interval = options.pollInterval
        while !stopping {
            if let sched = try? reader.schedPointer() {
                if sched != armedFor { log.debug("monitor: scx_root -> 0x\(String(sched, radix: 16))") }
                if let watch, sched != armedFor {
                    let kva = sched &+ UInt64(ctx.layout.schedExitKind)
                    let armed = (try? ctx.space.translate(kva)).map { gpa in
                        watch.armExitKindWatchpoint(kva: kva, gpa: gpa) { [weak self] _ in
                            self?.state.withLock { $0.watchTriggered = true }
                            self?.wake.signal()
                        }
                    } ?? false
                    log.debug("monitor: watchpoint on exit_kind \(armed ? "armed" : "unavailable; polling")")
                }
                armedFor = sched
                // A value the kernel's enum does not name is a torn/stale read (a scheduler
                // being freed), not a failure: only known kinds trigger when BTF names them.
                if let kind = try? reader.exitKind(sched: sched), kind >= ExitKind.errorThreshold,
                   ctx.layout.exitKindNames.isEmpty || ctx.layout.exitKindNames[Int64(kind)] != nil {
                    let byWatch = state.withLock { $0.watchTriggered }
                    let dump = capture(machine: machine, ctx: ctx, reader: reader, sched: sched, kind: kind,
                                       detectedBy: byWatch ? "watchpoint" : "poll")
                    state.withLock { $0.dump = dump }
                    return
                }
            }
            let micros = Int(interval.components.seconds) * 1_000_000 + Int(interval.components.attoseconds / 1_000_000_000_000)
            _ = wake.wait(timeout: .now() + .microseconds(max(100, micros)))
        }
    }

    /// Freeze → read → thaw, then the work that does not need a frozen guest.
    func capture(machine: any Machine, ctx: KernelContext, reader: ScxReader, sched: UInt64, kind: Int, detectedBy: String) -> FailureDump {
        let clock = ContinuousClock()
        let t0 = clock.now
        var dump = FailureDump(kind: ctx.layout.kindName(kind), kindValue: kind)
        dump.btfSource = ctx.btfSource
        // exit_kind is claimed before msg/bt are written; exit_info->kind is stored after.
        let settleDeadline = t0 + options.settleTimeout
        while (try? reader.exitInfoKind(sched: sched)) != kind {
            if clock.now >= settleDeadline {
                dump.problems.append("exit info was not complete \(options.settleTimeout) after the exit was claimed: message/backtrace may be partial")
                break
            }
            Thread.sleep(forTimeInterval: 0.0005)
        }
        let tSettled = clock.now
        var frozen = false
        do {
            dump.registers = try machine.freeze(timeout: options.freezeTimeout)
            frozen = true
        } catch {
            dump.problems.append("freeze failed (\(error)): memory was read while the guest ran")
            // A backend may have stopped the vCPUs before failing (e.g. QMP stop, then a bad
            // register read): resume it, or the guest stays paused until the run times out.
            try? machine.thaw()
        }
        let tFrozen = clock.now
        var space = ctx.space
        if let w = space.walker, let cr4 = dump.registers.first?.cr4, (cr4 & (1 << 12) != 0) != (w.levels == 5) {
            // CR4.LA57 is the authority on the paging depth; the symbol-based guess was wrong.
            space = space.withWalker(PageTableWalker(memory: w.memory, cr3: w.root, fiveLevel: cr4 & (1 << 12) != 0))
        }
        if space.walker == nil, let r = dump.registers.first {
            // No init_top_pgt: the kernel half of any CR3 maps vmalloc (PTI: bit 12 selects the user copy).
            let la57 = (r.cr4 ?? 0) & (1 << 12) != 0
            space = space.withWalker(PageTableWalker(memory: ctx.space.memory, cr3: r.cr3 & ~UInt64(1 << 12), fiveLevel: la57))
        }
        let frozenReader = ScxReader(space: space, layout: ctx.layout, symbols: ctx.symbols)
        let bt = frozenReader.readExitInfo(sched: sched, into: &dump)
        frozenReader.readCPUs(count: machine.vcpuCount, into: &dump)
        if let maps = ctx.layout.maps, let idr = ctx.symbols["map_idr"] {
            BPFMapReader(space: space, layout: maps).readAll(idr: idr, into: &dump)
        } else {
            dump.problems.append(ctx.layout.mapsProblem ?? "BPF maps not read: map_idr missing from the agent's symbols")
        }
        let tRead = clock.now
        if frozen {
            do { try machine.thaw() } catch { dump.problems.append("thaw failed: \(error)") }
        }
        symbolize(bt, ctx: ctx, space: space, into: &dump)
        if let f = dump.flags, f != 0 {
            let known = ctx.btf.enumerators(withPrefix: "SCX_EFLAG_")
            dump.flagNames = known.filter { $0.value > 0 && UInt64($0.value) & f == UInt64($0.value) }
                .map { String($0.name.dropFirst("SCX_EFLAG_".count)) }
        }
        lateDump(reader: frozenReader, sched: sched, into: &dump)
        func ms(_ d: Duration) -> Double { Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15 }
        dump.timing = DumpTiming(detectedBy: detectedBy, triggerToSettledMillis: ms(tSettled - t0),
                                 triggerToFrozenMillis: ms(tFrozen - t0), frozenToReadMillis: ms(tRead - tFrozen),
                                 totalMillis: ms(clock.now - t0))
        log.info("monitor: captured \(dump.kind) (\(dump.kindValue)): trigger→frozen \(dump.timing?.triggerToFrozenMillis ?? 0) ms, read \(dump.timing?.frozenToReadMillis ?? 0) ms")
        return dump
    }

    private func symbolize(_ bt: [UInt64], ctx: KernelContext, space: KernelAddressSpace, into dump: inout FailureDump) {
        guard !bt.isEmpty else { return }
        var symbolizer: (any Symbolizer)?
        if let g = GuestKallsyms(symbols: ctx.symbols, space: space) {
            symbolizer = g
            dump.symbolSource = "guest kallsyms tables"
        } else if let map = options.systemMap {
            symbolizer = KernelSymbols(systemMap: map)
            dump.symbolSource = "System.map"
        } else {
            dump.problems.append("backtrace not symbolized: the kernel's kallsyms tables were not found (symbols \(GuestKallsyms.symbolNames.joined(separator: ", ")))")
        }
        let bpf = BPFKallsyms(head: ctx.symbols["bpf_kallsyms"], btf: ctx.btf, space: space)
        dump.backtrace = bt.map { BacktraceFrame(address: $0, symbol: symbolizer?.symbolize($0) ?? bpf?.symbolize($0)) }
        if let bpf, bt.contains(where: { bpf.symbolize($0) != nil }) {
            dump.symbolSource = (dump.symbolSource.map { $0 + " + " } ?? "") + "bpf_kallsyms (BPF programs)"
        }
    }

    /// The kernel writes `exit_info->dump` from an irq_work right after the exit; when the
    /// freeze came first, wait (bounded) for the text to end with its event counters and settle.
    private func lateDump(reader: ScxReader, sched: UInt64, into dump: inout FailureDump) {
        func complete(_ s: String?) -> Bool { s?.contains("Event counters") == true }
        guard !complete(dump.schedulerDump), let ei = reader.exitInfoPointer(sched: sched) else { return }
        let clock = ContinuousClock()
        let deadline = clock.now + options.lateDumpTimeout
        var scratch = FailureDump(kind: dump.kind, kindValue: dump.kindValue)
        var previous: String?
        while clock.now < deadline {
            let text = reader.readDumpText(exitInfo: ei, into: &scratch)
            if complete(text), text == previous {
                dump.schedulerDump = text
                dump.schedulerDumpAfterThaw = true
                return
            }
            previous = text
            if stopping { break } // the VM is gone: its RAM holds the final text already
            Thread.sleep(forTimeInterval: 0.02)
        }
        if let previous, !previous.isEmpty {
            dump.schedulerDump = previous
            dump.schedulerDumpAfterThaw = true
            dump.problems.append("the kernel's dump text was still incomplete \(options.lateDumpTimeout) after the thaw")
        } else if dump.schedulerDump == nil {
            dump.problems.append("the kernel wrote no dump text (exit_info->dump empty) within \(options.lateDumpTimeout)")
        }
    }
}
