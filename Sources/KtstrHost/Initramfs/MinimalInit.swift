import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

/// A static x86-64 Linux program, hand-assembled, to run as PID 1 when a boot needs an init
/// and nothing else (no libc, no busybox): `iopl(3)`, write `message` to COM1 and COM2 with
/// `out` (no /dev/console needed), then `reboot(RESTART)`. With `reboot=k` that is an i8042
/// reset, which a VMM started with "no reboot" (`-no-reboot`) reports as shutdown. If iopl
/// fails the `out` faults, init dies, the kernel panics and (panic=-1) reboots: a shutdown
/// *without* the message, so callers check for the message.
///
/// Used by the Linux boot tests and by `ktstr bench boot` (the plain-qemu baseline).
public enum MinimalInit {
    /// The ELF image (one PT_LOAD at 0x400000, entry right after the headers).
    public static func elf(message: String) -> [UInt8] {
        let msg = Array(message.utf8)
        var code: [UInt8] = []
        func imm32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
        code += [0xb8] + imm32(172)                  // mov eax, SYS_iopl
        code += [0xbf] + imm32(3)                    // mov edi, 3
        code += [0x0f, 0x05]                         // syscall
        var leas: [Int] = []
        for port: UInt32 in [0x3f8, 0x2f8] {         // COM1 (console), COM2 (agent channel)
            leas.append(code.count)
            code += [0x48, 0x8d, 0x35, 0, 0, 0, 0]   // lea rsi, [rip + msg]
            code += [0xb9] + imm32(UInt32(msg.count)) // mov ecx, len
            code += [0xba] + imm32(port)             // mov edx, port
            code += [0xac, 0xee, 0xe2, 0xfc]         // 1: lodsb; out dx, al; loop 1b
        }
        code += [0xb8] + imm32(169)                  // mov eax, SYS_reboot
        code += [0xbf] + imm32(0xfee1_dead)          // LINUX_REBOOT_MAGIC1
        code += [0xbe] + imm32(0x2812_1969)          // LINUX_REBOOT_MAGIC2
        code += [0xba] + imm32(0x0123_4567)          // LINUX_REBOOT_CMD_RESTART
        code += [0x45, 0x31, 0xd2]                   // xor r10d, r10d
        code += [0x0f, 0x05]                         // syscall
        code += [0xeb, 0xfe]                         // jmp .
        for at in leas { code.replaceSubrange(at + 3..<at + 7, with: imm32(UInt32(code.count - (at + 7)))) }
        code += msg

        let base: UInt64 = 0x40_0000, headers = 64 + 56
        var f = [UInt8](repeating: 0, count: headers)
        f.putBytes([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], at: 0)
        f.putLE(UInt16(2), at: 16); f.putLE(UInt16(62), at: 18); f.putLE(UInt32(1), at: 20)
        f.putLE(base + UInt64(headers), at: 24)      // e_entry
        f.putLE(UInt64(64), at: 32)                  // e_phoff
        f.putLE(UInt16(64), at: 52); f.putLE(UInt16(56), at: 54); f.putLE(UInt16(1), at: 56)
        let total = UInt64(headers + code.count)
        f.putLE(UInt32(1), at: 64); f.putLE(UInt32(5), at: 68)  // PT_LOAD, R+X
        f.putLE(UInt64(0), at: 72); f.putLE(base, at: 80); f.putLE(base, at: 88)
        f.putLE(total, at: 96); f.putLE(total, at: 104); f.putLE(UInt64(0x1000), at: 112)
        return f + code
    }

    /// A newc initramfs holding only `/init` (the program above, mode 0755).
    public static func initramfs(message: String) -> [UInt8] {
        var a = Initramfs()
        a.addFile("/init", contents: elf(message: message), mode: 0o755)
        return a.bytes()
    }
}
