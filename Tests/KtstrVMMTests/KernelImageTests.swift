import Foundation
import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrFixtures

/// A minimal bzImage: boot sector + `sects` setup sectors + a protected-mode part.
func syntheticBzImage(version: UInt16 = 0x020f, sects: UInt8 = 2, xloadflags: UInt16 = 0x7f,
                      payloadLength: UInt32 = 0x100, protectedModeBytes: Int = 0x1000) -> [UInt8] {
    let pm = (Int(sects == 0 ? 4 : sects) + 1) * 512
    var b = [UInt8](repeating: 0, count: pm + protectedModeBytes)
    b[0x1f1] = sects
    b.putLE(UInt16(0xaa55), at: 0x1fe)
    b[0x200] = 0xeb; b[0x201] = 0x6a // jmp: header ends at 0x26c
    b.putLE(UInt32(0x5372_6448), at: 0x202)
    b.putLE(version, at: 0x206)
    b.putLE(UInt32(0x7fff_ffff), at: 0x22c)
    b.putLE(UInt32(0x20_0000), at: 0x230)
    b[0x234] = 1
    b.putLE(xloadflags, at: 0x236)
    b.putLE(UInt32(0x7ff), at: 0x238)
    b.putLE(UInt32(0x80), at: 0x248)
    b.putLE(payloadLength, at: 0x24c)
    b.putLE(UInt64(0x100_0000), at: 0x258)
    b.putLE(UInt32(0x300_0000), at: 0x260)
    for i in pm..<b.count { b[i] = UInt8(truncatingIfNeeded: i) }
    return b
}

/// A minimal ELF64 x86-64 executable with one PT_LOAD (+ optional PVH note).
func syntheticELF(entry: UInt64 = 0x100_0010, paddr: UInt64 = 0x100_0000, withPVHNote: Bool = true) -> [UInt8] {
    var b = [UInt8](repeating: 0, count: 0x400)
    b.putBytes([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], at: 0)
    b.putLE(UInt16(2), at: 16); b.putLE(UInt16(62), at: 18); b.putLE(UInt32(1), at: 20)
    b.putLE(entry, at: 24); b.putLE(UInt64(64), at: 32)
    b.putLE(UInt16(64), at: 52); b.putLE(UInt16(56), at: 54); b.putLE(UInt16(withPVHNote ? 2 : 1), at: 56)
    // PT_LOAD: file [0x200, 0x300) → paddr, memsz 0x200 (half is bss)
    let ph = 64
    b.putLE(UInt32(1), at: ph); b.putLE(UInt64(0x200), at: ph + 8)
    b.putLE(paddr | 0xffff_ffff_8000_0000, at: ph + 16); b.putLE(paddr, at: ph + 24)
    b.putLE(UInt64(0x100), at: ph + 32); b.putLE(UInt64(0x200), at: ph + 40)
    for i in 0x200..<0x300 { b[i] = 0xcc }
    if withPVHNote {
        let n = ph + 56
        b.putLE(UInt32(4), at: n); b.putLE(UInt64(0x380), at: n + 8); b.putLE(UInt64(24), at: n + 32)
        // note: namesz 4 "Xen\0", descsz 8, type 18
        b.putLE(UInt32(4), at: 0x380); b.putLE(UInt32(8), at: 0x384); b.putLE(UInt32(18), at: 0x388)
        b.putBytes(Array("Xen\0".utf8), at: 0x38c); b.putLE(UInt32(0x100_0020), at: 0x390)
    }
    return b
}

let defaultKernelDir = "/root/.cache/ktstr/kernels/7.3.4+deb13-cloud-amd64"
let defaultBzImagePresent = FileManager.default.fileExists(atPath: defaultKernelDir + "/vmlinuz")
let defaultVmlinuxPresent = FileManager.default.fileExists(atPath: defaultKernelDir + "/vmlinux")

@Suite struct KernelImageTests {
    @Test func parsesSyntheticBzImage() throws {
        let img = try KernelImage(bytes: syntheticBzImage(sects: 2))
        let h = try #require(img.setupHeader)
        #expect(h.version == 0x020f)
        #expect(h.protectedModeOffset == 3 * 512)
        #expect(h.prefAddress == 0x100_0000)
        #expect(h.initSize == 0x300_0000)
        #expect(h.kernelAlignment == 0x20_0000)
        #expect(h.relocatable)
        #expect(h.initrdAddrMax == 0x7fff_ffff)
        #expect(h.cmdlineSize == 0x7ff)
        #expect(h.payloadOffset == 0x80 && h.payloadLength == 0x100)
        #expect(h.raw.count == 0x26c - 0x1f1)
        #expect(img.occupiedRange == 0x10_0000..<(0x100_0000 + 0x300_0000))
    }

    @Test func zeroSetupSectsMeansFour() throws {
        let h = try #require(try KernelImage(bytes: syntheticBzImage(sects: 0)).setupHeader)
        #expect(h.setupSects == 4)
        #expect(h.protectedModeOffset == 5 * 512)
    }

    @Test func rejectsOldProtocol32BitAndGarbage() {
        #expect(throws: KernelImageError.protocolTooOld(version: 0x020b)) { try KernelImage(bytes: syntheticBzImage(version: 0x020b)) }
        #expect(throws: KernelImageError.not64Bit) { try KernelImage(bytes: syntheticBzImage(xloadflags: 0)) }
        #expect(throws: KernelImageError.self) { try KernelImage(bytes: [UInt8](repeating: 0x41, count: 4096)) }
        #expect(throws: KernelImageError.self) { try KernelImage(bytes: []) }
        #expect(throws: KernelImageError.self) { try KernelImage(bytes: Array("#!/bin/sh\necho hi\n".utf8)) }
    }

    @Test(arguments: [0, 0x100, 0x203, 0x230, 0x26b, 0x400, 0x600, 0x700])
    func truncatedBzImageIsATypedError(length: Int) {
        let b = syntheticBzImage(payloadLength: 0x800, protectedModeBytes: 0x1000)
        #expect(throws: KernelImageError.self) { try KernelImage(bytes: Array(b.prefix(length))) }
    }

    @Test func payloadBeyondFileIsTruncation() {
        let b = syntheticBzImage(payloadLength: 0x10_0000)
        #expect {
            try KernelImage(bytes: b)
        } throws: { e in
            if case .truncated(what: "compressed payload", _, _) = e as? KernelImageError { return true }
            return false
        }
    }

    @Test func loadsBzImageAt1MiBWithEntryAt0x200() throws {
        let b = syntheticBzImage(sects: 1)
        let img = try KernelImage(bytes: b)
        let mem = try GuestMemory.anonymous(layout: [(0, 8 << 20)])
        let entry = try img.load(into: mem)
        #expect(entry == 0x10_0200)
        #expect(try mem.readBytes(at: 0x10_0000, count: 16) == Array(b[1024..<1040]))
    }

    @Test func parsesAndLoadsSyntheticELF() throws {
        let img = try KernelImage(bytes: syntheticELF())
        guard case let .elf(entry, segs, pvh) = img.kind else { Issue.record("not ELF"); return }
        #expect(entry == 0x100_0010)
        #expect(segs == [KernelSegment(physicalAddress: 0x100_0000, fileOffset: 0x200, fileSize: 0x100, memorySize: 0x200)])
        #expect(pvh == 0x100_0020)
        let mem = try GuestMemory.anonymous(layout: [(0, 32 << 20)])
        try mem.fill(0x55, at: 0x100_0000, count: 0x400)
        #expect(try img.load(into: mem) == 0x100_0010)
        #expect(try mem.read(UInt8.self, at: 0x100_00ff) == 0xcc)
        #expect(try mem.read(UInt8.self, at: 0x100_0100) == 0) // bss zeroed
        #expect(try mem.read(UInt8.self, at: 0x100_0200) == 0x55) // past memsz untouched
    }

    @Test func rejectsBadELF() {
        var b32 = syntheticELF(); b32[4] = 1
        #expect(throws: KernelImageError.not64Bit) { try KernelImage(bytes: b32) }
        #expect(throws: KernelImageError.self) { try KernelImage(bytes: syntheticELF(entry: 0xffff_ffff_8100_0000)) }
        var arm = syntheticELF(); arm.putLE(UInt16(183), at: 18)
        #expect(throws: KernelImageError.self) { try KernelImage(bytes: arm) }
        var bigSeg = syntheticELF(); bigSeg.putLE(UInt64(0x10_0000), at: 64 + 32)
        #expect(throws: KernelImageError.self) { try KernelImage(bytes: bigSeg) }
        for n in [10, 63, 100, 0x1ff] {
            #expect(throws: KernelImageError.self) { try KernelImage(bytes: Array(syntheticELF().prefix(n))) }
        }
    }

    @Test(.enabled(if: defaultBzImagePresent, "default kernel not cached — run `swift run ktstr kernel fetch`"))
    func parsesTheDefaultBzImage() throws {
        let img = try KernelImage(path: defaultKernelDir + "/vmlinuz")
        let h = try #require(img.setupHeader)
        #expect(h.version >= 0x020c)
        #expect(h.xloadflags & SetupHeader.xlfKernel64 != 0)
        #expect(h.relocatable)
        #expect(h.prefAddress == 0x100_0000)
        #expect(h.initSize > 16 << 20)
        // The payload is a zstd frame (magic 28 b5 2f fd).
        let p = h.protectedModeOffset + Int(h.payloadOffset)
        #expect(Array(img.bytes[p..<p + 4]) == [0x28, 0xb5, 0x2f, 0xfd])
        // Every truncation of the real image before its payload end is a typed error.
        for cut in [0x1f0, 0x260, h.protectedModeOffset + 0x100, p + Int(h.payloadLength) - 1] {
            #expect(throws: KernelImageError.self) { try KernelImage(bytes: Array(img.bytes.prefix(cut))) }
        }
    }

    @Test(.enabled(if: defaultVmlinuxPresent, "default vmlinux not cached — run `swift run ktstr kernel fetch`"))
    func parsesTheDefaultVmlinux() throws {
        let img = try KernelImage(path: defaultKernelDir + "/vmlinux")
        guard case let .elf(entry, segs, pvh) = img.kind else { Issue.record("not ELF"); return }
        #expect(segs.first?.physicalAddress == 0x100_0000)
        #expect(entry > 0x100_0000 && entry < img.occupiedRange.upperBound)
        #expect(pvh != nil)
    }

    @Test func missingFileSaysSo() {
        #expect(throws: KernelImageError.unreadable(path: "/nonexistent/vmlinuz", reason: "does not exist")) {
            try KernelImage(path: "/nonexistent/vmlinuz")
        }
    }
}
