import Glibc

/// Guest RAM images of snapshots (docs/DESIGN-NOTES.md "Boot snapshots"): written from the
/// RAM file of a stopped machine, copied into a fresh RAM file for each restore. Both skip
/// what was never written: holes stay holes (SEEK_DATA/SEEK_HOLE), and an image block of
/// zeros is left out, so a 512 MiB guest that touched 120 MiB costs about 120 MiB.
public enum QEMURAMImage {
    public enum ImageError: Error, CustomStringConvertible {
        case io(String)
        case size(expected: UInt64, got: UInt64)
        public var description: String {
            switch self {
            case let .io(why): "RAM image: \(why)"
            case let .size(e, g): "RAM image: \(g) bytes, the machine has \(e) — the snapshot does not fit this configuration"
            }
        }
    }

    static let block = 1 << 20
    /// lseek whences from <unistd.h> (_GNU_SOURCE: not in the Glibc module).
    static let seekData: Int32 = 3, seekHole: Int32 = 4

    /// Copies the data extents of `from` (size `size`) into `to` at the same offsets; blocks
    /// of zeros are not written (a fresh file reads them as zero anyway).
    public static func copy(from src: Int32, to dst: Int32, size: UInt64) throws(ImageError) {
        var buf = [UInt8](repeating: 0, count: block)
        let zeros = [UInt8](repeating: 0, count: 4096)
        var pos = off_t(0)
        let end = off_t(size)
        while pos < end {
            let data = lseek(src, pos, seekData)
            if data < 0 {
                if errno == ENXIO { break } // only a hole remains
                throw .io("lseek(SEEK_DATA): \(String(cString: strerror(errno)))")
            }
            var hole = lseek(src, data, seekHole)
            if hole < 0 { hole = end }
            var at = data
            while at < min(hole, end) {
                let want = Int(min(off_t(block), min(hole, end) - at))
                let n = buf.withUnsafeMutableBytes { pread(src, $0.baseAddress, want, at) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw .io("read at \(at): \(n < 0 ? String(cString: strerror(errno)) : "end of file")") }
                // Write page by page, leaving out pages of zeros.
                var p = 0
                while p < n {
                    let len = min(4096, n - p)
                    let isZero = buf.withUnsafeBytes { b in zeros.withUnsafeBytes { memcmp(b.baseAddress! + p, $0.baseAddress!, len) == 0 } }
                    if !isZero {
                        var w = 0
                        while w < len {
                            let k = buf.withUnsafeBytes { pwrite(dst, $0.baseAddress! + p + w, len - w, at + off_t(p + w)) }
                            if k < 0 && errno == EINTR { continue }
                            guard k > 0 else { throw .io("write at \(at + off_t(p + w)): \(String(cString: strerror(errno)))") }
                            w += k
                        }
                    }
                    p += len
                }
                at += off_t(n)
            }
            pos = hole
        }
    }

    /// Writes the RAM file `ram` (size `size`) to a new file at `path` (0600, sparse).
    public static func save(ram: Int32, size: UInt64, to path: String) throws(ImageError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .io("create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard ftruncate(fd, off_t(size)) == 0 else { throw .io("size \(path): \(String(cString: strerror(errno)))") }
        try copy(from: ram, to: fd, size: size)
        guard fsync(fd) == 0 else { throw .io("fsync \(path): \(String(cString: strerror(errno)))") }
    }

    /// Fills the fresh RAM file `ram` (already sized to `size`) from the image at `path`.
    public static func load(_ path: String, into ram: Int32, size: UInt64) throws(ImageError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io("open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .io("stat \(path): \(String(cString: strerror(errno)))") }
        guard UInt64(st.st_size) == size else { throw .size(expected: size, got: UInt64(st.st_size)) }
        try copy(from: fd, to: ram, size: size)
    }
}
