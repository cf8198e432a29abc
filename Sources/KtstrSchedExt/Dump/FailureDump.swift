import KtstrMachine
import KtstrProtocol

/// What the host read out of the frozen guest when the scheduler failed.
///
/// Everything except `kind`/`kindValue` is optional: a field that could not be read stays
/// nil (or empty) and `problems` says why. Addresses are lower-case hex strings (JSON numbers
/// lose 64-bit precision in most readers).
public struct FailureDump: Codable, Sendable {
    public var kind: ExitKind
    public var kindValue: Int
    public var registers: [VCPURegisterSnapshot]
    /// What could not be read and why (a corrupt pointer is an entry here, never a crash).
    public var problems: [String]

    /// `scx_sched.ops.name`: the BPF scheduler's name.
    public var schedulerName: String?
    /// `scx_exit_info` fields.
    public var exitCode: Int64?
    public var exitCPU: Int?
    public var flags: UInt64?
    /// `flags` decoded with the kernel's `SCX_EFLAG_*` enumerators (`INITIALIZED`).
    public var flagNames: [String]?
    public var reason: String?
    public var message: String?
    public var backtrace: [BacktraceFrame]
    /// `scx_exit_info.dump`: the kernel's text dump of the scheduler state (≤ 64 KiB).
    public var schedulerDump: String?
    /// True when the dump text was captured after the thaw (the kernel writes it from an
    /// irq_work shortly after the exit is claimed; see `timing`).
    public var schedulerDumpAfterThaw: Bool?
    public var cpus: [CPUState]
    public var maps: [BPFMapDump]
    public var timing: DumpTiming?
    /// The kernel's `jiffies` at the freeze (runnable tasks waited `jiffies - runnableAt` ticks).
    public var jiffies: UInt64?
    /// Where symbol names came from ("guest kallsyms", "System.map", nil when none).
    public var symbolSource: String?
    /// Where the type layout came from ("guest BTF", "vmlinux .BTF").
    public var btfSource: String?

    public init(kind: ExitKind, kindValue: Int, registers: [VCPURegisterSnapshot] = [], problems: [String] = []) {
        self.kind = kind; self.kindValue = kindValue; self.registers = registers; self.problems = problems
        backtrace = []; cpus = []; maps = []
    }

    // Decoding tolerates dumps written by older code (missing arrays).
    enum CodingKeys: String, CodingKey {
        case kind, kindValue, registers, problems, schedulerName, exitCode, exitCPU, flags, flagNames, reason, message,
             backtrace, schedulerDump, schedulerDumpAfterThaw, cpus, maps, timing, jiffies, symbolSource, btfSource
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        kind = try c.decode(ExitKind.self, forKey: .kind)
        kindValue = try c.decode(Int.self, forKey: .kindValue)
        registers = try c.decodeIfPresent([VCPURegisterSnapshot].self, forKey: .registers) ?? []
        problems = try c.decodeIfPresent([String].self, forKey: .problems) ?? []
        schedulerName = try c.decodeIfPresent(String.self, forKey: .schedulerName)
        exitCode = try c.decodeIfPresent(Int64.self, forKey: .exitCode)
        exitCPU = try c.decodeIfPresent(Int.self, forKey: .exitCPU)
        flags = try c.decodeIfPresent(UInt64.self, forKey: .flags)
        flagNames = try c.decodeIfPresent([String].self, forKey: .flagNames)
        reason = try c.decodeIfPresent(String.self, forKey: .reason)
        message = try c.decodeIfPresent(String.self, forKey: .message)
        backtrace = try c.decodeIfPresent([BacktraceFrame].self, forKey: .backtrace) ?? []
        schedulerDump = try c.decodeIfPresent(String.self, forKey: .schedulerDump)
        schedulerDumpAfterThaw = try c.decodeIfPresent(Bool.self, forKey: .schedulerDumpAfterThaw)
        cpus = try c.decodeIfPresent([CPUState].self, forKey: .cpus) ?? []
        maps = try c.decodeIfPresent([BPFMapDump].self, forKey: .maps) ?? []
        timing = try c.decodeIfPresent(DumpTiming.self, forKey: .timing)
        jiffies = try c.decodeIfPresent(UInt64.self, forKey: .jiffies)
        symbolSource = try c.decodeIfPresent(String.self, forKey: .symbolSource)
        btfSource = try c.decodeIfPresent(String.self, forKey: .btfSource)
    }

    /// A BPF program global by name, from whichever map's section holds it
    /// (`dump.global("ktstr_knob_error_after")?.integer == 100`).
    public func global(_ name: String) -> BPFVariable? {
        for m in maps { if let v = m.variable(name) { return v } }
        return nil
    }

    /// The BPF map called `name` (`"fault_bpf.bss"`, or a suffix such as `".bss"`).
    public func map(named name: String) -> BPFMapDump? {
        maps.first { $0.name == name } ?? maps.first { $0.name.hasSuffix(name) }
    }
}

/// One return address of `scx_exit_info.bt`.
public struct BacktraceFrame: Codable, Sendable, Equatable {
    /// Lower-case hex, no 0x.
    public var address: String
    /// `name+0xoff`, when a symbol table covered the address.
    public var symbol: String?

    public init(address: UInt64, symbol: String?) {
        self.address = String(address, radix: 16); self.symbol = symbol
    }
}

/// One CPU's runqueue at the freeze (`struct rq` via `runqueues` + `__per_cpu_offset`).
public struct CPUState: Codable, Sendable, Equatable {
    public var cpu: Int
    public var nrRunning: UInt32?
    public var scxNrRunning: UInt32?
    public var currentPID: Int32?
    public var currentComm: String?
    /// Tasks queued on this CPU's local DSQ (`rq->scx.local_dsq.nr`).
    public var localDSQDepth: UInt32?
    /// `rq->scx.flags` (SCX_RQ_*).
    public var scxFlags: UInt32?
    /// `rq->clock` and `rq->scx.clock` in ns: a CPU whose clocks lag the others' did not tick.
    public var rqClock: UInt64?
    public var scxClock: UInt64?
    /// `rq->scx.runnable_list`: tasks runnable on this CPU, oldest first (≤ 32).
    public var runnable: [RunnableTask]?

    public init(cpu: Int, nrRunning: UInt32? = nil, scxNrRunning: UInt32? = nil, currentPID: Int32? = nil, currentComm: String? = nil,
                localDSQDepth: UInt32? = nil, scxFlags: UInt32? = nil, rqClock: UInt64? = nil, scxClock: UInt64? = nil) {
        self.cpu = cpu; self.nrRunning = nrRunning; self.scxNrRunning = scxNrRunning
        self.currentPID = currentPID; self.currentComm = currentComm
        self.localDSQDepth = localDSQDepth; self.scxFlags = scxFlags; self.rqClock = rqClock; self.scxClock = scxClock
    }
}

/// A task on a runqueue's runnable list.
public struct RunnableTask: Codable, Sendable, Equatable {
    public var pid: Int32
    public var comm: String
    /// `p->scx.runnable_at` in jiffies (compare with `FailureDump.jiffies`).
    public var runnableAt: UInt64
    /// The DSQ the task is queued on (`p->scx.dsq->id`), when on one.
    public var dsqID: UInt64?

    public init(pid: Int32, comm: String, runnableAt: UInt64, dsqID: UInt64? = nil) {
        self.pid = pid; self.comm = comm; self.runnableAt = runnableAt; self.dsqID = dsqID
    }
}

/// One BPF map (`struct bpf_map`), with the contents of array maps (bounded).
public struct BPFMapDump: Codable, Sendable, Equatable {
    public var id: UInt32
    public var name: String
    /// `enum bpf_map_type` enumerator in snake case without the prefix (`array`, `hash`).
    public var type: String
    public var typeValue: UInt32
    public var keySize: UInt32
    public var valueSize: UInt32
    public var maxEntries: UInt32
    public var flags: UInt32
    /// Lower-case hex of the first `contentsBytes` bytes of the value area (array maps).
    public var contentsHex: String?
    /// True when the value area was longer than what was read.
    public var contentsTruncated: Bool?
    /// Globals decoded with the map's own BTF (`.bss`/`.data`/`.rodata` DATASEC).
    public var variables: [BPFVariable]?
    /// Per-CPU arrays: for each CPU, the hex of its values of the first entries (each
    /// `valueSize` bytes, entry 0 first; at most 16 entries).
    public var perCPUHex: [String]?
    /// Hash and LRU hash maps: the elements found by walking the buckets (≤ 256, key and
    /// value as hex); nil for other types or when the kernel's layout is unknown.
    public var entries: [BPFMapEntry]?
    /// True when the walk stopped at a bound before the end of the table.
    public var entriesTruncated: Bool?

    /// Per-CPU array values as little-endian integers: `[cpu][entry]`, when `valueSize` ≤ 8.
    public var perCPUIntegers: [[UInt64]]? {
        guard let rows = perCPUHex, valueSize >= 1, valueSize <= 8 else { return nil }
        return rows.map { row in
            let bytes = BPFMapDump.bytes(fromHex: row) ?? []
            return stride(from: 0, to: bytes.count - Int(valueSize) + 1, by: Int(valueSize)).compactMap {
                littleEndianValue(bytes, offset: $0, size: Int(valueSize))
            }
        }
    }

    /// The raw contents (decoded from `contentsHex`).
    public var contents: [UInt8]? { contentsHex.flatMap(Self.bytes(fromHex:)) }

    static func bytes(fromHex h: String) -> [UInt8]? {
        var out: [UInt8] = []
        var it = h.utf8.makeIterator()
        while let a = it.next(), let b = it.next() {
            guard let hi = hexValue(a), let lo = hexValue(b) else { return nil }
            out.append(hi << 4 | lo)
        }
        return out
    }

    public func variable(_ name: String) -> BPFVariable? { variables?.first { $0.name == name } }
}

private func hexValue(_ c: UInt8) -> UInt8? {
    switch c {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
    default: nil
    }
}

/// One element of a hash map: key and value as lower-case hex (the kernel's bytes, little-endian).
public struct BPFMapEntry: Codable, Sendable, Equatable {
    public var keyHex: String
    public var valueHex: String

    public init(key: [UInt8], value: [UInt8]) {
        keyHex = key.map { b in (b < 16 ? "0" : "") + String(b, radix: 16) }.joined()
        valueHex = value.map { b in (b < 16 ? "0" : "") + String(b, radix: 16) }.joined()
    }

    public var key: [UInt8] { BPFMapDump.bytes(fromHex: keyHex) ?? [] }
    public var value: [UInt8] { BPFMapDump.bytes(fromHex: valueHex) ?? [] }
    /// The key / value as a little-endian unsigned integer when it is 1...8 bytes.
    public var keyInteger: UInt64? { let k = key; return k.count <= 8 ? littleEndianValue(k, offset: 0, size: k.count) : nil }
    public var valueInteger: UInt64? { let v = value; return v.count <= 8 ? littleEndianValue(v, offset: 0, size: v.count) : nil }
}

/// A global of a BPF program, decoded from its map's BTF.
public struct BPFVariable: Codable, Sendable, Equatable {
    public var name: String
    public var offset: Int
    public var size: Int
    /// Decimal for integers of ≤ 8 bytes (signed when the type is), else hex bytes.
    public var value: String
    /// The integer value when the variable is an integer of ≤ 8 bytes.
    public var integer: Int64?
}

/// Milliseconds between the failure being seen and the dump being complete.
public struct DumpTiming: Codable, Sendable, Equatable {
    /// How the failure was noticed: "poll" or "watchpoint".
    public var detectedBy: String
    /// Failure seen → exit info complete (msg and backtrace written by the kernel).
    public var triggerToSettledMillis: Double
    /// Failure seen → all vCPUs stopped.
    public var triggerToFrozenMillis: Double
    /// Stopped → everything read (the guest was frozen for this long).
    public var frozenToReadMillis: Double
    /// Failure seen → dump complete (including symbolization and the late dump text).
    public var totalMillis: Double
}
