import Testing
@testable import KtstrVMM

/// The PVM-safe policy's kernel command line: what the kernel will actually read.
@Suite struct PVMSafePolicyTests {
    @Test func clearCPUIDFitsTheKernelsBuffer() throws {
        let words = CPUIDMask.emulatedKernelCode.kernelParameters
        let clear = try #require(words.first { $0.hasPrefix("clearcpuid=") })
        let value = clear.dropFirst("clearcpuid=".count)
        // Longer, the kernel drops the tail (names once lost pclmulqdq onwards that way).
        #expect(value.count <= CPUIDMask.clearCPUIDValueLimit, "\(value.count) characters")
        let numbers = value.split(separator: ",").compactMap { Int($0) }
        #expect(numbers == CPUIDMask.pvmHiddenFeatures.map(\.number))
        #expect(Set(numbers).count == numbers.count)
        #expect(Set(CPUIDMask.pvmHiddenFeatures.map(\.name)).count == numbers.count)
        #expect(words.contains("noxsave") && words.contains("init_on_alloc=0"))
    }

    /// The numbers are feature word × 32 + bit: spot checks against the CPUID bits the mask
    /// clears in KVM's table (leaf 1 ECX is word 4, leaf 7.0 EBX word 9).
    @Test func numbersMatchTheCPUIDBits() throws {
        let byName = Dictionary(uniqueKeysWithValues: CPUIDMask.pvmHiddenFeatures.map { ($0.name, $0.number) })
        #expect(byName["popcnt"] == 4 * 32 + 23)
        #expect(byName["pclmulqdq"] == 4 * 32 + 1)
        #expect(byName["sha_ni"] == 9 * 32 + 29)
        let leaf1 = try #require(CPUIDMask.emulatedKernelCode.clears.first { $0.leaf == 1 && $0.register == 2 })
        for (_, n) in CPUIDMask.pvmHiddenFeatures where n / 32 == 4 {
            #expect(leaf1.bits & (1 << UInt32(n % 32)) != 0, "bit \(n % 32) of leaf 1 ECX")
        }
        let leaf7 = try #require(CPUIDMask.emulatedKernelCode.clears.first { $0.leaf == 7 && $0.subleaf == 0 && $0.register == 1 })
        for (_, n) in CPUIDMask.pvmHiddenFeatures where n / 32 == 9 {
            #expect(leaf7.bits & (1 << UInt32(n % 32)) != 0, "bit \(n % 32) of leaf 7 EBX")
        }
    }
}
