import Foundation
import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrFixtures

/// Configuration checks that refuse before any KVM object exists.
@Suite struct KVMMachineConfigTests {
    static func tempKernel(_ bytes: [UInt8]) throws -> String {
        let p = FileManager.default.temporaryDirectory.appendingPathComponent("ktstr-kernel-\(UUID().uuidString)").path
        guard FileManager.default.createFile(atPath: p, contents: Data(bytes)) else { throw CocoaError(.fileWriteUnknown) }
        return p
    }

    @Test func sparseAPICIDsAreAcceptedAndIDSpaceIsChecked() {
        // 2x3x1 has APIC ids 0,1,2,4,5,6: allowed (vCPU ids follow), so the next check fails.
        let c = KVMMachineConfiguration(kernel: "/nonexistent", topology: Topology(llcs: 2, coresPerLLC: 3))
        #expect(throws: KernelImageError.unreadable(path: "/nonexistent", reason: "does not exist")) { try KVMMachine(c) }
        // 5 LLCs x 40 cores: only 200 vCPUs, but APIC ids reach 4 << 6 | 39 = 295.
        let big = KVMMachineConfiguration(kernel: "/nonexistent", topology: Topology(llcs: 5, coresPerLLC: 40))
        #expect(throws: KVMMachineError.tooManyVCPUs(200)) { try KVMMachine(big) }
    }

    @Test func tooManyVCPUs() {
        let c = KVMMachineConfiguration(kernel: "/nonexistent", topology: .flat(256))
        #expect(throws: KVMMachineError.tooManyVCPUs(256)) { try KVMMachine(c) }
    }

    @Test func memoryMustHoldTheDecompressionBuffer() throws {
        let p = try Self.tempKernel(syntheticBzImage())
        defer { try? FileManager.default.removeItem(atPath: p) }
        // init_size 48 MiB from pref_address 16 MiB: 64 MiB + 16 MiB of headroom.
        #expect(throws: KVMMachineError.memoryTooSmall(MiB: 32, needed: 80)) {
            try KVMMachine(KVMMachineConfiguration(kernel: p, memoryMiB: 32))
        }
    }

    @Test func notAKernelIsATypedError() throws {
        let p = try Self.tempKernel(Array("not a kernel at all".utf8))
        defer { try? FileManager.default.removeItem(atPath: p) }
        #expect(throws: KernelImageError.self) { try KVMMachine(KVMMachineConfiguration(kernel: p)) }
    }

    @Test func imageChoiceOnEmulatedKVM() throws {
        let elf = try Self.tempKernel(syntheticELF())
        let bz = try Self.tempKernel(syntheticBzImage())
        defer { try? FileManager.default.removeItem(atPath: elf); try? FileManager.default.removeItem(atPath: bz) }
        #expect(KVMMachine.bootImage(image: bz, vmlinux: elf, hardwareVirtualization: false).path == elf)
        #expect(KVMMachine.bootImage(image: bz, vmlinux: elf, hardwareVirtualization: true).path == bz)
        #expect(KVMMachine.bootImage(image: bz, vmlinux: nil, hardwareVirtualization: false).path == bz)
        #expect(KVMMachine.bootImage(image: elf, vmlinux: elf, hardwareVirtualization: false).note == nil)
    }
}
