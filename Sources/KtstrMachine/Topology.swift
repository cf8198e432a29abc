/// The CPU topology a guest sees: NUMA nodes, LLCs (each its own L3 domain), cores per LLC,
/// threads per core. vCPU count = llcs × coresPerLLC × threadsPerCore; the LLCs are divided
/// evenly among `numaNodes` (node n holds LLCs n·llcs/numaNodes ..< (n+1)·llcs/numaNodes, and
/// an equal share of RAM). vCPUs are numbered LLC by LLC, core by core, thread by thread.
/// Used by CPUID leaves, MADT and SRAT/SLIT (KVM backend) and `-smp`/`-numa` (QEMU backend).
public struct Topology: Codable, Sendable, Hashable, CustomStringConvertible {
    public var llcs: Int
    public var coresPerLLC: Int
    public var threadsPerCore: Int
    /// NUMA nodes (≥ 1, divides `llcs`; the initializer rounds down to a divisor).
    public var numaNodes: Int

    public init(llcs: Int = 1, coresPerLLC: Int, threadsPerCore: Int = 1) {
        self.init(numaNodes: 1, llcs: llcs, coresPerLLC: coresPerLLC, threadsPerCore: threadsPerCore)
    }

    /// `numaNodes` NUMA nodes sharing `llcs` LLCs evenly. A node count that does not divide
    /// the LLC count is lowered to the largest one that does.
    public init(numaNodes: Int, llcs: Int, coresPerLLC: Int, threadsPerCore: Int = 1) {
        self.llcs = max(1, llcs); self.coresPerLLC = max(1, coresPerLLC); self.threadsPerCore = max(1, threadsPerCore)
        var n = min(max(1, numaNodes), self.llcs)
        while self.llcs % n != 0 { n -= 1 }
        self.numaNodes = n
    }

    /// A flat topology: one LLC, `cpus` single-threaded cores.
    public static func flat(_ cpus: Int) -> Topology { Topology(llcs: 1, coresPerLLC: cpus, threadsPerCore: 1) }

    public var vcpuCount: Int { llcs * coresPerLLC * threadsPerCore }
    public var cpusPerLLC: Int { coresPerLLC * threadsPerCore }
    public var llcsPerNode: Int { llcs / numaNodes }
    public var cpusPerNode: Int { llcsPerNode * cpusPerLLC }

    /// The LLC (0-based) that vCPU `cpu` belongs to.
    public func llc(ofCPU cpu: Int) -> Int { cpu / cpusPerLLC }
    /// The NUMA node (0-based) that vCPU `cpu` belongs to.
    public func node(ofCPU cpu: Int) -> Int { cpu / cpusPerNode }
    /// The vCPUs of each LLC, in order.
    public var llcCPUs: [ClosedRange<Int>] { (0..<llcs).map { $0 * cpusPerLLC ... ($0 + 1) * cpusPerLLC - 1 } }
    /// The vCPUs of each NUMA node, in order.
    public var nodeCPUs: [ClosedRange<Int>] { (0..<numaNodes).map { $0 * cpusPerNode ... ($0 + 1) * cpusPerNode - 1 } }

    /// How `memoryMiB` of RAM is split over the nodes: equal shares in 2 MiB units, the last
    /// node takes the rest. One entry (all of it) without NUMA.
    public func nodeMemoryMiB(_ memoryMiB: Int) -> [Int] {
        guard numaNodes > 1 else { return [memoryMiB] }
        let share = (memoryMiB / numaNodes) & ~1
        return Array(repeating: share, count: numaNodes - 1) + [memoryMiB - share * (numaNodes - 1)]
    }

    /// "LxCxT", with an "Nn" prefix when there is more than one NUMA node ("2n2x1x1").
    public var description: String {
        (numaNodes > 1 ? "\(numaNodes)n" : "") + "\(llcs)x\(coresPerLLC)x\(threadsPerCore)"
    }

    // Codable by hand: `numaNodes` is optional in the encoding (older JSON has none).
    private enum CodingKeys: String, CodingKey { case llcs, coresPerLLC, threadsPerCore, numaNodes }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(numaNodes: try c.decodeIfPresent(Int.self, forKey: .numaNodes) ?? 1,
                  llcs: try c.decode(Int.self, forKey: .llcs), coresPerLLC: try c.decode(Int.self, forKey: .coresPerLLC),
                  threadsPerCore: try c.decode(Int.self, forKey: .threadsPerCore))
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(llcs, forKey: .llcs); try c.encode(coresPerLLC, forKey: .coresPerLLC)
        try c.encode(threadsPerCore, forKey: .threadsPerCore); try c.encode(numaNodes, forKey: .numaNodes)
    }
}

// MARK: - Named presets

extension Topology {
    /// One vCPU.
    public static let single = Topology(llcs: 1, coresPerLLC: 1)
    /// One LLC, two single-threaded cores.
    public static let flat2 = Topology(llcs: 1, coresPerLLC: 2)
    /// Two LLCs (two L3 sharing groups) of two cores each.
    public static let twoLLCs = Topology(llcs: 2, coresPerLLC: 2)
    /// Two NUMA nodes, one LLC of two cores each.
    public static let twoNodes = Topology(numaNodes: 2, llcs: 2, coresPerLLC: 2)
    /// One LLC, two cores with two SMT threads each.
    public static let smtPairs = Topology(llcs: 1, coresPerLLC: 2, threadsPerCore: 2)

    /// The named presets with their short CLI names, in a stable order.
    public static let presets: [(name: String, topology: Topology)] = [
        ("1x1x1", .single), ("1x2x1", .flat2), ("2llc", .twoLLCs), ("2numa", .twoNodes), ("smt", .smtPairs),
    ]

    /// The preset's short name, or nil for a topology that is no preset.
    public var presetName: String? { Self.presets.first { $0.topology == self }?.name }

    /// A preset name ("2llc") or a spec: "LxCxT" or "NnLxCxT" (e.g. "2x2x1", "2n4x1x1").
    public init?(named name: String) {
        if let p = Self.presets.first(where: { $0.name == name }) { self = p.topology; return }
        var spec = Substring(name), nodes = 1
        if let n = spec.firstIndex(of: "n") {
            guard let v = Int(spec[..<n]), v >= 1 else { return nil }
            nodes = v; spec = spec[spec.index(after: n)...]
        }
        let parts = spec.split(separator: "x", omittingEmptySubsequences: false).map { Int($0) }
        guard parts.count == 3, let l = parts[0], let c = parts[1], let t = parts[2],
              l >= 1, c >= 1, t >= 1, nodes <= l, l % nodes == 0 else { return nil }
        self.init(numaNodes: nodes, llcs: l, coresPerLLC: c, threadsPerCore: t)
    }
}
