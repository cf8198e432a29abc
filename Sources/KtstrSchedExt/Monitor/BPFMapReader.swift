import Foundation
import KtstrMachine
import KtstrProtocol

/// Walks `map_idr` (an IDR: an xarray of `struct bpf_map *`) and reads each map's header,
/// plus the value area of array maps (the scheduler's `.bss`/`.data`/`.rodata` globals),
/// decoded by name with the map's own BTF when it has one. Everything is bounded: nodes
/// visited, maps, bytes per map, bytes of BTF.
public struct BPFMapReader: Sendable {
    public static let maxNodes = 1024
    public static let maxMaps = 256
    public static let maxContents = 4096
    public static let maxMapBTF = 4 << 20

    public static let maxPerCPUEntries = 16
    public static let maxCPUs = 64

    /// Hash maps: buckets scanned, elements kept, chain length followed, bytes of one key/value.
    public static let maxHashBuckets = 1 << 16
    public static let maxHashEntries = 256
    public static let maxHashChain = 64
    public static let maxHashKey = 512
    public static let maxHashValue = 1024

    public let space: KernelAddressSpace
    public let layout: ScxLayout.Maps
    /// Hash map layout (nil: hash maps are read as headers only).
    public let hash: ScxLayout.Hash?
    /// `__per_cpu_offset[]` (kernel address) and the CPU count, for per-CPU array values.
    public let perCPUOffsets: UInt64?
    public let cpuCount: Int

    public init(space: KernelAddressSpace, layout: ScxLayout.Maps, hash: ScxLayout.Hash? = nil,
                perCPUOffsets: UInt64? = nil, cpuCount: Int = 0) {
        self.space = space; self.layout = layout; self.hash = hash; self.perCPUOffsets = perCPUOffsets; self.cpuCount = cpuCount
    }

    /// The `struct bpf_map *` entries of the IDR at `idr`, in index order.
    public func mapPointers(idr: UInt64) throws(AddressError) -> [UInt64] {
        let head = try space.readPointer(at: idr &+ UInt64(layout.idrHead))
        var out: [UInt64] = []
        var nodes = 0
        func visit(_ entry: UInt64, depth: Int) throws(AddressError) {
            guard entry != 0, out.count < Self.maxMaps, depth < 16 else { return }
            if entry & 3 == 2 {
                // Internal entry: a node pointer when above 4096, else sibling/retry markers.
                guard entry > 4096 else { return }
                nodes += 1
                guard nodes <= Self.maxNodes else { return }
                let node = entry - 2
                let slots = try space.readBytes(at: node &+ UInt64(layout.nodeSlots), count: layout.slotCount * 8)
                for i in 0..<layout.slotCount {
                    if let e = littleEndianValue(slots, offset: i * 8, size: 8) { try visit(e, depth: depth + 1) }
                }
            } else if entry & 1 == 0 {
                out.append(entry)
            }
        }
        try visit(head, depth: 0)
        return out
    }

    public func readAll(idr: UInt64, into dump: inout FailureDump) {
        let ptrs: [UInt64]
        do { ptrs = try mapPointers(idr: idr) } catch {
            dump.problems.append("map_idr: \(error)")
            return
        }
        var btfCache: [UInt64: BTF] = [:]
        for p in ptrs {
            do { dump.maps.append(try readMap(p, btfCache: &btfCache, problems: &dump.problems)) } catch {
                dump.problems.append("bpf_map at 0x\(String(p, radix: 16)): \(error)")
            }
        }
    }

    /// The header of the `struct bpf_map` at `p` (id, name, type, sizes, flags; no contents).
    public func readHeader(_ p: UInt64) throws(AddressError) -> BPFMapDump {
        let L = layout
        func u32(_ off: Int) throws(AddressError) -> UInt32 { try space.read(UInt32.self, at: p &+ UInt64(off)) }
        let typeValue = try u32(L.mapType)
        let typeName = L.typeNames[Int64(typeValue)].map { e -> String in
            var s = Substring(e)
            if s.hasPrefix("BPF_MAP_TYPE_") { s = s.dropFirst("BPF_MAP_TYPE_".count) }
            return s.lowercased()
        } ?? "type_\(typeValue)"
        return BPFMapDump(
            id: try u32(L.id), name: try space.readCString(at: p &+ UInt64(L.name.offset), maxLength: min(L.name.size, 64)),
            type: typeName, typeValue: typeValue, keySize: try u32(L.keySize), valueSize: try u32(L.valueSize),
            maxEntries: try u32(L.maxEntries), flags: try u32(L.flags))
    }

    /// Elements of the hash map at `p` (`struct bpf_htab`): each bucket's `htab_elem` chain
    /// (an `hlist_nulls` list, ended by a pointer with bit 0 set), key then value rounded up
    /// to 8 bytes. Bounded: buckets, elements, chain length, bytes per key and value.
    public func hashEntries(_ p: UInt64, keySize: UInt32, valueSize: UInt32) throws(AddressError) -> (entries: [BPFMapEntry], truncated: Bool) {
        guard let H = hash else { throw .unmapped(p, why: "the kernel's BTF has no struct bpf_htab / htab_elem layout") }
        guard keySize >= 1, keySize <= UInt32(Self.maxHashKey) else { throw .unmapped(p, why: "hash key of \(keySize) bytes") }
        let buckets = try space.readPointer(at: p &+ UInt64(H.buckets))
        let n = try space.read(UInt32.self, at: p &+ UInt64(H.nBuckets))
        guard buckets != 0, H.bucketSize > 0 else { return ([], n > 0) }
        var truncated = n > UInt32(Self.maxHashBuckets)
        let scan = Int(min(n, UInt32(Self.maxHashBuckets)))
        let valueOffset = UInt64((Int(keySize) + 7) & ~7)
        let valueLength = Int(min(valueSize, UInt32(Self.maxHashValue)))
        if valueSize > UInt32(Self.maxHashValue) { truncated = true }
        var out: [BPFMapEntry] = []
        let perChunk = max(1, 4096 / H.bucketSize)
        var first = 0
        while first < scan {
            let count = min(perChunk, scan - first)
            let table = try space.readBytes(at: buckets &+ UInt64(first * H.bucketSize), count: count * H.bucketSize)
            for i in 0..<count {
                guard var e = littleEndianValue(table, offset: i * H.bucketSize + H.bucketHead, size: 8) else { continue }
                var chain = 0
                while e != 0, e & 1 == 0 {
                    guard out.count < Self.maxHashEntries, chain < Self.maxHashChain else { return (out, true) }
                    chain += 1
                    let key = try space.readBytes(at: e &+ UInt64(H.elemKey), count: Int(keySize))
                    let value = try space.readBytes(at: e &+ UInt64(H.elemKey) &+ valueOffset, count: valueLength)
                    out.append(BPFMapEntry(key: key, value: value))
                    e = try space.readPointer(at: e &+ UInt64(H.elemNext))
                }
            }
            first += count
        }
        return (out, truncated)
    }

    func readMap(_ p: UInt64, btfCache: inout [UInt64: BTF], problems: inout [String]) throws(AddressError) -> BPFMapDump {
        let L = layout
        func u32(_ off: Int) throws(AddressError) -> UInt32 { try space.read(UInt32.self, at: p &+ UInt64(off)) }
        var m = try readHeader(p)
        let typeName = m.type, typeValue = m.typeValue
        if typeName == "hash" || typeName == "lru_hash" {
            if hash != nil {
                do { (m.entries, m.entriesTruncated) = try hashEntries(p, keySize: m.keySize, valueSize: m.valueSize) }
                catch { problems.append("map \(m.name) entries: \(error)") }
            }
            return m
        }
        if typeName == "percpu_array" {
            do { m.perCPUHex = try readPerCPU(p, m) } catch { problems.append("map \(m.name) per-CPU values: \(error)") }
            return m
        }
        guard typeName == "array" || (L.typeNames.isEmpty && typeValue == 2) else { return m }
        let elem = (UInt64(m.valueSize) + 7) & ~7
        // value_size and max_entries come from the guest: saturate rather than trap.
        let (product, overflow) = elem.multipliedReportingOverflow(by: UInt64(m.maxEntries))
        let total = overflow ? UInt64.max : product
        let n = Int(min(total, UInt64(Self.maxContents)))
        guard n > 0 else { return m }
        do {
            let bytes = try space.readBytes(at: p &+ UInt64(L.arrayValue), count: n)
            m.contentsHex = bytes.map { b in (b < 16 ? "0" : "") + String(b, radix: 16) }.joined()
            m.contentsTruncated = total > UInt64(n)
            // A global section (.bss/.data/.rodata) is one element whose value type is a DATASEC.
            let btfPtr = try space.readPointer(at: p &+ UInt64(L.btf))
            let valueType = try u32(L.btfValueTypeID)
            if btfPtr != 0, valueType != 0, m.maxEntries == 1 {
                if btfCache[btfPtr] == nil { btfCache[btfPtr] = try? loadBTF(btfPtr) }
                if let btf = btfCache[btfPtr], btf.type(valueType)?.kind == .datasec {
                    m.variables = Self.decode(btf: btf, datasec: valueType, bytes: bytes)
                } else if btfCache[btfPtr] == nil {
                    problems.append("map \(m.name): its BTF could not be read; contents are hex only")
                }
            }
        } catch {
            problems.append("map \(m.name) contents: \(error)")
        }
        return m
    }

    /// Per-CPU array: `pptrs[i]` is a per-CPU pointer; CPU c's value is at
    /// `pptrs[i] + __per_cpu_offset[c]`. Returns, per CPU, the hex of the first entries' values.
    func readPerCPU(_ p: UInt64, _ m: BPFMapDump) throws(AddressError) -> [String]? {
        guard let offs = perCPUOffsets, cpuCount > 0 else { return nil }
        let entries = Int(min(UInt64(m.maxEntries), UInt64(Self.maxPerCPUEntries)))
        let size = Int(min(UInt64(m.valueSize), UInt64(Self.maxContents / max(1, entries))))
        guard entries > 0, size > 0 else { return nil }
        var pptrs: [UInt64] = []
        for i in 0..<entries { pptrs.append(try space.readPointer(at: p &+ UInt64(layout.arrayValue + i * 8))) }
        var out: [String] = []
        for cpu in 0..<min(cpuCount, Self.maxCPUs) {
            let off = try space.readPointer(at: offs &+ UInt64(cpu * 8))
            var bytes: [UInt8] = []
            for pp in pptrs { bytes += try space.readBytes(at: pp &+ off, count: size) }
            out.append(bytes.map { b in (b < 16 ? "0" : "") + String(b, radix: 16) }.joined())
        }
        return out
    }

    /// A program's BTF blob from a kernel `struct btf` (`data`, `data_size`).
    func loadBTF(_ btf: UInt64) throws -> BTF {
        let data = try space.readPointer(at: btf &+ UInt64(layout.btfData))
        let size = Int(try space.read(UInt32.self, at: btf &+ UInt64(layout.btfDataSize)))
        guard size > 0, size <= Self.maxMapBTF else { throw AddressError.unmapped(btf, why: "map BTF of \(size) bytes") }
        return try BTF(bytes: try space.readBytes(at: data, count: size))
    }

    /// A `char[N]` holding printable text up to its NUL, quoted; nil otherwise.
    static func charArrayText(btf: BTF, type: UInt32, raw: [UInt8]) -> String? {
        guard let rid = try? btf.resolve(type), let t = btf.type(rid), t.kind == .array,
              let eid = try? btf.resolve(t.arrayInfo.element), let e = btf.type(eid), e.kind == .int, e.sizeOrType == 1
        else { return nil }
        let text = raw.prefix { $0 != 0 }
        guard !text.isEmpty, text.allSatisfy({ ($0 >= 0x20 && $0 < 0x7F) || $0 == 0x0A || $0 == 0x09 }) else { return nil }
        let escaped = String(decoding: text, as: UTF8.self).replacingOccurrences(of: "\\", with: "\\\\")
            .replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
        return "\"" + escaped + "\""
    }

    static func decode(btf: BTF, datasec: UInt32, bytes: [UInt8]) -> [BPFVariable] {
        btf.sectionVariables(datasec).compactMap { v -> BPFVariable? in
            guard v.offset >= 0, v.size >= 0, v.offset <= bytes.count - v.size else { return nil }
            let raw = Array(bytes[v.offset..<(v.offset + v.size)])
            var integer: Int64?
            if let rid = try? btf.resolve(v.type), let t = btf.type(rid),
               [.int, .enum, .enum64].contains(t.kind), v.size <= 8, let u = littleEndianValue(raw, offset: 0, size: v.size) {
                let signed = t.isSignedInt || (t.kind != .int && t.kindFlag)
                if signed && v.size < 8 {
                    let shift = UInt64(64 - v.size * 8)
                    integer = Int64(bitPattern: u << shift) >> Int64(shift)
                } else {
                    integer = Int64(bitPattern: u)
                }
                if !signed, v.size == 8, Int64(bitPattern: u) < 0 {
                    // Does not fit an Int64: show the unsigned value in hex.
                    return BPFVariable(name: v.name, offset: v.offset, size: v.size, value: "0x" + String(u, radix: 16), integer: nil)
                }
            }
            if integer == nil, let text = Self.charArrayText(btf: btf, type: v.type, raw: raw) {
                return BPFVariable(name: v.name, offset: v.offset, size: v.size, value: text, integer: nil)
            }
            let value = integer.map { "\($0)" } ?? raw.map { b in (b < 16 ? "0" : "") + String(b, radix: 16) }.joined()
            return BPFVariable(name: v.name, offset: v.offset, size: v.size, value: value, integer: integer)
        }
    }
}
