import Glibc
import KtstrMachine

/// Why a kernel file cannot be booted, found before any machine starts. One line: the file,
/// what is wrong with it, and the fix.
public struct KernelFileError: Error, CustomStringConvertible, Equatable {
    public enum Cause: Sendable, Equatable {
        case missing
        /// A directory, a device (`/dev/null`), a FIFO…: what `stat` says it is.
        case notRegularFile(String)
        case empty
        case unreadable(errno: Int32)
        /// The header parsed, and says the file is not a kernel we can boot.
        case image(KernelImageError)
    }

    public let path: String
    public let cause: Cause

    public init(path: String, cause: Cause) { self.path = path; self.cause = cause }

    public var description: String {
        let fix = "pass a bzImage (vmlinuz) or an ELF vmlinux with --kernel, or unset it to use the cached kernel"
        return switch cause {
        case .missing: "kernel \(path): no such file — \(fix)"
        case let .notRegularFile(kind): "kernel \(path): is a \(kind), not a regular file — \(fix)"
        case .empty: "kernel \(path): the file is empty — \(fix)"
        case let .unreadable(e): "kernel \(path): cannot be read (\(String(cString: strerror(e)))) — \(fix)"
        case let .image(e): "kernel \(path): \(e)"
        }
    }
}

extension KernelImage {
    /// Largest kernel file we read whole (a vmlinux with debug info is ~1 GiB at most).
    public static let maxFileSize: UInt64 = 2 << 30
    /// Oldest boot protocol any backend can start (qemu's loader needs 2.06).
    public static let minimumValidatedProtocol: UInt16 = 0x0206
    /// `SETUP_SECT_MAX` in arch/x86/boot/tools/build.c.
    public static let maxSetupSects = 64

    /// Checks that `path` is a kernel some backend can boot, reading only its headers:
    /// a regular, non-empty file that is either a bzImage (boot-sector signature, "HdrS",
    /// protocol ≥ 2.06, sane setup_sects, the protected-mode kernel and payload within the
    /// file) or an ELF64 x86-64 vmlinux (header, program headers and PT_LOAD data within the
    /// file). Backend-specific requirements (KVMMachine wants protocol 2.12 and a 64-bit entry)
    /// are checked by `KernelImage(path:)` when that backend loads it.
    public static func validate(path: String) throws(KernelFileError) {
        func fail(_ c: KernelFileError.Cause) -> KernelFileError { KernelFileError(path: path, cause: c) }
        func image(_ e: KernelImageError) -> KernelFileError { fail(.image(e)) }
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw errno == ENOENT || errno == ENOTDIR ? fail(.missing) : fail(.unreadable(errno: errno)) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw fail(.unreadable(errno: errno)) }
        guard st.st_mode & S_IFMT == S_IFREG else { throw fail(.notRegularFile(fileKind(st.st_mode))) }
        guard st.st_size > 0 else { throw fail(.empty) }
        let size = UInt64(st.st_size)

        /// Exactly `count` bytes at `off`, or nil when the file is shorter.
        func read(_ off: UInt64, _ count: Int) throws(KernelFileError) -> [UInt8]? {
            guard count >= 0, off <= size, UInt64(count) <= size - off else { return nil }
            var buf = [UInt8](repeating: 0, count: count)
            var done = 0
            while done < count {
                let n = buf.withUnsafeMutableBytes { raw in
                    // off + count ≤ size ≤ Int64.max.
                    Glibc.pread(fd, raw.baseAddress! + done, count - done, off_t(off) + off_t(done))
                }
                if n < 0 { throw fail(.unreadable(errno: errno)) }
                if n == 0 { return nil }
                done += n
            }
            return buf
        }

        let head = try read(0, Int(min(size, 4096))) ?? []
        if head.count >= 4, head[0] == 0x7f, head[1] == 0x45, head[2] == 0x4c, head[3] == 0x46 {
            do throws(KernelImageError) {
                try validateELF(head: head, size: size) { o, c in (try? read(o, c)) ?? nil }
            } catch { throw image(error) }
            return
        }
        do throws(KernelImageError) { try validateBzImage(head: head, size: size) } catch { throw image(error) }
    }

    /// a + b as an Int for error messages, Int.max when it does not fit.
    static func saturatingSum(_ a: UInt64, _ b: UInt64) -> Int {
        let (s, o) = a.addingReportingOverflow(b)
        return o ? Int.max : Int(clamping: s)
    }

    static func fileKind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFDIR: "directory"
        case S_IFCHR: "character device"
        case S_IFBLK: "block device"
        case S_IFIFO: "FIFO"
        case S_IFSOCK: "socket"
        case S_IFLNK: "symbolic link"
        default: "special file"
        }
    }

    /// The bzImage checks on the first 4 KiB of a file of `size` bytes.
    static func validateBzImage(head b: [UInt8], size: UInt64) throws(KernelImageError) {
        let n = Int(clamping: size)
        guard b.count >= 512 else {
            if b.count >= 2, b.count < 512, b.allSatisfy({ $0 == 0x09 || $0 == 0x0a || $0 == 0x0d || (0x20..<0x7f).contains($0) }) {
                throw .notAKernel("the file is \(b.count) bytes of text")
            }
            throw .truncated(what: "boot sector", needed: 512, size: n)
        }
        guard b[510] == 0x55, b[511] == 0xAA else {
            let text = b.prefix(512).allSatisfy { $0 == 0x09 || $0 == 0x0a || $0 == 0x0d || (0x20..<0x7f).contains($0) }
            throw .notAKernel(text ? "the file is text" : "no boot-sector signature 0x55AA at offset 510 and no ELF magic")
        }
        guard let magic = b.le(UInt32.self, at: SetupHeader.Offset.header), let version = b.le(UInt16.self, at: SetupHeader.Offset.version) else {
            throw .truncated(what: "setup header", needed: 0x208, size: n)
        }
        guard magic == SetupHeader.magic else { throw .notAKernel("no \"HdrS\" setup-header magic at 0x202 (a pre-2.0 or non-Linux boot sector)") }
        guard version >= minimumValidatedProtocol else { throw .protocolTooOld(version: version, minimum: minimumValidatedProtocol) }
        let raw = Int(b[SetupHeader.Offset.setupSects])
        let sects = raw == 0 ? 4 : raw
        guard sects <= maxSetupSects else { throw .implausible("setup_sects is \(sects), more than \(maxSetupSects)") }
        let pm = UInt64(sects + 1) * 512
        guard pm < size else { throw .truncated(what: "real-mode setup (\(sects) sectors)", needed: Int(pm) + 1, size: n) }
        // syssize (0x1f4): the protected-mode kernel in 16-byte paragraphs (protocol ≥ 2.04).
        let sysSize = UInt64(b.le(UInt32.self, at: 0x1f4) ?? 0) * 16
        guard pm + sysSize <= size else {
            throw .truncated(what: "protected-mode kernel (syssize)", needed: Int(clamping: pm + sysSize), size: n)
        }
        // payload_offset/length (protocol ≥ 2.08) are relative to the protected-mode kernel.
        if version >= 0x0208, let po = b.le(UInt32.self, at: SetupHeader.Offset.payloadOffset),
           let pl = b.le(UInt32.self, at: SetupHeader.Offset.payloadLength), pl > 0 {
            let end = pm + UInt64(po) + UInt64(pl)
            guard end <= size else { throw .truncated(what: "compressed payload", needed: Int(clamping: end), size: n) }
        }
    }

    /// The ELF checks: ELF64 little-endian x86-64, program headers and PT_LOAD data in the file.
    static func validateELF(head b: [UInt8], size: UInt64,
                            read: (UInt64, Int) -> [UInt8]?) throws(KernelImageError) {
        let n = Int(clamping: size)
        guard b.count >= 64 else { throw .truncated(what: "ELF header", needed: 64, size: n) }
        guard b[4] == 2 else { throw .not64Bit }
        guard b[5] == 1 else { throw .badELF("not little-endian") }
        guard let machine = b.le(UInt16.self, at: 18), let phoff = b.le(UInt64.self, at: 32),
              let phentsize = b.le(UInt16.self, at: 54), let phnum = b.le(UInt16.self, at: 56)
        else { throw .truncated(what: "ELF header", needed: 64, size: n) }
        guard machine == 62 else { throw .notX86_64(machine: machine) }
        guard phentsize >= 56, phnum > 0 else { throw .badELF("no program headers") }
        let tableSize = Int(phentsize) * Int(phnum) // ≤ 65535²
        guard phoff <= size, UInt64(tableSize) <= size - phoff, let table = read(phoff, tableSize) else {
            throw .truncated(what: "program headers", needed: saturatingSum(phoff, UInt64(tableSize)), size: n)
        }
        var loads = 0
        for i in 0..<Int(phnum) {
            let o = i * Int(phentsize)
            guard let type = table.le(UInt32.self, at: o), let off = table.le(UInt64.self, at: o + 8),
                  let filesz = table.le(UInt64.self, at: o + 32) else { throw .truncated(what: "program header \(i)", needed: n + 1, size: n) }
            guard type == 1 else { continue } // PT_LOAD
            loads += 1
            guard off <= size, filesz <= size - off else {
                throw .truncated(what: "segment \(i)", needed: saturatingSum(off, filesz), size: n)
            }
        }
        guard loads > 0 else { throw .badELF("no PT_LOAD segment") }
    }
}
