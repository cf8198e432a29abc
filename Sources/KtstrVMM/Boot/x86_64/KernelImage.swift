import Foundation
import KtstrMachine

/// Why a file cannot be booted as an x86-64 Linux kernel. One line: the cause, then the fix.
public enum KernelImageError: Error, CustomStringConvertible, Equatable {
    case unreadable(path: String, reason: String)
    case truncated(what: String, needed: Int, size: Int)
    case notAKernel(String)
    case protocolTooOld(version: UInt16, minimum: UInt16 = SetupHeader.minimumVersion)
    case not64Bit
    case badELF(String)
    /// An ELF for another machine (`e_machine`; x86-64 is 62).
    case notX86_64(machine: UInt16)
    /// A header field no real kernel has (an address or size that overflows or lies past any RAM).
    case implausible(String)

    public var description: String {
        switch self {
        case let .unreadable(path, reason):
            "kernel image \(path): \(reason) — pass a readable bzImage or vmlinux with --kernel"
        case let .truncated(what, needed, size):
            "kernel image truncated: \(what) needs \(needed) bytes, file has \(size) — re-fetch the kernel (`ktstr kernel fetch`)"
        case let .notAKernel(why):
            "not a Linux kernel image: \(why) — pass a bzImage (vmlinuz) or an ELF vmlinux"
        case let .protocolTooOld(v, m):
            "bzImage boot protocol \(v >> 8).\(String(format: "%02d", v & 0xff)) is older than \(m >> 8).\(String(format: "%02d", m & 0xff)) — use a kernel from 3.8 or later"
        case .not64Bit:
            "kernel has no 64-bit entry point (xloadflags lacks XLF_KERNEL_64) — build it with CONFIG_X86_64"
        case let .badELF(why):
            "vmlinux ELF is malformed: \(why) — pass the vmlinux extracted from the same kernel build"
        case let .notX86_64(m):
            "ELF file is for machine \(m), not x86-64 (62) — pass an x86-64 kernel (bzImage or vmlinux)"
        case let .implausible(why):
            "kernel header is implausible: \(why) — the image is corrupt; re-fetch the kernel (`ktstr kernel fetch`)"
        }
    }
}

/// The fields of the bzImage setup header (Documentation/arch/x86/boot.rst) the loader uses.
/// Offsets are absolute file (and zero-page) offsets.
public struct SetupHeader: Sendable, Equatable {
    public static let start = 0x1f1
    public static let magic: UInt32 = 0x5372_6448 // "HdrS"
    public static let minimumVersion: UInt16 = 0x020c

    public enum Offset {
        public static let setupSects = 0x1f1
        public static let bootFlag = 0x1fe
        public static let jump = 0x200
        public static let header = 0x202
        public static let version = 0x206
        public static let typeOfLoader = 0x210
        public static let loadflags = 0x211
        public static let code32Start = 0x214
        public static let ramdiskImage = 0x218
        public static let ramdiskSize = 0x21c
        public static let heapEndPtr = 0x224
        public static let cmdLinePtr = 0x228
        public static let initrdAddrMax = 0x22c
        public static let kernelAlignment = 0x230
        public static let relocatableKernel = 0x234
        public static let minAlignment = 0x235
        public static let xloadflags = 0x236
        public static let cmdlineSize = 0x238
        public static let payloadOffset = 0x248
        public static let payloadLength = 0x24c
        public static let prefAddress = 0x258
        public static let initSize = 0x260
    }

    public static let xlfKernel64: UInt16 = 1 << 0
    public static let xlfCanBeLoadedAbove4G: UInt16 = 1 << 1
    public static let loadedHigh: UInt8 = 1 << 0
    public static let canUseHeap: UInt8 = 1 << 7

    /// 512-byte sectors of real-mode setup code after the boot sector (0 means 4).
    public var setupSects: Int
    public var version: UInt16
    public var loadflags: UInt8
    public var xloadflags: UInt16
    public var payloadOffset: UInt32
    public var payloadLength: UInt32
    public var prefAddress: UInt64
    public var initSize: UInt32
    public var kernelAlignment: UInt32
    public var relocatable: Bool
    public var initrdAddrMax: UInt32
    /// Longest command line the kernel accepts, without the NUL.
    public var cmdlineSize: UInt32
    /// The raw header bytes [0x1f1, 0x202 + byte at 0x201): what the loader copies into the zero page.
    public var raw: [UInt8]

    /// Offset of the protected-mode kernel in the file.
    public var protectedModeOffset: Int { (setupSects + 1) * 512 }

    public static func parse(_ b: [UInt8]) throws -> SetupHeader {
        guard let jumpLen = b.le(UInt8.self, at: 0x201), let magic = b.le(UInt32.self, at: Offset.header) else {
            throw KernelImageError.truncated(what: "setup header", needed: 0x206, size: b.count)
        }
        guard magic == Self.magic else {
            throw KernelImageError.notAKernel("no \"HdrS\" magic at 0x202 and no ELF magic")
        }
        let end = 0x202 + Int(jumpLen)
        guard end <= b.count else { throw KernelImageError.truncated(what: "setup header", needed: end, size: b.count) }
        guard let version = b.le(UInt16.self, at: Offset.version) else {
            throw KernelImageError.truncated(what: "setup header", needed: 0x208, size: b.count)
        }
        guard version >= minimumVersion else { throw KernelImageError.protocolTooOld(version: version) }
        // Protocol 2.12 defines every field up to init_size (0x264); the jump says how much is there.
        guard end >= Offset.initSize + 4, let sects = b.le(UInt8.self, at: Offset.setupSects),
              let loadflags = b.le(UInt8.self, at: Offset.loadflags),
              let xl = b.le(UInt16.self, at: Offset.xloadflags),
              let pOff = b.le(UInt32.self, at: Offset.payloadOffset),
              let pLen = b.le(UInt32.self, at: Offset.payloadLength),
              let pref = b.le(UInt64.self, at: Offset.prefAddress),
              let initSize = b.le(UInt32.self, at: Offset.initSize),
              let align = b.le(UInt32.self, at: Offset.kernelAlignment),
              let reloc = b.le(UInt8.self, at: Offset.relocatableKernel),
              let initrdMax = b.le(UInt32.self, at: Offset.initrdAddrMax),
              let cmdSize = b.le(UInt32.self, at: Offset.cmdlineSize)
        else { throw KernelImageError.notAKernel("setup header is \(end - start) bytes, too short for protocol 2.12") }
        return SetupHeader(setupSects: sects == 0 ? 4 : Int(sects), version: version, loadflags: loadflags, xloadflags: xl,
                           payloadOffset: pOff, payloadLength: pLen, prefAddress: pref, initSize: initSize,
                           kernelAlignment: align, relocatable: reloc != 0, initrdAddrMax: initrdMax,
                           cmdlineSize: cmdSize, raw: Array(b[start..<end]))
    }
}

/// A segment of an ELF vmlinux to copy to guest-physical `physicalAddress`.
public struct KernelSegment: Sendable, Equatable {
    public var physicalAddress: UInt64
    public var fileOffset: Int
    public var fileSize: Int
    public var memorySize: UInt64
}

/// A bootable x86-64 Linux kernel: a bzImage (64-bit boot protocol) or an ELF vmlinux
/// (entered at its 64-bit `e_entry` with the same register state).
public struct KernelImage: Sendable {
    public enum Kind: Sendable, Equatable {
        case bzImage(SetupHeader)
        /// `pvhEntry`: the 32-bit PVH entry from the XEN_ELFNOTE_PHYS32_ENTRY note, when present.
        case elf(entry: UInt64, segments: [KernelSegment], pvhEntry: UInt32?)
    }

    public let kind: Kind
    public let bytes: [UInt8]

    /// Where a bzImage's protected-mode kernel goes (the classic "high" load address).
    public static let bzImageLoadAddress: UInt64 = 0x10_0000
    /// x86-64's architectural physical address limit (52 bits); kernel addresses must lie below
    /// it, which also keeps address + size sums (sizes < 2^32) far from overflow.
    public static let maxPhysicalAddress: UInt64 = 1 << 52

    public init(bytes: [UInt8]) throws {
        self.bytes = bytes
        if bytes.count >= 4, bytes[0] == 0x7f, bytes[1] == 0x45, bytes[2] == 0x4c, bytes[3] == 0x46 {
            kind = try Self.parseELF(bytes)
            return
        }
        let h = try SetupHeader.parse(bytes)
        guard h.xloadflags & SetupHeader.xlfKernel64 != 0 else { throw KernelImageError.not64Bit }
        guard h.protectedModeOffset + 0x200 < bytes.count else {
            throw KernelImageError.truncated(what: "protected-mode kernel", needed: h.protectedModeOffset + 0x201, size: bytes.count)
        }
        if h.payloadLength > 0 {
            // ≤ 256 × 512 + 2 × (2^32 - 1): no overflow in a 64-bit Int.
            let payloadEnd = h.protectedModeOffset + Int(h.payloadOffset) + Int(h.payloadLength)
            guard payloadEnd <= bytes.count else {
                throw KernelImageError.truncated(what: "compressed payload", needed: payloadEnd, size: bytes.count)
            }
        }
        // occupiedRange ends at max(load, pref_address) + init_size: it must stay below the
        // physical address width (a hostile pref_address near 2^64 would overflow the sum).
        guard max(Self.bzImageLoadAddress, h.prefAddress) < Self.maxPhysicalAddress else {
            throw KernelImageError.implausible("pref_address 0x\(String(h.prefAddress, radix: 16)) is past any physical address")
        }
        kind = .bzImage(h)
    }

    public init(path: String) throws {
        // Never read a device or a FIFO whole (/dev/zero would never end).
        if let a = try? FileManager.default.attributesOfItem(atPath: path) {
            guard a[.type] as? FileAttributeType == .typeRegular else {
                throw KernelImageError.unreadable(path: path, reason: "is not a regular file")
            }
            if let n = a[.size] as? UInt64, n > Self.maxFileSize {
                throw KernelImageError.implausible("the file is \(n) bytes, more than \(Self.maxFileSize)")
            }
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            let why = FileManager.default.fileExists(atPath: path) ? "cannot be read" : "does not exist"
            throw KernelImageError.unreadable(path: path, reason: why)
        }
        try self.init(bytes: [UInt8](data))
    }

    /// The setup header bytes to copy into the zero page (nil for an ELF vmlinux).
    public var setupHeader: SetupHeader? {
        if case let .bzImage(h) = kind { return h }
        return nil
    }

    /// Guest-physical range the kernel occupies once loaded (for placing the initrd above it).
    /// For a bzImage it is the decompression buffer: [load, max(load, pref) + init_size).
    public var occupiedRange: Range<UInt64> {
        switch kind {
        case let .bzImage(h):
            let base = Self.bzImageLoadAddress
            let out = max(base, h.prefAddress) // < maxPhysicalAddress (checked in init)
            return base..<(out + UInt64(h.initSize))
        case let .elf(_, segs, _):
            let lo = segs.map(\.physicalAddress).min() ?? 0
            let hi = segs.map { $0.physicalAddress + $0.memorySize }.max() ?? 0
            return lo..<hi
        }
    }

    /// Copies the kernel into guest memory; returns the 64-bit entry point.
    public func load(into mem: GuestMemory) throws -> UInt64 {
        switch kind {
        case let .bzImage(h):
            let pm = bytes[h.protectedModeOffset...]
            try mem.write(pm, at: Self.bzImageLoadAddress)
            return Self.bzImageLoadAddress + 0x200
        case let .elf(entry, segs, _):
            for s in segs {
                try mem.write(bytes[s.fileOffset..<s.fileOffset + s.fileSize], at: s.physicalAddress)
                if s.memorySize > UInt64(s.fileSize) {
                    try mem.fill(0, at: s.physicalAddress + UInt64(s.fileSize), count: Int(s.memorySize - UInt64(s.fileSize)))
                }
            }
            return entry
        }
    }

    // MARK: ELF

    static func parseELF(_ b: [UInt8]) throws -> Kind {
        guard b.count >= 64 else { throw KernelImageError.truncated(what: "ELF header", needed: 64, size: b.count) }
        guard b[4] == 2 else { throw KernelImageError.not64Bit }
        guard b[5] == 1 else { throw KernelImageError.badELF("not little-endian") }
        guard let machine = b.le(UInt16.self, at: 18) else { throw KernelImageError.truncated(what: "ELF header", needed: 64, size: b.count) }
        guard machine == 62 else { throw KernelImageError.notX86_64(machine: machine) }
        guard let entry = b.le(UInt64.self, at: 24), let phoff = b.le(UInt64.self, at: 32),
              let phentsize = b.le(UInt16.self, at: 54), let phnum = b.le(UInt16.self, at: 56)
        else { throw KernelImageError.truncated(what: "ELF header", needed: 64, size: b.count) }
        guard phentsize >= 56, phnum > 0 else { throw KernelImageError.badELF("no program headers") }
        let tableEnd = Int(clamping: phoff) &+ Int(phentsize) * Int(phnum)
        guard phoff < UInt64(b.count), tableEnd <= b.count else {
            throw KernelImageError.truncated(what: "program headers", needed: tableEnd, size: b.count)
        }
        var segs: [KernelSegment] = []
        var pvh: UInt32?
        for i in 0..<Int(phnum) {
            let o = Int(phoff) + i * Int(phentsize)
            guard let type = b.le(UInt32.self, at: o), let off = b.le(UInt64.self, at: o + 8),
                  let paddr = b.le(UInt64.self, at: o + 24), let filesz = b.le(UInt64.self, at: o + 32),
                  let memsz = b.le(UInt64.self, at: o + 40)
            else { throw KernelImageError.truncated(what: "program header \(i)", needed: o + 56, size: b.count) }
            guard off <= UInt64(b.count), filesz <= UInt64(b.count) - off else {
                throw KernelImageError.truncated(what: "segment \(i)", needed: Int(clamping: off &+ filesz), size: b.count)
            }
            switch type {
            case 1: // PT_LOAD
                guard memsz >= filesz, memsz < 1 << 32, paddr < 1 << 46 else {
                    throw KernelImageError.badELF("segment \(i) has memsz 0x\(String(memsz, radix: 16)) at 0x\(String(paddr, radix: 16))")
                }
                segs.append(KernelSegment(physicalAddress: paddr, fileOffset: Int(off), fileSize: Int(filesz), memorySize: memsz))
            case 4: // PT_NOTE
                pvh = pvh ?? Self.pvhEntry(inNotes: Array(b[Int(off)..<Int(off + filesz)]))
            default: break
            }
        }
        guard !segs.isEmpty else { throw KernelImageError.badELF("no PT_LOAD segment") }
        guard segs.contains(where: { entry >= $0.physicalAddress && entry < $0.physicalAddress + $0.memorySize }) else {
            throw KernelImageError.badELF("entry 0x\(String(entry, radix: 16)) is outside every PT_LOAD segment (not a physical entry)")
        }
        return .elf(entry: entry, segments: segs, pvhEntry: pvh)
    }

    /// XEN_ELFNOTE_PHYS32_ENTRY (type 18, owner "Xen"): the PVH 32-bit entry point.
    static func pvhEntry(inNotes n: [UInt8]) -> UInt32? {
        var o = 0
        while let namesz = n.le(UInt32.self, at: o), let descsz = n.le(UInt32.self, at: o + 4),
              let type = n.le(UInt32.self, at: o + 8) {
            let nameStart = o + 12
            let descStart = nameStart + (Int(namesz) + 3) & ~3
            let next = descStart + (Int(descsz) + 3) & ~3
            guard namesz < 256, descsz < 1 << 20, next <= n.count else { return nil }
            let name = n[nameStart..<nameStart + Int(namesz)].prefix { $0 != 0 }
            if type == 18, name.elementsEqual("Xen".utf8), descsz >= 4 {
                return n.le(UInt32.self, at: descStart)
            }
            o = next
        }
        return nil
    }
}
