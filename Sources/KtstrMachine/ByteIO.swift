/// Little-endian reads and writes on byte arrays, bounds-checked: a read past the end yields
/// nil (parsers turn that into a typed "truncated" error), never a trap.
extension Array where Element == UInt8 {
    public func le<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T? {
        let n = MemoryLayout<T>.size
        guard offset >= 0, n <= count - offset else { return nil }
        var v: T = 0
        for i in 0..<n { v |= T(self[offset + i]) << (8 * i) }
        return v
    }

    /// Writes `value` little-endian at `offset`; the caller sized the array (a zero page,
    /// an MP table), so an out-of-range write is a programming error caught by the check.
    public mutating func putLE<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        let n = MemoryLayout<T>.size
        precondition(offset >= 0 && n <= count - offset, "putLE out of range")
        for i in 0..<n { self[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
    }

    public mutating func putBytes(_ bytes: some Collection<UInt8>, at offset: Int) {
        precondition(offset >= 0 && bytes.count <= count - offset, "putBytes out of range")
        var i = offset
        for b in bytes { self[i] = b; i += 1 }
    }
}
