/// The request a host sends to an agent that waits for its plan (a VM restored from a
/// snapshot, docs/PROTOCOLS.md "Plan request"): fresh entropy, the host's wall clock and the
/// run's files as a newc cpio archive (the plan at /ktstr/plan.json among them).
///
/// Wire form, little-endian, a fixed 32-byte header then two bounded bodies:
/// `"KTSTRRQ1"` · u64 realtime seconds · u32 nanoseconds · u32 entropy length · u64 archive
/// length · entropy bytes · archive bytes.
public struct PlanRequest: Sendable, Equatable {
    public static let magic: [UInt8] = Array("KTSTRRQ1".utf8)
    public static let headerBytes = 32
    /// Entropy is for reseeding, not bulk data: RNDADDENTROPY takes at most a page anyway.
    public static let maxEntropyBytes = 512
    /// The scheduler, its libraries and the kernel config are a few MiB; this bounds what a
    /// confused host can make the guest allocate.
    public static let maxArchiveBytes = 256 << 20

    public var realtimeSeconds: Int64
    public var realtimeNanoseconds: UInt32
    public var entropy: [UInt8]
    public var archive: [UInt8]

    public init(realtimeSeconds: Int64, realtimeNanoseconds: UInt32, entropy: [UInt8], archive: [UInt8]) {
        self.realtimeSeconds = realtimeSeconds; self.realtimeNanoseconds = realtimeNanoseconds
        self.entropy = entropy; self.archive = archive
    }

    /// What the header says follows.
    public struct Header: Sendable, Equatable {
        public var realtimeSeconds: Int64
        public var realtimeNanoseconds: UInt32
        public var entropyBytes: Int
        public var archiveBytes: Int
    }

    public enum DecodeError: Error, Equatable, CustomStringConvertible {
        case short(Int)
        case badMagic
        case badTime
        case entropyTooLong(UInt32)
        case archiveTooLong(UInt64)
        case bodyLength(expected: Int, got: Int)
        public var description: String {
            switch self {
            case let .short(n): "plan request: header of \(n) bytes, need \(PlanRequest.headerBytes)"
            case .badMagic: "plan request: not a ktstr plan request (bad magic)"
            case .badTime: "plan request: nanoseconds out of range"
            case let .entropyTooLong(n): "plan request: \(n) bytes of entropy, at most \(PlanRequest.maxEntropyBytes)"
            case let .archiveTooLong(n): "plan request: archive of \(n) bytes, at most \(PlanRequest.maxArchiveBytes)"
            case let .bodyLength(e, g): "plan request: body of \(g) bytes, the header says \(e)"
            }
        }
    }

    public func encoded() -> [UInt8] {
        var out = Self.magic
        out.reserveCapacity(Self.headerBytes + entropy.count + archive.count)
        Self.put(&out, UInt64(bitPattern: realtimeSeconds), 8)
        Self.put(&out, UInt64(realtimeNanoseconds), 4)
        Self.put(&out, UInt64(entropy.count), 4)
        Self.put(&out, UInt64(archive.count), 8)
        out += entropy
        out += archive
        return out
    }

    /// Checks the fixed header; every length is bounded before anything is allocated.
    public static func decodeHeader(_ b: [UInt8]) -> Result<Header, DecodeError> {
        guard b.count >= headerBytes else { return .failure(.short(b.count)) }
        guard b[0..<8].elementsEqual(magic) else { return .failure(.badMagic) }
        let secs = Int64(bitPattern: get(b, 8, 8))
        let nanos = UInt32(get(b, 16, 4))
        let entropy = UInt32(get(b, 20, 4))
        let archive = get(b, 24, 8)
        guard nanos < 1_000_000_000, secs >= 0 else { return .failure(.badTime) }
        guard entropy <= UInt32(maxEntropyBytes) else { return .failure(.entropyTooLong(entropy)) }
        guard archive <= UInt64(maxArchiveBytes) else { return .failure(.archiveTooLong(archive)) }
        return .success(Header(realtimeSeconds: secs, realtimeNanoseconds: nanos, entropyBytes: Int(entropy),
                               archiveBytes: Int(archive)))
    }

    /// A whole request in one buffer (tests, fuzzing; the agent reads header and body apart).
    public static func decode(_ b: [UInt8]) -> Result<PlanRequest, DecodeError> {
        switch decodeHeader(b) {
        case let .failure(e): return .failure(e)
        case let .success(h):
            let body = b.count - headerBytes
            guard body == h.entropyBytes + h.archiveBytes else {
                return .failure(.bodyLength(expected: h.entropyBytes + h.archiveBytes, got: body))
            }
            let e = headerBytes + h.entropyBytes
            return .success(PlanRequest(realtimeSeconds: h.realtimeSeconds, realtimeNanoseconds: h.realtimeNanoseconds,
                                        entropy: Array(b[headerBytes..<e]), archive: Array(b[e...])))
        }
    }

    private static func put(_ out: inout [UInt8], _ v: UInt64, _ n: Int) {
        for i in 0..<n { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) }
    }

    private static func get(_ b: [UInt8], _ at: Int, _ n: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<n { v |= UInt64(b[at + i]) << (8 * UInt64(i)) }
        return v
    }
}
