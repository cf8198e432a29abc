import KtstrMachine

/// Architectural state of the boot vCPU at the kernel's 64-bit entry, as plain values; the
/// KVM machine copies it into kvm_regs / kvm_sregs / kvm_fpu / MSRs.
public struct EntryState: Sendable, Equatable {
    public static let cr0PE: UInt64 = 1 << 0
    public static let cr0ET: UInt64 = 1 << 4
    public static let cr0NE: UInt64 = 1 << 5
    public static let cr0PG: UInt64 = 1 << 31
    public static let cr4PAE: UInt64 = 1 << 5
    public static let eferLME: UInt64 = 1 << 8
    public static let eferLMA: UInt64 = 1 << 10

    public var rip: UInt64
    public var rsi: UInt64
    public var rsp: UInt64
    public var rflags: UInt64 = 0x2
    public var cr0: UInt64 = cr0PE | cr0ET | cr0NE | cr0PG
    public var cr3: UInt64
    public var cr4: UInt64 = cr4PAE
    public var efer: UInt64 = eferLME | eferLMA
    public var cs = GDT.segment(GDT.codeSelector)
    /// ds, es, fs, gs, ss.
    public var data = GDT.segment(GDT.dataSelector)
    public var tr = GDT.segment(GDT.tssSelector)
    public var gdtBase = BootLayout.gdt
    public var gdtLimit = GDT.limit
    public var idtBase = BootLayout.idt
    public var idtLimit: UInt16 = 0

    /// x87 control word and MXCSR after FNINIT / reset.
    public static let fcw: UInt16 = 0x37f
    public static let mxcsr: UInt32 = 0x1f80

    public init(entry: UInt64, zeroPage: UInt64 = BootLayout.zeroPage, stack: UInt64 = BootLayout.stackTop,
                cr3: UInt64 = BootLayout.pml4) {
        rip = entry; rsi = zeroPage; rsp = stack; self.cr3 = cr3
    }
}

/// MSRs the boot vCPU starts with: syscall/sysenter targets cleared (the kernel sets them),
/// TSC at 0, fast strings on, write-back default memory type.
public enum BootMSRs {
    public static let tsc: UInt32 = 0x10
    public static let sysenterCS: UInt32 = 0x174
    public static let sysenterESP: UInt32 = 0x175
    public static let sysenterEIP: UInt32 = 0x176
    public static let miscEnable: UInt32 = 0x1a0
    public static let mtrrDefType: UInt32 = 0x2ff
    public static let star: UInt32 = 0xc000_0081
    public static let lstar: UInt32 = 0xc000_0082
    public static let cstar: UInt32 = 0xc000_0083
    public static let syscallMask: UInt32 = 0xc000_0084
    public static let kernelGSBase: UInt32 = 0xc000_0102

    public static let miscEnableFastStrings: UInt64 = 1 << 0

    public static let values: [(index: UInt32, value: UInt64)] = [
        (sysenterCS, 0), (sysenterESP, 0), (sysenterEIP, 0),
        (star, 0), (lstar, 0), (cstar, 0), (syscallMask, 0), (kernelGSBase, 0),
        (tsc, 0), (miscEnable, miscEnableFastStrings),
        (mtrrDefType, (1 << 11) | 6),
    ]
}

/// Local APIC setup the kernel expects from firmware: LINT0 in ExtINT mode (the 8259 path),
/// LINT1 as NMI. Offsets into the 1 KiB `kvm_lapic_state` register page.
public enum LAPICSetup {
    public static let lvtLINT0 = 0x350
    public static let lvtLINT1 = 0x360
    public static let deliveryExtINT: UInt32 = 0x7 << 8
    public static let deliveryNMI: UInt32 = 0x4 << 8

    /// Rewrites LINT0/LINT1 delivery modes in a register page, keeping the other bits.
    public static func apply(to regs: inout [UInt8]) {
        for (off, mode) in [(lvtLINT0, deliveryExtINT), (lvtLINT1, deliveryNMI)] {
            guard let v = regs.le(UInt32.self, at: off) else { continue }
            regs.putLE((v & ~UInt32(0x700)) | mode, at: off)
        }
    }
}
