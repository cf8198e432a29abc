import Foundation

/// One message from the agent's channel (docs/PROTOCOLS.md "Agent channel").
public enum AgentMessage: Sendable, Equatable {
    case hello(release: String, cpus: Int, kallsyms: [String: UInt64])
    case schedulerStarted(pid: Int)
    case schedulerEnabled(millis: Int)
    case schedulerExit(SchedulerExit, source: String)
    case workers([WorkerStats])
    case log(stream: String, text: String)
    case problem(String)
    case done
    /// A well-formed message of a type this host does not know (newer agent).
    case unknown(type: String)

    public static let prefix = "@ktstr "
    /// Longest line accepted; longer input is dropped as garbage (the guest is hostile).
    public static let maxLineBytes = 256 * 1024

    /// Parses one line; nil for anything that is not a valid `@ktstr {json}` message.
    public static func parse(_ line: Substring) -> AgentMessage? {
        guard line.utf8.count <= maxLineBytes, let r = line.range(of: prefix) else { return nil }
        let json = line[r.upperBound...].trimmingCharacters(in: .whitespacesAndNewlines)
        guard let obj = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
              let type = obj["type"] as? String else { return nil }
        func int(_ k: String, in o: [String: Any] = obj) -> Int? { (o[k] as? NSNumber)?.intValue }
        func u64(_ k: String, in o: [String: Any]) -> UInt64 {
            guard let n = o[k] as? NSNumber, n.doubleValue >= 0 else { return 0 }
            return n.uint64Value
        }
        func str(_ k: String) -> String { obj[k] as? String ?? "" }
        switch type {
        case "hello":
            var syms: [String: UInt64] = [:]
            for (k, v) in obj["kallsyms"] as? [String: Any] ?? [:] {
                if let s = v as? String, let a = UInt64(s, radix: 16) { syms[k] = a }
            }
            return .hello(release: str("release"), cpus: int("cpus") ?? 0, kallsyms: syms)
        case "sched_started": return .schedulerStarted(pid: int("pid") ?? 0)
        case "sched_enabled": return .schedulerEnabled(millis: int("millis") ?? 0)
        case "sched_exit":
            let kind = ExitKind(str("kind"))
            let value = int("kindValue") ?? ExitKind.fallbackTable.first { $0.value == kind }?.key ?? -1
            let code = (obj["code"] as? NSNumber)?.int64Value ?? 0
            return .schedulerExit(SchedulerExit(kind: kind, kindValue: value, code: code, reason: str("reason"),
                                                message: str("message")), source: str("source"))
        case "workers":
            let list = obj["workers"] as? [[String: Any]] ?? []
            return .workers(list.prefix(4096).map { w in
                WorkerStats(index: int("index", in: w) ?? 0, pid: int("pid", in: w) ?? 0, cpuNanos: u64("cpuNanos", in: w),
                            waitNanos: u64("waitNanos", in: w), runs: u64("runs", in: w),
                            iterations: u64("iterations", in: w), lastCPU: int("lastCPU", in: w))
            })
        case "log": return .log(stream: str("stream"), text: str("text"))
        case "problem": return .problem(str("message"))
        case "done": return .done
        default: return .unknown(type: type)
        }
    }
}
