// Byte streams from a guest (console, agent channel, QMP) arrive in arbitrary chunks.

/// Splits a byte stream into lines (bounded: an overlong line is dropped up to its newline).
public struct LineSplitter: Sendable {
    private var buffer: [UInt8] = []
    private var discarding = false
    public let maxLine: Int

    public init(maxLine: Int) { self.maxLine = maxLine }

    public mutating func feed(_ bytes: some Sequence<UInt8>) -> [String] {
        var lines: [String] = []
        for b in bytes {
            if b == 0x0A {
                if !discarding { lines.append(String(decoding: buffer, as: UTF8.self)) }
                buffer.removeAll(keepingCapacity: true)
                discarding = false
            } else if !discarding {
                buffer.append(b)
                if buffer.count > maxLine { buffer.removeAll(); discarding = true }
            }
        }
        return lines
    }
}
