import Foundation
import KtstrMachine

/// One CPUID leaf/subleaf as `struct kvm_cpuid_entry2` holds it.
public struct CPUIDEntry: Sendable, Equatable, CustomStringConvertible {
    /// KVM_CPUID_FLAG_SIGNIFCANT_INDEX: the subleaf (ECX input) selects this entry.
    public static let significantIndex: UInt32 = 1

    public var function: UInt32
    public var index: UInt32
    public var flags: UInt32
    public var eax: UInt32
    public var ebx: UInt32
    public var ecx: UInt32
    public var edx: UInt32

    public init(function: UInt32, index: UInt32 = 0, flags: UInt32 = 0,
                eax: UInt32 = 0, ebx: UInt32 = 0, ecx: UInt32 = 0, edx: UInt32 = 0) {
        self.function = function; self.index = index; self.flags = flags
        self.eax = eax; self.ebx = ebx; self.ecx = ecx; self.edx = edx
    }

    public var description: String {
        func h(_ v: UInt32) -> String { String(v, radix: 16) }
        return "0x\(h(function)).\(index): eax=\(h(eax)) ebx=\(h(ebx)) ecx=\(h(ecx)) edx=\(h(edx))"
    }
}

/// Pure edits of a CPUID table (what KVM_GET_SUPPORTED_CPUID returned) into what one vCPU
/// of a given `Topology` sees: topology leaves, hypervisor leaf, PMU off, optional masks.
public enum CPUID {
    public enum Vendor: Sendable { case intel, amd, other }

    /// Bits needed to number `n` things (ceil(log2 n)); 0 for n ≤ 1.
    public static func bits(_ n: Int) -> Int { n <= 1 ? 0 : Int.bitWidth - (n - 1).leadingZeroBitCount }

    public static func vendor(_ t: [CPUIDEntry]) -> Vendor {
        guard let l0 = t.first(where: { $0.function == 0 }) else { return .other }
        switch (l0.ebx, l0.edx, l0.ecx) {
        case (0x756e_6547, 0x4965_6e69, 0x6c65_746e): return .intel // "GenuineIntel"
        case (0x6874_7541, 0x6974_6e65, 0x444d_4163): return .amd   // "AuthenticAMD"
        default: return .other
        }
    }

    /// Where each vCPU sits and which APIC id it gets (thread fastest, then core, then LLC).
    public struct Placement: Sendable, Equatable {
        public var llc: Int, core: Int, thread: Int
        public var apicID: UInt32
    }

    public static func threadBits(_ t: Topology) -> Int { bits(t.threadsPerCore) }
    public static func coreBits(_ t: Topology) -> Int { bits(t.coresPerLLC) }
    public static func llcBits(_ t: Topology) -> Int { bits(t.llcs) }

    public static func placement(of cpu: Int, in t: Topology) -> Placement {
        let thread = cpu % t.threadsPerCore
        let core = (cpu / t.threadsPerCore) % t.coresPerLLC
        let llc = cpu / (t.threadsPerCore * t.coresPerLLC)
        let tb = threadBits(t), cb = coreBits(t)
        let id = UInt32(llc) << (cb + tb) | UInt32(core) << tb | UInt32(thread)
        return Placement(llc: llc, core: core, thread: thread, apicID: id)
    }

    public static func apicID(of cpu: Int, in t: Topology) -> UInt32 { placement(of: cpu, in: t).apicID }

    /// The table vCPU `cpu` sees.
    public static func table(for cpu: Int, topology t: Topology, supported: [CPUIDEntry], mask: CPUIDMask = .none) -> [CPUIDEntry] {
        let p = placement(of: cpu, in: t)
        let tb = threadBits(t), cb = coreBits(t), lb = llcBits(t)
        let packageBits = tb + cb + lb
        let vendor = vendor(supported)
        let maxBasic = supported.first { $0.function == 0 }?.eax ?? 0
        var out: [CPUIDEntry] = []
        for var e in supported {
            switch e.function {
            case 0x1:
                e.ebx = (e.ebx & 0x0000_ffff) | (p.apicID & 0xff) << 24 | UInt32(min(255, 1 << packageBits)) << 16
                if t.vcpuCount > 1 { e.edx |= 1 << 28 } else { e.edx &= ~(1 << 28) } // HTT
                e.ecx |= 1 << 31 // hypervisor present
            case 0x4:
                e = cacheLeaf(e, sharingBits: ((e.eax >> 5) & 7) >= 3 ? tb + cb : tb, coresPerPackageBits: cb + lb)
            case 0x8000_001d where vendor == .amd:
                let level = (e.eax >> 5) & 7
                guard e.eax & 0x1f != 0 else { break }
                let sharing = level >= 3 ? (1 << (tb + cb)) : (1 << tb)
                e.eax = (e.eax & ~(0xfff << 14)) | UInt32(min(sharing - 1, 0xfff)) << 14
            case 0xb, 0x1f:
                continue // rebuilt below
            case 0xa:
                e.eax = 0; e.ebx = 0; e.ecx = 0; e.edx = 0
            case 0x8000_0026:
                // AMD extended topology: Linux prefers it to 0xB. Emptied, the kernel falls
                // back to 0xB, which describes our topology.
                e.eax = 0; e.ebx = 0; e.ecx = 0; e.edx = 0
            case 0x8000_0008 where vendor == .amd:
                e.ecx = (e.ecx & ~0xf0ff) | UInt32(packageBits) << 12 | UInt32(min(255, t.vcpuCount - 1))
            case 0x8000_001e where vendor == .amd:
                e.eax = p.apicID
                e.ebx = (e.ebx & ~0xffff) | UInt32(t.threadsPerCore - 1) << 8 | UInt32(p.llc * t.coresPerLLC + p.core) & 0xff
                e.ecx = (e.ecx & ~0x7ff) | UInt32(p.llc) & 0xff
            default: break
            }
            out.append(e)
        }
        // Extended topology: subleaf 0 = SMT, 1 = core (covers everything below the package),
        // then an invalid level that ends the enumeration. EDX = x2APIC id at every level.
        for leaf: UInt32 in [0xb, 0x1f] where leaf <= maxBasic {
            let levels: [(type: UInt32, shift: Int, count: Int)] = [
                (1, tb, t.threadsPerCore), (2, packageBits, t.vcpuCount), (0, 0, 0),
            ]
            for (i, l) in levels.enumerated() {
                out.append(CPUIDEntry(function: leaf, index: UInt32(i), flags: CPUIDEntry.significantIndex,
                                      eax: UInt32(l.shift), ebx: UInt32(l.count & 0xffff),
                                      ecx: l.type << 8 | UInt32(i), edx: p.apicID))
            }
        }
        if !out.contains(where: { $0.function == 0x4000_0000 }) {
            // "KVMKVMKVM\0\0\0", max hypervisor leaf 0x40000001.
            out.append(CPUIDEntry(function: 0x4000_0000, eax: 0x4000_0001, ebx: 0x4b4d_564b, ecx: 0x564b_4d56, edx: 0x4d))
        }
        return mask.apply(to: out)
    }

    /// Leaf 4 (deterministic cache parameters): EAX[25:14] = IDs sharing the cache - 1,
    /// EAX[31:26] = addressable core IDs in the package - 1.
    static func cacheLeaf(_ e: CPUIDEntry, sharingBits: Int, coresPerPackageBits: Int) -> CPUIDEntry {
        var e = e
        guard e.eax & 0x1f != 0 else { return e } // type 0: no more caches
        let sharing = UInt32(min((1 << sharingBits) - 1, 0xfff))
        let cores = UInt32(min((1 << coresPerPackageBits) - 1, 0x3f))
        e.eax = (e.eax & 0x3fff) | sharing << 14 | cores << 26
        return e
    }

    /// Does this host's CPU have hardware virtualisation (vmx/svm flags)? Without it KVM here is
    /// a software (PVM) hypervisor that emulates the guest kernel's code.
    public static func hostHasHardwareVirtualization(cpuinfo: String? = nil) -> Bool {
        let text = cpuinfo ?? ((try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? "")
        for line in text.split(separator: "\n") where line.hasPrefix("flags") {
            let words = line.split(separator: " ")
            return words.contains("vmx") || words.contains("svm")
        }
        return false
    }
}

/// Feature bits to hide from the guest.
public struct CPUIDMask: Sendable, Equatable {
    /// (leaf, subleaf, register 0=eax 1=ebx 2=ecx 3=edx, bits to clear)
    public struct Clear: Sendable, Equatable {
        public var leaf: UInt32, subleaf: UInt32, register: Int, bits: UInt32
    }

    public var name: String
    public var clears: [Clear]
    /// Leaves whose every subleaf is zeroed (e.g. XSAVE's 0xD once XSAVE is hidden).
    public var zeroedLeaves: [UInt32]
    /// Kernel command-line options with the same effect, for hosts where the guest's CPUID
    /// instruction does not reach the VMM's table (nested PVM executes it natively).
    public var kernelParameters: [String] = []

    public static let none = CPUIDMask(name: "none", clears: [], zeroedLeaves: [])

    /// For KVM hosts that *emulate* the guest kernel's code (PVM without vmx/svm): hide every
    /// feature whose instructions KVM's instruction emulator cannot execute, so the kernel's
    /// alternatives and FPU setup take the plain paths. Instruction facts: CMPXCHG16B, the
    /// XSAVE family and VEX-encoded BMI/AVX are not in KVM's emulator; RDRAND/RDSEED, PCID/
    /// INVPCID, FSGSBASE, SMEP/SMAP, PKU, LA57 change how the kernel programs the CPU on paths
    /// the emulator handles badly or not at all.
    public static let emulatedKernelCode: CPUIDMask = {
        var c: [Clear] = []
        func clear(_ leaf: UInt32, _ sub: UInt32, _ reg: Int, _ bits: [Int]) {
            c.append(Clear(leaf: leaf, subleaf: sub, register: reg, bits: bits.reduce(0) { $0 | 1 << UInt32($1) }))
        }
        // Leaf 1 ECX: PCLMULQDQ 1, SSSE3 9, FMA 12, CX16 13, PCID 17, SSE4.1 19, SSE4.2 20,
        // MOVBE 22, POPCNT 23, AES 25, XSAVE 26, OSXSAVE 27, AVX 28, F16C 29, RDRAND 30.
        clear(1, 0, 2, [1, 9, 12, 13, 17, 19, 20, 22, 23, 25, 26, 27, 28, 29, 30])
        // Leaf 7.0 EBX: FSGSBASE 0, BMI1 3, HLE 4, AVX2 5, SMEP 7, BMI2 8, INVPCID 10, RTM 11,
        // MPX 14, AVX512F 16, AVX512DQ 17, RDSEED 18, ADX 19, SMAP 20, AVX512IFMA 21,
        // CLFLUSHOPT 23, CLWB 24, AVX512PF 26, AVX512ER 27, AVX512CD 28, SHA 29, AVX512BW 30,
        // AVX512VL 31.
        clear(7, 0, 1, [0, 3, 4, 5, 7, 8, 10, 11, 14, 16, 17, 18, 19, 20, 21, 23, 24, 26, 27, 28, 29, 30, 31])
        // Leaf 7.0 ECX: AVX512VBMI 1, PKU 3, OSPKE 4, WAITPKG 5, AVX512_VBMI2 6, GFNI 8, VAES 9,
        // VPCLMULQDQ 10, AVX512_VNNI 11, AVX512_BITALG 12, AVX512_VPOPCNTDQ 14, LA57 16.
        clear(7, 0, 2, [1, 3, 4, 5, 6, 8, 9, 10, 11, 12, 14, 16])
        // Leaf 7.0 EDX: AVX512_4VNNIW 2, AVX512_4FMAPS 3, AVX512_VP2INTERSECT 8, SERIALIZE 14,
        // AMX_BF16 22, AVX512_FP16 23, AMX_TILE 24, AMX_INT8 25.
        clear(7, 0, 3, [2, 3, 8, 14, 22, 23, 24, 25])
        // Leaf 7.1 EAX: AVX_VNNI 4, AVX512_BF16 5, AVX_IFMA 23.
        clear(7, 1, 0, [4, 5, 23])
        // Leaf 0x80000001 ECX: ABM/LZCNT 5, XOP 11, FMA4 16, TBM 21.
        clear(0x8000_0001, 0, 2, [5, 11, 16, 21])
        return CPUIDMask(name: "emulatedKernelCode", clears: c, zeroedLeaves: [0xd],
                         kernelParameters: ["noxsave", clearCPUIDParameter(pvmHiddenFeatures), "init_on_alloc=0"])
    }()

    /// The same features for the kernel's `clearcpuid=` (PVM shows the guest the host's feature
    /// bits whatever KVM_SET_CPUID2 says): `noxsave` already drops AVX and everything built on
    /// it; these are the rest — every SIMD extension past SSE2 (the emulator has no SSSE3/SSE4/
    /// AES/CLMUL/SHA arithmetic, and with them the kernel's crypto and CRC code calls
    /// `kernel_fpu_begin`, whose LDMXCSR the emulator cannot run either), POPCNT
    /// (`__bitmap_weight` through alternatives), MOVBE, SERIALIZE (sync_core), CLFLUSHOPT/CLWB,
    /// and the bit-manipulation, RNG and paging features above. Numbers, not names: the kernel
    /// copies the option into a 128-byte buffer and drops what does not fit (names did not).
    /// Number = feature word × 32 + bit (word 4: CPUID 1 ECX, 6: 0x80000001 ECX, 9: 7.0 EBX,
    /// 16: 7.0 ECX, 18: 7.0 EDX).
    public static let pvmHiddenFeatures: [(name: String, number: Int)] = [
        ("pclmulqdq", 4 * 32 + 1), ("ssse3", 4 * 32 + 9), ("fma", 4 * 32 + 12), ("cx16", 4 * 32 + 13),
        ("pcid", 4 * 32 + 17), ("sse4_1", 4 * 32 + 19), ("sse4_2", 4 * 32 + 20), ("movbe", 4 * 32 + 22),
        ("popcnt", 4 * 32 + 23), ("aes", 4 * 32 + 25), ("avx", 4 * 32 + 28), ("f16c", 4 * 32 + 29),
        ("rdrand", 4 * 32 + 30), ("abm", 6 * 32 + 5), ("fsgsbase", 9 * 32 + 0), ("bmi1", 9 * 32 + 3),
        ("smep", 9 * 32 + 7), ("bmi2", 9 * 32 + 8), ("invpcid", 9 * 32 + 10), ("rdseed", 9 * 32 + 18),
        ("adx", 9 * 32 + 19), ("smap", 9 * 32 + 20), ("clflushopt", 9 * 32 + 23), ("clwb", 9 * 32 + 24),
        ("sha_ni", 9 * 32 + 29), ("pku", 16 * 32 + 3), ("gfni", 16 * 32 + 8), ("serialize", 18 * 32 + 14),
    ]

    /// The kernel reads at most 127 characters of `clearcpuid=`'s value.
    public static let clearCPUIDValueLimit = 127

    static func clearCPUIDParameter(_ features: [(name: String, number: Int)]) -> String {
        "clearcpuid=" + features.map { String($0.number) }.joined(separator: ",")
    }

    public func apply(to table: [CPUIDEntry]) -> [CPUIDEntry] {
        table.map { e in
            var e = e
            if zeroedLeaves.contains(e.function) { e.eax = 0; e.ebx = 0; e.ecx = 0; e.edx = 0; return e }
            for c in clears where c.leaf == e.function && (c.subleaf == e.index || e.flags & CPUIDEntry.significantIndex == 0) {
                switch c.register {
                case 0: e.eax &= ~c.bits
                case 1: e.ebx &= ~c.bits
                case 2: e.ecx &= ~c.bits
                default: e.edx &= ~c.bits
                }
            }
            return e
        }
    }
}

/// When to hide features (the CLI's and tests' knob).
public enum CPUIDMaskPolicy: String, Sendable, Codable {
    /// `emulatedKernelCode` when the host has no vmx/svm, else nothing.
    case automatic
    case none
    case emulatedKernelCode

    public func resolve(cpuinfo: String? = nil) -> CPUIDMask {
        switch self {
        case .none: .none
        case .emulatedKernelCode: .emulatedKernelCode
        case .automatic: CPUID.hostHasHardwareVirtualization(cpuinfo: cpuinfo) ? .none : .emulatedKernelCode
        }
    }
}
