import KtstrMachine
import KtstrSchedExt
import KtstrProtocol

/// Assertions on a run's outcome. Each records its issue at the caller's line and says what
/// actually happened (kind, code, reason, message), so a failure reads without the console.
extension RunOutcome {
    /// One line: how the scheduler ended, for failure messages.
    public var exitSummary: String {
        guard let e = schedulerExit else {
            return "the scheduler never reported an exit" + (problems.isEmpty ? "" : " (\(problems.map(\.description).joined(separator: "; ")))")
        }
        var s = "exit kind \(e.kind) (\(e.kindValue.map(String.init) ?? "value unknown")), code \(e.code.map(String.init) ?? "unknown"), reason \"\(e.reason)\""
        if !e.message.isEmpty { s += ", message \"\(e.message)\"" }
        if let src = e.source { s += " (from \(src.rawValue))" }
        if !problems.isEmpty { s += "; problems: \(problems.map(\.description).joined(separator: "; "))" }
        return s
    }

    /// The scheduler exited with `kind` (and, when given, a message containing the text and
    /// the exit code; an exit whose code is unknown does not match a code).
    public func expectSchedulerExit(_ kind: ExitKind, messageContains text: String? = nil, code: Int64? = nil,
                                    sourceLocation: SourceLocation = #_sourceLocation) {
        guard let e = schedulerExit else {
            Issue.record("expected scheduler exit \(kind), but \(exitSummary)", sourceLocation: sourceLocation)
            return
        }
        if e.kind != kind {
            Issue.record("expected scheduler exit \(kind), got \(exitSummary)", sourceLocation: sourceLocation)
        }
        if let text, !e.message.contains(text) {
            Issue.record("expected the exit message to contain \"\(text)\", got \(exitSummary)", sourceLocation: sourceLocation)
        }
        if let code, e.code != code {
            Issue.record("expected exit code \(code), got \(exitSummary)", sourceLocation: sourceLocation)
        }
    }

    /// The scheduler did not end with an error-class kind (≥ SCX_EXIT_ERROR), and the run had
    /// no problems (whether or not an exit was reported).
    public func expectNoSchedulerError(sourceLocation: SourceLocation = #_sourceLocation) {
        if let e = schedulerExit, e.isError {
            Issue.record("scheduler failed: \(exitSummary)", sourceLocation: sourceLocation)
        }
        if !problems.isEmpty {
            Issue.record("run had problems: \(problems.map(\.description).joined(separator: "; "))", sourceLocation: sourceLocation)
        }
    }

    /// Every worker the workload asked for was reported, and each got CPU time.
    public func expectAllWorkersRan(sourceLocation: SourceLocation = #_sourceLocation) {
        if let requested = requestedWorkers, workers.count != requested {
            Issue.record("\(workers.count) of the \(requested) requested workers reported (\(exitSummary))", sourceLocation: sourceLocation)
        }
        if workers.isEmpty {
            if requestedWorkers != 0 { Issue.record("no workers reported (\(exitSummary))", sourceLocation: sourceLocation) }
            return
        }
        let starved = workers.filter { $0.cpuNanos == 0 || $0.runs == 0 }
        if !starved.isEmpty {
            Issue.record("workers that never ran: \(starved.map { "#\($0.index) pid \($0.pid)" }.joined(separator: ", "))",
                         sourceLocation: sourceLocation)
        }
    }
}

extension RunOutcome: CustomTestStringConvertible {
    public var testDescription: String { "RunOutcome(\(backend.rawValue): \(exitSummary))" }
}

extension Topology: CustomTestStringConvertible {
    /// The preset name ("2llc") where there is one, else "LxCxT" / "NnLxCxT".
    public var testDescription: String { presetName ?? description }
}
