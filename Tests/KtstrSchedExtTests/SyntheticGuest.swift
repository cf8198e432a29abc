import Synchronization
@testable import KtstrMachine
@testable import KtstrSchedExt
@testable import KtstrProtocol
@testable import KtstrVMM
@testable import KtstrFixtures

/// A miniature guest kernel laid out in anonymous RAM: its BTF (between __start_BTF and
/// __stop_BTF), scx_root → scx_sched → scx_exit_info, two runqueues, map_idr with two BPF
/// maps (one a vmalloc'd .bss array reached through init_top_pgt), kallsyms tables.
/// Offsets are whatever the BTF says; the readers must not assume them.
struct SyntheticGuest {
    static let ram: UInt64 = 64 << 20
    static let pob: UInt64 = 0xFFFF_8880_0000_0000
    static let k: UInt64 = 0xFFFF_FFFF_8200_0000          // image symbols live here (GPA 0x2000000)
    static let vmalloc: UInt64 = 0xFFFF_C900_0000_0000

    let memory: GuestMemory
    var symbols: [String: UInt64]
    let btf: BTF
    /// GPAs of objects tests like to corrupt.
    let schedGPA: UInt64, exitInfoGPA: UInt64, idrHeadGPA: UInt64
    let exitKindOffset: Int, eiKindOffset: Int, eiMsgOffset: Int, eiBTLenOffset: Int

    static func gpa(_ kva: UInt64) -> UInt64 { kva >= 0xFFFF_FFFF_8000_0000 ? kva - 0xFFFF_FFFF_8000_0000 : kva - pob }
    static func dm(_ gpa: UInt64) -> UInt64 { pob + gpa }

    static func kernelBTF() -> BTFBuilder {
        var b = BTFBuilder()
        let u8 = b.int("unsigned char", size: 1)
        let u32 = b.int("unsigned int", size: 4)
        let i32 = b.int("int", size: 4, signed: true)
        let u64 = b.int("unsigned long", size: 8)
        let s64 = b.int("long long", size: 8, signed: true)
        let chr = b.int("char", size: 1, signed: true)
        let void = UInt32(0)
        let pchr = b.type("", kind: 2, sizeOrType: chr)
        let pu64 = b.type("", kind: 2, sizeOrType: u64)
        let pvoid = b.type("", kind: 2, sizeOrType: void)
        func arr(_ t: UInt32, _ n: UInt32) -> UInt32 { b.type("", kind: 3, sizeOrType: 0, extra: [t, u32, n]) }
        let c16 = arr(chr, 16), c128 = arr(chr, 128), c0 = arr(chr, 0), slots = arr(pvoid, 64)
        let ek = b.enumeration("scx_exit_kind", [("SCX_EXIT_NONE", 0), ("SCX_EXIT_DONE", 1), ("SCX_EXIT_UNREG", 64), ("SCX_EXIT_UNREG_BPF", 65), ("SCX_EXIT_ERROR", 1024),
                                                 ("SCX_EXIT_ERROR_BPF", 1025), ("SCX_EXIT_ERROR_STALL", 1026), ("SCX_EXIT_ERROR_RESCUE", 1028)])
        _ = b.enumeration("scx_exit_flags", [("SCX_EFLAG_INITIALIZED", 1)])
        _ = b.enumeration("bpf_map_type", [("BPF_MAP_TYPE_UNSPEC", 0), ("BPF_MAP_TYPE_HASH", 1), ("BPF_MAP_TYPE_ARRAY", 2), ("BPF_MAP_TYPE_PERCPU_ARRAY", 6)])
        // Deliberately not the real kernel's offsets.
        let ei = b.structure("scx_exit_info", size: 72, members: [
            ("kind", ek, 0), ("exit_cpu", i32, 32), ("exit_code", s64, 64), ("flags", u64, 128), ("reason", pchr, 192),
            ("bt", pu64, 256), ("bt_len", u32, 320), ("msg", pchr, 384), ("dump", pchr, 448)])
        let pei = b.type("", kind: 2, sizeOrType: ei)
        let atomic = b.structure("atomic_t", size: 4, members: [("counter", i32, 0)])
        let ops = b.structure("sched_ext_ops", size: 136, members: [("flags", u64, 0), ("name", c128, 64)])
        _ = b.structure("scx_sched", size: 200, members: [("ops", ops, 0), ("pad", u64, 1088), ("exit_kind", atomic, 1152), ("exit_info", pei, 1216)])
        let list = b.structure("list_head", size: 16, members: [("next", pvoid, 0), ("prev", pvoid, 64)])
        let dsq = b.structure("scx_dispatch_q", size: 16, members: [("lock", u32, 0), ("nr", u32, 32), ("id", u64, 64)])
        let pdsq = b.type("", kind: 2, sizeOrType: dsq)
        let scxrq = b.structure("scx_rq", size: 48, members: [("local_dsq", dsq, 0), ("flags", u32, 128), ("nr_running", u32, 160),
                                                               ("clock", u64, 192), ("runnable_list", list, 256)])
        let see = b.structure("sched_ext_entity", size: 32, members: [("dsq", pdsq, 0), ("runnable_node", list, 64), ("runnable_at", u64, 192)])
        let task = b.structure("task_struct", size: 80, members: [("state", u64, 0), ("pid", i32, 128), ("comm", c16, 256), ("scx", see, 384)])
        let ptask = b.type("", kind: 2, sizeOrType: task)
        _ = b.structure("rq", size: 72, members: [("lock", u32, 0), ("nr_running", u32, 32), ("curr", ptask, 64), ("clock", u64, 128), ("scx", scxrq, 192)])
        let xa = b.structure("xarray", size: 16, members: [("xa_lock", u32, 0), ("xa_flags", u32, 32), ("xa_head", pvoid, 64)])
        _ = b.structure("idr", size: 24, members: [("idr_rt", xa, 0), ("idr_base", u32, 128), ("idr_next", u32, 160)])
        _ = b.structure("xa_node", size: 40 + 512, members: [("shift", u8, 0), ("offset", u8, 8), ("parent", pvoid, 64), ("array", pvoid, 128), ("slots", slots, 320)])
        let btfS = b.structure("btf", size: 16, members: [("data", pvoid, 0), ("data_size", u32, 64)])
        let pbtf = b.type("", kind: 2, sizeOrType: btfS)
        let map = b.structure("bpf_map", size: 64, members: [
            ("sha", arr(u8, 8), 0), ("map_type", u32, 64), ("key_size", u32, 96), ("value_size", u32, 128), ("max_entries", u32, 160),
            ("map_flags", u32, 192), ("id", u32, 224), ("btf", pbtf, 256), ("btf_value_type_id", u32, 320), ("name", c16, 384)])
        let anon = b.structure("", size: 0, union: true, members: [("value", c0, 0), ("ptrs", arr(pvoid, 0), 0)])
        _ = b.structure("bpf_ksym", size: 560, members: [("start", u64, 0), ("end", u64, 64), ("name", arr(chr, 512), 128), ("lnode", list, 528 * 8)])
        _ = b.structure("bpf_array", size: 80, members: [("map", map, 0), ("elem_size", u32, 512), ("index_mask", u32, 544), ("aux", pvoid, 576), ("", anon, 640)])
        return b
    }

    /// A BPF object's BTF: `.bss` with `nr_enqueued` (u64), `error_after` (s32), `stall` (bool-ish u8).
    static func programBTF() -> (blob: [UInt8], datasec: UInt32) {
        var b = BTFBuilder()
        let u64 = b.int("u64", size: 8)
        let i32 = b.int("int", size: 4, signed: true)
        let u8 = b.int("u8", size: 1)
        let v1 = b.type("nr_enqueued", kind: 14, sizeOrType: u64, extra: [1])
        let vol = b.type("", kind: 9, sizeOrType: i32)
        let v2 = b.type("error_after", kind: 14, sizeOrType: vol, extra: [1])
        let v3 = b.type("stall", kind: 14, sizeOrType: u8, extra: [1])
        let chr = b.int("char", size: 1, signed: true)
        let c3 = b.type("", kind: 3, sizeOrType: 0, extra: [chr, i32, 3])
        let v4 = b.type("tag", kind: 14, sizeOrType: c3, extra: [1])
        let ds = b.type(".bss", kind: 15, vlen: 4, sizeOrType: 16, extra: [v1, 0, 8, v2, 8, 4, v3, 12, 1, v4, 13, 3])
        return (b.blob(), ds)
    }

    /// `uniqueBTF`: add a uniquely named type, so the blob misses the process-wide BTF cache.
    init(exitKind: Int32 = 0, uniqueBTF: Bool = false) throws {
        let mem = try GuestMemory.anonymous(layout: [(0, Self.ram)])
        memory = mem
        var builder = Self.kernelBTF()
        if uniqueBTF { _ = builder.structure("unique_\(UInt64.random(in: 0...UInt64.max))", size: 0, members: []) }
        let blob = builder.blob()
        let kbtf = try BTF(bytes: blob)
        btf = kbtf
        func w<T: FixedWidthInteger>(_ v: T, _ gpa: UInt64) throws { try mem.write(v, at: gpa) }
        func off(_ p: String, _ s: String) throws -> UInt64 { UInt64(try kbtf.offset(of: p, in: s)) }

        var sym: [String: UInt64] = [
            "scx_root": Self.k, "phys_base": Self.k + 0x8, "page_offset_base": Self.k + 0x10,
            "__per_cpu_offset": Self.k + 0x20, "runqueues": Self.k + 0x100, "map_idr": Self.k + 0x200,
            "init_top_pgt": Self.k + 0x1000, "__start_BTF": Self.k + 0x10000,
            "__stop_BTF": Self.k + 0x10000 + UInt64(blob.count),
        ]
        try mem.write(blob, at: Self.gpa(Self.k + 0x10000))
        try w(UInt64(0), Self.gpa(Self.k + 0x8))
        try w(Self.pob, Self.gpa(Self.k + 0x10))

        // scx_sched at GPA 0x100000, exit_info 0x101000, strings and bt after.
        let sch: UInt64 = 0x10_0000, ei: UInt64 = 0x10_1000
        schedGPA = sch; exitInfoGPA = ei
        exitKindOffset = try kbtf.offset(of: "exit_kind", in: "scx_sched")
        eiKindOffset = try kbtf.offset(of: "kind", in: "scx_exit_info")
        eiMsgOffset = try kbtf.offset(of: "msg", in: "scx_exit_info")
        eiBTLenOffset = try kbtf.offset(of: "bt_len", in: "scx_exit_info")
        try w(Self.dm(sch), Self.gpa(Self.k))
        try mem.write(Array("fault".utf8), at: sch + off("ops.name", "scx_sched"))
        try w(exitKind, sch + UInt64(exitKindOffset))
        try w(Self.dm(ei), sch + off("exit_info", "scx_sched"))
        try w(exitKind, ei + UInt64(eiKindOffset))
        try w(Int32(1), ei + off("exit_cpu", "scx_exit_info"))
        try w(Int64(-7), ei + off("exit_code", "scx_exit_info"))
        try w(UInt64(0x3), ei + off("flags", "scx_exit_info"))
        try mem.write(Array("scx_bpf_error\0".utf8), at: 0x2800)
        try w(Self.dm(0x2800), ei + off("reason", "scx_exit_info"))
        try mem.write(Array("ktstr-fault: error after 100 enqueues\0".utf8), at: 0x10_2000)
        try w(Self.dm(0x10_2000), ei + UInt64(eiMsgOffset))
        let frames: [UInt64] = [0xFFFF_FFFF_8100_0742, 0xFFFF_FFFF_8100_0310, 0xFFFF_FFFF_8100_0005, 0xFFFF_FFFF_C000_1234]
        for (i, f) in frames.enumerated() { try w(f, 0x10_3000 + UInt64(i * 8)) }
        try w(Self.dm(0x10_3000), ei + off("bt", "scx_exit_info"))
        try w(UInt32(frames.count), ei + UInt64(eiBTLenOffset))
        try mem.write(Array("fault: root\nBacktrace:\n  x\n\nEvent counters\n--------------\n  SCX_EV_X: 0\n\0".utf8), at: 0x10_4000)
        try w(Self.dm(0x10_4000), ei + off("dump", "scx_exit_info"))

        // Two runqueues (per-CPU areas in the direct map) and their current tasks.
        for cpu in 0..<2 {
            let rq: UInt64 = 0x11_0000 + UInt64(cpu) * 0x1000
            let task: UInt64 = 0x10_5000 + UInt64(cpu) * 0x100
            try w(Self.dm(rq) &- (Self.k + 0x100), Self.gpa(Self.k + 0x20) + UInt64(cpu * 8))
            try w(UInt32(3 + cpu), rq + off("nr_running", "rq"))
            try w(UInt32(2 + cpu), rq + off("scx.nr_running", "rq"))
            try w(UInt32(1), rq + off("scx.local_dsq.nr", "rq"))
            try w(UInt64(5_000_000 + cpu), rq + off("clock", "rq"))
            try w(Self.dm(task), rq + off("curr", "rq"))
            try w(Int32(100 + cpu), task + off("pid", "task_struct"))
            try mem.write(Array("spinner\(cpu)\0".utf8), at: task + off("comm", "task_struct"))
            // Runnable list: cpu0 holds two waiting tasks (the first on DSQ 0x4b7457), cpu1 none.
            let head = rq + (try off("scx.runnable_list", "rq"))
            let nodeOff = try off("scx.runnable_node", "task_struct")
            if cpu == 0 {
                let t0: UInt64 = 0x10_5400, t1: UInt64 = 0x10_5500
                try w(Self.dm(t0 + nodeOff), head)
                try w(Self.dm(t1 + nodeOff), t0 + nodeOff)
                try w(Self.dm(head), t1 + nodeOff)
                for (i, t) in [t0, t1].enumerated() {
                    try w(Int32(200 + i), t + off("pid", "task_struct"))
                    try mem.write(Array("victim\(i)\0".utf8), at: t + off("comm", "task_struct"))
                    try w(UInt64(1000 + 500 * i), t + off("scx.runnable_at", "task_struct"))
                }
                try w(Self.dm(0x10_5800), t0 + off("scx.dsq", "task_struct"))
                try w(UInt64(0x4B_7457), 0x10_5800 + off("id", "scx_dispatch_q"))
            } else {
                try w(Self.dm(head), head)
            }
        }
        sym["jiffies"] = Self.k + 0x400
        try w(UInt64(2000), Self.gpa(Self.k + 0x400))

        // map_idr → xa_node (internal entry) → slot 1: hash map (direct map), slot 2: .bss array (vmalloc).
        let node: UInt64 = 0x12_0000, hash: UInt64 = 0x12_2000, bss: UInt64 = 0x12_1000
        idrHeadGPA = Self.gpa(Self.k + 0x200) + (try off("idr_rt.xa_head", "idr"))
        try w(Self.dm(node) | 2, idrHeadGPA)
        let slots = try off("slots", "xa_node")
        try w(Self.dm(hash), node + slots + 8)
        try w(Self.vmalloc + 0x1000, node + slots + 16)
        func header(_ at: UInt64, type: UInt32, id: UInt32, name: String, key: UInt32, value: UInt32, max: UInt32) throws {
            try w(type, at + off("map_type", "bpf_map")); try w(id, at + off("id", "bpf_map"))
            try w(key, at + off("key_size", "bpf_map")); try w(value, at + off("value_size", "bpf_map"))
            try w(max, at + off("max_entries", "bpf_map"))
            try mem.write(Array(name.utf8), at: at + off("name", "bpf_map"))
        }
        try header(hash, type: 1, id: 7, name: "task_ctx", key: 4, value: 16, max: 1024)
        try header(bss, type: 2, id: 9, name: "fault_bpf.bss", key: 4, value: 16, max: 1)
        let value = try bss + off("value", "bpf_array")
        try w(UInt64(4242), value); try w(Int32(-100), value + 8); try w(UInt8(1), value + 12); try mem.write(Array("ok\0".utf8), at: value + 13)
        // slot 3: a per-CPU array (value u64, 2 entries): cpu c's entry i at GPA 0x127000 + c*0x1000 + i*8.
        let pcpu: UInt64 = 0x12_6000
        try w(Self.dm(pcpu), node + slots + 24)
        try header(pcpu, type: 6, id: 11, name: "stats", key: 4, value: 8, max: 2)
        let off0 = try mem.read(UInt64.self, at: Self.gpa(Self.k + 0x20))
        let pvalue = try pcpu + off("value", "bpf_array")
        for i in 0..<2 {
            try w(Self.dm(0x12_7000 + UInt64(i * 8)) &- off0, pvalue + UInt64(i * 8))
            for cpu in 0..<2 { try w(UInt64(10 * (cpu + 1) + i), 0x12_7000 + UInt64(cpu) * 0x1000 + UInt64(i * 8)) }
        }
        let (pblob, ds) = Self.programBTF()
        try mem.write(pblob, at: 0x12_4000)
        try w(Self.dm(0x12_4000), 0x12_3000 + off("data", "btf"))
        try w(UInt32(pblob.count), 0x12_3000 + off("data_size", "btf"))
        try w(Self.dm(0x12_3000), bss + off("btf", "bpf_map"))
        try w(ds, bss + off("btf_value_type_id", "bpf_map"))
        // init_top_pgt (GPA 0x2001000) → PDPT 0x130000 → PD 0x131000 → PT 0x132000: vmalloc+0x1000 → GPA 0x121000.
        func idx(_ va: UInt64, _ l: Int) -> UInt64 { (va >> UInt64(12 + 9 * (l - 1))) & 0x1FF }
        let v = Self.vmalloc + 0x1000
        try w(UInt64(0x13_0000 | 3), 0x200_1000 + idx(v, 4) * 8)
        try w(UInt64(0x13_1000 | 3), 0x13_0000 + idx(v, 3) * 8)
        try w(UInt64(0x13_2000 | 3), 0x13_1000 + idx(v, 2) * 8)
        try w(UInt64(0x12_1000 | 3), 0x13_2000 + idx(v, 1) * 8)

        // bpf_kallsyms: head at K+0x300 → one bpf_ksym at GPA 0x125000 → back to the head.
        let ksym: UInt64 = 0x12_5000, lnode = try off("lnode", "bpf_ksym")
        sym["bpf_kallsyms"] = Self.k + 0x300
        try w(Self.dm(ksym + lnode), Self.gpa(Self.k + 0x300))
        try w(Self.k + 0x300, ksym + lnode)
        try w(UInt64(0xFFFF_FFFF_C000_1000), ksym + off("start", "bpf_ksym"))
        try w(UInt64(0xFFFF_FFFF_C000_2000), ksym + off("end", "bpf_ksym"))
        try mem.write(Array("bpf_prog_85d36b8df8c38d15_fault_enqueue".utf8), at: ksym + off("name", "bpf_ksym"))
        let (ks, _) = try KernelSymbolsTests.writeTables(mem, at: Self.k + 0x100_0000)
        sym.merge(ks) { a, _ in a }
        symbols = sym
    }

    func setExitKind(_ v: Int32) throws {
        try memory.write(v, at: exitInfoGPA + UInt64(eiKindOffset))
        try memory.write(v, at: schedGPA + UInt64(exitKindOffset))
    }
}

/// A Machine over a SyntheticGuest: freeze/thaw are counted; no vCPU runs.
class FakeMachine: Machine, @unchecked Sendable {
    let backend = BackendKind.qemuTCG
    let vcpuCount = 2
    let guestMemory: GuestMemory
    let freezes = Mutex(0), thaws = Mutex(0)
    var failFreeze = false

    init(_ memory: GuestMemory) { guestMemory = memory }
    func start() throws {}
    func freeze(timeout: Duration) throws -> [VCPURegisterSnapshot] {
        if failFreeze { throw GuestMemoryError.outOfRange(gpa: 0, length: 0) }
        freezes.withLock { $0 += 1 }
        return (0..<vcpuCount).map { VCPURegisterSnapshot(cpu: $0, rip: 0xFFFF_FFFF_8100_0000 + UInt64($0), rsp: 0, cr3: 0x200_1000, cr4: 0x6F0) }
    }
    /// Runs at thaw: lets a test change guest memory "after" the frozen read.
    var onThaw: (@Sendable () -> Void)?
    func thaw() throws { thaws.withLock { $0 += 1 }; onThaw?() }
    func wait(timeout: Duration) -> MachineExit { .shutdown }
    func kill() {}
}

/// A FakeMachine with a "hardware" watchpoint the test fires by hand.
final class WatchingFakeMachine: FakeMachine, ExitKindWatchpoint, @unchecked Sendable {
    let armed = Mutex<[(kva: UInt64, gpa: UInt64)]>([])
    let trigger = Mutex<(@Sendable (Int) -> Void)?>(nil)
    func armExitKindWatchpoint(kva: UInt64, gpa: UInt64, threshold: UInt32, onTrigger: @escaping @Sendable (Int) -> Void) -> Bool {
        armed.withLock { $0.append((kva, gpa)) }
        trigger.withLock { $0 = onTrigger }
        return true
    }
}
