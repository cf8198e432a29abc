import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

/// Options of `ktstr bench boot` (parsed here, pure, so that tests need no CLI).
public struct BenchBootOptions: Sendable, Equatable {
    public var iterations = 5
    public var cpus = 2
    public var memoryMiB = 512
    public var json = false

    public init() {}

    public struct UsageError: Error, CustomStringConvertible, Equatable {
        public var description: String
    }

    /// `--iterations N`, `--cpus N`, `--memory MiB` (each also as `--name=V`), `--json`.
    public static func parse(_ argv: [String]) throws(UsageError) -> BenchBootOptions {
        var o = BenchBootOptions()
        var i = 0
        func value(_ name: String, _ a: String) throws(UsageError) -> Int {
            let text: String
            if a.hasPrefix("--\(name)=") {
                text = String(a.dropFirst(name.count + 3))
            } else {
                guard i + 1 < argv.count else { throw UsageError(description: "--\(name) needs a value") }
                i += 1
                text = argv[i]
            }
            guard let n = Int(text) else { throw UsageError(description: "--\(name) takes a whole number, not '\(text)'") }
            return n
        }
        while i < argv.count {
            let a = argv[i]
            switch a {
            case "--json": o.json = true
            case _ where a == "--iterations" || a.hasPrefix("--iterations="): o.iterations = try value("iterations", a)
            case _ where a == "--cpus" || a.hasPrefix("--cpus="): o.cpus = try value("cpus", a)
            case _ where a == "--memory" || a.hasPrefix("--memory="): o.memoryMiB = try value("memory", a)
            default: throw UsageError(description: "unknown argument '\(a)' for `bench boot` (see `ktstr bench --help`)")
            }
            i += 1
        }
        guard (1...1000).contains(o.iterations) else { throw UsageError(description: "--iterations must be 1...1000") }
        guard (1...64).contains(o.cpus) else { throw UsageError(description: "--cpus must be 1...64") }
        guard (128...65536).contains(o.memoryMiB) else { throw UsageError(description: "--memory must be 128...65536 (MiB)") }
        return o
    }
}
