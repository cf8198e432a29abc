import Synchronization

/// A thread-safe byte buffer to use as a device's `ByteSink` (console capture in tests and
/// tiny guests). Keeps at most `limit` bytes (the newest), so a chatty guest cannot grow it
/// without bound.
public final class ByteCollector: Sendable {
    private let bytes = Mutex<[UInt8]>([])
    public let limit: Int

    public init(limit: Int = 1 << 20) { self.limit = max(1, limit) }

    public var sink: ByteSink {
        { [self] chunk in append(chunk) }
    }

    public func append(_ chunk: ArraySlice<UInt8>) {
        bytes.withLock { b in
            b.append(contentsOf: chunk)
            if b.count > limit { b.removeFirst(b.count - limit) }
        }
    }

    public var contents: [UInt8] { bytes.withLock { $0 } }
    /// Bytes held now (without copying them).
    public var count: Int { bytes.withLock { $0.count } }
    public var text: String { String(decoding: contents, as: UTF8.self) }
}
