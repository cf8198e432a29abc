import KtstrMachine
import KtstrProtocol

/// Little-endian reads from a byte array that return nil instead of trapping past the end.
struct ByteReader {
    let bytes: [UInt8]
    private(set) var position: Int
    let end: Int

    init(_ bytes: [UInt8], start: Int = 0, end: Int? = nil) {
        self.bytes = bytes
        self.position = max(0, min(start, bytes.count))
        self.end = max(self.position, min(end ?? bytes.count, bytes.count))
    }

    var remaining: Int { end - position }

    func u8(at off: Int) -> UInt8? { off >= 0 && off < bytes.count ? bytes[off] : nil }

    func u16(at off: Int) -> UInt16? {
        guard off >= 0, off <= bytes.count - 2 else { return nil }
        return UInt16(bytes[off]) | UInt16(bytes[off + 1]) << 8
    }

    func u32(at off: Int) -> UInt32? {
        guard off >= 0, off <= bytes.count - 4 else { return nil }
        var v: UInt32 = 0
        for i in (0..<4).reversed() { v = v << 8 | UInt32(bytes[off + i]) }
        return v
    }

    func u64(at off: Int) -> UInt64? {
        guard let lo = u32(at: off), let hi = u32(at: off + 4) else { return nil }
        return UInt64(hi) << 32 | UInt64(lo)
    }

    mutating func next32() -> UInt32? {
        guard remaining >= 4, let v = u32(at: position) else { return nil }
        position += 4
        return v
    }
}

/// Little-endian integer of `size` bytes at `offset` in `bytes` (nil when out of range).
func littleEndianValue(_ bytes: [UInt8], offset: Int, size: Int) -> UInt64? {
    guard size >= 1, size <= 8, offset >= 0, offset <= bytes.count - size else { return nil }
    var v: UInt64 = 0
    for i in (0..<size).reversed() { v = v << 8 | UInt64(bytes[offset + i]) }
    return v
}
