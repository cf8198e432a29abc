import Foundation
import Testing
@testable import KtstrMachine
@testable import KtstrVMM

/// Hostile kernel images: the parser and the header-only file check must return a value or
/// throw `KernelImageError`, never trap.
@Suite struct KernelImageFuzzTests {
    /// KernelImage(bytes:) plus the invariants the loader relies on; then the file check on
    /// the same bytes.
    static func check(_ b: [UInt8]) -> String? {
        do {
            let img = try KernelImage(bytes: b)
            let range = img.occupiedRange // traps on overflow: the check is that it does not
            switch img.kind {
            case let .bzImage(h):
                guard h.protectedModeOffset < b.count else { return "protected-mode offset \(h.protectedModeOffset) past the file" }
                guard range.upperBound >= range.lowerBound else { return "empty range" }
            case let .elf(entry, segs, _):
                for s in segs {
                    guard s.fileOffset >= 0, s.fileSize >= 0, s.fileOffset <= b.count, s.fileSize <= b.count - s.fileOffset else {
                        return "segment \(s) outside the file"
                    }
                    guard s.memorySize >= UInt64(s.fileSize) else { return "memsz < filesz" }
                }
                guard range.contains(entry) else { return "entry outside the occupied range" }
            }
        } catch is KernelImageError {
        } catch {
            return "untyped error \(error)"
        }
        do throws(KernelImageError) {
            let head = Array(b.prefix(4096))
            if head.starts(with: [0x7f, 0x45, 0x4c, 0x46]) {
                try KernelImage.validateELF(head: head, size: UInt64(b.count)) { o, c in
                    guard o <= UInt64(b.count), UInt64(c) <= UInt64(b.count) - o else { return nil }
                    return Array(b[Int(o)..<Int(o) + c])
                }
            } else {
                try KernelImage.validateBzImage(head: head, size: UInt64(b.count))
            }
        } catch {}
        return nil
    }

    /// Header fields the parser reads: setup_sects, syssize, magic, version, payload, pref_address, init_size.
    static let bzHot = [0x1f1, 0x1f4, 0x1fe, 0x201, 0x202, 0x206, 0x236, 0x248, 0x24c, 0x258, 0x25c, 0x260]
    /// e_ident, e_machine, e_entry, e_phoff, e_phentsize, e_phnum, and both program headers' fields.
    static let elfHot = [4, 5, 18, 24, 32, 54, 56, 64, 72, 80, 88, 96, 104, 120, 128, 144, 152, 160, 0x380, 0x384]

    @Test func bzImageMutants() {
        let clock = ContinuousClock.now
        let problems = Fuzz.run("bzImage", seed: syntheticBzImage(), baseSeed: 0xB21A_6E00, hotOffsets: Self.bzHot, Self.check)
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
        print("fuzz bzImage: \(Fuzz.iterations) inputs in \(ContinuousClock.now - clock)")
    }

    @Test func elfMutants() {
        let clock = ContinuousClock.now
        let problems = Fuzz.run("vmlinux ELF", seed: syntheticELF(), baseSeed: 0xE1F0_0001, hotOffsets: Self.elfHot, Self.check)
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
        print("fuzz vmlinux ELF: \(Fuzz.iterations) inputs in \(ContinuousClock.now - clock)")
    }

    /// Found by reading: pref_address near 2^64 made `occupiedRange` (pref + init_size) trap,
    /// and KVMMachine's "+ 16 MiB" after it.
    @Test func prefAddressNearTheTopIsRefused() {
        for pref: UInt64 in [.max, 0xFFFF_FFFF_FFFF_F000, 1 << 63, KernelImage.maxPhysicalAddress] {
            var b = syntheticBzImage()
            b.putLE(pref, at: SetupHeader.Offset.prefAddress)
            #expect(throws: KernelImageError.self) { try KernelImage(bytes: b) }
        }
        var b = syntheticBzImage()
        b.putLE(KernelImage.maxPhysicalAddress - 0x1000, at: SetupHeader.Offset.prefAddress)
        b.putLE(UInt32.max, at: SetupHeader.Offset.initSize)
        #expect(((try? KernelImage(bytes: b))?.occupiedRange.upperBound ?? 0) > KernelImage.maxPhysicalAddress)
    }

    @Test func elfForAnotherMachineNamesIt() {
        var b = syntheticELF()
        b.putLE(UInt16(183), at: 18) // aarch64
        #expect(throws: KernelImageError.notX86_64(machine: 183)) { try KernelImage(bytes: b) }
    }
}
