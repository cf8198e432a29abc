import Foundation
import Synchronization
import KtstrMachine
import KtstrSchedExt
import KtstrProtocol

/// What a run does with the live guest besides the workload (docs/PROTOCOLS.md "Live handle").
public struct LiveOptions: Sendable {
    /// Overrides the kernel's sched_ext watchdog timeout once the scheduler enabled
    /// (`WatchdogOverride`).
    public var watchdogTimeout: Duration?
    /// Runs concurrently with the workload, once the scheduler enabled, with a handle on the
    /// live guest. An error it throws becomes a `live_handle` problem of the outcome.
    public var during: (@Sendable (LiveVM) async throws -> Void)?
    /// Longest wait, from the VM's start, for the monitor's kernel context and `sched_enabled`.
    public var readyTimeout: Duration = .seconds(120)

    public init(watchdogTimeout: Duration? = nil, during: (@Sendable (LiveVM) async throws -> Void)? = nil) {
        self.watchdogTimeout = watchdogTimeout; self.during = during
    }

    var isEmpty: Bool { watchdogTimeout == nil && during == nil }
}

/// A handle on a running guest, given to a `during:` closure once the scheduler is enabled:
/// read and write the scheduler's BPF maps in guest RAM while the workload runs.
///
/// ```swift
/// try await Ktstr.run(scheduler: .fault(), during: { vm in
///     try await vm.sleep(.seconds(1))
///     try vm.bpf("ktstr_fa.bss").set("ktstr_knob_error_now", 1)
/// })
/// ```
public final class LiveVM: Sendable {
    let bpfState: LiveBPF
    /// Host instants: the VM's start and the agent's `sched_enabled`.
    public let startedAt: ContinuousClock.Instant
    public let enabledAt: ContinuousClock.Instant

    init(bpf: LiveBPF, startedAt: ContinuousClock.Instant, enabledAt: ContinuousClock.Instant) {
        self.bpfState = bpf; self.startedAt = startedAt; self.enabledAt = enabledAt
    }

    /// Sleeps on the host clock (the guest keeps running).
    public func sleep(_ duration: Duration) async throws { try await Task.sleep(for: duration) }

    /// Host milliseconds since the scheduler enabled.
    public var millisSinceEnabled: Int { SchedulerRun.millis(ContinuousClock.now - enabledAt) }

    /// The loaded map called `name` (`"ktstr_fa.bss"`, or a suffix: `".bss"`); every write
    /// through it is recorded in `RunOutcome.bpfWrites`.
    public func bpf(_ name: String) throws -> LiveBPFMap { try bpfState.map(named: name) }

    /// Headers of every loaded map.
    public func maps() throws -> [BPFMapDump] { try bpfState.maps() }
}

/// The writes of one run, kept outside the closure so they survive its errors.
final class BPFWriteLog: Sendable {
    private let writes = Mutex<[BPFWrite]>([])
    /// Called with each write as it happens (the sampler puts a marker on the timeline).
    let onWrite: @Sendable (BPFWrite) -> Void
    init(onWrite: @escaping @Sendable (BPFWrite) -> Void = { _ in }) { self.onWrite = onWrite }
    func append(_ w: BPFWrite) {
        writes.withLock { if $0.count < 10_000 { $0.append(w) } }
        onWrite(w)
    }
    var all: [BPFWrite] { writes.withLock { $0 } }
}

extension SchedulerRun {
    /// Waits for the kernel context and `sched_enabled`, starts the watchdog override, runs
    /// the `during:` closure. Returns problems (one line each).
    static func runLive(_ live: LiveOptions, monitor: FailureMonitor, collector: RunCollector, cpuCount: Int,
                        started: ContinuousClock.Instant, writes: BPFWriteLog, watchdog: WatchdogBox, log: Log) async -> [String] {
        guard let ctx = await monitor.waitForContext(timeout: live.readyTimeout) else {
            return ["the guest kernel context never became ready: \(monitor.setupProblem ?? "no hello from the agent in time")"]
        }
        let deadline = started + live.readyTimeout
        var enabledAt: ContinuousClock.Instant?
        while ContinuousClock.now < deadline, !Task.isCancelled {
            let s = collector.liveState
            if let e = s.enabledAt { enabledAt = e; break }
            if s.finished { break }
            try? await Task.sleep(for: .milliseconds(10))
        }
        guard let enabledAt else { return ["the scheduler never reported sched_enabled; nothing live was run"] }
        var problems: [String] = []
        if let t = live.watchdogTimeout {
            let w = WatchdogOverride(timeout: t, context: ctx, cpuCount: cpuCount, log: log)
            watchdog.set(w)
            w.start()
        }
        guard let during = live.during else { return problems }
        do {
            let bpf = try LiveBPF(context: ctx, cpuCount: cpuCount) { w in
                var r = w
                let now = ContinuousClock.now
                r.millis = millis(now - started)
                r.millisAfterEnabled = millis(now - enabledAt)
                writes.append(r)
                log.info("live: \(r.map).\(r.target) \(r.old) -> \(r.new) at +\(r.millisAfterEnabled ?? 0) ms after enable")
                return r
            }
            try await during(LiveVM(bpf: bpf, startedAt: started, enabledAt: enabledAt))
        } catch is CancellationError {
            problems.append("the run ended before the during: closure finished")
        } catch {
            problems.append("during: \(error)")
        }
        return problems
    }
}

/// The watchdog override of a run, once started (stopped and reported after the VM is gone).
final class WatchdogBox: Sendable {
    private let value = Mutex<WatchdogOverride?>(nil)
    func set(_ w: WatchdogOverride) { value.withLock { $0 = w } }
    func finish() -> WatchdogOverride.Report? {
        guard let w = value.withLock({ $0 }) else { return nil }
        w.stop()
        return w.report
    }
}

/// `ktstr run --bpf-set 'MAP.VAR=VALUE@SECONDS'`: write integer global VAR of map MAP (its
/// kernel name, e.g. `ktstr_fa.bss`; a suffix such as `.bss` works too) SECONDS after the
/// scheduler enabled.
public struct BPFSetSpec: Sendable, Equatable {
    public var map: String
    public var variable: String
    public var value: Int64
    public var seconds: Double

    public init(map: String, variable: String, value: Int64, seconds: Double) {
        self.map = map; self.variable = variable; self.value = value; self.seconds = seconds
    }

    /// Parses `MAP.VAR=VALUE@SECONDS` (VALUE decimal or 0x hex, may be negative; `@SECONDS`
    /// optional, default 0). The map name may contain dots; the variable is after the last one.
    public init(parsing text: String) throws(LiveBPFError) {
        func bad(_ why: String) -> LiveBPFError { .unavailable("--bpf-set '\(text)': \(why) (want MAP.VAR=VALUE@SECONDS)") }
        var rest = Substring(text)
        var secs = 0.0
        if let at = rest.lastIndex(of: "@") {
            guard let s = Double(rest[rest.index(after: at)...]), s.isFinite, s >= 0, s <= 3600 else { throw bad("seconds must be 0...3600") }
            secs = s
            rest = rest[..<at]
        }
        guard let eq = rest.firstIndex(of: "=") else { throw bad("no '='") }
        let target = rest[..<eq], valueText = rest[rest.index(after: eq)...].trimmingCharacters(in: .whitespaces)
        guard let dot = target.lastIndex(of: "."), dot != target.startIndex, target.index(after: dot) != target.endIndex else {
            throw bad("no MAP.VAR before '='")
        }
        let negative = valueText.hasPrefix("-")
        let digits = negative ? String(valueText.dropFirst()) : valueText
        let magnitude = digits.lowercased().hasPrefix("0x") ? UInt64(digits.dropFirst(2), radix: 16) : UInt64(digits)
        guard let m = magnitude else { throw bad("VALUE '\(valueText)' is not an integer") }
        let value: Int64
        if negative {
            guard m <= UInt64(Int64.max) + 1 else { throw bad("VALUE out of range") }
            value = m == UInt64(Int64.max) + 1 ? Int64.min : -Int64(m)
        } else {
            value = Int64(bitPattern: m) // 0xffff_ffff_ffff_ffff is -1 as an unsigned 64-bit write
            guard Int64(bitPattern: m) >= 0 || digits.lowercased().hasPrefix("0x") else { throw bad("VALUE out of range") }
        }
        self.init(map: String(target[..<dot]), variable: String(target[target.index(after: dot)...]), value: value, seconds: secs)
    }

    /// A `during:` closure that performs `specs` in time order, each at its moment after the
    /// scheduler enabled.
    public static func during(_ specs: [BPFSetSpec]) -> @Sendable (LiveVM) async throws -> Void {
        let ordered = specs.sorted { $0.seconds < $1.seconds }
        return { vm in
            for s in ordered {
                let due = vm.enabledAt + .milliseconds(Int(s.seconds * 1000))
                if ContinuousClock.now < due { try await Task.sleep(until: due, clock: .continuous) }
                try vm.bpf(s.map).set(s.variable, s.value)
            }
        }
    }
}
