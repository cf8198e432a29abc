import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrFixtures

/// A KVM_GET_SUPPORTED_CPUID-like table for an Intel (or AMD) host with 4 cache levels.
func sampleSupported(amd: Bool = false) -> [CPUIDEntry] {
    let sig: (UInt32, UInt32, UInt32) = amd ? (0x6874_7541, 0x6974_6e65, 0x444d_4163) : (0x756e_6547, 0x4965_6e69, 0x6c65_746e)
    let si = CPUIDEntry.significantIndex
    func cache(_ i: UInt32, type: UInt32, level: UInt32) -> CPUIDEntry {
        // Host values in the sharing fields that must be overwritten.
        CPUIDEntry(function: 4, index: i, flags: si, eax: type | level << 5 | 0x3f << 14 | 0x3f << 26, ebx: 0x3f, ecx: 0x3f)
    }
    var t: [CPUIDEntry] = [
        CPUIDEntry(function: 0, eax: 0x1f, ebx: sig.0, ecx: sig.2, edx: sig.1),
        CPUIDEntry(function: 1, eax: 0x806f8, ebx: 0xff_0800 | 0x2a << 24, ecx: 0xfffa_3203, edx: 0x0f8b_fbff),
        cache(0, type: 1, level: 1), cache(1, type: 2, level: 1), cache(2, type: 3, level: 2),
        cache(3, type: 3, level: 3), CPUIDEntry(function: 4, index: 4, flags: si),
        CPUIDEntry(function: 7, index: 0, flags: si, eax: 1, ebx: 0xf3bf_b7ff, ecx: 0x1b41_5f6e, edx: 0xbc81_4410),
        CPUIDEntry(function: 7, index: 1, flags: si, eax: 0x30),
        CPUIDEntry(function: 0xa, eax: 0x0830_0805, ebx: 0, ecx: 0, edx: 0x603),
        CPUIDEntry(function: 0xb, index: 0, flags: si, eax: 1, ebx: 2, ecx: 0x100, edx: 7),
        CPUIDEntry(function: 0xb, index: 1, flags: si, eax: 7, ebx: 112, ecx: 0x201, edx: 7),
        CPUIDEntry(function: 0xd, index: 0, flags: si, eax: 0x2e7, ebx: 0x988, ecx: 0x2988),
        CPUIDEntry(function: 0xd, index: 1, flags: si, eax: 0x1f),
        CPUIDEntry(function: 0x1f, index: 0, flags: si, eax: 1, ebx: 2, ecx: 0x100, edx: 7),
        CPUIDEntry(function: 0x4000_0000, eax: 0x4000_0001, ebx: 0x4b4d_564b, ecx: 0x564b_4d56, edx: 0x4d),
        CPUIDEntry(function: 0x8000_0000, eax: 0x8000_001e),
        CPUIDEntry(function: 0x8000_0001, ecx: 0x121, edx: 0x2c10_0800),
    ]
    if amd {
        t += [
            CPUIDEntry(function: 0x8000_0008, ecx: 0x7007),
            CPUIDEntry(function: 0x8000_001d, index: 0, flags: si, eax: 0x121 | 0x1 << 14),
            CPUIDEntry(function: 0x8000_001d, index: 1, flags: si, eax: 0x143 | 0x1 << 14),
            CPUIDEntry(function: 0x8000_001d, index: 2, flags: si, eax: 0x163 | 0xf << 14),
            CPUIDEntry(function: 0x8000_001e, eax: 5, ebx: 0x102, ecx: 0x3),
            CPUIDEntry(function: 0x8000_0026, index: 0, flags: si, eax: 1, ebx: 2, ecx: 0x100, edx: 5),
        ]
    }
    return t
}

extension [CPUIDEntry] {
    func leaf(_ f: UInt32, _ i: UInt32 = 0) -> CPUIDEntry? { first { $0.function == f && $0.index == i } }
    func sharing(_ sub: UInt32) -> UInt32? { leaf(4, sub).map { ($0.eax >> 14) & 0xfff } }
}

@Suite struct CPUIDTopologyTests {
    @Test func apicIDs() {
        let a = Topology(llcs: 1, coresPerLLC: 2, threadsPerCore: 2)
        #expect((0..<4).map { CPUID.apicID(of: $0, in: a) } == [0, 1, 2, 3])
        let b = Topology(llcs: 2, coresPerLLC: 4, threadsPerCore: 2)
        #expect((0..<16).map { CPUID.apicID(of: $0, in: b) } == Array(0..<16))
        #expect(CPUID.placement(of: 13, in: b) == CPUID.Placement(llc: 1, core: 2, thread: 1, apicID: 13))
        // Non-power-of-two counts leave holes in the id space.
        let c = Topology(llcs: 2, coresPerLLC: 3, threadsPerCore: 1)
        #expect((0..<6).map { CPUID.apicID(of: $0, in: c) } == [0, 1, 2, 4, 5, 6])
        #expect(CPUID.bits(1) == 0 && CPUID.bits(2) == 1 && CPUID.bits(3) == 2 && CPUID.bits(4) == 2 && CPUID.bits(5) == 3)
    }

    @Test func oneLLCTwoCoresTwoThreads() throws {
        let topo = Topology(llcs: 1, coresPerLLC: 2, threadsPerCore: 2)
        for cpu in 0..<4 {
            let t = CPUID.table(for: cpu, topology: topo, supported: sampleSupported())
            let l1 = try #require(t.leaf(1))
            #expect(l1.ebx >> 24 == UInt32(cpu))
            #expect((l1.ebx >> 16) & 0xff == 4)
            #expect(l1.ebx & 0xffff == 0x0800) // CLFLUSH size kept
            #expect(l1.edx & (1 << 28) != 0)
            #expect(l1.ecx & (1 << 31) != 0)
            #expect(t.sharing(0) == 1 && t.sharing(1) == 1 && t.sharing(2) == 1) // L1/L2 per core
            #expect(t.sharing(3) == 3) // L3 per LLC = whole package
            #expect(t.leaf(4, 3).map { $0.eax >> 26 } == 1)
            let l3eax = try #require(t.leaf(4, 3)).eax
            #expect(l3eax & 0x3fff == 0x63) // type/level kept
            let smt = try #require(t.leaf(0xb, 0)), core = try #require(t.leaf(0xb, 1)), end = try #require(t.leaf(0xb, 2))
            #expect(smt.eax == 1 && smt.ebx == 2 && smt.ecx == 0x100 && smt.edx == UInt32(cpu))
            #expect(core.eax == 2 && core.ebx == 4 && core.ecx == 0x201 && core.edx == UInt32(cpu))
            #expect(end.ecx >> 8 & 0xff == 0 && end.ebx == 0)
            #expect(t.filter { $0.function == 0xb }.count == 3)
            #expect(t.leaf(0x1f, 1)?.eax == 2)
            #expect(t.leaf(0xa) == CPUIDEntry(function: 0xa))
            #expect(t.leaf(0x4000_0000)?.ebx == 0x4b4d_564b)
        }
    }

    @Test func twoLLCsFourCoresTwoThreads() throws {
        let topo = Topology(llcs: 2, coresPerLLC: 4, threadsPerCore: 2)
        let t = CPUID.table(for: 13, topology: topo, supported: sampleSupported())
        let l1 = try #require(t.leaf(1))
        #expect(l1.ebx >> 24 == 13)
        #expect((l1.ebx >> 16) & 0xff == 16)
        #expect(t.sharing(0) == 1 && t.sharing(2) == 1)
        #expect(t.sharing(3) == 7) // 8 logical CPUs per LLC
        #expect(t.leaf(4, 0).map { $0.eax >> 26 } == 7) // 8 cores in the package
        #expect(t.leaf(0xb, 0)?.eax == 1 && t.leaf(0xb, 0)?.ebx == 2)
        #expect(t.leaf(0xb, 1)?.eax == 4 && t.leaf(0xb, 1)?.ebx == 16)
        #expect(t.leaf(0xb, 1)?.edx == 13)
        // The LLC id the kernel derives from leaf 4 (apicid >> bits(sharing+1)) separates the LLCs.
        let llcOf = { (cpu: Int) -> UInt32 in CPUID.apicID(of: cpu, in: topo) >> UInt32(CPUID.bits(8)) }
        #expect((0..<8).allSatisfy { llcOf($0) == 0 } && (8..<16).allSatisfy { llcOf($0) == 1 })
    }

    @Test func amdLeaves() throws {
        let topo = Topology(llcs: 2, coresPerLLC: 4, threadsPerCore: 2)
        let t = CPUID.table(for: 13, topology: topo, supported: sampleSupported(amd: true))
        #expect(t.leaf(0x8000_001d, 0).map { ($0.eax >> 14) & 0xfff } == 1)
        #expect(t.leaf(0x8000_001d, 2).map { ($0.eax >> 14) & 0xfff } == 7)
        let e = try #require(t.leaf(0x8000_001e))
        #expect(e.eax == 13)
        #expect((e.ebx >> 8) & 0xff == 1)
        #expect(e.ebx & 0xff == 6) // core 2 of LLC 1
        #expect(e.ecx & 0xff == 1)
        #expect(t.leaf(0x8000_0008).map { $0.ecx & 0xff } == 15)
        // The host's 0x80000026 would override 0xB in Linux: emptied.
        #expect(t.leaf(0x8000_0026).map { $0.ebx | $0.ecx } == 0)
    }

    @Test func singleCPUHasNoHTT() throws {
        let t = CPUID.table(for: 0, topology: .flat(1), supported: sampleSupported())
        #expect(t.leaf(1).map { $0.edx & (1 << 28) } == 0)
        #expect(t.leaf(1).map { ($0.ebx >> 16) & 0xff } == 1)
        #expect(t.sharing(3) == 0)
    }

    @Test func emulatedKernelCodeMask() throws {
        let t = CPUID.table(for: 0, topology: .flat(1), supported: sampleSupported(), mask: .emulatedKernelCode)
        let l1 = try #require(t.leaf(1))
        for bit in [13, 26, 27, 28, 30] { #expect(l1.ecx & (1 << UInt32(bit)) == 0, "leaf1 ecx bit \(bit)") }
        #expect(l1.ecx & (1 << 0) != 0) // SSE3 stays
        let l7 = try #require(t.leaf(7, 0))
        for bit in [3, 5, 8, 16] { #expect(l7.ebx & (1 << UInt32(bit)) == 0, "leaf7 ebx bit \(bit)") }
        #expect(l7.ebx & (1 << 9) != 0) // ERMS stays
        #expect(t.leaf(7, 1)?.eax == 0)
        #expect(t.leaf(0xd, 0) == CPUIDEntry(function: 0xd, index: 0, flags: CPUIDEntry.significantIndex))
        #expect(t.leaf(0xd, 1)?.eax == 0)
        // Unmasked keeps them.
        let u = CPUID.table(for: 0, topology: .flat(1), supported: sampleSupported())
        #expect(u.leaf(1).map { $0.ecx & (1 << 26) } != 0)
    }

    @Test func maskPolicyFollowsHostFlags() {
        #expect(CPUIDMaskPolicy.automatic.resolve(cpuinfo: "flags\t\t: fpu vme sse2 hypervisor\n") == .emulatedKernelCode)
        #expect(CPUIDMaskPolicy.automatic.resolve(cpuinfo: "flags\t\t: fpu vmx ept\n") == .none)
        #expect(CPUIDMaskPolicy.automatic.resolve(cpuinfo: "flags\t\t: fpu svm npt\n") == .none)
        #expect(CPUIDMaskPolicy.none.resolve(cpuinfo: "flags : fpu\n") == .none)
    }
}
