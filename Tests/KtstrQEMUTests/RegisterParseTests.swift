import Testing
@testable import KtstrMachine
@testable import KtstrQEMU
@testable import KtstrHost
@testable import KtstrProtocol

/// `info registers -a` as qemu 7.2 (TCG, 2 vCPUs, Linux 7.3 running busybox) printed it,
/// with the FPU/XMM lines dropped.
let capturedRegisters = """
CPU#0
RAX=00000002d410f421 RBX=0000000000000002 RCX=00000000008c6148 RDX=00000000000008e2
RSI=0000000000000000 RDI=00000002d410eb3f RBP=00000000000e0294 RSP=ffffc90000003e08
R8 =00000000000008ea R9 =0000000000000000 R10=6e202d2063696e61 R11=70206c656e72654b
R12=0000000000000000 R13=0000000000000000 R14=0000000000000000 R15=0000000000000000
RIP=ffffffff82147679 RFL=00000083 [--S---C] CPL=0 II=0 A20=1 SMM=0 HLT=0
ES =0000 0000000000000000 00000000 00000000
CS =0010 0000000000000000 ffffffff 00af9b00 DPL=0 CS64 [-RA]
SS =0018 0000000000000000 ffffffff 00cf9300 DPL=0 DS   [-WA]
DS =0000 0000000000000000 00000000 00000000
FS =0000 0000000000000000 00000000 00000000
GS =0000 ffff88808b93c000 00000000 00000000
LDT=0000 0000000000000000 00000000 00008200 DPL=0 LDT
TR =0040 fffffe0000003000 00004087 00008900 DPL=0 TSS64-avl
GDT=     fffffe0000001000 0000007f
IDT=     fffffe0000000000 00000fff
CR0=80050033 CR2=ffff888004201000 CR3=000000000302a000 CR4=000006f0
DR0=0000000000000000 DR1=0000000000000000 DR2=0000000000000000 DR3=0000000000000000 
DR6=00000000ffff0ff0 DR7=0000000000000400
EFER=0000000000000d01
FCW=037f FSW=0000 [ST=0] FTW=00 MXCSR=00001f80

CPU#1
RAX=0000000000000001 RBX=ffffffff828c7eb0 RCX=0000000000000000 RDX=0000000000000000
RSI=ffffc900000f0e58 RDI=ffffffff828c7e00 RBP=ffffc900000f0e58 RSP=ffffc900000f0e28
R8 =ffffffff828c7eb0 R9 =0000000080050033 R10=ffffffff828c7eb0 R11=0000000000002d26
R12=0000000000000000 R13=0000000000000000 R14=0000000000000000 R15=0000000000000000
RIP=ffffffff81358d6b RFL=00000097 [--S-APC] CPL=0 II=0 A20=1 SMM=0 HLT=0
ES =0000 0000000000000000 00000000 00000000
CS =0010 0000000000000000 ffffffff 00af9b00 DPL=0 CS64 [-RA]
SS =0018 0000000000000000 ffffffff 00cf9300 DPL=0 DS   [-WA]
DS =0000 0000000000000000 00000000 00000000
FS =0000 0000000000000000 00000000 00000000
GS =0000 ffff88808ba3c000 00000000 00000000
LDT=0000 0000000000000000 00000000 00008200 DPL=0 LDT
TR =0040 fffffe000003e000 00004087 00008900 DPL=0 TSS64-avl
GDT=     fffffe000003c000 0000007f
IDT=     fffffe0000000000 00000fff
CR0=80050033 CR2=0000000000000000 CR3=000000000302a000 CR4=000006f0
DR0=0000000000000000 DR1=0000000000000000 DR2=0000000000000000 DR3=0000000000000000 
DR6=00000000ffff0ff0 DR7=0000000000000400
EFER=0000000000000d01
FCW=037f FSW=0000 [ST=0] FTW=00 MXCSR=00001f80
"""

@Suite struct RegisterParseTests {
    @Test func parsesEveryCPUOfACapture() throws {
        let regs = QEMURegisterParser.parse(capturedRegisters)
        #expect(regs.map(\.cpu) == [0, 1])
        let c0 = try #require(regs.first)
        #expect(c0.rip == 0xffff_ffff_8214_7679)
        #expect(c0.rsp == 0xffff_c900_0000_3e08)
        #expect(c0.cr3 == 0x302a000)
        #expect(c0.cr0 == 0x8005_0033)
        #expect(c0.cr4 == 0x6f0)
        #expect(c0.efer == 0xd01)
        #expect(c0.rflags == 0x83)
        #expect(c0.gprs?["r8"] == 0x8ea)
        #expect(c0.gprs?["rax"] == 0x2_d410_f421)
        #expect(c0.gprs?.count == 16)
        #expect(c0.halted == false)
        #expect(regs[1].gprs?["rbx"] == 0xffff_ffff_828c_7eb0)
    }

    @Test func blocksWithoutTheCoreRegistersAreSkipped() {
        #expect(QEMURegisterParser.parse("CPU#0\nRAX=1 RBX=2\n").isEmpty)
        #expect(QEMURegisterParser.parse("").isEmpty)
        #expect(QEMURegisterParser.parse("garbage = = =\nRIP=zz").isEmpty)
        // Values longer than 64 bits are refused, not truncated.
        let long = "CPU#0\nRIP=11112222333344445 RSP=1\nCR3=1\n"
        #expect(QEMURegisterParser.parse(long).isEmpty)
    }

    @Test func pcMemoryLayoutSplitsAtThePCIHole() {
        let small = QEMUMemoryLayout.pc(ramBytes: 512 << 20)
        #expect(small.count == 1 && small[0].gpa == 0 && small[0].size == 512 << 20)
        let edge = QEMUMemoryLayout.pc(ramBytes: 0xE000_0000 - 4096)
        #expect(edge.count == 1)
        let big = QEMUMemoryLayout.pc(ramBytes: 4 << 30)
        #expect(big.count == 2)
        #expect(big[0].size == 0xC000_0000 && big[1].gpa == 1 << 32 && big[1].fileOffset == 0xC000_0000)
        #expect(big[1].size == (4 << 30) - 0xC000_0000)
    }
}
