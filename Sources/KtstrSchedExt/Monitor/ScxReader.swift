import KtstrMachine
import KtstrProtocol

/// Reads sched_ext state out of guest RAM: `scx_root` → `struct scx_sched` → exit kind and
/// `struct scx_exit_info`, and each CPU's `struct rq`. Every pointer comes from the guest and
/// every read is bounded; failures become `problems` entries.
public struct ScxReader: Sendable {
    public static let maxMessage = 1024
    public static let maxDump = 64 * 1024
    public static let maxBacktrace = 64
    public static let maxReason = 256

    public let space: KernelAddressSpace
    public let layout: ScxLayout
    public let symbols: [String: UInt64]

    public init(space: KernelAddressSpace, layout: ScxLayout, symbols: [String: UInt64]) {
        self.space = space; self.layout = layout; self.symbols = symbols
    }

    /// The current root scheduler (`scx_root`), nil while none is attached.
    public func schedPointer() throws(AddressError) -> UInt64? {
        guard let root = symbols["scx_root"] else { throw .unmapped(0, why: "scx_root is not among the known symbols") }
        let p = try space.readPointer(at: root)
        return p == 0 ? nil : p
    }

    /// `atomic_read(&sch->exit_kind)`.
    public func exitKind(sched: UInt64) throws(AddressError) -> Int {
        Int(Int32(bitPattern: try space.readVolatileU32(at: sched &+ UInt64(layout.schedExitKind))))
    }

    /// `sch->exit_info->kind`: the kernel stores it after msg and bt, so once it equals the
    /// claimed exit kind the message and backtrace are complete.
    public func exitInfoKind(sched: UInt64) throws(AddressError) -> Int {
        let ei = try space.readPointer(at: sched &+ UInt64(layout.schedExitInfo))
        return Int(Int32(bitPattern: try space.readVolatileU32(at: ei &+ UInt64(layout.eiKind))))
    }

    /// True once `scx_finish_exit` has stored kind, then reason (exit_cpu follows at once).
    public func exitInfoSettled(sched: UInt64, kind: Int) -> Bool {
        guard (try? exitInfoKind(sched: sched)) == kind,
              let ei = try? space.readPointer(at: sched &+ UInt64(layout.schedExitInfo)),
              let reason = try? space.readPointer(at: ei &+ UInt64(layout.eiReason)) else { return false }
        return reason != 0
    }

    /// The exit record of a scheduler that has exited with `kind` (any kind, clean or error):
    /// `exit_code`, `reason` and `msg`, without the backtrace or dump text. A field that
    /// cannot be read stays unknown (nil code; the table's reason, or "").
    public func readExitRecord(sched: UInt64, kind: Int) -> SchedulerExit {
        let name = layout.kindName(kind)
        var exit = SchedulerExit(kind: name, kindValue: kind, code: nil, reason: ExitKind.table.first { $0.kind == name }?.reason ?? "", message: "",
                                 source: .memory)
        guard let ei = try? space.readPointer(at: sched &+ UInt64(layout.schedExitInfo)), ei != 0 else { return exit }
        exit.code = (try? space.read(UInt64.self, at: ei &+ UInt64(layout.eiExitCode))).map { Int64(bitPattern: $0) }
        if let p = try? space.readPointer(at: ei &+ UInt64(layout.eiReason)), p != 0,
           let r = try? space.readCString(at: p, maxLength: Self.maxReason) { exit.reason = r }
        if let p = try? space.readPointer(at: ei &+ UInt64(layout.eiMsg)), p != 0,
           let m = try? space.readCString(at: p, maxLength: Self.maxMessage) { exit.message = m }
        return exit
    }

    /// Fills the exit fields of `dump` (kind, code, cpu, flags, reason, msg, raw backtrace,
    /// dump text). Returns the backtrace addresses for later symbolization.
    @discardableResult
    public func readExitInfo(sched: UInt64, into dump: inout FailureDump) -> [UInt64] {
        let L = layout
        var problems: [String] = []
        defer { dump.problems += problems }
        if let name = L.schedOpsName {
            note(&problems, "scheduler name") { () throws(AddressError) in
                dump.schedulerName = try space.readCString(at: sched &+ UInt64(name.offset), maxLength: min(name.size, 256))
            }
        }
        let ei: UInt64
        do { ei = try space.readPointer(at: sched &+ UInt64(L.schedExitInfo)) } catch {
            dump.problems.append("scx_sched.exit_info: \(error)")
            return []
        }
        guard ei != 0 else { dump.problems.append("scx_sched.exit_info is NULL"); return [] }
        note(&problems, "exit_info.exit_code") { () throws(AddressError) in dump.exitCode = Int64(bitPattern: try space.read(UInt64.self, at: ei &+ UInt64(L.eiExitCode))) }
        if let off = L.eiExitCPU {
            note(&problems, "exit_info.exit_cpu") { () throws(AddressError) in dump.exitCPU = Int(Int32(bitPattern: try space.read(UInt32.self, at: ei &+ UInt64(off)))) }
        }
        if let off = L.eiFlags {
            note(&problems, "exit_info.flags") { () throws(AddressError) in dump.flags = try space.read(UInt64.self, at: ei &+ UInt64(off)) }
        }
        note(&problems, "exit_info.reason") { () throws(AddressError) in
            let p = try space.readPointer(at: ei &+ UInt64(L.eiReason))
            if p != 0 { dump.reason = try space.readCString(at: p, maxLength: Self.maxReason) }
        }
        note(&problems, "exit_info.msg") { () throws(AddressError) in
            let p = try space.readPointer(at: ei &+ UInt64(L.eiMsg))
            if p != 0 { dump.message = try space.readCString(at: p, maxLength: Self.maxMessage) }
        }
        var bt: [UInt64] = []
        var btLenTooLong: Int?
        note(&problems, "exit_info.bt") { () throws(AddressError) in
            let n = Int(try space.read(UInt32.self, at: ei &+ UInt64(L.eiBTLen)))
            if n > Self.maxBacktrace { btLenTooLong = n }
            let p = try space.readPointer(at: ei &+ UInt64(L.eiBT))
            guard p != 0 else { return }
            for i in 0..<min(n, Self.maxBacktrace) { bt.append(try space.readPointer(at: p &+ UInt64(i * 8))) }
        }
        if let n = btLenTooLong { problems.append("exit_info.bt_len \(n) is larger than \(Self.maxBacktrace): read the first \(Self.maxBacktrace)") }
        dump.backtrace = bt.map { BacktraceFrame(address: $0, symbol: nil) }
        if let text = readDumpText(exitInfo: ei, into: &dump), !text.isEmpty { dump.schedulerDump = text }
        return bt
    }

    /// `exit_info->dump` (NUL-terminated, ≤ 64 KiB); nil when unreadable (problem noted).
    public func readDumpText(exitInfo ei: UInt64, into dump: inout FailureDump) -> String? {
        do {
            let p = try space.readPointer(at: ei &+ UInt64(layout.eiDump))
            return p == 0 ? nil : try space.readCString(at: p, maxLength: Self.maxDump)
        } catch {
            dump.problems.append("exit_info.dump: \(error)")
            return nil
        }
    }

    public func exitInfoPointer(sched: UInt64) -> UInt64? {
        try? space.readPointer(at: sched &+ UInt64(layout.schedExitInfo))
    }

    /// `struct rq` of each CPU: `runqueues + __per_cpu_offset[cpu]`.
    public func readCPUs(count: Int, into dump: inout FailureDump) {
        guard let P = layout.perCPU else {
            if let p = layout.perCPUProblem { dump.problems.append(p) }
            return
        }
        guard let rqs = symbols["runqueues"], let offsets = symbols["__per_cpu_offset"] else {
            dump.problems.append("per-CPU state not read: runqueues or __per_cpu_offset missing from the agent's symbols")
            return
        }
        for cpu in 0..<min(count, 4096) {
            var s = CPUState(cpu: cpu)
            do {
                let rq = try runqueueAddress(cpu: cpu, runqueues: rqs, perCPUOffsets: offsets)
                s = try readRunqueue(at: rq, cpu: cpu, P)
                if let R = P.runnableList {
                    do { s.runnable = try runnableTasks(head: rq &+ UInt64(R.rqHead), R, P) } catch {
                        dump.problems.append("cpu \(cpu) runnable list: \(error)")
                    }
                }
            } catch {
                dump.problems.append("cpu \(cpu) runqueue: \(error)")
            }
            dump.cpus.append(s)
        }
    }

    /// `&per_cpu(runqueues, cpu)`: `runqueues + __per_cpu_offset[cpu]`.
    func runqueueAddress(cpu: Int, runqueues: UInt64, perCPUOffsets: UInt64) throws(AddressError) -> UInt64 {
        runqueues &+ (try space.readPointer(at: perCPUOffsets &+ UInt64(cpu * 8)))
    }

    /// One `struct rq`'s counters, clocks and current task (not its runnable list). Shared by
    /// the dump and the live sampler.
    func readRunqueue(at rq: UInt64, cpu: Int, _ P: ScxLayout.PerCPU) throws(AddressError) -> CPUState {
        var s = CPUState(cpu: cpu)
        s.nrRunning = try space.read(UInt32.self, at: rq &+ UInt64(P.rqNrRunning))
        s.scxNrRunning = try space.read(UInt32.self, at: rq &+ UInt64(P.rqScxNrRunning))
        if let o = P.localDSQDepth { s.localDSQDepth = try space.read(UInt32.self, at: rq &+ UInt64(o)) }
        if let o = P.scxFlags { s.scxFlags = try space.read(UInt32.self, at: rq &+ UInt64(o)) }
        if let o = P.rqClock { s.rqClock = try space.read(UInt64.self, at: rq &+ UInt64(o)) }
        if let o = P.scxClock { s.scxClock = try space.read(UInt64.self, at: rq &+ UInt64(o)) }
        let curr = try space.readPointer(at: rq &+ UInt64(P.rqCurr))
        if curr != 0 {
            s.currentPID = Int32(bitPattern: try space.read(UInt32.self, at: curr &+ UInt64(P.taskPID)))
            s.currentComm = try space.readCString(at: curr &+ UInt64(P.taskComm.offset), maxLength: min(P.taskComm.size, 64))
        }
        return s
    }

    public static let maxRunnable = 32

    /// Tasks on a runqueue's runnable list, oldest first (bounded; a cycle ends at the bound).
    func runnableTasks(head: UInt64, _ R: ScxLayout.RunnableList, _ P: ScxLayout.PerCPU,
                       limit: Int = maxRunnable) throws(AddressError) -> [RunnableTask] {
        var out: [RunnableTask] = []
        var node = try space.readPointer(at: head)
        while node != head, node != 0, out.count < limit {
            let task = node &- UInt64(R.taskNode)
            var t = RunnableTask(pid: Int32(bitPattern: try space.read(UInt32.self, at: task &+ UInt64(P.taskPID))),
                                 comm: try space.readCString(at: task &+ UInt64(P.taskComm.offset), maxLength: min(P.taskComm.size, 64)),
                                 runnableAt: try space.read(UInt64.self, at: task &+ UInt64(R.taskRunnableAt)))
            if let d = R.taskDSQ, let idOff = R.dsqID {
                let dsq = try space.readPointer(at: task &+ UInt64(d))
                if dsq != 0 { t.dsqID = try? space.read(UInt64.self, at: dsq &+ UInt64(idOff)) }
            }
            out.append(t)
            node = try space.readPointer(at: node)
        }
        return out
    }

    private func note(_ problems: inout [String], _ what: String, _ body: () throws(AddressError) -> Void) {
        do { try body() } catch { problems.append("\(what): \(error)") }
    }
}
