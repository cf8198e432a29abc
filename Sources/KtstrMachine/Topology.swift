/// The CPU topology a guest sees: LLCs (each its own L3 domain), cores per LLC, threads per core.
/// vCPU count = llcs × coresPerLLC × threadsPerCore. Used by CPUID leaves (KVM backend) and
/// `-smp` (QEMU backend).
public struct Topology: Codable, Sendable, Hashable, CustomStringConvertible {
    public var llcs: Int
    public var coresPerLLC: Int
    public var threadsPerCore: Int

    public init(llcs: Int = 1, coresPerLLC: Int, threadsPerCore: Int = 1) {
        self.llcs = max(1, llcs); self.coresPerLLC = max(1, coresPerLLC); self.threadsPerCore = max(1, threadsPerCore)
    }

    /// A flat topology: one LLC, `cpus` single-threaded cores.
    public static func flat(_ cpus: Int) -> Topology { Topology(llcs: 1, coresPerLLC: cpus, threadsPerCore: 1) }

    public var vcpuCount: Int { llcs * coresPerLLC * threadsPerCore }
    public var description: String { "\(llcs)x\(coresPerLLC)x\(threadsPerCore)" }
}
