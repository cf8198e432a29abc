import KtstrMachine

/// Initial CPU state for guests the VMM starts itself (tiny guests; the Linux boot path has
/// its own in Boot/x86_64): flat real mode, or 64-bit long mode with a flat GDT and an
/// identity map of the first 1 GiB in 2 MiB pages.
public enum X86InitialState {
    /// Where `writeLongModeTables` puts its structures (all below 0x10000).
    public static let gdtAddress: UInt64 = 0x500
    public static let pml4Address: UInt64 = 0x9000
    public static let pdptAddress: UInt64 = 0xa000
    public static let pdAddress: UInt64 = 0xb000
    public static let identityMappedBytes: UInt64 = 1 << 30

    // GDT: null, 64-bit code (selector 0x08), flat data (selector 0x10).
    static let gdt: [UInt64] = [0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff]
    static let codeSelector: UInt16 = 0x08
    static let dataSelector: UInt16 = 0x10

    static let cr0PE: UInt64 = 1 << 0, cr0ET: UInt64 = 1 << 4, cr0NE: UInt64 = 1 << 5, cr0PG: UInt64 = 1 << 31
    static let cr4PAE: UInt64 = 1 << 5
    static let eferLME: UInt64 = 1 << 8, eferLMA: UInt64 = 1 << 10

    /// Writes the GDT and the page tables into guest RAM (needs RAM at 0...0xc000).
    public static func writeLongModeTables(into memory: GuestMemory) throws {
        for (i, d) in gdt.enumerated() { try memory.write(d, at: gdtAddress + UInt64(i) * 8) }
        try memory.fill(0, at: pml4Address, count: 3 * 4096)
        let present: UInt64 = 1, writable: UInt64 = 2, largePage: UInt64 = 1 << 7
        try memory.write(pdptAddress | present | writable, at: pml4Address)
        try memory.write(pdAddress | present | writable, at: pdptAddress)
        for i in 0..<UInt64(512) {
            try memory.write((i << 21) | present | writable | largePage, at: pdAddress + i * 8)
        }
    }

    /// Flat real mode: every segment base 0, so `rip` is the physical address (< 64 KiB).
    public static func realMode(_ vcpu: KVMVCPU, rip: UInt64, rsp: UInt64 = 0x8000, regs edit: (inout KVMRegisters) -> Void = { _ in }) throws {
        var s = try vcpu.getSregs()
        for keyPath in [\KVMSpecialRegisters.cs, \.ds, \.es, \.fs, \.gs, \.ss] {
            s[keyPath: keyPath].base = 0
            s[keyPath: keyPath].selector = 0
        }
        try vcpu.setSregs(s)
        try setEntryRegisters(vcpu, rip: rip, rsp: rsp, edit)
    }

    /// 64-bit mode at `rip` using the tables from `writeLongModeTables`. Interrupts off; the
    /// IDT is empty (limit 0), so any exception escalates to a triple fault.
    public static func longMode(_ vcpu: KVMVCPU, rip: UInt64, rsp: UInt64 = 0x8000, regs edit: (inout KVMRegisters) -> Void = { _ in }) throws {
        var s = try vcpu.getSregs()
        var code = KVMSegment()
        code.base = 0; code.limit = 0xffff_ffff; code.selector = codeSelector
        code.type = 0xb; code.present = 1; code.dpl = 0; code.db = 0; code.s = 1; code.l = 1; code.g = 1
        var data = KVMSegment()
        data.base = 0; data.limit = 0xffff_ffff; data.selector = dataSelector
        data.type = 0x3; data.present = 1; data.dpl = 0; data.db = 1; data.s = 1; data.l = 0; data.g = 1
        s.cs = code
        s.ds = data; s.es = data; s.fs = data; s.gs = data; s.ss = data
        s.gdt.base = gdtAddress
        s.gdt.limit = UInt16(gdt.count * 8 - 1)
        s.idt.base = 0
        s.idt.limit = 0
        s.cr3 = pml4Address
        s.cr4 = cr4PAE
        s.cr0 = cr0PE | cr0ET | cr0NE | cr0PG
        s.efer = eferLME | eferLMA
        try vcpu.setSregs(s)
        try setEntryRegisters(vcpu, rip: rip, rsp: rsp, edit)
    }

    /// General registers at entry: only rip, rsp and the always-one RFLAGS bit, then the
    /// caller's edits (arguments in rdi, rsi...).
    private static func setEntryRegisters(_ vcpu: KVMVCPU, rip: UInt64, rsp: UInt64,
                                          _ edit: (inout KVMRegisters) -> Void) throws {
        var r = KVMRegisters()
        r.rflags = 0x2
        r.rip = rip
        r.rsp = rsp
        edit(&r)
        try vcpu.setRegs(r)
    }
}
