import KtstrMachine
import KtstrProtocol

/// Offsets of every kernel field the monitor reads, taken from BTF once (never hard-coded:
/// the layout of `struct scx_sched` changes between kernel releases).
public struct ScxLayout: Sendable {
    // struct scx_sched
    public let schedExitKind: Int
    public let schedExitInfo: Int
    public let schedOpsName: BTFField?
    // struct scx_exit_info
    public let eiKind: Int
    public let eiExitCPU: Int?
    public let eiExitCode: Int
    public let eiFlags: Int?
    public let eiReason: Int
    public let eiBT: Int
    public let eiBTLen: Int
    public let eiMsg: Int
    public let eiDump: Int
    /// `enum scx_exit_kind`: value → enumerator (`SCX_EXIT_ERROR_STALL`).
    public let exitKindNames: [Int64: String]
    /// Per-CPU state; nil (with `perCPUProblem`) when the kernel's layout lacks a field.
    public let perCPU: PerCPU?
    public let perCPUProblem: String?
    public let maps: Maps?
    public let mapsProblem: String?
    /// `struct bpf_htab` → buckets → `htab_elem` chains (kernel/bpf/hashtab.c); nil when the
    /// kernel's BTF lacks one of them (hash maps then show their header only).
    public let hash: Hash?
    /// `scx_sched.watchdog_timeout` (jiffies, 7.1+) and `ops.timeout_ms`; nil on kernels that
    /// keep the timeout in the `scx_watchdog_timeout` global instead.
    public let schedWatchdogTimeout: Int?
    public let schedOpsTimeoutMS: Int?

    public struct Hash: Sendable {
        /// In `struct bpf_htab`: the bucket array pointer and its length.
        public let buckets: Int, nBuckets: Int
        /// `sizeof(struct bucket)`; the chain head (`hlist_nulls_head.first`) is at `bucketHead`.
        public let bucketSize: Int, bucketHead: Int
        /// In `struct htab_elem`: `hash_node.next` and the key (the value follows the key,
        /// rounded up to 8 bytes).
        public let elemNext: Int, elemKey: Int
    }

    public struct PerCPU: Sendable {
        public let rqNrRunning: Int, rqCurr: Int, rqScxNrRunning: Int
        public let taskPID: Int, taskComm: BTFField
        /// Optional extras (nil when this kernel's `struct rq` lacks them).
        public let localDSQDepth: Int?, scxFlags: Int?, scxClock: Int?, rqClock: Int?
        /// `rq->scx.runnable_list` of `task_struct.scx.runnable_node` (with `runnable_at`,
        /// jiffies, and the DSQ the task sits on); nil when the kernel lacks them.
        public let runnableList: RunnableList?
    }

    public struct RunnableList: Sendable {
        public let rqHead: Int, taskNode: Int, taskRunnableAt: Int, taskDSQ: Int?, dsqID: Int?
    }

    public struct Maps: Sendable {
        public let idrHead: Int
        public let nodeShift: Int, nodeSlots: Int, slotCount: Int
        public let mapType: Int, keySize: Int, valueSize: Int, maxEntries: Int, flags: Int, id: Int
        public let name: BTFField, btf: Int, btfValueTypeID: Int
        public let arrayValue: Int
        public let btfData: Int, btfDataSize: Int
        /// `enum bpf_map_type`: value → enumerator (`BPF_MAP_TYPE_ARRAY`).
        public let typeNames: [Int64: String]
    }

    /// Throws when the exit fields themselves are missing: without them there is nothing to watch.
    public init(btf: BTF) throws(BTFError) {
        schedExitKind = try btf.offset(of: "exit_kind", in: "scx_sched")
        schedExitInfo = try btf.offset(of: "exit_info", in: "scx_sched")
        schedOpsName = try? btf.field("ops.name", in: "scx_sched")
        eiKind = try btf.offset(of: "kind", in: "scx_exit_info")
        eiExitCPU = try? btf.offset(of: "exit_cpu", in: "scx_exit_info")
        eiExitCode = try btf.offset(of: "exit_code", in: "scx_exit_info")
        eiFlags = try? btf.offset(of: "flags", in: "scx_exit_info")
        eiReason = try btf.offset(of: "reason", in: "scx_exit_info")
        eiBT = try btf.offset(of: "bt", in: "scx_exit_info")
        eiBTLen = try btf.offset(of: "bt_len", in: "scx_exit_info")
        eiMsg = try btf.offset(of: "msg", in: "scx_exit_info")
        eiDump = try btf.offset(of: "dump", in: "scx_exit_info")
        exitKindNames = (try? btf.enumValues("scx_exit_kind")) ?? [:]
        do {
            perCPU = PerCPU(
                rqNrRunning: try btf.offset(of: "nr_running", in: "rq"),
                rqCurr: try btf.offset(of: "curr", in: "rq"),
                rqScxNrRunning: try btf.offset(of: "scx.nr_running", in: "rq"),
                taskPID: try btf.offset(of: "pid", in: "task_struct"),
                taskComm: try btf.field("comm", in: "task_struct"),
                localDSQDepth: try? btf.offset(of: "scx.local_dsq.nr", in: "rq"),
                scxFlags: try? btf.offset(of: "scx.flags", in: "rq"),
                scxClock: try? btf.offset(of: "scx.clock", in: "rq"),
                rqClock: try? btf.offset(of: "clock", in: "rq"),
                runnableList: try? RunnableList(
                    rqHead: btf.offset(of: "scx.runnable_list", in: "rq"),
                    taskNode: btf.offset(of: "scx.runnable_node", in: "task_struct"),
                    taskRunnableAt: btf.offset(of: "scx.runnable_at", in: "task_struct"),
                    taskDSQ: try? btf.offset(of: "scx.dsq", in: "task_struct"),
                    dsqID: try? btf.offset(of: "id", in: "scx_dispatch_q")))
            perCPUProblem = nil
        } catch {
            perCPU = nil
            perCPUProblem = "per-CPU state not read: \(error)"
        }
        do {
            let slots = try btf.field("slots", in: "xa_node")
            maps = Maps(
                idrHead: try btf.offset(of: "idr_rt.xa_head", in: "idr"),
                nodeShift: try btf.offset(of: "shift", in: "xa_node"),
                nodeSlots: slots.offset, slotCount: slots.size / 8,
                mapType: try btf.offset(of: "map_type", in: "bpf_map"),
                keySize: try btf.offset(of: "key_size", in: "bpf_map"),
                valueSize: try btf.offset(of: "value_size", in: "bpf_map"),
                maxEntries: try btf.offset(of: "max_entries", in: "bpf_map"),
                flags: try btf.offset(of: "map_flags", in: "bpf_map"),
                id: try btf.offset(of: "id", in: "bpf_map"),
                name: try btf.field("name", in: "bpf_map"),
                btf: try btf.offset(of: "btf", in: "bpf_map"),
                btfValueTypeID: try btf.offset(of: "btf_value_type_id", in: "bpf_map"),
                arrayValue: try btf.offset(of: "value", in: "bpf_array"),
                btfData: try btf.offset(of: "data", in: "btf"),
                btfDataSize: try btf.offset(of: "data_size", in: "btf"),
                typeNames: (try? btf.enumValues("bpf_map_type")) ?? [:])
            mapsProblem = nil
        } catch {
            maps = nil
            mapsProblem = "BPF maps not read: \(error)"
        }
        hash = try? Hash(
            buckets: btf.offset(of: "buckets", in: "bpf_htab"), nBuckets: btf.offset(of: "n_buckets", in: "bpf_htab"),
            bucketSize: btf.size(ofTypeNamed: "bucket"), bucketHead: btf.offset(of: "head.first", in: "bucket"),
            elemNext: btf.offset(of: "hash_node.next", in: "htab_elem"), elemKey: btf.offset(of: "key", in: "htab_elem"))
        schedWatchdogTimeout = try? btf.offset(of: "watchdog_timeout", in: "scx_sched")
        schedOpsTimeoutMS = try? btf.offset(of: "ops.timeout_ms", in: "scx_sched")
    }

    /// The exit kind's name: from the guest kernel's own enum when known, else the built-in table.
    public func kindName(_ value: Int) -> ExitKind {
        if let e = exitKindNames[Int64(value)] { return ExitKind.fromEnumerator(e) }
        return ExitKind.fallbackTable[value] ?? ExitKind("kind_\(value)")
    }
}
