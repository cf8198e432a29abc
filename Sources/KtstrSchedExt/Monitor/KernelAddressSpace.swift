import KtstrMachine
import KtstrProtocol

/// Reads kernel virtual addresses out of guest RAM.
///
/// Three translations, cheapest first: the kernel image (`kva - __START_KERNEL_map +
/// phys_base`), the direct map (`kva - page_offset_base` while inside RAM), and a page-table
/// walk (vmalloc: BPF array values, big dump buffers). Reads that cross a page are split per
/// page, because vmalloc pages are not physically contiguous.
public struct KernelAddressSpace: Sendable {
    public static let startKernelMap: UInt64 = 0xFFFF_FFFF_8000_0000
    /// Without `_text`/`_end`, the image fast path covers this much of the kernel map (the
    /// KERNEL_IMAGE_SIZE of a non-KASLR build); modules, BPF JIT and fixmap lie above and are walked.
    public static let imageWindow: UInt64 = 512 << 20
    /// The whole kernel-image map (KERNEL_IMAGE_SIZE with KASLR).
    public static let kernelMapSize: UInt64 = 1 << 30

    public let memory: GuestMemory
    public let physBase: UInt64
    public let pageOffsetBase: UInt64?
    public let walker: PageTableWalker?
    /// Kernel virtual addresses translated by the image rule.
    public let imageRange: Range<UInt64>
    private let ramEnd: UInt64

    public init(memory: GuestMemory, physBase: UInt64, pageOffsetBase: UInt64?, walker: PageTableWalker?,
                imageRange: Range<UInt64>? = nil) {
        self.memory = memory
        self.physBase = physBase
        self.pageOffsetBase = pageOffsetBase
        self.walker = walker
        self.imageRange = imageRange ?? Self.startKernelMap..<(Self.startKernelMap + Self.imageWindow)
        self.ramEnd = memory.regions.map(\.end).max() ?? 0
    }

    /// `[_text, _end)` when both are known; else the default window, widened to cover every
    /// known image symbol (a KASLR kernel may sit in the upper half of the 1 GiB map).
    public static func imageRange(symbols: [String: UInt64]) -> Range<UInt64> {
        let top = startKernelMap + kernelMapSize
        if let t = symbols["_text"], let e = symbols["_end"], t >= startKernelMap, t < e, e <= top { return t..<e }
        let highest = symbols.values.filter { $0 >= startKernelMap && $0 < top }.max() ?? startKernelMap
        let end = max(startKernelMap + imageWindow, min(top, (highest + (64 << 20)) & ~UInt64((2 << 20) - 1)))
        return startKernelMap..<end
    }

    public func withWalker(_ w: PageTableWalker?) -> KernelAddressSpace {
        KernelAddressSpace(memory: memory, physBase: physBase, pageOffsetBase: pageOffsetBase, walker: w, imageRange: imageRange)
    }

    /// GPA of a kernel-image symbol (text, rodata, data, bss).
    public func imageGPA(_ kva: UInt64) -> UInt64? {
        guard imageRange.contains(kva) else { return nil }
        return kva - Self.startKernelMap &+ physBase
    }

    public func translate(_ kva: UInt64) throws(AddressError) -> UInt64 {
        if let g = imageGPA(kva) {
            guard memory.contains(g) else { throw .pageOutOfRAM(va: kva, gpa: g) }
            return g
        }
        if let pob = pageOffsetBase, kva >= pob, kva - pob < ramEnd, memory.contains(kva - pob) {
            return kva - pob
        }
        guard let walker else { throw .unmapped(kva, why: "outside the kernel image and the direct map, and no page table is known") }
        return try walker.translate(kva)
    }

    public func read<T: FixedWidthInteger>(_: T.Type = T.self, at kva: UInt64) throws(AddressError) -> T {
        let bytes = try readBytes(at: kva, count: MemoryLayout<T>.size)
        var v: T = 0
        for b in bytes.reversed() { v = v << 8 | T(b) }
        return v
    }

    public func readPointer(at kva: UInt64) throws(AddressError) -> UInt64 { try read(UInt64.self, at: kva) }

    /// `count` bytes starting at `kva`, translated page by page.
    public func readBytes(at kva: UInt64, count: Int) throws(AddressError) -> [UInt8] {
        guard count > 0 else { return [] }
        guard UInt64(count) <= UInt64.max - kva else { throw .nonCanonical(kva) }
        var out: [UInt8] = []
        out.reserveCapacity(min(count, 1 << 20)) // count may come from the guest
        var va = kva
        while out.count < count {
            let inPage = Int(4096 - (va & 0xFFF))
            let n = min(inPage, count - out.count)
            let g = try translate(va)
            do { out += try memory.readBytes(at: g, count: n) } catch { throw .read(va, error as? GuestMemoryError ?? .outOfRange(gpa: g, length: n)) }
            va &+= UInt64(n)
        }
        return out
    }

    /// Stores `bytes` at `kva`, translated page by page like `readBytes` (vmalloc pages are not
    /// physically contiguous). Every page is translated before the first byte is written, so
    /// a write that cannot complete writes nothing.
    public func writeBytes(_ bytes: [UInt8], at kva: UInt64) throws(AddressError) {
        guard !bytes.isEmpty else { return }
        guard UInt64(bytes.count) <= UInt64.max - kva else { throw .nonCanonical(kva) }
        var pieces: [(gpa: UInt64, range: Range<Int>)] = []
        var done = 0
        var va = kva
        while done < bytes.count {
            let n = min(Int(4096 - (va & 0xFFF)), bytes.count - done)
            let g = try translate(va)
            guard memory.contains(g, length: n) else { throw .read(va, .outOfRange(gpa: g, length: n)) }
            pieces.append((g, done..<(done + n)))
            done += n
            va &+= UInt64(n)
        }
        for p in pieces {
            do { try memory.write(bytes[p.range], at: p.gpa) } catch {
                throw .read(kva, error as? GuestMemoryError ?? .outOfRange(gpa: p.gpa, length: p.range.count))
            }
        }
    }

    /// Stores a little-endian integer at `kva`.
    public func write<T: FixedWidthInteger>(_ value: T, at kva: UInt64) throws(AddressError) {
        try writeBytes(withUnsafeBytes(of: value.littleEndian) { Array($0) }, at: kva)
    }

    /// A NUL-terminated string of at most `maxLength` bytes; invalid UTF-8 is repaired.
    public func readCString(at kva: UInt64, maxLength: Int) throws(AddressError) -> String {
        var bytes: [UInt8] = []
        var va = kva
        while bytes.count < maxLength {
            let n = min(Int(4096 - (va & 0xFFF)), maxLength - bytes.count)
            let chunk = try readBytes(at: va, count: n)
            if let z = chunk.firstIndex(of: 0) { bytes += chunk[..<z]; break }
            bytes += chunk
            va &+= UInt64(n)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// A 32-bit value the guest may be storing to right now (the exit_kind poll).
    public func readVolatileU32(at kva: UInt64) throws(AddressError) -> UInt32 {
        guard kva & 3 == 0 else { return try read(UInt32.self, at: kva) }
        let g = try translate(kva)
        do { return try memory.readVolatileU32(at: g) } catch { throw .read(kva, error as? GuestMemoryError ?? .outOfRange(gpa: g, length: 4)) }
    }
}

extension KernelAddressSpace {
    /// Finds `phys_base` without trusting an assumption: under KASLR the kernel may sit at
    /// any 2 MiB-aligned physical address, and `phys_base` is itself a variable inside the
    /// image. A candidate is accepted when the `phys_base` variable read through it holds the
    /// candidate itself and, when `__start_BTF` is known, the BTF magic sits where it should.
    /// Candidate 0 (nokaslr, the usual case) is tried first.
    public static func discoverPhysBase(memory: GuestMemory, physBaseSymbol: UInt64, startBTF: UInt64?) -> UInt64? {
        let ramEnd = memory.regions.map(\.end).max() ?? 0
        func plausible(_ candidate: UInt64) -> Bool {
            let probe = KernelAddressSpace(memory: memory, physBase: candidate, pageOffsetBase: nil, walker: nil,
                                           imageRange: startKernelMap..<(startKernelMap + kernelMapSize))
            guard let g = probe.imageGPA(physBaseSymbol), let v = try? memory.read(UInt64.self, at: g), v == candidate else { return false }
            guard let startBTF else { return true }
            guard let b = probe.imageGPA(startBTF), let m = try? memory.read(UInt16.self, at: b) else { return false }
            return m == BTF.magic
        }
        if plausible(0) { return 0 }
        // phys_base = physical load delta - virtual KASLR offset: it wraps "below zero" when
        // the virtual offset is the larger one, so scan [-1 GiB, RAM end) in 2 MiB steps.
        let step: UInt64 = 2 << 20
        var c: UInt64 = 0 &- kernelMapSize
        while c != 0 {
            if plausible(c) { return c }
            c &+= step
        }
        c = step
        while c < ramEnd {
            if plausible(c) { return c }
            c += step
        }
        return nil
    }
}
