import CVolatile
import Glibc

/// Why a guest-physical access was refused. Guest-supplied addresses end here, never in a crash.
public enum GuestMemoryError: Error, CustomStringConvertible, Equatable {
    case outOfRange(gpa: UInt64, length: Int)
    case mapFailed(what: String, errno: Int32)

    public var description: String {
        switch self {
        case let .outOfRange(gpa, length):
            "guest memory: [0x\(String(gpa, radix: 16)), +\(length)) is not inside guest RAM"
        case let .mapFailed(what, e):
            "guest memory: mmap of \(what) failed: \(String(cString: strerror(e))) — lower the VM's memory or free host memory"
        }
    }
}

/// Host mapping of guest RAM, addressed by guest-physical address (GPA).
///
/// Every access is bounds-checked against the regions: an address or length that comes from
/// the guest (a pointer read out of a kernel structure, a DMA descriptor) can only produce a
/// `GuestMemoryError`. Reads from another thread are safe while vCPUs run (values may be
/// stale/torn at the guest's discretion) and exact while they are frozen.
public final class GuestMemory: @unchecked Sendable {
    public struct Region: @unchecked Sendable {
        public let guestPhysical: UInt64
        public let size: UInt64
        /// Host address of the region's first byte (stable for the lifetime of the GuestMemory).
        public let host: UnsafeMutableRawPointer
        public var end: UInt64 { guestPhysical + size }
    }

    public let regions: [Region]
    private let mappings: [(UnsafeMutableRawPointer, Int)]

    private init(regions: [Region], mappings: [(UnsafeMutableRawPointer, Int)]) {
        self.regions = regions.sorted { $0.guestPhysical < $1.guestPhysical }
        self.mappings = mappings
    }

    deinit {
        for (p, n) in mappings { munmap(p, n) }
    }

    /// Total bytes of RAM over all regions.
    public var totalSize: UInt64 { regions.reduce(0) { $0 + $1.size } }

    /// Private anonymous RAM (the KVM backend). Layout entries must not overlap.
    public static func anonymous(layout: [(gpa: UInt64, size: UInt64)]) throws -> GuestMemory {
        var regions: [Region] = []
        var maps: [(UnsafeMutableRawPointer, Int)] = []
        for (gpa, size) in layout where size > 0 {
            let p = mmap(nil, Int(size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
            guard let p, p != MAP_FAILED else {
                for (q, n) in maps { munmap(q, n) }
                throw GuestMemoryError.mapFailed(what: "\(size >> 20) MiB of anonymous RAM", errno: errno)
            }
            maps.append((p, Int(size)))
            regions.append(Region(guestPhysical: gpa, size: size, host: p))
        }
        return GuestMemory(regions: regions, mappings: maps)
    }

    /// A shared mapping of a file that another process (qemu's memory-backend-file) uses as
    /// guest RAM. `layout` says which file offset backs which GPA range.
    public static func mapFile(path: String, layout: [(gpa: UInt64, size: UInt64, fileOffset: UInt64)]) throws -> GuestMemory {
        let fd = open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw GuestMemoryError.mapFailed(what: path, errno: errno) }
        defer { close(fd) }
        var regions: [Region] = []
        var maps: [(UnsafeMutableRawPointer, Int)] = []
        for (gpa, size, off) in layout where size > 0 {
            let p = mmap(nil, Int(size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, off_t(off))
            guard let p, p != MAP_FAILED else {
                for (q, n) in maps { munmap(q, n) }
                throw GuestMemoryError.mapFailed(what: path, errno: errno)
            }
            maps.append((p, Int(size)))
            regions.append(Region(guestPhysical: gpa, size: size, host: p))
        }
        return GuestMemory(regions: regions, mappings: maps)
    }

    /// A private (copy-on-write) mapping of a RAM image file, e.g. a snapshot's: pages are
    /// shared with the page cache until the guest (or the host) writes one; the file itself
    /// never changes. `layout` says which file offset backs which GPA range. The fd is
    /// closed before returning (the mappings keep the file).
    public static func privateFile(path: String, layout: [(gpa: UInt64, size: UInt64, fileOffset: UInt64)]) throws -> GuestMemory {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw GuestMemoryError.mapFailed(what: path, errno: errno) }
        defer { close(fd) }
        var regions: [Region] = []
        var maps: [(UnsafeMutableRawPointer, Int)] = []
        for (gpa, size, off) in layout where size > 0 {
            let p = mmap(nil, Int(size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, off_t(off))
            guard let p, p != MAP_FAILED else {
                let e = errno
                for (q, n) in maps { munmap(q, n) }
                throw GuestMemoryError.mapFailed(what: path, errno: e)
            }
            maps.append((p, Int(size)))
            regions.append(Region(guestPhysical: gpa, size: size, host: p))
        }
        return GuestMemory(regions: regions, mappings: maps)
    }

    /// Guest RAM that another process (qemu) backs with several files, one after the other in
    /// its RAM address space (`backing`: each fd's RAM offset and size; NUMA nodes), placed in
    /// guest-physical space by `layout` (`fileOffset` = RAM offset). Each layout region is one
    /// contiguous host mapping, even where it spans two files, so reads across a node
    /// boundary work. The fds stay the caller's.
    public static func mapFiles(backing: [(fd: Int32, ramOffset: UInt64, size: UInt64)],
                                layout: [(gpa: UInt64, size: UInt64, fileOffset: UInt64)]) throws -> GuestMemory {
        var regions: [Region] = []
        var maps: [(UnsafeMutableRawPointer, Int)] = []
        func fail(_ what: String, _ e: Int32) -> GuestMemoryError {
            for (q, n) in maps { munmap(q, n) }
            return GuestMemoryError.mapFailed(what: what, errno: e)
        }
        for (gpa, size, off) in layout where size > 0 {
            // Reserve the region's address range, then map each file's share over it.
            guard let base = mmap(nil, Int(size), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
                  base != MAP_FAILED else { throw fail("\(size >> 20) MiB of address space", errno) }
            maps.append((base, Int(size)))
            var covered: UInt64 = 0
            for b in backing {
                let lo = max(off, b.ramOffset), hi = min(off + size, b.ramOffset + b.size)
                guard lo < hi else { continue }
                let p = mmap(base + Int(lo - off), Int(hi - lo), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
                             b.fd, off_t(lo - b.ramOffset))
                guard let p, p != MAP_FAILED else { throw fail("guest RAM fd \(b.fd)", errno) }
                covered += hi - lo
            }
            guard covered == size else { throw fail("guest RAM at \(String(gpa, radix: 16)): backing covers \(covered) of \(size) bytes", EINVAL) }
            regions.append(Region(guestPhysical: gpa, size: size, host: base))
        }
        return GuestMemory(regions: regions, mappings: maps)
    }

    /// Host pointer for `[gpa, gpa+length)`, which must lie inside one region.
    public func hostAddress(of gpa: UInt64, length: Int = 1) throws -> UnsafeMutableRawPointer {
        guard length >= 0 else { throw GuestMemoryError.outOfRange(gpa: gpa, length: length) }
        for r in regions where gpa >= r.guestPhysical && gpa < r.end {
            let off = gpa - r.guestPhysical
            // Overflow-safe: compare against what is left of the region, never gpa + length.
            guard UInt64(length) <= r.size - off else { break }
            return r.host + Int(off)
        }
        throw GuestMemoryError.outOfRange(gpa: gpa, length: length)
    }

    public func contains(_ gpa: UInt64, length: Int = 1) -> Bool {
        (try? hostAddress(of: gpa, length: length)) != nil
    }

    public func read<T: FixedWidthInteger>(_: T.Type = T.self, at gpa: UInt64) throws -> T {
        let p = try hostAddress(of: gpa, length: MemoryLayout<T>.size)
        return T(littleEndian: UnsafeRawPointer(p).loadUnaligned(as: T.self))
    }

    public func readBytes(at gpa: UInt64, count: Int) throws -> [UInt8] {
        let p = try hostAddress(of: gpa, length: count)
        return Array(UnsafeRawBufferPointer(start: p, count: count))
    }

    /// A NUL-terminated string of at most `maxLength` bytes (no terminator needed at the limit).
    /// Invalid UTF-8 is repaired, never trusted.
    public func readCString(at gpa: UInt64, maxLength: Int) throws -> String {
        var bytes: [UInt8] = []
        var a = gpa
        while bytes.count < maxLength {
            let b: UInt8 = try read(at: a)
            if b == 0 { break }
            bytes.append(b)
            a &+= 1
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// A 32-bit read the compiler may not cache or split (the guest may be storing to it).
    public func readVolatileU32(at gpa: UInt64) throws -> UInt32 {
        ktstr_load_volatile_u32(try hostAddress(of: gpa, length: 4))
    }

    public func write<T: FixedWidthInteger>(_ value: T, at gpa: UInt64) throws {
        let p = try hostAddress(of: gpa, length: MemoryLayout<T>.size)
        p.storeBytes(of: value.littleEndian, as: T.self)
    }

    public func write(_ bytes: some Collection<UInt8>, at gpa: UInt64) throws {
        let p = try hostAddress(of: gpa, length: bytes.count)
        var i = 0
        for b in bytes { p.storeBytes(of: b, toByteOffset: i, as: UInt8.self); i += 1 }
    }

    public func fill(_ byte: UInt8, at gpa: UInt64, count: Int) throws {
        let p = try hostAddress(of: gpa, length: count)
        memset(p, Int32(byte), count)
    }
}
