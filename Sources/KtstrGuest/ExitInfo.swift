// How the scheduler exited, recovered from text: the fault loader's KTSTR_EXIT line, the
// `EXIT: reason (msg)` line of user_exit_info-based loaders, or the kernel's log.

struct ExitInfo {
    var kind: String
    var kindValue: Int
    var code: Int64
    var reason: String
    var message: String
    var source: String

    var fields: [(String, JSON)] {
        [("kind", .string(kind)), ("kindValue", .int(kindValue)), ("code", .number(Double(code))),
         ("reason", .string(reason)), ("message", .string(message)), ("source", .string(source))]
    }

    /// enum scx_exit_kind (kernel/sched/ext/internal.h), mirrored from ExitKind.fallbackTable.
    static let kinds: [(Int, String)] = [
        (0, "none"), (1, "done"), (64, "unreg"), (65, "unreg_bpf"), (66, "unreg_kern"), (67, "sysrq"),
        (68, "parent"), (69, "parent_kill"), (1024, "error"), (1025, "error_bpf"), (1026, "error_stall"),
        (1027, "error_reenq"), (1028, "error_rescue"),
    ]
    /// scx_exit_reason() strings, mirrored from ExitKind.kernelReasons.
    static let reasons: [(String, String)] = [
        ("unregistered from user space", "unreg"), ("unregistered from BPF", "unreg_bpf"),
        ("unregistered from the main kernel", "unreg_kern"), ("disabled by sysrq-S", "sysrq"),
        ("parent exiting", "parent"), ("killed by parent scheduler", "parent_kill"),
        ("runtime error", "error"), ("scx_bpf_error", "error_bpf"), ("runnable task stall", "error_stall"),
        ("reenqueue limit", "error_reenq"), ("rescue bandwidth overload", "error_rescue"),
    ]

    static func kindName(_ value: Int) -> String { kinds.first { $0.0 == value }?.1 ?? "kind_\(value)" }
    static func kindValue(_ name: String) -> Int { kinds.first { $0.1 == name }?.0 ?? -1 }
    static func kindForReason(_ reason: String) -> String { reasons.first { $0.0 == reason }?.1 ?? "unknown" }

    /// `KTSTR_EXIT kind=<int> code=<int> reason=<text>  msg=<rest>` (last one in the log wins).
    static func fromKtstrLine(_ log: String) -> ExitInfo? {
        for line in Sys.lines(log).reversed() {
            guard let r = line.range(of: "KTSTR_EXIT ") else { continue }
            let rest = line[r.upperBound...]
            guard let kindStr = value(of: "kind=", in: rest, until: " "), let kind = Int(kindStr) else { continue }
            let code = value(of: "code=", in: rest, until: " ").flatMap { Int64($0) } ?? 0
            let reason = value(of: "reason=", in: rest, until: "  msg=") ?? value(of: "reason=", in: rest, until: nil) ?? ""
            let msg = rest.range(of: "  msg=").map { String(rest[$0.upperBound...]) } ?? ""
            return ExitInfo(kind: kindName(kind), kindValue: kind, code: code, reason: reason, message: msg, source: "loader")
        }
        return nil
    }

    /// `EXIT: <reason>[ (<msg>)][ on CPU <n>]` from user_exit_info.h's UEI_REPORT.
    static func fromUEILine(_ log: String) -> ExitInfo? {
        for line in Sys.lines(log).reversed() {
            guard let r = line.range(of: "EXIT: "), r.lowerBound == line.startIndex else { continue }
            var body = String(line[r.upperBound...])
            if let on = body.range(of: " on CPU ", options: .backwards),
               Int(body[on.upperBound...]) != nil { body = String(body[..<on.lowerBound]) }
            var reason = body
            var msg = ""
            // The reason is one of the kernel's fixed strings; the message is whatever follows it.
            if let known = reasons.first(where: { body.hasPrefix($0.0 + " (") }), body.hasSuffix(")") {
                reason = known.0
                msg = String(body.dropFirst(known.0.count + 2).dropLast())
            } else if let open = body.range(of: " ("), body.hasSuffix(")") {
                reason = String(body[..<open.lowerBound])
                msg = String(body[open.upperBound...].dropLast())
            }
            let kind = kindForReason(reason)
            return ExitInfo(kind: kind, kindValue: kindValue(kind), code: 0, reason: reason, message: msg, source: "loader")
        }
        return nil
    }

    /// The kernel's `sched_ext: BPF scheduler "<name>" disabled (<reason>)`, followed for
    /// errors by `sched_ext: <name>: <msg>`.
    static func fromKernelLog(_ lines: [String]) -> ExitInfo? {
        for (i, line) in lines.enumerated().reversed() {
            guard let r = line.range(of: "sched_ext: BPF scheduler \""),
                  let q = line[r.upperBound...].firstIndex(of: "\"") else { continue }
            let name = line[r.upperBound..<q]
            let after = line[line.index(after: q)...]
            guard after.hasPrefix(" disabled ("), after.hasSuffix(")") else { continue }
            let reason = String(after.dropFirst(" disabled (".count).dropLast())
            var msg = ""
            if i + 1 < lines.count, let m = lines[i + 1].range(of: "sched_ext: \(name): ") {
                msg = String(lines[i + 1][m.upperBound...])
            }
            let kind = kindForReason(reason)
            return ExitInfo(kind: kind, kindValue: kindValue(kind), code: 0, reason: reason, message: msg, source: "kmsg")
        }
        return nil
    }

    private static func value(of key: String, in s: Substring, until end: String?) -> String? {
        guard let k = s.range(of: key) else { return nil }
        let rest = s[k.upperBound...]
        guard let end else { return String(rest) }
        guard let e = rest.range(of: end) else { return String(rest) }
        return String(rest[..<e.lowerBound])
    }
}

extension StringProtocol {
    /// Substring search without Foundation.
    func range(of needle: String, options: SearchOptions = []) -> Range<Index>? {
        let n = Array(needle.utf8)
        guard !n.isEmpty else { return nil }
        let hay = Array(utf8)
        guard hay.count >= n.count else { return nil }
        let starts = Array(0...(hay.count - n.count))
        for s in options.contains(.backwards) ? starts.reversed() : starts where hay[s] == n[0] {
            if Array(hay[s..<s + n.count]) == n {
                let lo = utf8.index(startIndex, offsetBy: s)
                let hi = utf8.index(lo, offsetBy: n.count)
                return lo..<hi
            }
        }
        return nil
    }
}

struct SearchOptions: OptionSet {
    let rawValue: Int
    static let backwards = SearchOptions(rawValue: 1)
}
