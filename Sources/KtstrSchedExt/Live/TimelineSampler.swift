import Foundation
import Synchronization
import KtstrMachine
import KtstrProtocol

/// Offsets the sampler needs beyond `ScxLayout`, from BTF: the scheduler's per-CPU event
/// counters and its DSQ hash table. Each part is optional (nil: this kernel lacks it).
struct SamplerLayout: Sendable {
    struct Events: Sendable {
        /// `scx_sched.pcpu` (a `__percpu` pointer) and `scx_sched_pcpu.event_stats`.
        let schedPCPU: Int, eventStats: Int, size: Int
        /// `struct scx_event_stats` members (s64 each), by BTF name.
        let fields: [(name: String, offset: Int)]
    }

    struct DSQHash: Sendable {
        /// `scx_sched.dsq_hash.tbl` → `struct bucket_table` {size, nest, buckets[]}.
        let table: Int, size: Int, nest: Int, buckets: Int
        /// `struct scx_dispatch_q`: hash_node (the chain link), nr, id.
        let node: Int, nr: Int, id: Int
    }

    let events: Events?
    let dsqs: DSQHash?
    var problems: [String] = []

    init(btf: BTF) {
        var problems: [String] = []
        do {
            let sid = try btf.compositeID(named: "scx_event_stats").orThrow("struct scx_event_stats")
            let t = try btf.type(sid).orThrow("struct scx_event_stats")
            var fields: [(String, Int)] = []
            for m in t.members where m.nameOffset != 0 && m.bitfieldSize == 0 && m.bitOffset % 8 == 0 {
                guard (try? btf.size(of: m.type)) == 8 else { continue }
                fields.append((btf.string(at: m.nameOffset), Int(m.bitOffset / 8)))
            }
            events = Events(schedPCPU: try btf.offset(of: "pcpu", in: "scx_sched"),
                            eventStats: try btf.offset(of: "event_stats", in: "scx_sched_pcpu"),
                            size: Int(t.sizeOrType), fields: fields)
        } catch {
            events = nil
            problems.append("event counters not read: \(error)")
        }
        do {
            dsqs = DSQHash(table: try btf.offset(of: "dsq_hash.tbl", in: "scx_sched"),
                           size: try btf.offset(of: "size", in: "bucket_table"),
                           nest: try btf.offset(of: "nest", in: "bucket_table"),
                           buckets: try btf.offset(of: "buckets", in: "bucket_table"),
                           node: try btf.offset(of: "hash_node", in: "scx_dispatch_q"),
                           nr: try btf.offset(of: "nr", in: "scx_dispatch_q"),
                           id: try btf.offset(of: "id", in: "scx_dispatch_q"))
        } catch {
            dsqs = nil
            problems.append("DSQ depths not read: \(error)")
        }
        self.problems = problems
    }
}

private extension Optional {
    func orThrow(_ what: String) throws(BTFError) -> Wrapped {
        guard let v = self else { throw .noSuchType(what) }
        return v
    }
}

/// Samples a running guest's scheduler state from guest RAM every `intervalMillis`, without
/// freezing it (issue 13): per CPU the runqueue counters, current task, rq clock and the
/// oldest runnable task's wait; the scheduler's user DSQ depths (its `dsq_hash`) and event
/// counters (summed over CPUs). Runs on its own thread, takes no lock the failure monitor
/// holds, and keeps sampling (harmlessly) while the monitor has the guest frozen.
///
/// Feeds a `StallDetector`: a stall the host sees is a `HostStall` and a `host_stall` marker.
/// The scheduler's exit is marked when the sampler sees it in memory (`exit_kind` set, or
/// `scx_root` gone) or when `mark` is told (the agent's report), whichever comes first.
public final class TimelineSampler: @unchecked Sendable {
    public struct Options: Sendable {
        /// Sampling period; at least `minimumIntervalMillis`.
        public var intervalMillis = 100
        /// A task runnable this long, or a CPU clock this far behind with tasks runnable, is a stall.
        public var stallThresholdMillis = 2000
        /// The guest's CONFIG_HZ (jiffies → ms); nil: estimated from jiffies against the host clock.
        public var hz: Int?
        /// The full timeline keeps at most this many samples (thinned by halves beyond it).
        public var maxSamples = 36_000
        /// Runnable-list entries read per CPU per sample.
        public var runnablePerCPU = 8
        /// How long to wait at start for the kernel's BTF (the failure monitor parses it).
        public var setupTimeout: Duration = .seconds(20)
        public init() {}
    }

    public static let minimumIntervalMillis = 10
    static let maxDSQs = 1024
    static let maxBuckets = 1 << 16

    private struct State {
        var origin: ContinuousClock.Instant?
        var stop = false
        var samples: [TimelineSample] = []
        var stride = 1, counter = 0, dropped = 0
        var markers: [(at: ContinuousClock.Instant, marker: TimelineMarker)] = []
        var samplingNanos: Int64 = 0
        var stalls: [HostStall] = []
        var problems: [String] = []
    }

    let log: Log
    public let options: Options
    private let state = Mutex(State())
    private let done = DispatchSemaphore(value: 0)
    private let wake = DispatchSemaphore(value: 0)
    private let started = Mutex(false)

    public init(log: Log = .default, options: Options = Options()) {
        var o = options
        o.intervalMillis = max(Self.minimumIntervalMillis, o.intervalMillis)
        self.log = log; self.options = o
    }

    /// Begin sampling (at the agent's hello). `cpus`: the guest's possible CPUs.
    public func start(machine: any Machine, kallsyms: [String: UInt64], vmlinux: String?, cpus: Int) {
        let first = started.withLock { s -> Bool in defer { s = true }; return !s }
        guard first else { return }
        state.withLock { $0.origin = .now }
        let t = Thread { [self] in
            defer { done.signal() }
            run(machine: machine, symbols: kallsyms, vmlinux: vmlinux, cpus: max(1, min(cpus, 4096)))
        }
        t.name = "ktstr-sampler"
        t.start()
    }

    /// A marker at this moment (the agent's messages: scheduler enabled, its exit).
    /// `onlyFirst`: dropped when a marker of this kind exists already.
    public func mark(_ kind: TimelineMarker.Kind, _ label: String, cpu: Int? = nil, onlyFirst: Bool = false) {
        let now = ContinuousClock.now
        state.withLock { s in
            if onlyFirst, s.markers.contains(where: { $0.marker.kind == kind }) { return }
            guard s.markers.count < 1000 else { return }
            s.markers.append((now, TimelineMarker(millis: 0, kind: kind, label: label, cpu: cpu)))
        }
    }

    /// Stops sampling (call it as soon as the VM is gone: stale RAM is not the guest) and
    /// returns the full timeline and the stalls seen; nil when sampling never started.
    public func finish() -> (timeline: Timeline, stalls: [HostStall])? {
        state.withLock { $0.stop = true }
        wake.signal()
        guard started.withLock({ $0 }) else { return nil }
        if done.wait(timeout: .now() + .seconds(10)) == .timedOut {
            log.warning("sampler: thread did not stop within 10 s; returning what it has")
        } else {
            done.signal()
        }
        return state.withLock { s in
            let origin = s.origin ?? .now
            var markers = s.markers.map { m -> TimelineMarker in
                var x = m.marker
                x.millis = max(0, Self.millis(m.at - origin))
                return x
            }
            markers.sort { $0.millis < $1.millis }
            let timeline = Timeline(intervalMillis: options.intervalMillis, samples: s.samples, markers: markers,
                                    droppedSamples: s.dropped, samplingMillis: Double(s.samplingNanos) / 1e6,
                                    problems: s.problems.isEmpty ? nil : s.problems)
            return (timeline, s.stalls)
        }
    }

    private var stopping: Bool { state.withLock { $0.stop } }

    private func note(_ problem: String) {
        state.withLock { s in if s.problems.count < 20, !s.problems.contains(problem) { s.problems.append(problem) } }
    }

    private func run(machine: any Machine, symbols: [String: UInt64], vmlinux: String?, cpus: Int) {
        // The failure monitor parses the BTF (pausing the guest when it must); the sampler
        // only takes it from the cache (or the vmlinux), never parses guest BTF itself.
        var ctx: KernelContext?
        let deadline = ContinuousClock.now + options.setupTimeout
        var lastError = ""
        while ctx == nil, !stopping, ContinuousClock.now < deadline {
            do { ctx = try KernelContext.resolve(memory: machine.guestMemory, symbols: symbols, vmlinux: vmlinux, log: log) { _ in } }
            catch { lastError = "\(error)"; _ = wake.wait(timeout: .now() + .milliseconds(100)) }
        }
        guard let ctx else {
            if !stopping || !lastError.isEmpty { note("sampler could not start: \(lastError.isEmpty ? "stopped before setup" : lastError)") }
            return
        }
        guard let P = ctx.layout.perCPU, let rqs = symbols["runqueues"], let offsetsSym = symbols["__per_cpu_offset"] else {
            note(ctx.layout.perCPUProblem ?? "sampler: runqueues or __per_cpu_offset missing from the agent's symbols")
            return
        }
        let reader = ScxReader(space: ctx.space, layout: ctx.layout, symbols: symbols)
        let extra = SamplerLayout(btf: ctx.btf)
        for p in extra.problems { note(p) }
        var offsets: [UInt64] = []
        for cpu in 0..<cpus {
            guard let o = try? ctx.space.readPointer(at: offsetsSym &+ UInt64(cpu * 8)) else {
                note("sampler: __per_cpu_offset[\(cpu)] unreadable; sampling \(cpu) CPUs"); break
            }
            offsets.append(o)
        }
        let space = ctx.space
        let jiffiesSym = symbols["jiffies"]
        var detector = StallDetector(thresholdMillis: options.stallThresholdMillis)
        var hz = options.hz
        let firstJiffies = jiffiesSym.flatMap { try? space.read(UInt64.self, at: $0) }
        let setupAt = ContinuousClock.now
        var lastSched: UInt64?
        var exitMarked = false
        let origin = state.withLock { $0.origin } ?? .now
        let interval = Duration.milliseconds(options.intervalMillis)
        var next = ContinuousClock.now
        log.debug("sampler: \(offsets.count) CPUs every \(options.intervalMillis) ms (setup \(ContinuousClock.now - origin))")

        while !stopping {
            let t0 = ContinuousClock.now
            let millis = Self.millis(t0 - origin)
            let jiffies = jiffiesSym.flatMap { try? space.read(UInt64.self, at: $0) }
            if hz == nil, let j0 = firstJiffies, let j = jiffies, t0 - setupAt >= .seconds(1) {
                hz = Self.roundHZ(Double(j &- j0) / Self.seconds(t0 - setupAt))
                log.debug("sampler: CONFIG_HZ unknown; estimated \(hz.map(String.init) ?? "?")")
            }
            var cpuSamples: [CPUSample] = []
            cpuSamples.reserveCapacity(offsets.count)
            for (cpu, off) in offsets.enumerated() {
                let rq = rqs &+ off
                var c = CPUSample(nrRunning: 0, scxNrRunning: 0, localDSQDepth: 0, currentPID: nil, currentComm: nil, rqClock: 0)
                do {
                    let st = try reader.readRunqueue(at: rq, cpu: cpu, P)
                    c = CPUSample(nrRunning: st.nrRunning ?? 0, scxNrRunning: st.scxNrRunning ?? 0, localDSQDepth: st.localDSQDepth ?? 0,
                                  currentPID: st.currentPID, currentComm: st.currentComm, rqClock: st.rqClock ?? 0)
                } catch {
                    note("cpu \(cpu) runqueue: \(error)")
                }
                if let R = P.runnableList, let j = jiffies, let hz,
                   let listed = try? reader.runnableTasks(head: rq &+ UInt64(R.rqHead), R, P, limit: options.runnablePerCPU),
                   case let tasks = listed.filter({ Self.plausible($0, hz: hz) }),
                   let oldest = tasks.max(by: { Self.wait(j, $0.runnableAt) < Self.wait(j, $1.runnableAt) }) {
                    let w = Self.wait(j, oldest.runnableAt)
                    c.oldestRunnable = RunnableWait(pid: oldest.pid, comm: oldest.comm, waitMillis: Int(min(w, 1 << 40) * 1000 / Int64(hz)))
                }
                cpuSamples.append(c)
            }
            var sample = TimelineSample(millis: millis, cpus: cpuSamples)
            // The scheduler: event counters, DSQ depths, and whether it is (still) running.
            let sched = (try? reader.schedPointer()) ?? nil
            var active = false
            if let sched {
                sample.events = readEvents(sched: sched, space: space, layout: extra.events, offsets: offsets)
                sample.dsqDepths = readDSQDepths(sched: sched, space: space, layout: extra.dsqs)
                let kind = (try? reader.exitKind(sched: sched)) ?? 0
                active = kind == ExitKind.none.value
                if !active, !exitMarked {
                    var k = kind
                    if k == ExitKind.done.value, let recorded = try? reader.exitInfoKind(sched: sched), recorded != 0 { k = recorded }
                    mark(.schedulerExit, ctx.layout.kindName(k).name, onlyFirst: true)
                    exitMarked = true
                }
            } else if let gone = lastSched, !exitMarked {
                // Gone between two samples: its scx_sched is freed only after an RCU grace
                // period, so its exit record usually still names the kind.
                mark(.schedulerExit, Self.exitLabel(reader, gone), onlyFirst: true)
                exitMarked = true
            }
            if sched != nil, sched != lastSched, lastSched != nil { exitMarked = false } // a new scheduler
            lastSched = sched
            let stalls = detector.observe(sample, active: active)
            let cost = ContinuousClock.now - t0
            state.withLock { s in
                s.samplingNanos += Int64(cost.components.seconds) * 1_000_000_000 + cost.components.attoseconds / 1_000_000_000
                s.counter += 1
                if s.counter % s.stride == 0 {
                    s.samples.append(sample)
                    if s.samples.count > options.maxSamples {
                        let before = s.samples.count
                        s.samples = s.samples.enumerated().filter { $0.offset % 2 == 0 }.map(\.element)
                        s.dropped += before - s.samples.count
                        s.stride *= 2
                    }
                } else {
                    s.dropped += 1
                }
                s.stalls += stalls
            }
            for st in stalls {
                log.info("sampler: host stall: \(st.summary)")
                mark(.hostStall, st.summary, cpu: st.cpu)
            }
            next += interval
            let now = ContinuousClock.now
            if next < now { next = now } // fell behind (a loaded host): no burst to catch up
            let wait = next - now
            _ = wake.wait(timeout: .now() + .microseconds(Int(wait.components.seconds) * 1_000_000 + Int(wait.components.attoseconds / 1_000_000_000_000)))
        }
    }

    /// The kind a scheduler that is gone exited with, if its record is still readable and names
    /// a kind the kernel's enum knows; else "scheduler detached".
    static func exitLabel(_ reader: ScxReader, _ sched: UInt64) -> String {
        var kind = (try? reader.exitKind(sched: sched)) ?? 0
        if kind == ExitKind.done.value { kind = (try? reader.exitInfoKind(sched: sched)) ?? 0 }
        let names = reader.layout.exitKindNames
        guard kind != 0, kind != ExitKind.done.value, names.isEmpty || names[Int64(kind)] != nil else { return "scheduler detached" }
        return reader.layout.kindName(kind).name
    }

    /// `scx_sched->pcpu`'s `event_stats`, summed over CPUs; nil when unreadable.
    private func readEvents(sched: UInt64, space: KernelAddressSpace, layout: SamplerLayout.Events?, offsets: [UInt64]) -> [String: Int64]? {
        guard let E = layout, E.size > 0, E.size <= 4096,
              let pcpu = try? space.readPointer(at: sched &+ UInt64(E.schedPCPU)), pcpu != 0 else { return nil }
        var sums = [Int64](repeating: 0, count: E.fields.count)
        for off in offsets {
            guard let bytes = try? space.readBytes(at: pcpu &+ off &+ UInt64(E.eventStats), count: E.size) else { return nil }
            for (i, f) in E.fields.enumerated() where f.offset + 8 <= bytes.count {
                var v: UInt64 = 0
                for b in bytes[f.offset..<f.offset + 8].reversed() { v = v << 8 | UInt64(b) }
                sums[i] = sums[i] &+ Int64(bitPattern: v)
            }
        }
        var out: [String: Int64] = [:]
        for (i, f) in E.fields.enumerated() { out[f.name] = sums[i] }
        return out
    }

    /// Walks `scx_sched->dsq_hash` (an rhashtable: bucket heads with the lock in bit 0,
    /// chains ending in an odd "nulls" marker): DSQ id → `nr`. nil when the table is being
    /// resized into a nested one or is unreadable; a rehash in flight may hide a DSQ once.
    private func readDSQDepths(sched: UInt64, space: KernelAddressSpace, layout: SamplerLayout.DSQHash?) -> [String: Int]? {
        guard let H = layout, let tbl = try? space.readPointer(at: sched &+ UInt64(H.table)), tbl != 0,
              let size = try? space.read(UInt32.self, at: tbl &+ UInt64(H.size)),
              let nest = try? space.read(UInt32.self, at: tbl &+ UInt64(H.nest)),
              nest == 0, size > 0, Int(size) <= Self.maxBuckets,
              let raw = try? space.readBytes(at: tbl &+ UInt64(H.buckets), count: Int(size) * 8) else { return nil }
        var out: [String: Int] = [:]
        var visited = 0
        for b in 0..<Int(size) {
            var p: UInt64 = 0
            for byte in raw[b * 8..<b * 8 + 8].reversed() { p = p << 8 | UInt64(byte) }
            p &= ~1 // the bucket lock bit
            while p != 0, p & 1 == 0 {
                visited += 1
                guard visited <= Self.maxDSQs else { return out }
                let dsq = p &- UInt64(H.node)
                guard let id = try? space.read(UInt64.self, at: dsq &+ UInt64(H.id)),
                      let nr = try? space.read(UInt32.self, at: dsq &+ UInt64(H.nr)),
                      let nextP = try? space.readPointer(at: p) else { return nil }
                out[String(id)] = Int(nr)
                p = nextP
            }
        }
        return out
    }

    /// A runnable-list entry read without freezing can be torn (the task left the list while
    /// it was read): pid 0 (the idle task is never listed) or a runnable_at before the kernel's
    /// first jiffy (`INITIAL_JIFFIES`, `(unsigned int)(-300 * HZ)` on 64-bit) — which made a
    /// 2^40-jiffy "stall" once, under scx_simple with fan_out workers. Such entries are skipped.
    static func plausible(_ t: RunnableTask, hz: Int) -> Bool {
        let initialJiffies = UInt64(UInt32(truncatingIfNeeded: -300 * Int64(hz)))
        return t.pid > 0 && t.runnableAt >= initialJiffies
    }

    /// Ticks `jiffies - runnable_at`, 0 when runnable_at is ahead (a torn read).
    static func wait(_ jiffies: UInt64, _ runnableAt: UInt64) -> Int64 {
        max(0, Int64(bitPattern: jiffies &- runnableAt))
    }

    static func roundHZ(_ rate: Double) -> Int? {
        guard rate.isFinite, rate > 10 else { return nil }
        return [100, 250, 300, 1000].min { abs(Double($0) - rate) < abs(Double($1) - rate) }
    }

    /// `CONFIG_HZ=` of a kernel config file; nil when unknown.
    public static func hz(kernelConfig path: String?) -> Int? {
        guard let path, let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("CONFIG_HZ=") {
            if let v = Int(line.dropFirst("CONFIG_HZ=".count)), v > 0, v <= 10_000 { return v }
        }
        return nil
    }

    static func millis(_ d: Duration) -> Int {
        Int(d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000)
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }
}
