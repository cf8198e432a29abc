import Foundation
import Testing
@testable import KtstrMachine
@testable import KtstrHost
@testable import KtstrProtocol

@Suite struct GauntletTests {
    static func outcome(kind: ExitKind = ExitKind("unreg"), value: Int = 64, workers: Int = 2, problems: [RunProblem] = []) -> RunOutcome {
        var o = RunOutcome(backend: .qemuTCG, wallMillis: 4200)
        o.schedulerExit = SchedulerExit(kind: kind, kindValue: value, code: 0, reason: "", message: "", source: .memory)
        o.workers = (0..<workers).map { WorkerStats(index: $0, pid: 10 + $0, cpuNanos: 1, waitNanos: 0, runs: 1, iterations: 1, lastCPU: 0) }
        o.requestedWorkers = 2
        o.problems = problems
        return o
    }

    @Test func checksJudgeEachCell() {
        let ok = Gauntlet.cell(topology: .twoLLCs, kernel: "default", outcome: Self.outcome(), expectScheduler: true)
        #expect(ok.passed && ok.topology == "2llc" && ok.exitKind == "unreg" && ok.checks.passedCount == 4)
        let err = Gauntlet.cell(topology: .twoNodes, kernel: "default", outcome: Self.outcome(kind: ExitKind("error_bpf"), value: 1025),
                                expectScheduler: true)
        #expect(!err.passed && !err.checks.noErrorExit && err.checks.schedulerLoaded)
        let starved = Gauntlet.cell(topology: .flat2, kernel: "k", outcome: Self.outcome(workers: 1), expectScheduler: true)
        #expect(!starved.passed && !starved.checks.allWorkersRan)
        let mismatch = Gauntlet.cell(topology: .twoLLCs, kernel: "k",
                                     outcome: Self.outcome(problems: [RunProblem(.topologyMismatch, "asked 2x2x1: …")]), expectScheduler: true)
        #expect(!mismatch.passed && !mismatch.checks.noProblems && mismatch.problems == ["topology mismatch: asked 2x2x1: …"])
        var none = Self.outcome()
        none.schedulerExit = nil
        #expect(!Gauntlet.checks(none, expectScheduler: true).schedulerLoaded)
        #expect(Gauntlet.checks(none, expectScheduler: false).all)
    }

    @Test func tableHasOneRowPerCellAndJSONSaysPassed() throws {
        let cells = [Gauntlet.cell(topology: .flat2, kernel: "default", outcome: Self.outcome(), expectScheduler: true),
                     Gauntlet.failedCell(topology: .twoNodes, kernel: "bzImage", error: CancellationError(), wallMillis: 10)]
        let lines = Gauntlet.table(cells).split(separator: "\n")
        #expect(lines.count == 5)
        #expect(lines[0].hasPrefix("TOPOLOGY"))
        #expect(lines[1].hasPrefix("1x2x1") && lines[1].hasSuffix("ok"))
        #expect(lines[2].hasPrefix("2numa") && lines[2].hasSuffix("FAIL") && lines[2].contains("0/4"))
        #expect(lines[3].contains("run failed"))
        #expect(lines[4] == "1 of 2 cells passed")
        let json = String(decoding: try JSONEncoder().encode(cells), as: UTF8.self)
        #expect(json.contains(#""passed":true"#) && json.contains(#""passed":false"#))
        #expect(try JSONDecoder().decode([Gauntlet.Cell].self, from: Data(json.utf8)) == cells)
    }
}
