import KtstrMachine

/// Where the loader puts things in guest-physical memory for a direct 64-bit Linux boot.
/// Everything below 1 MiB sits in the first RAM region; the addresses follow the classic
/// PC layout (zero page and tables in low memory, BIOS area reserved) so the kernel's
/// memory scans (MP table, EBDA) see what they expect.
public enum BootLayout {
    /// GDT (see `GDT`).
    public static let gdt: UInt64 = 0x500
    /// An empty IDT: interrupts are off until the kernel loads its own.
    public static let idt: UInt64 = 0x520
    /// The zero page (`struct boot_params`); RSI points here at entry.
    public static let zeroPage: UInt64 = 0x7000
    /// Initial stack top (grows down towards the zero page's end).
    public static let stackTop: UInt64 = 0x8ff0
    /// Identity page tables: PML4, then PDPT, then one PD per GiB mapped.
    public static let pml4: UInt64 = 0x9000
    public static let pdpt: UInt64 = 0xa000
    public static let pd: UInt64 = 0xb000
    /// GiB identity-mapped with 2 MiB pages (PDs at 0xb000..0xefff).
    public static let identityMappedGiB = 4
    /// Kernel command line (NUL-terminated).
    public static let commandLine: UInt64 = 0x2_0000
    public static let commandLineMax = 0x1_0000
    /// Start of the area kept reserved for EBDA/VGA/BIOS (below it: usable low RAM).
    public static let ebda: UInt64 = 0x9_fc00
    /// ACPI tables (RSDP first), in the BIOS area the kernel scans for "RSD PTR ".
    public static let acpi: UInt64 = 0xe_0000
    /// MP floating pointer + configuration table, inside the BIOS area the kernel scans.
    public static let mpTable: UInt64 = 0xf_0000
    public static let highMemory: UInt64 = 0x10_0000
    /// The PCI/MMIO hole: RAM stops at 3 GiB and resumes at 4 GiB.
    public static let mmioGapStart: UInt64 = 0xc000_0000
    public static let mmioGapEnd: UInt64 = 0x1_0000_0000
    /// KVM's TSS (3 pages) and identity-map page, in the MMIO gap below the IOAPIC/LAPIC/BIOS.
    public static let kvmTSS: UInt64 = 0xfffb_d000
    public static let kvmIdentityMap: UInt64 = 0xfffb_c000
    public static let ioapic: UInt32 = 0xfec0_0000
    public static let lapic: UInt32 = 0xfee0_0000

    /// RAM regions for `memoryBytes` of guest RAM: below the gap, then above 4 GiB.
    public static func ramRegions(memoryBytes: UInt64) -> [(gpa: UInt64, size: UInt64)] {
        let low = min(memoryBytes, mmioGapStart)
        var out: [(gpa: UInt64, size: UInt64)] = [(0, low)]
        if memoryBytes > low { out.append((mmioGapEnd, memoryBytes - low)) }
        return out
    }
}
