/// The CPU topology as the guest kernel sees it, sent in the agent's `hello` (optional fields
/// `l3Groups` and `numaNodes`, docs/PROTOCOLS.md): CPU lists in the kernel's format ("0-1,4").
public struct GuestTopology: Sendable, Hashable, Codable {
    /// The distinct L3 sharing groups (`cpu*/cache/index<level 3>/shared_cpu_list`), ordered by
    /// their first CPU. Empty: the guest reports no L3.
    public var l3Groups: [String]
    /// Each NUMA node's CPUs (`/sys/devices/system/node/node<n>/cpulist`), in node order.
    public var numaNodes: [String]

    public init(l3Groups: [String], numaNodes: [String]) {
        self.l3Groups = l3Groups; self.numaNodes = numaNodes
    }

    /// Most groups or nodes one hello yields, and the longest list text (the guest is hostile).
    public static let maxEntries = 1024
    public static let maxListChars = 4096

    /// The CPUs of a kernel CPU list ("0-3,8,10-11"); nil when it is malformed or huge.
    public static func cpus(_ list: some StringProtocol) -> [Int]? {
        var out: [Int] = []
        let text = list.split(whereSeparator: { $0 == "\n" || $0 == " " }).joined()
        if text.isEmpty { return [] }
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let ends = part.split(separator: "-", omittingEmptySubsequences: false)
            guard ends.count <= 2, let lo = Int(ends[0]), let hi = ends.count == 2 ? Int(ends[1]) : lo,
                  lo >= 0, lo <= hi, hi - lo < 65536, out.count + (hi - lo) < 65536 else { return nil }
            out += lo...hi
        }
        return out
    }

    /// The kernel's format for a set of CPUs: sorted, runs as "a-b".
    public static func list(_ cpus: some Sequence<Int>) -> String {
        let s = Set(cpus).sorted()
        var parts: [String] = []
        var i = 0
        while i < s.count {
            var j = i
            while j + 1 < s.count, s[j + 1] == s[j] + 1 { j += 1 }
            parts.append(i == j ? "\(s[i])" : "\(s[i])-\(s[j])")
            i = j + 1
        }
        return parts.joined(separator: ",")
    }

    /// Both lists normalised to sets of CPUs (L3 groups as a set of groups, nodes in order).
    public var normalized: (l3: Set<[Int]>, nodes: [[Int]]) {
        (Set(l3Groups.map { Self.cpus($0) ?? [-1] }), numaNodes.map { Self.cpus($0) ?? [-1] })
    }

    /// What this topology's JSON fields are in `hello`.
    public var fields: [(String, JSON)] {
        [("l3Groups", .array(l3Groups.map(JSON.string))), ("numaNodes", .array(numaNodes.map(JSON.string)))]
    }

    /// Reads the fields from a `hello` object; nil when neither is there (an older agent).
    public static func from(_ obj: JSON) -> GuestTopology? {
        let l3 = obj["l3Groups"]?.array, nodes = obj["numaNodes"]?.array
        guard l3 != nil || nodes != nil else { return nil }
        func strings(_ a: [JSON]?) -> [String] {
            (a ?? []).prefix(maxEntries).compactMap { $0.string }.filter { $0.utf8.count <= maxListChars }
        }
        return GuestTopology(l3Groups: strings(l3), numaNodes: strings(nodes))
    }
}
