import Foundation
import Synchronization
import KtstrMachine
import KtstrProtocol

/// Shortens (or lengthens) a running scheduler's sched_ext watchdog timeout by writing the
/// kernel's own variables in guest RAM.
///
/// Where the timeout lives (kernel/sched/ext.c): since 7.1 `scx_sched.watchdog_timeout`
/// (jiffies, from `ops.timeout_ms`, 30 s when 0), with the shared watchdog work's period in
/// `scx_watchdog_interval` (half the shortest timeout); before, the `scx_watchdog_timeout`
/// global. Three things read them:
/// - the watchdog work (`scx_watchdog_workfn`) flags a task runnable for longer than the
///   timeout ("<comm>[pid] failed to run for N s"), then re-queues itself after the interval;
/// - `scx_tick` flags the work itself when `scx_watchdog_timestamp` (stored by each run of the
///   work) is older than the timeout ("watchdog failed to check in for N s").
///
/// The work already queued at enable time still runs after the old interval (timeout / 2:
/// 15 s for the default 30 s): memory writes cannot move a pending timer. Until it has run
/// once and re-queued at the new interval, the host bridges: it stores the current jiffies in
/// `scx_watchdog_timestamp` (so `scx_tick` does not blame the work for the old interval) and
/// checks each CPU's runnable list itself; when a task has been runnable longer than the new
/// timeout it stops and sets the timestamp to just past the timeout, and the kernel's own
/// `scx_tick` ends the scheduler with `error_stall` ("watchdog failed to check in for ~N s").
/// The bridge ends as soon as the work stores a timestamp of its own, and after the old
/// timeout at the latest.
public final class WatchdogOverride: @unchecked Sendable {
    public let timeout: Duration
    let context: KernelContext
    let cpuCount: Int
    let log: Log
    private let state = Mutex(Report())
    private let stopFlag = Atomic<Bool>(false)
    private let done = DispatchSemaphore(value: 0)
    private let pollMicros = 20_000

    /// What the override did, for the run's outcome.
    public struct Report: Codable, Sendable, Equatable {
        /// Jiffies written, the guest's HZ (derived from its own timeout and `ops.timeout_ms`).
        public var jiffies: UInt64?
        public var hz: Int?
        /// The scheduler's own timeout before the write, in jiffies.
        public var originalJiffies: UInt64?
        /// Schedulers (scx_sched) it was applied to.
        public var applied = 0
        /// How the host bridge ended: "kernel watchdog took over", "stalled task: …", "old timeout passed".
        public var bridge: String?
        public var problems: [String] = []
    }

    public init(timeout: Duration, context: KernelContext, cpuCount: Int, log: Log = .default) {
        self.timeout = timeout; self.context = context; self.cpuCount = cpuCount; self.log = log
    }

    public var report: Report { state.withLock { $0 } }

    /// Starts watching `scx_root` on its own thread; applies to each scheduler it sees.
    public func start() {
        let t = Thread { [self] in
            defer { done.signal() }
            loop()
        }
        t.name = "ktstr-watchdog-override"
        t.start()
    }

    public func stop() {
        stopFlag.store(true, ordering: .relaxed)
        _ = done.wait(timeout: .now() + .seconds(5))
    }

    private func note(_ s: String) {
        log.warning("watchdog override: \(s)")
        state.withLock { if $0.problems.count < 16 { $0.problems.append(s) } }
    }

    static func nearestHZ(_ raw: Double) -> Int {
        [100, 250, 300, 1000].min { abs(Double($0) - raw) < abs(Double($1) - raw) } ?? 250
    }

    private func loop() {
        let ctx = context
        let L = ctx.layout
        let space = ctx.space
        let reader = ScxReader(space: space, layout: L, symbols: ctx.symbols)
        guard let jiffiesSym = ctx.symbols["jiffies"] else { return note("the agent did not report jiffies") }
        let timestampSym = ctx.symbols["scx_watchdog_timestamp"]
        let intervalSym = ctx.symbols["scx_watchdog_interval"]
        let globalTimeout = ctx.symbols["scx_watchdog_timeout"]
        guard L.schedWatchdogTimeout != nil || globalTimeout != nil else {
            return note("neither scx_sched.watchdog_timeout (BTF) nor scx_watchdog_timeout (kallsyms) found")
        }
        let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
        var appliedTo: UInt64 = 0
        // Bridge state for the scheduler last applied to.
        var bridging = false
        var lastForged: UInt64?
        var bridgeStart: UInt64 = 0
        var bridgeLimit: UInt64 = 0
        var newJiffies: UInt64 = 0
        while !stopFlag.load(ordering: .relaxed) {
            defer { usleep(UInt32(pollMicros)) }
            guard let sched = try? reader.schedPointer() else { bridging = false; continue }
            guard let now = try? space.read(UInt64.self, at: jiffiesSym) else { continue }
            if sched != appliedTo {
                // A new scheduler: derive HZ from its own timeout, then write ours.
                let target = L.schedWatchdogTimeout.map { sched &+ UInt64($0) } ?? globalTimeout!
                guard let orig = try? space.read(UInt64.self, at: target), orig > 0 else { continue }
                let ms = L.schedOpsTimeoutMS.flatMap { try? space.read(UInt32.self, at: sched &+ UInt64($0)) } ?? 0
                let hz = Self.nearestHZ(Double(orig) * 1000 / Double(ms > 0 ? ms : 30_000))
                newJiffies = max(1, UInt64((seconds * Double(hz)).rounded(.up)))
                do {
                    try space.write(newJiffies, at: target)
                    if let i = intervalSym { try space.write(max(1, newJiffies / 2), at: i) }
                    if let t = timestampSym { try space.write(now, at: t) }
                } catch {
                    note("write failed: \(error)")
                    appliedTo = sched
                    continue
                }
                appliedTo = sched
                log.info("watchdog override: \(orig) -> \(newJiffies) jiffies (HZ \(hz)) on scx_sched 0x\(String(sched, radix: 16))")
                state.withLock { $0.jiffies = newJiffies; $0.hz = hz; $0.originalJiffies = orig; $0.applied += 1 }
                bridging = timestampSym != nil && newJiffies < orig
                lastForged = timestampSym != nil ? now : nil
                bridgeStart = now
                bridgeLimit = orig + UInt64(hz)
                continue
            }
            guard bridging, let ts = timestampSym else { continue }
            guard let cur = try? space.read(UInt64.self, at: ts) else { continue }
            if let f = lastForged, cur != f {
                bridging = false
                state.withLock { $0.bridge = "kernel watchdog took over" }
                continue
            }
            if now &- bridgeStart > bridgeLimit {
                bridging = false
                state.withLock { $0.bridge = "old timeout passed" }
                continue
            }
            if let stalled = oldestRunnable(reader), now &- stalled.runnableAt > newJiffies {
                // Let the kernel's scx_tick fire: the work has "not checked in" for the timeout.
                try? space.write(now &- newJiffies &- 1, at: ts)
                bridging = false
                state.withLock { $0.bridge = "stalled task: \(stalled.comm)[\(stalled.pid)] runnable for \(now &- stalled.runnableAt) jiffies" }
                continue
            }
            if (try? space.write(now, at: ts)) != nil { lastForged = now }
        }
    }

    /// The task that has been runnable longest, over all CPUs.
    private func oldestRunnable(_ reader: ScxReader) -> RunnableTask? {
        var scratch = FailureDump(kind: ExitKind("none"), kindValue: 0)
        reader.readCPUs(count: cpuCount, into: &scratch)
        return scratch.cpus.flatMap { $0.runnable ?? [] }.min { $0.runnableAt < $1.runnableAt }
    }
}
