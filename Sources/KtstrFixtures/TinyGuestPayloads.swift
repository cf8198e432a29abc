import KtstrVMM
import KtstrMachine

/// Hand-assembled x86 programs for tiny guests. Each instruction is built from its opcode
/// bytes with a comment; they run from `TinyGuestMachine.loadAddress` with no firmware.
public enum TinyGuestPayloads {
    /// An address with no RAM and no device behind it (inside the 1 GiB identity map).
    public static let unmappedAddress: UInt32 = 0x2000_0000

    /// `mov dx, port` (16-bit immediate; needs the operand-size prefix in 64-bit mode).
    static func movDX(_ port: UInt16, _ mode: TinyGuestMode) -> [UInt8] {
        (mode == .long ? [0x66] : []) + [0xba, UInt8(port & 0xff), UInt8(port >> 8)]
    }

    /// Writes `text` to the UART at `port` one byte at a time, then HLT.
    public static func print(_ text: String, port: UInt16 = Serial16550.com1Base, mode: TinyGuestMode) -> [UInt8] {
        var code = movDX(port, mode)                     // mov dx, port
        for b in text.utf8 {
            code += [0xb0, b]                            // mov al, b
            code += [0xee]                               // out dx, al
        }
        code += [0xf4]                                   // hlt
        return code
    }

    /// Pulses the reset line through the i8042, then spins: only the reset can end the run.
    public static func i8042Reset(mode: TinyGuestMode) -> [UInt8] {
        [0xb0, I8042.resetCommand,                       // mov al, 0xfe
         0xe6, UInt8(I8042.commandPort),                 // out 0x64, al
         0xeb, 0xfe]                                     // jmp $ (never reached if the reset works)
    }

    /// Raises #UD with an empty IDT (limit 0): #UD → #GP → #DF → triple fault. 64-bit mode.
    public static let tripleFault: [UInt8] = [
        0x0f, 0x0b,                                      // ud2
        0xeb, 0xfe,                                      // jmp $
    ]

    /// Stores to `unmappedAddress` (an MMIO exit with nothing there). 64-bit mode.
    public static let unmappedMMIOWrite: [UInt8] = {
        let a = unmappedAddress
        return [0xb8, 0xef, 0xbe, 0xad, 0xde]            // mov eax, 0xdeadbeef
            + [0x89, 0x04, 0x25,                         // mov [disp32], eax  (ModRM 04: SIB follows;
               UInt8(a & 0xff), UInt8(a >> 8 & 0xff),    //  SIB 25: no base, no index, disp32)
               UInt8(a >> 16 & 0xff), UInt8(a >> 24)]
            + [0xeb, 0xfe]                               // jmp $
    }()

    /// Increments the 64-bit counter at [rdi] forever. 64-bit mode; rdi set per vCPU.
    /// `counterLoopRange` is where a frozen vCPU's rip must be.
    public static let counterLoop: [UInt8] = [
        0x48, 0xff, 0x07,                                // loop: inc qword [rdi]
        0xeb, 0xfb,                                      //       jmp loop (rel8 -5)
    ]
    public static let counterLoopRange: Range<UInt64> = 0..<5

    /// Prints 1, 2, 3, ... (mod 256) to COM1 forever, one byte per OUT: the bytes a
    /// restored copy prints first must continue the original's sequence. 64-bit mode.
    public static let serialCounter: [UInt8] =
        movDX(Serial16550.com1Base, .long)               // mov dx, 0x3f8
        + [0x30, 0xc0]                                   // xor al, al
        + [0xfe, 0xc0,                                   // loop: inc al
           0xee,                                         //       out dx, al
           0xeb, 0xfb]                                   //       jmp loop (rel8 -5)

    /// vCPU 0 (rdi == `TinyGuestMachine.dataAddress`) runs the counter loop; the others set
    /// their word to 1 and HLT (and, should they ever resume, HLT again). 64-bit mode.
    public static let bspCountsAPsHalt: [UInt8] = {
        let a = UInt32(TinyGuestMachine.dataAddress)
        return [0x48, 0x81, 0xff,                        //  0: cmp rdi, imm32 (REX.W 81 /7, ModRM 11-111-111)
                UInt8(a & 0xff), UInt8(a >> 8 & 0xff), UInt8(a >> 16 & 0xff), UInt8(a >> 24)]
            + [0x75, 0x05]                               //  7: jne 14
            + [0x48, 0xff, 0x07]                         //  9: inc qword [rdi]
            + [0xeb, 0xfb]                               // 12: jmp 9
            + [0xc6, 0x07, 0x01]                         // 14: mov byte [rdi], 1
            + [0xf4]                                     // 17: hlt
            + [0xeb, 0xfd]                               // 18: jmp 17
    }()
    /// Offset of the instruction after the HLT in `bspCountsAPsHalt` (a halted AP's rip).
    public static let bspCountsAPsHaltResume: UInt64 = 18

    /// Real mode, needs the in-kernel irqchip: programs the master 8259 (vectors 0x08...,
    /// only IRQ4 unmasked), enables COM1's THR-empty interrupt, and halts with interrupts
    /// on. The UART raises IRQ4 at once; the handler (vector 0x0c, whose IVT entry the host
    /// writes: `serialInterruptHandlerOffset`) prints "IRQ" and resets through the i8042.
    /// Proves the path the Linux 8250 driver depends on: UART → KVM_IRQ_LINE → PIC → CPU.
    public static var serialInterrupt: [UInt8] { serialInterruptParts.main + serialInterruptParts.handler }
    /// Offset of the IRQ4 handler inside `serialInterrupt`.
    public static var serialInterruptHandlerOffset: Int { serialInterruptParts.main.count }

    static let serialInterruptParts: (main: [UInt8], handler: [UInt8]) = {
        var main: [UInt8] = []
        for (port, value) in [(0x20, 0x11),                  // ICW1: edge, cascade, ICW4 follows
                              (0x21, 0x08),                  // ICW2: IRQ0 → vector 0x08
                              (0x21, 0x04),                  // ICW3: slave on IRQ2
                              (0x21, 0x01),                  // ICW4: 8086 mode
                              (0x21, 0xef)] as [(UInt8, UInt8)] { // OCW1: mask all but IRQ4
            main += [0xb0, value,                            // mov al, value
                     0xe6, port]                             // out port, al
        }
        main += [0xba, 0xf9, 0x03]                           // mov dx, 0x3f9 (IER)
        main += [0xb0, 0x02, 0xee]                           // mov al, 2 (ETBEI) ; out dx, al
        main += [0xfb]                                       // sti
        main += [0xf4]                                       // hlt
        main += [0xeb, 0xfd]                                 // jmp back to hlt
        var handler: [UInt8] = [0xba, 0xf8, 0x03]            // mov dx, 0x3f8 (THR)
        for b in "IRQ".utf8 { handler += [0xb0, b, 0xee] }   // mov al, b ; out dx, al
        handler += [0xb0, I8042.resetCommand, 0xe6, 0x64]    // mov al, 0xfe ; out 0x64, al
        handler += [0xeb, 0xfe]                              // jmp $
        return (main, handler)
    }()
    /// The vector the programmed PIC uses for IRQ4.
    public static let serialInterruptVector = 0x0c

    /// `count` port writes to an empty port (each one a KVM_EXIT_IO round trip), then HLT.
    /// 64-bit mode. Measures the exit path.
    public static func portWrites(_ count: UInt32) -> [UInt8] {
        [0xb9, UInt8(count & 0xff), UInt8(count >> 8 & 0xff),
         UInt8(count >> 16 & 0xff), UInt8(count >> 24)]  //  0: mov ecx, count
            + [0x66, 0xba, 0x10, 0x05]                   //  5: mov dx, 0x510
            + [0xee]                                     //  9: loop: out dx, al
            + [0xff, 0xc9]                               // 10:       dec ecx
            + [0x75, 0xfb]                               // 12:       jnz loop
            + [0xf4]                                     // 14: hlt
    }
}
