// How the scheduler exited, recovered from text: the fault loader's KTSTR_EXIT line, the
// `EXIT: reason (msg)` line of user_exit_info-based loaders, or the kernel's log. Kinds and
// reason strings come from KtstrProtocol's ExitKind.table.
import KtstrProtocol

@dynamicMemberLookup
struct ExitInfo {
    var exit: SchedulerExit
    subscript<T>(dynamicMember path: WritableKeyPath<SchedulerExit, T>) -> T {
        get { exit[keyPath: path] }
        set { exit[keyPath: path] = newValue }
    }

    /// The `sched_exit` message that reports it.
    var agentMessage: AgentMessage { .schedulerExit(exit) }

    /// `code` nil: the text carried none (unknown, not 0).
    init(kind: ExitKind, kindValue: Int?, code: Int64?, reason: String, message: String, source: ExitSource) {
        exit = SchedulerExit(kind: kind, kindValue: kindValue, code: code, reason: reason, message: message, source: source)
    }

    /// A value the kernel's table does not name reads as `kind_<value>`.
    static func kindName(_ value: Int) -> ExitKind { ExitKind(value: value) ?? ExitKind("kind_\(value)") }
    static func kindValue(_ kind: ExitKind) -> Int? { kind.value }
    /// Text that is not one of `scx_exit_reason()`'s strings reads as `unknown`.
    static func kindForReason(_ reason: String) -> ExitKind { ExitKind(kernelReason: reason) ?? "unknown" }

    /// `KTSTR_EXIT kind=<int> code=<int> reason=<text>  msg=<rest>` (last one in the log wins).
    static func fromKtstrLine(_ log: String) -> ExitInfo? {
        for line in Sys.lines(log).reversed() {
            guard let r = line.find("KTSTR_EXIT ") else { continue }
            let rest = line[r.upperBound...]
            guard let kindStr = value(of: "kind=", in: rest, until: " "), let kind = Int(kindStr) else { continue }
            let code = value(of: "code=", in: rest, until: " ").flatMap { Int64($0) }
            let reason = value(of: "reason=", in: rest, until: "  msg=") ?? value(of: "reason=", in: rest, until: nil) ?? ""
            let msg = rest.find("  msg=").map { String(rest[$0.upperBound...]) } ?? ""
            return ExitInfo(kind: kindName(kind), kindValue: kind, code: code, reason: reason, message: msg, source: .loader)
        }
        return nil
    }

    /// `EXIT: <reason>[ (<msg>)][ on CPU <n>]` from user_exit_info.h's UEI_REPORT.
    static func fromUEILine(_ log: String) -> ExitInfo? {
        for line in Sys.lines(log).reversed() {
            guard let r = line.find("EXIT: "), r.lowerBound == line.startIndex else { continue }
            var body = String(line[r.upperBound...])
            if let on = body.find(" on CPU ", backwards: true),
               Int(body[on.upperBound...]) != nil { body = String(body[..<on.lowerBound]) }
            var reason = body
            var msg = ""
            // The reason is one of the kernel's fixed strings; the message is whatever follows it.
            let reasons = ExitKind.table.compactMap(\.reason)
            if let known = reasons.first(where: { body.hasPrefix($0 + " (") }), body.hasSuffix(")") {
                reason = known
                msg = String(body.dropFirst(known.count + 2).dropLast())
            } else if let open = body.find(" ("), body.hasSuffix(")") {
                reason = String(body[..<open.lowerBound])
                msg = String(body[open.upperBound...].dropLast())
            }
            let kind = kindForReason(reason)
            return ExitInfo(kind: kind, kindValue: kindValue(kind), code: nil, reason: reason, message: msg, source: .loader)
        }
        return nil
    }

    /// The kernel's `sched_ext: BPF scheduler "<name>" disabled (<reason>)`, followed for
    /// errors by `sched_ext: <name>: <msg>`.
    static func fromKernelLog(_ lines: [String]) -> ExitInfo? {
        for (i, line) in lines.enumerated().reversed() {
            guard let r = line.find("sched_ext: BPF scheduler \""),
                  let q = line[r.upperBound...].firstIndex(of: "\"") else { continue }
            let name = line[r.upperBound..<q]
            let after = line[line.index(after: q)...]
            guard after.hasPrefix(" disabled ("), after.hasSuffix(")") else { continue }
            let reason = String(after.dropFirst(" disabled (".count).dropLast())
            var msg = ""
            if i + 1 < lines.count, let m = lines[i + 1].find("sched_ext: \(name): ") {
                msg = String(lines[i + 1][m.upperBound...])
            }
            let kind = kindForReason(reason)
            return ExitInfo(kind: kind, kindValue: kindValue(kind), code: nil, reason: reason, message: msg, source: .kernelLog)
        }
        return nil
    }

    private static func value(of key: String, in s: Substring, until end: String?) -> String? {
        guard let k = s.find(key) else { return nil }
        let rest = s[k.upperBound...]
        guard let end else { return String(rest) }
        guard let e = rest.find(end) else { return String(rest) }
        return String(rest[..<e.lowerBound])
    }
}
