import KtstrMachine
import KtstrProtocol

/// Why a live read or write of a BPF map was refused. Nothing is written when one is thrown.
public enum LiveBPFError: Error, CustomStringConvertible, Equatable {
    case unavailable(String)
    case noSuchMap(String, available: [String])
    case noSuchVariable(String, map: String, available: [String])
    case notAnInteger(variable: String, map: String)
    /// The value does not fit the variable (its size and signedness, from the map's BTF).
    case valueTooWide(variable: String, size: Int, signed: Bool, value: Int64)
    case bytesTooWide(target: String, size: Int, given: Int)
    case keyOutOfRange(key: UInt32, maxEntries: UInt32, map: String)
    case wrongMapType(map: String, type: String, wanted: String)
    case address(AddressError)

    public var description: String {
        switch self {
        case let .unavailable(why): "BPF state unavailable: \(why)"
        case let .noSuchMap(n, a): "no loaded BPF map named \(n) — loaded: \(a.joined(separator: ", "))"
        case let .noSuchVariable(v, m, a): "map \(m) has no variable \(v) — it has: \(a.joined(separator: ", "))"
        case let .notAnInteger(v, m): "\(m).\(v) is not an integer of at most 8 bytes — write it with set(_:bytes:)"
        case let .valueTooWide(v, size, signed, value):
            "\(value) does not fit \(v) (\(signed ? "signed" : "unsigned") \(size * 8)-bit): write refused"
        case let .bytesTooWide(t, size, given): "\(given) bytes do not fit \(t) (\(size) bytes): write refused"
        case let .keyOutOfRange(k, max, m): "key \(k) is outside map \(m) (max_entries \(max))"
        case let .wrongMapType(m, t, w): "map \(m) is a \(t) map, not \(w)"
        case let .address(e): "\(e)"
        }
    }
}

/// One write to a live guest's BPF map, as recorded by the run.
public struct BPFWrite: Codable, Sendable, Equatable {
    /// The map's kernel name (`ktstr_fa.bss`).
    public var map: String
    /// The variable's name, or `key N` for an array element.
    public var target: String
    /// What was there before and what was written: the integer in decimal, else hex bytes.
    public var old: String
    public var new: String
    /// Host milliseconds since the VM started, and since the scheduler enabled (when known).
    public var millis: Int
    public var millisAfterEnabled: Int?

    public init(map: String, target: String, old: String, new: String, millis: Int = 0, millisAfterEnabled: Int? = nil) {
        self.map = map; self.target = target; self.old = old; self.new = new
        self.millis = millis; self.millisAfterEnabled = millisAfterEnabled
    }

    /// The write's label on the timeline (`TimelineMarker.Kind.bpfWrite`).
    public var markerLabel: String { "\(map).\(target)=\(new)" }
}

/// The BPF maps of a running guest, read and written in guest RAM (no help from the guest).
/// Writes go through the kernel's page tables like reads, are bounds-checked against the map
/// and the variable, and are visible to the BPF program at once (its next load of the value).
public struct LiveBPF: Sendable {
    public let context: KernelContext
    let reader: BPFMapReader
    let idr: UInt64
    let onWrite: @Sendable (BPFWrite) -> BPFWrite

    /// `onWrite` sees each write after it is done and returns it as recorded (with times).
    public init(context: KernelContext, cpuCount: Int, onWrite: @escaping @Sendable (BPFWrite) -> BPFWrite = { $0 }) throws(LiveBPFError) {
        guard let maps = context.layout.maps else { throw .unavailable(context.layout.mapsProblem ?? "no bpf_map layout") }
        guard let idr = context.symbols["map_idr"] else { throw .unavailable("the agent did not report map_idr") }
        self.context = context
        self.idr = idr
        self.reader = BPFMapReader(space: context.space, layout: maps, hash: context.layout.hash,
                                   perCPUOffsets: context.symbols["__per_cpu_offset"], cpuCount: cpuCount)
        self.onWrite = onWrite
    }

    /// Headers of every loaded map, in id order.
    public func maps() throws(LiveBPFError) -> [BPFMapDump] {
        do { return try reader.mapPointers(idr: idr).map { p throws(AddressError) in try reader.readHeader(p) } }
        catch { throw .address(error) }
    }

    /// The loaded map called `name` (the kernel's name, ≤ 15 characters: `ktstr_fa.bss`), or
    /// the first whose name ends with `name` (`.bss`).
    public func map(named name: String) throws(LiveBPFError) -> LiveBPFMap {
        var found: [(UInt64, BPFMapDump)] = []
        do {
            for p in try reader.mapPointers(idr: idr) { found.append((p, try reader.readHeader(p))) }
        } catch { throw .address(error) }
        guard let (p, header) = found.first(where: { $0.1.name == name }) ?? found.first(where: { $0.1.name.hasSuffix(name) })
        else { throw .noSuchMap(name, available: found.map(\.1.name)) }
        var btf: BTF?
        var datasec: UInt32?
        if let L = context.layout.maps, header.maxEntries == 1,
           let btfPtr = try? context.space.readPointer(at: p &+ UInt64(L.btf)), btfPtr != 0,
           let valueType = try? context.space.read(UInt32.self, at: p &+ UInt64(L.btfValueTypeID)), valueType != 0,
           let b = try? reader.loadBTF(btfPtr), b.type(valueType)?.kind == .datasec {
            btf = b
            datasec = valueType
        }
        return LiveBPFMap(info: header, pointer: p, reader: reader, btf: btf, datasec: datasec, onWrite: onWrite)
    }
}

/// One loaded map of a live guest. `.bss`/`.data` globals by name (`get`, `set`), array
/// elements by key, hash map entries by walking the buckets.
public struct LiveBPFMap: Sendable {
    /// The header as read when the handle was made.
    public let info: BPFMapDump
    let pointer: UInt64
    let reader: BPFMapReader
    let btf: BTF?
    let datasec: UInt32?
    let onWrite: @Sendable (BPFWrite) -> BPFWrite

    public var name: String { info.name }
    var space: KernelAddressSpace { reader.space }

    /// The global section's variables (name, offset, size), from the map's own BTF.
    public var variableLayout: [(name: String, offset: Int, size: Int)] {
        guard let btf, let datasec else { return [] }
        return btf.sectionVariables(datasec).map { ($0.name, $0.offset, $0.size) }
    }

    /// Every variable, decoded now.
    public func variables() throws(LiveBPFError) -> [BPFVariable] {
        guard let btf, let datasec else { throw .wrongMapType(map: name, type: info.type, wanted: "global section (.bss/.data) with BTF") }
        let bytes = try element(0)
        return BPFMapReader.decode(btf: btf, datasec: datasec, bytes: bytes)
    }

    private func variable(_ v: String) throws(LiveBPFError) -> (offset: Int, size: Int, signed: Bool, integer: Bool) {
        guard let btf, let datasec else { throw .wrongMapType(map: name, type: info.type, wanted: "global section (.bss/.data) with BTF") }
        let all = btf.sectionVariables(datasec)
        guard let found = all.first(where: { $0.name == v }) else { throw .noSuchVariable(v, map: name, available: all.map(\.name)) }
        guard found.offset >= 0, found.size >= 0, found.offset <= Int(info.valueSize) - found.size else {
            throw .bytesTooWide(target: v, size: Int(info.valueSize), given: found.offset + found.size)
        }
        var signed = false, integer = false
        if let rid = try? btf.resolve(found.type), let t = btf.type(rid), [.int, .enum, .enum64].contains(t.kind), found.size <= 8, found.size > 0 {
            integer = true
            signed = t.isSignedInt || (t.kind != .int && t.kindFlag)
        }
        return (found.offset, found.size, signed, integer)
    }

    /// The integer value of a global (`get("ktstr_nr_enqueued")`).
    public func get(_ v: String) throws(LiveBPFError) -> Int64 {
        let d = try variable(v)
        guard d.integer else { throw .notAnInteger(variable: v, map: name) }
        let raw = try read(at: d.offset, count: d.size)
        return Self.integer(raw, signed: d.signed)
    }

    /// The raw bytes of a global.
    public func bytes(of v: String) throws(LiveBPFError) -> [UInt8] {
        let d = try variable(v)
        return try read(at: d.offset, count: d.size)
    }

    /// Writes an integer global. Refused (nothing written) when the value does not fit the
    /// variable's size and signedness.
    @discardableResult
    public func set(_ v: String, _ value: Int64) throws(LiveBPFError) -> BPFWrite {
        let d = try variable(v)
        guard d.integer else { throw .notAnInteger(variable: v, map: name) }
        guard Self.fits(value, size: d.size, signed: d.signed) else { throw .valueTooWide(variable: v, size: d.size, signed: d.signed, value: value) }
        let bytes = Array(withUnsafeBytes(of: UInt64(bitPattern: value).littleEndian) { Array($0) }.prefix(d.size))
        let old = try read(at: d.offset, count: d.size)
        try write(bytes, at: d.offset)
        return onWrite(BPFWrite(map: name, target: v, old: "\(Self.integer(old, signed: d.signed))", new: "\(value)"))
    }

    /// Writes a global's bytes (at most its size; a shorter write changes its first bytes).
    @discardableResult
    public func set(_ v: String, bytes: [UInt8]) throws(LiveBPFError) -> BPFWrite {
        let d = try variable(v)
        guard bytes.count <= d.size else { throw .bytesTooWide(target: v, size: d.size, given: bytes.count) }
        let old = try read(at: d.offset, count: bytes.count)
        try write(bytes, at: d.offset)
        return onWrite(BPFWrite(map: name, target: v, old: Self.hex(old), new: Self.hex(bytes)))
    }

    /// Array map: the value of element `key`.
    public func element(_ key: UInt32) throws(LiveBPFError) -> [UInt8] {
        try read(at: try elementOffset(key), count: Int(info.valueSize))
    }

    /// Array map: writes element `key` (at most `valueSize` bytes).
    @discardableResult
    public func setElement(_ key: UInt32, _ bytes: [UInt8]) throws(LiveBPFError) -> BPFWrite {
        let off = try elementOffset(key)
        guard bytes.count <= Int(info.valueSize) else { throw .bytesTooWide(target: "\(name)[\(key)]", size: Int(info.valueSize), given: bytes.count) }
        let old = try read(at: off, count: bytes.count)
        try write(bytes, at: off)
        return onWrite(BPFWrite(map: name, target: "key \(key)", old: Self.hex(old), new: Self.hex(bytes)))
    }

    /// Hash / LRU hash map: its elements now (bounded walk of the buckets).
    public func entries() throws(LiveBPFError) -> [BPFMapEntry] {
        guard info.type == "hash" || info.type == "lru_hash" else { throw .wrongMapType(map: name, type: info.type, wanted: "hash") }
        do { return try reader.hashEntries(pointer, keySize: info.keySize, valueSize: info.valueSize).entries }
        catch { throw .address(error) }
    }

    /// Byte offset of array element `key` inside the map value area.
    private func elementOffset(_ key: UInt32) throws(LiveBPFError) -> Int {
        guard info.type == "array" else { throw .wrongMapType(map: name, type: info.type, wanted: "array") }
        guard key < info.maxEntries else { throw .keyOutOfRange(key: key, maxEntries: info.maxEntries, map: name) }
        let elem = (UInt64(info.valueSize) + 7) & ~7
        let (off, overflow) = elem.multipliedReportingOverflow(by: UInt64(key))
        guard !overflow, off < UInt64(Int32.max) else { throw .keyOutOfRange(key: key, maxEntries: info.maxEntries, map: name) }
        return Int(off)
    }

    /// `offset` is inside element 0.. of the value area; the caller checked it against the map.
    private func read(at offset: Int, count: Int) throws(LiveBPFError) -> [UInt8] {
        do { return try space.readBytes(at: pointer &+ UInt64(reader.layout.arrayValue + offset), count: count) }
        catch { throw .address(error) }
    }

    private func write(_ bytes: [UInt8], at offset: Int) throws(LiveBPFError) {
        do { try space.writeBytes(bytes, at: pointer &+ UInt64(reader.layout.arrayValue + offset)) }
        catch { throw .address(error) }
    }

    static func fits(_ value: Int64, size: Int, signed: Bool) -> Bool {
        guard size >= 1, size <= 8 else { return false }
        if size == 8 { return signed || value >= 0 }
        let bits = Int64(size * 8)
        return signed ? (value >= -(1 << (bits - 1)) && value < (1 << (bits - 1))) : (value >= 0 && value < (1 << bits))
    }

    static func integer(_ raw: [UInt8], signed: Bool) -> Int64 {
        let u = littleEndianValue(raw, offset: 0, size: raw.count) ?? 0
        guard signed, raw.count < 8 else { return Int64(bitPattern: u) }
        let shift = UInt64(64 - raw.count * 8)
        return Int64(bitPattern: u << shift) >> Int64(shift)
    }

    static func hex(_ b: [UInt8]) -> String { b.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined() }
}
