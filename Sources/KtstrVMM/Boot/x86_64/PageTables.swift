import KtstrMachine

/// Identity-mapped page tables for the 64-bit entry: PML4 → one PDPT → one PD per GiB,
/// 2 MiB pages. The boot protocol needs the kernel, the zero page and the command line
/// identity-mapped; mapping the first GiBs wholesale covers the initrd too.
public struct PageTables: Sendable, Equatable {
    public static let present: UInt64 = 1 << 0
    public static let writable: UInt64 = 1 << 1
    public static let pageSize: UInt64 = 1 << 7 // PS: 2 MiB page in a PD entry

    /// (gpa, 4 KiB page contents) to write, PML4 first.
    public let pages: [(gpa: UInt64, bytes: [UInt8])]
    public let cr3: UInt64

    public static func == (a: PageTables, b: PageTables) -> Bool {
        a.cr3 == b.cr3 && a.pages.map(\.gpa) == b.pages.map(\.gpa) && a.pages.map(\.bytes) == b.pages.map(\.bytes)
    }

    public init(pml4: UInt64 = BootLayout.pml4, pdpt: UInt64 = BootLayout.pdpt, pd: UInt64 = BootLayout.pd,
                gib: Int = BootLayout.identityMappedGiB) {
        precondition((1...512).contains(gib))
        var l4 = [UInt8](repeating: 0, count: 4096)
        l4.putLE(pdpt | Self.present | Self.writable, at: 0)
        var l3 = [UInt8](repeating: 0, count: 4096)
        var out: [(UInt64, [UInt8])] = [(pml4, l4)]
        var pds: [(UInt64, [UInt8])] = []
        for g in 0..<gib {
            let pdAddr = pd + UInt64(g) * 4096
            l3.putLE(pdAddr | Self.present | Self.writable, at: g * 8)
            var l2 = [UInt8](repeating: 0, count: 4096)
            for i in 0..<512 {
                let phys = (UInt64(g) << 30) | (UInt64(i) << 21)
                l2.putLE(phys | Self.present | Self.writable | Self.pageSize, at: i * 8)
            }
            pds.append((pdAddr, l2))
        }
        out.append((pdpt, l3))
        out += pds
        pages = out.map { (gpa: $0.0, bytes: $0.1) }
        cr3 = pml4
    }

    public func write(into mem: GuestMemory) throws {
        for p in pages { try mem.write(p.bytes, at: p.gpa) }
    }

    /// Walks the tables (as the CPU would) to translate `va`; nil when unmapped. For tests.
    public func translate(_ va: UInt64) -> UInt64? {
        func page(_ gpa: UInt64) -> [UInt8]? { pages.first { $0.gpa == gpa }?.bytes }
        let mask: UInt64 = 0x000f_ffff_ffff_f000
        guard let l4 = page(cr3), let e4 = l4.le(UInt64.self, at: Int((va >> 39) & 511) * 8), e4 & Self.present != 0,
              let l3 = page(e4 & mask), let e3 = l3.le(UInt64.self, at: Int((va >> 30) & 511) * 8), e3 & Self.present != 0,
              let l2 = page(e3 & mask), let e2 = l2.le(UInt64.self, at: Int((va >> 21) & 511) * 8), e2 & Self.present != 0,
              e2 & Self.pageSize != 0
        else { return nil }
        return (e2 & 0x000f_ffff_ffe0_0000) | (va & 0x1f_ffff)
    }
}
