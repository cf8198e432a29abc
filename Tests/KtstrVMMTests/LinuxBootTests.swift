import Foundation
import Testing
@testable import KtstrHost
@testable import KtstrVMM

/// A static x86-64 Linux program, hand-assembled, as PID 1: `iopl(3)`, write `message` to
/// COM1 and COM2 with `out` (no /dev/console needed), then `reboot(RESTART)` — with `reboot=k` that is
/// an i8042 reset, which the VMM reports as shutdown. If iopl fails the `out` faults, init
/// dies, the kernel panics and (panic=-1) reboots: a shutdown *without* the message.
enum TinyInit {
    static func elf(message: String) -> [UInt8] {
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

    static func initramfs(message: String) -> [UInt8] {
        var a = Initramfs()
        a.addFile("/init", contents: elf(message: message), mode: 0o755)
        return a.bytes()
    }
}

let kvmReason = KVMSystem.unavailableReason()
let defaultKernel = try? Provisioning.kernel(explicit: nil)
let hasHardwareVirtualization = CPUID.hostHasHardwareVirtualization()

extension Duration {
    var secondsDouble: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// Boots the real default kernel on KVMMachine. Where KVM emulates the kernel (nested PVM,
/// no vmx/svm) only early-boot milestones are reachable, so that is what runs there.
@Suite(.serialized,
       .enabled(if: kvmReason == nil, Comment(rawValue: kvmReason ?? "")),
       .enabled(if: defaultKernel != nil, "default kernel not cached — run `swift run ktstr kernel fetch`"))
struct LinuxBootTests {
    static func boot(_ kernel: String, extra: String, initrd: [UInt8]? = nil, topology: Topology = .flat(1),
                     memoryMiB: Int = 160, mask: CPUIDMaskPolicy, channel: ConsoleRecorder? = nil) throws -> (KVMMachine, ConsoleRecorder) {
        let console = ConsoleRecorder()
        let m = try KVMMachine(KVMMachineConfiguration(kernel: kernel, initrd: initrd, commandLineExtra: extra,
                                                       topology: topology, memoryMiB: memoryMiB,
                                                       console: console.sink, channel: channel?.sink,
                                                       cpuidMask: mask, log: .default))
        try m.start()
        return (m, console)
    }

    static func elapsed(_ r: ConsoleRecorder.WaitResult, _ what: String, _ console: ConsoleRecorder) throws -> Double {
        guard case let .found(t) = r else {
            Issue.record("\(what): \(r) — console tail:\n\(console.tail())")
            throw CancellationError()
        }
        return t.secondsDouble
    }

    @Test(.timeLimit(.minutes(7)))
    func earlyBootShowsBannerAndCommandLine() throws {
        let k = try #require(defaultKernel)
        let (path, _) = KVMMachine.bootImage(image: k.image, vmlinux: k.vmlinux)
        let marker = "ktstr.marker=\(UUID().uuidString.prefix(8).lowercased())"
        let (m, console) = try Self.boot(path, extra: marker, topology: Topology(llcs: 1, coresPerLLC: 2, threadsPerCore: 2),
                                         mask: .emulatedKernelCode)
        defer { m.kill(); _ = m.wait(timeout: .seconds(15)) }
        #expect(m.commandLine.contains(marker))
        #expect(m.commandLine.contains("noxsave"))
        // Freeze and thaw mid-boot: one snapshot per vCPU, the BSP in 64-bit mode on our (or
        // the kernel's) page tables, the AP still waiting for INIT/SIPI; then boot goes on.
        Thread.sleep(forTimeInterval: 3)
        let snaps = try m.freeze(timeout: .seconds(10))
        #expect(snaps.map(\.cpu) == [0, 1, 2, 3])
        #expect(snaps[0].cr3 != 0 && snaps[0].rip != 0)
        #expect((snaps[0].efer ?? 0) & EntryState.eferLMA != 0)
        try m.thaw()
        let banner = try Self.elapsed(console.waitFor("Linux version 7.3.4", timeout: .seconds(300)), "banner", console)
        let echo = try Self.elapsed(console.waitFor(marker, timeout: .seconds(300)), "command line echo", console)
        let line = console.text.split(separator: "\n").first { $0.contains(marker) }.map(String.init) ?? ""
        #expect(line.contains("Command line: console=ttyS0"))
        // SMP description: the kernel counts the MADT's CPUs and our CPUID topology leaves.
        let cpus = try Self.elapsed(console.waitFor("Allowing 4 present CPUs", timeout: .seconds(300)), "CPU count", console)
        let text = console.text
        #expect(text.contains("ACPI: Using ACPI (MADT) for SMP configuration information"))
        #expect(text.contains("CPU topo: Max. threads per core:   2"))
        #expect(text.contains("CPU topo: Num. cores per package:     2"))
        FileHandle.standardError.write(Data("LinuxBootTests: 4 CPUs (1x2x2) discovered after \(String(format: "%.1f", cpus)) s\n".utf8))
        FileHandle.standardError.write(Data("LinuxBootTests: \(path): banner after \(String(format: "%.1f", banner)) s, Command line echo after \(String(format: "%.1f", echo)) s\n".utf8))
    }

    /// The bzImage path on this host: its decompressor runs (and prints) from our 64-bit
    /// entry with our zero page and command line, before it needs what the emulator lacks.
    @Test(.timeLimit(.minutes(3)),
          .enabled(if: !hasHardwareVirtualization, "vmx/svm present: the full boot below covers the bzImage"))
    func bzImageDecompressorStartsOnEmulatedKVM() throws {
        let k = try #require(defaultKernel)
        let (m, console) = try Self.boot(k.image, extra: "", mask: .emulatedKernelCode)
        defer { m.kill(); _ = m.wait(timeout: .seconds(15)) }
        // Printed by arch/x86/boot/compressed/kaslr.c when it parsed our command line.
        let t = try Self.elapsed(console.waitFor("KASLR disabled: 'nokaslr' on cmdline.", timeout: .seconds(120)), "decompressor message", console)
        FileHandle.standardError.write(Data("LinuxBootTests: bzImage decompressor message after \(String(format: "%.1f", t)) s\n".utf8))
    }

    @Test(.timeLimit(.minutes(3)),
          .enabled(if: hasHardwareVirtualization, "no vmx/svm: KVM cannot run a stock kernel here"))
    func bootsToInitWhichPrintsAMarkerAndReboots() throws {
        let k = try #require(defaultKernel)
        let marker = "KTSTR-INIT-\(UUID().uuidString.prefix(8))"
        let channel = ConsoleRecorder()
        let (m, console) = try Self.boot(k.image, extra: "loglevel=4", initrd: TinyInit.initramfs(message: marker + "\n"),
                                         topology: Topology(llcs: 1, coresPerLLC: 2, threadsPerCore: 1),
                                         memoryMiB: 256, mask: .automatic, channel: channel)
        let exit = m.wait(timeout: .seconds(120))
        #expect(exit == .shutdown, "\(exit): \(m.stopDetail ?? "") — console tail:\n\(console.tail())")
        #expect(console.text.contains(marker), "console tail:\n\(console.tail())")
        #expect(channel.text.contains(marker), "COM2 got: \(channel.text)")
    }
}

@Suite struct TinyInitTests {
    @Test func isAStaticELFWithTheMessage() throws {
        let b = TinyInit.elf(message: "hello\n")
        #expect(Array(b[0..<4]) == [0x7f, 0x45, 0x4c, 0x46])
        #expect(b.le(UInt64.self, at: 24) == 0x40_0000 + 120)
        #expect(b.le(UInt64.self, at: 96) == UInt64(b.count))
        #expect(Array(b.suffix(6)) == Array("hello\n".utf8))
        let recs = try #require(InitramfsReader.records(TinyInit.initramfs(message: "x")))
        #expect(recs.first { $0.name == "init" }?.mode == 0o100755)
    }
}
