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
        var s = "exit kind \(e.kind) (\(e.kindValue)), code \(e.code), reason \"\(e.reason)\""
        if !e.message.isEmpty { s += ", message \"\(e.message)\"" }
        return s
    }

    /// The scheduler exited with `kind` (and, when given, a message containing the text and
    /// the exit code).
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
    /// no infrastructure problems.
    public func expectNoSchedulerError(sourceLocation: SourceLocation = #_sourceLocation) {
        if let e = schedulerExit, e.isError {
            Issue.record("scheduler failed: \(exitSummary)", sourceLocation: sourceLocation)
        }
        if schedulerExit == nil && !problems.isEmpty {
            Issue.record("run had problems: \(problems.map(\.description).joined(separator: "; "))", sourceLocation: sourceLocation)
        }
    }

    /// Every workload worker got CPU time.
    public func expectAllWorkersRan(sourceLocation: SourceLocation = #_sourceLocation) {
        if workers.isEmpty {
            Issue.record("no workers reported (\(exitSummary))", sourceLocation: sourceLocation)
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
