import Foundation
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

/// Where the compressed kernel (the ELF vmlinux) sits inside a bzImage, from its setup
/// header (Documentation/arch/x86/boot.rst): the protected-mode part starts at
/// `(setup_sects + 1) * 512`; `payload_offset` / `payload_length` locate the compressed
/// vmlinux inside it; the payload's last 4 bytes are the decompressed size (little endian).
/// Every number comes from the file and is bounds-checked against its size.
public struct BzImagePayload: Sendable, Equatable {
    public enum Compression: String, Sendable { case zstd, gzip, xz, lz4, lzma, bzip2, lzo, unknown }

    /// Byte range of the compressed frame in the file, without the 4-byte size trailer.
    public var frame: Range<Int>
    /// Size of the decompressed vmlinux, from the trailer.
    public var decompressedSize: UInt32
    public var compression: Compression

    public enum ParseError: Error, CustomStringConvertible, Equatable {
        case tooShort(Int)
        case notBzImage
        case protocolTooOld(UInt16)
        case payloadOutOfBounds(offset: Int, length: Int, fileSize: Int)

        public var description: String {
            switch self {
            case let .tooShort(n): "kernel image is \(n) bytes: too short for a bzImage setup header — pass a bzImage (vmlinuz)"
            case .notBzImage: "no 'HdrS' setup header magic: not a bzImage — pass a bzImage (vmlinuz)"
            case let .protocolTooOld(v):
                "boot protocol \(String(v >> 8)).\(String(v & 0xff)) has no payload fields (needs 2.08+) — use a newer kernel"
            case let .payloadOutOfBounds(o, l, s):
                "payload [\(o), +\(l)) lies outside the \(s)-byte file: truncated or corrupt — download the kernel again"
            }
        }
    }

    static func le16(_ b: [UInt8], _ o: Int) -> UInt16 { UInt16(b[o]) | UInt16(b[o + 1]) << 8 }
    static func le32(_ b: [UInt8], _ o: Int) -> UInt32 {
        UInt32(b[o]) | UInt32(b[o + 1]) << 8 | UInt32(b[o + 2]) << 16 | UInt32(b[o + 3]) << 24
    }

    public init(bzImage bytes: [UInt8]) throws(ParseError) {
        // Setup header fields used: setup_sects 0x1f1, magic 0x202, version 0x206,
        // payload_offset 0x248, payload_length 0x24c.
        guard bytes.count >= 0x250 else { throw .tooShort(bytes.count) }
        guard Array(bytes[0x202..<0x206]) == Array("HdrS".utf8) else { throw .notBzImage }
        let version = Self.le16(bytes, 0x206)
        guard version >= 0x0208 else { throw .protocolTooOld(version) }
        let setupSects = bytes[0x1f1] == 0 ? 4 : Int(bytes[0x1f1])
        let pmStart = (setupSects + 1) * 512
        let offset = pmStart + Int(Self.le32(bytes, 0x248))
        let length = Int(Self.le32(bytes, 0x24c))
        guard length > 4, offset <= bytes.count, length <= bytes.count - offset else {
            throw .payloadOutOfBounds(offset: offset, length: length, fileSize: bytes.count)
        }
        frame = offset..<(offset + length - 4)
        decompressedSize = Self.le32(bytes, offset + length - 4)
        compression = Self.compression(of: bytes[offset..<min(offset + 6, bytes.count)])
    }

    static func compression(of head: ArraySlice<UInt8>) -> Compression {
        let h = Array(head)
        func starts(_ magic: [UInt8]) -> Bool { h.count >= magic.count && Array(h[0..<magic.count]) == magic }
        if starts([0x28, 0xb5, 0x2f, 0xfd]) { return .zstd }
        if starts([0x1f, 0x8b]) { return .gzip }
        if starts([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]) { return .xz }
        if starts([0x02, 0x21, 0x4c, 0x18]) { return .lz4 }
        if starts([0x42, 0x5a, 0x68]) { return .bzip2 }
        if starts([0x89, 0x4c, 0x5a, 0x4f]) { return .lzo }
        if starts([0x5d, 0x00, 0x00]) { return .lzma }
        return .unknown
    }

    /// Says whether the file at `path` starts like a bzImage (setup header magic).
    public static func looksLikeBzImage(atPath path: String) -> Bool {
        guard let h = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? h.close() }
        guard let head = try? h.read(upToCount: 0x210), head.count >= 0x206 else { return false }
        return Array(head[0x202..<0x206]) == Array("HdrS".utf8)
    }

    /// Says whether the file at `path` is an ELF whose size is `size`.
    public static func isELF(atPath path: String, size: UInt32) -> Bool {
        guard let attrs = try? FileManager.default.attributesOfItem(atPath: path),
              let n = (attrs[.size] as? NSNumber)?.uint64Value, n == UInt64(size),
              let h = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? h.close() }
        guard let magic = try? h.read(upToCount: 4) else { return false }
        return Array(magic) == [0x7f, 0x45, 0x4c, 0x46]
    }
}
