import KtstrMachine

/// Why the zero page could not be built.
public enum BootParamsError: Error, CustomStringConvertible, Equatable {
    case commandLineTooLong(length: Int, max: Int)
    case tooManyE820Entries(Int)
    case initrdDoesNotFit(size: Int, below: UInt64, above: UInt64)

    public var description: String {
        switch self {
        case let .commandLineTooLong(n, max):
            "kernel command line is \(n) bytes, the kernel accepts \(max) — shorten --cmdline-extra"
        case let .tooManyE820Entries(n):
            "e820 map has \(n) entries, the zero page holds 128 — merge adjacent ranges"
        case let .initrdDoesNotFit(size, below, above):
            "initrd of \(size >> 20) MiB does not fit between the kernel (ends 0x\(String(above, radix: 16))) and 0x\(String(below, radix: 16)) — give the VM more memory"
        }
    }
}

/// `struct boot_params` ("zero page", 4 KiB) as bytes, built for the 64-bit boot protocol.
/// Offsets from arch/x86/include/uapi/asm/bootparam.h.
public struct BootParams: Sendable, Equatable {
    public enum Offset {
        public static let acpiRSDPAddr = 0x070
        public static let extRamdiskImage = 0x0c0
        public static let extRamdiskSize = 0x0c4
        public static let extCmdLinePtr = 0x0c8
        public static let e820Entries = 0x1e8
        public static let e820Table = 0x2d0
    }
    public static let size = 4096
    public static let maxE820Entries = 128
    /// type_of_loader 0xff: "undefined" boot loader (no registered id).
    public static let loaderUndefined: UInt8 = 0xff

    public private(set) var bytes: [UInt8]

    /// A zero page carrying `header` (bzImage) or, for an ELF vmlinux, a minimal synthetic
    /// header (magic, version 2.12, boot flag) so the kernel recognises the boot protocol.
    public init(header: SetupHeader?) {
        bytes = [UInt8](repeating: 0, count: Self.size)
        if let header {
            bytes.putBytes(header.raw, at: SetupHeader.start)
        } else {
            bytes.putLE(SetupHeader.magic, at: SetupHeader.Offset.header)
            bytes.putLE(SetupHeader.minimumVersion, at: SetupHeader.Offset.version)
            bytes.putLE(UInt32(0x100_0000), at: SetupHeader.Offset.kernelAlignment)
        }
        bytes.putLE(UInt16(0xaa55), at: SetupHeader.Offset.bootFlag)
        bytes[SetupHeader.Offset.typeOfLoader] = Self.loaderUndefined
        // The kernel is loaded high; the heap field is meaningless for the 64-bit entry but
        // CAN_USE_HEAP with heap_end_ptr = 0xfe00 is what the real-mode protocol expects.
        bytes[SetupHeader.Offset.loadflags] |= SetupHeader.loadedHigh | SetupHeader.canUseHeap
        bytes.putLE(UInt16(0xfe00), at: SetupHeader.Offset.heapEndPtr)
    }

    public func u8(_ o: Int) -> UInt8 { bytes[o] }
    public func u16(_ o: Int) -> UInt16 { bytes.le(UInt16.self, at: o) ?? 0 }
    public func u32(_ o: Int) -> UInt32 { bytes.le(UInt32.self, at: o) ?? 0 }

    public mutating func setCommandLine(at gpa: UInt64) {
        bytes.putLE(UInt32(truncatingIfNeeded: gpa), at: SetupHeader.Offset.cmdLinePtr)
        bytes.putLE(UInt32(truncatingIfNeeded: gpa >> 32), at: Offset.extCmdLinePtr)
    }

    public mutating func setRamdisk(at gpa: UInt64, size: UInt64) {
        bytes.putLE(UInt32(truncatingIfNeeded: gpa), at: SetupHeader.Offset.ramdiskImage)
        bytes.putLE(UInt32(truncatingIfNeeded: gpa >> 32), at: Offset.extRamdiskImage)
        bytes.putLE(UInt32(truncatingIfNeeded: size), at: SetupHeader.Offset.ramdiskSize)
        bytes.putLE(UInt32(truncatingIfNeeded: size >> 32), at: Offset.extRamdiskSize)
    }

    /// Where the ACPI RSDP is, so the kernel need not scan for it (boot protocol 2.14 field).
    public mutating func setACPIRoot(at gpa: UInt64) {
        bytes.putLE(gpa, at: Offset.acpiRSDPAddr)
    }

    public mutating func setE820(_ entries: [E820Entry]) throws {
        guard entries.count <= Self.maxE820Entries else { throw BootParamsError.tooManyE820Entries(entries.count) }
        bytes[Offset.e820Entries] = UInt8(entries.count)
        for (i, e) in entries.enumerated() {
            bytes.putBytes(e.bytes, at: Offset.e820Table + i * E820Entry.byteSize)
        }
    }

    /// Highest page-aligned address for an initrd of `size` bytes: below the kernel's
    /// initrd_addr_max and the top of low RAM, above the kernel's decompression area.
    public static func initrdAddress(size: Int, ramTop: UInt64, initrdAddrMax: UInt32, kernelEnd: UInt64) throws -> UInt64 {
        let limit = min(ramTop, UInt64(initrdAddrMax) + 1)
        let s = UInt64(size)
        guard s <= limit else { throw BootParamsError.initrdDoesNotFit(size: size, below: limit, above: kernelEnd) }
        let addr = (limit - s) & ~UInt64(0xfff)
        guard addr >= kernelEnd else { throw BootParamsError.initrdDoesNotFit(size: size, below: limit, above: kernelEnd) }
        return addr
    }
}
