// cgroup v2 for scenarios (mounted at /sys/fs/cgroup by the agent): create the scenario's
// cgroups with the cpu and cpuset controllers, write their knobs, move processes, read usage.
import Glibc
import KtstrProtocol

enum Cgroups {
    static let root = "/sys/fs/cgroup"
    static let controllers = ["cpu", "cpuset"]

    /// The directory of a cgroup path ("" = the root).
    static func dir(_ path: String) -> String { path.isEmpty ? root : root + "/" + path }

    /// Writes `value` to an existing cgroup file; the error text, or nil.
    static func writeFile(_ file: String, _ value: String) -> String? {
        let fd = open(file, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let e = errno
            return "\(file): \(Sys.errnoText(e))\(e == ENOENT ? " (is the controller enabled in the parent's cgroup.subtree_control?)" : "")"
        }
        defer { close(fd) }
        return Sys.writeAll(fd, Array(value.utf8)) ? nil : "writing '\(value)' to \(file): \(Sys.errnoText())"
    }

    /// Enables the controllers for the root's children and for every scenario cgroup that has
    /// children, creates the cgroups and writes their weight, cpuset and cpu.max. Returns the
    /// problems (the scenario still runs; the checks show what did not take).
    static func setUp(_ s: Scenario) -> [String] {
        var problems: [String] = []
        let parents = Set(s.cgroups.compactMap { c in c.path.find("/", backwards: true).map { String(c.path[..<$0.lowerBound]) } })
        func enable(_ path: String) {
            for c in controllers {
                if let e = writeFile(dir(path) + "/cgroup.subtree_control", "+" + c) { problems.append("enabling \(c): \(e)") }
            }
        }
        if !s.cgroups.isEmpty { enable("") }
        for c in s.cgroups {
            if mkdir(dir(c.path), 0o755) != 0, errno != EEXIST {
                problems.append("mkdir \(dir(c.path)): \(Sys.errnoText())")
                continue
            }
            if parents.contains(c.path) { enable(c.path) }
            if let w = c.weight, let e = writeFile(dir(c.path) + "/cpu.weight", String(w)) { problems.append(e) }
            if let cpus = c.cpus, let e = writeFile(dir(c.path) + "/cpuset.cpus", cpus) { problems.append(e) }
            if let m = c.cpuMax, let e = writeFile(dir(c.path) + "/cpu.max", m) { problems.append(e) }
        }
        return problems
    }

    /// cpu.stat's usage_usec (includes descendants); nil when unreadable.
    static func usageMicros(_ path: String) -> UInt64? {
        guard let text = Sys.readText(dir(path) + "/cpu.stat", limit: 4096) else { return nil }
        for line in Sys.lines(text) where line.hasPrefix("usage_usec ") {
            return UInt64(line.dropFirst("usage_usec ".count))
        }
        return nil
    }

    /// cpuset.cpus.effective, trimmed; nil when unreadable.
    static func effectiveCPUs(_ path: String) -> String? {
        Sys.readText(dir(path) + "/cpuset.cpus.effective", limit: 4096).map { String($0.prefix { $0 != "\n" }) }
    }

    static func move(_ pid: pid_t, to path: String) -> String? { writeFile(dir(path) + "/cgroup.procs", String(pid)) }

    /// The cgroup v2 path of `pid` ("0::/a/b" → "a/b"; "" = root); nil when unreadable.
    static func cgroupOf(_ pid: pid_t) -> String? {
        guard let text = Sys.readText("/proc/\(pid)/cgroup", limit: 4096) else { return nil }
        for line in Sys.lines(text) where line.hasPrefix("0::/") { return String(line.dropFirst(4)) }
        return nil
    }
}
