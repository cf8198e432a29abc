import Glibc
import KtstrProtocol

/// What the guest kernel says about its CPU topology, for the hello: the distinct L3 sharing
/// groups and each NUMA node's CPUs, as sysfs CPU lists.
enum TopologyReader {
    /// `root`: sysfs' `devices/system` (a directory tree in tests).
    static func read(cpus: Int, root: String = "/sys/devices/system") -> GuestTopology {
        var groups: [(first: Int, list: String)] = []
        var seen: Set<String> = []
        for cpu in 0..<min(max(cpus, 0), 4096) {
            let cache = "\(root)/cpu/cpu\(cpu)/cache"
            // The L3 is the index whose level is 3 (index3 on x86, but do not rely on it).
            for index in 0..<10 {
                guard let level = Sys.readText("\(cache)/index\(index)/level", limit: 16) else { break }
                guard trimmed(level) == "3",
                      let list = Sys.readText("\(cache)/index\(index)/shared_cpu_list", limit: 4096).map(trimmed),
                      !list.isEmpty, seen.insert(list).inserted else { continue }
                groups.append((GuestTopology.cpus(list)?.first ?? Int.max, list))
            }
        }
        var nodes: [String] = []
        for node in 0..<1024 {
            guard let list = Sys.readText("\(root)/node/node\(node)/cpulist", limit: 4096) else {
                if !Sys.exists("\(root)/node/node\(node + 1)") { break }  // a gap of two ends the scan
                continue
            }
            nodes.append(trimmed(list))
        }
        return GuestTopology(l3Groups: groups.sorted { $0.first < $1.first }.map(\.list), numaNodes: nodes)
    }

    private static func trimmed(_ s: String) -> String {
        String(s.split(whereSeparator: { $0 == "\n" || $0 == " " }).joined(separator: " "))
    }
}
