import Foundation
import KtstrVMM

/// `ktstr bench tiny`: how long one tiny-guest lifecycle takes on our VMM
/// (create VM → "hello" on COM1 → shutdown → teardown of fds, mappings and threads).
struct BenchCommand: CLICommand {
    let name = "bench"
    let summary = "time VMM lifecycles (bench tiny: tiny guest create → hello → shutdown → teardown)"
    let help = """
        USAGE: ktstr bench tiny [--iterations N] [--json]

        Boots N tiny guests one after another (default 20) and prints min/median/p90 of
        the whole lifecycle, in milliseconds.

        OPTIONS:
          --iterations N   runs to time (1...10000)
          --json           one JSON object on stdout instead of text
        """

    struct Report: Codable {
        var benchmark: String
        var iterations: Int
        var minMillis: Double
        var medianMillis: Double
        var p90Millis: Double
        var maxMillis: Double
    }

    func run(_ args: inout Arguments) async throws -> Int32 {
        let iterations = try args.intOption("iterations") ?? 20
        let json = args.flag("json")
        guard let what = args.positional() else { throw CLIError("say what to bench: `ktstr bench tiny`", status: 2) }
        try args.finish()
        guard what == "tiny" else { throw CLIError("unknown benchmark '\(what)' (known: tiny)", status: 2) }
        guard (1...10_000).contains(iterations) else { throw CLIError("--iterations must be 1...10000", status: 2) }

        var samples: [Double] = []
        let clock = ContinuousClock()
        for i in 0..<iterations {
            let t0 = clock.now
            let result: TinyGuestDemo.Result
            do {
                // The machine is created and released inside: teardown is part of the time.
                result = try TinyGuestDemo.run(log: .silent)
            } catch {
                throw CLIError("\(error)")
            }
            let took = clock.now - t0
            guard result.exit == .shutdown, result.console == "hello\n" else {
                throw CLIError("run \(i + 1): tiny guest ended with \(result.exit) and console \(result.console.debugDescription)")
            }
            samples.append(Double(took.components.seconds) * 1e3 + Double(took.components.attoseconds) / 1e15)
        }
        samples.sort()
        func pct(_ p: Double) -> Double { samples[min(samples.count - 1, Int((p * Double(samples.count - 1)).rounded()))] }
        let report = Report(benchmark: "tiny", iterations: iterations, minMillis: samples[0],
                            medianMillis: pct(0.5), p90Millis: pct(0.9), maxMillis: samples[samples.count - 1])
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys]
            print(String(decoding: try enc.encode(report), as: UTF8.self))
        } else {
            func f(_ v: Double) -> String { String(format: "%.2f ms", v) }
            print("tiny guest lifecycle (create VM → hello on COM1 → shutdown → teardown), \(iterations) runs:")
            print("  min \(f(report.minMillis))  median \(f(report.medianMillis))  p90 \(f(report.p90Millis))  max \(f(report.maxMillis))")
        }
        return 0
    }
}
