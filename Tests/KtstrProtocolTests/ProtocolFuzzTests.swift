import Testing
@testable import KtstrProtocol

/// The agent channel is guest-controlled: JSON and message parsing must return a value or
/// nil for anything, and what they return must survive its own encoding.
@Suite struct ProtocolFuzzTests {
    static func timed(_ name: String, inputs: Int = Fuzz.iterations, _ body: () -> [String]) {
        let clock = ContinuousClock.now
        let problems = body()
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
        print("fuzz \(name): \(inputs) inputs in \(ContinuousClock.now - clock)")
    }

    static let seeds: [String] = AgentMessageTests.everyCase.map { $0.line(extra: [("millis", .int(5))]) } + [
        RunPlan(scheduler: .init(path: "/bin/s", args: ["-v", "x y"], name: "s"), workload: .init(kind: .pingPong, count: 2, periodMicros: 100),
                durationMillis: 3000, kallsyms: ["scx_root", "_text"], attachTimeoutMillis: 5000).encodedText,
        #"{"a":[1,-2.5e-3,1e308,true,false,null,"\ud83d\ude00\u00e9\\\"\/"],"b":{"c":{"d":[[]]}}}"#,
    ]

    @Test func jsonMutants() {
        Self.timed("JSON", inputs: Self.seeds.count * (Fuzz.iterations / 4)) {
            var problems: [String] = []
            for (k, seed) in Self.seeds.enumerated() {
                let text = seed.hasPrefix(AgentMessage.prefix) ? String(seed.dropFirst(AgentMessage.prefix.count)) : seed
                problems += Fuzz.run("JSON seed \(k)", seed: Array(text.utf8), baseSeed: 0x750_0000 + UInt64(k),
                                     iterations: Fuzz.iterations / 4) { b in
                    guard let v = JSON.parse(b) else { return nil }
                    // Whatever parses re-encodes to text that parses to the same value.
                    let again = v.encoded()
                    guard JSON.parse(again) == v else { return "\(String(decoding: b, as: UTF8.self)) → \(again) does not round-trip" }
                    _ = v.int; _ = v.int64; _ = v.uint64
                    return nil
                }
            }
            return problems
        }
    }

    @Test func agentMessageMutants() {
        Self.timed("agent messages", inputs: Self.seeds.count * (Fuzz.iterations / 4)) {
            var problems: [String] = []
            for (k, seed) in Self.seeds.enumerated() {
                problems += Fuzz.run("message seed \(k)", seed: Array(seed.utf8), baseSeed: 0xA6E7_0000 + UInt64(k),
                                     iterations: Fuzz.iterations / 4) { b in
                    guard let m = AgentMessage.parse(Substring(String(decoding: b, as: UTF8.self))) else { return nil }
                    if case let .workers(w) = m, w.count > AgentMessage.maxWorkers { return "\(w.count) workers" }
                    let line = m.line()
                    guard line.dropLast().contains("\n") == false else { return "message re-encodes to several lines" }
                    guard AgentMessage.parse(Substring(line)) == m else { return "\(m) → \(line) does not round-trip" }
                    return nil
                }
            }
            return problems
        }
    }

    @Test func planMutants() {
        let seed = Array(Self.seeds[Self.seeds.count - 2].utf8)
        Self.timed("run plan") {
            Fuzz.run("plan", seed: seed, baseSeed: 0x9_1A40) { b in
                _ = RunPlan.decode(b)
                return nil
            }
        }
    }

    /// Deep nesting and long inputs are refused, not recursed into or allocated.
    @Test func boundsHold() {
        #expect(JSON.parse(String(repeating: "[", count: 100_000)) == nil)
        #expect(JSON.parse(String(repeating: "[", count: 31) + String(repeating: "]", count: 31)) != nil)
        #expect(JSON.parse(Array(repeating: UInt8(ascii: " "), count: JSON.maxBytes + 1)) == nil)
        #expect(JSON.parse("\"\\ud800\\u\"") == nil)
        #expect(JSON.parse("\"\\ud800") == nil)
        #expect(JSON.parse("\"\\ud800\\ud800\"")?.string == "\u{FFFD}\u{FFFD}")
        // Found by the fuzzer: "3e308" parsed as infinity and re-encoded as null.
        #expect(JSON.parse("1e999") == nil)
        #expect(JSON.parse("[-3e308]") == nil)
        #expect(JSON.parse("1.7e308") != nil)
    }
}

extension RunPlan {
    var encodedText: String { String(decoding: encoded(), as: UTF8.self) }
}
