import Foundation
import KtstrVMM
import KtstrMachine
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol
import KtstrFixtures

/// `ktstr bench tiny`: how long one tiny-guest lifecycle takes on our VMM
/// (create VM → "hello" on COM1 → shutdown → teardown of fds, mappings and threads).
struct BenchCommand: CLICommand {
    let name = "bench"
    let summary = "time the KVM VMM: tiny-guest lifecycle, freeze rendezvous, snapshot restore"
    let help = """
        USAGE: ktstr bench tiny [--iterations N] [--json]
               ktstr bench freeze [--vcpus N] [--iterations N] [--json]
               ktstr bench exits [--iterations N] [--json]
               ktstr bench snapshot [--iterations N] [--json]
               ktstr bench boot [--iterations N] [--cpus N] [--memory MiB] [--json]

        tiny    boots N tiny guests one after another (default 20) and times the whole
                lifecycle: create VM → "hello" on COM1 → shutdown → teardown.
        freeze  runs one guest whose vCPUs spin (default 4) and times N freeze calls
                (kick → drain → registers captured → all parked), thawing in between.
        exits   N runs of a guest doing 10000 port writes to an empty port; reports the
                time per exit (KVM_EXIT_IO round trip through the dispatch) in microseconds.
        snapshot  snapshots a 64 MiB tiny guest (RAM filled, printing a counter on COM1)
                once, then times N restores: new machine from the snapshot directory
                (RAM mapped copy-on-write, KVM and device state set) → vCPUs started →
                first byte the restored guest prints.
        \(BenchBoot.help)
        Prints min/median/p90/max in milliseconds (exits: microseconds).

        OPTIONS:
          --iterations N   samples (1...10000)
          --vcpus N        vCPUs for `freeze` (1...64)
          --json           one JSON object on stdout instead of text
        """

    struct Report: Codable {
        var benchmark: String
        var iterations: Int
        /// "ms" (tiny, freeze) or "us" (exits).
        var unit: String
        var min: Double
        var median: Double
        var p90: Double
        var max: Double
    }

    func run(_ args: inout Arguments) async throws -> Int32 {
        if args.items.first == "boot" { _ = args.positional(); return try await BenchBoot.run(&args) }
        let iterations = try args.intOption("iterations") ?? 20
        let vcpus = try args.intOption("vcpus") ?? 4
        let json = args.flag("json")
        guard let what = args.positional() else { throw CLIError("say what to bench: `ktstr bench tiny` or `ktstr bench freeze`", status: 2) }
        try args.finish()
        guard (1...10_000).contains(iterations) else { throw CLIError("--iterations must be 1...10000", status: 2) }
        var samples: [Double]
        let title: String
        switch what {
        case "tiny":
            samples = try tiny(iterations)
            title = "tiny guest lifecycle (create VM → hello on COM1 → shutdown → teardown), \(iterations) runs"
        case "freeze":
            guard (1...64).contains(vcpus) else { throw CLIError("--vcpus must be 1...64", status: 2) }
            samples = try freeze(iterations, vcpus: vcpus)
            title = "freeze of \(vcpus) spinning vCPUs (kick → drain → registers → parked), \(iterations) freezes"
        case "snapshot":
            samples = try snapshotRestore(iterations)
            title = "restore of a 64 MiB tiny guest (snapshot directory → new VM → first byte on COM1), \(iterations) restores"
        case "exits":
            samples = try exits(iterations)
            title = "port-I/O exit round trip (µs per exit, 10000 exits per run), \(iterations) runs"
        default:
            throw CLIError("unknown benchmark '\(what)' (known: tiny, freeze, snapshot, exits, boot)", status: 2)
        }
        samples.sort()
        func pct(_ p: Double) -> Double { samples[min(samples.count - 1, Int((p * Double(samples.count - 1)).rounded()))] }
        let report = Report(benchmark: what, iterations: iterations, unit: what == "exits" ? "us" : "ms",
                            min: samples[0], median: pct(0.5), p90: pct(0.9), max: samples[samples.count - 1])
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys]
            print(String(decoding: try enc.encode(report), as: UTF8.self))
        } else {
            let unit = what == "exits" ? "µs" : "ms"
            func f(_ v: Double) -> String { String(format: "%.2f \(unit)", v) }
            print("\(title):")
            print("  min \(f(report.min))  median \(f(report.median))  p90 \(f(report.p90))  max \(f(report.max))")
        }
        return 0
    }

    private func millis(_ d: Duration) -> Double {
        Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) / 1e15
    }

    private func tiny(_ iterations: Int) throws -> [Double] {
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
            samples.append(millis(took))
        }
        return samples
    }

    private func exits(_ iterations: Int) throws -> [Double] {
        let n: UInt32 = 10_000
        var samples: [Double] = []
        for _ in 0..<iterations {
            do {
                let m = try TinyGuestMachine(payload: TinyGuestPayloads.portWrites(n), mode: .long, log: .silent)
                let clock = ContinuousClock()
                let t0 = clock.now
                try m.start()
                let exit = m.wait(timeout: .seconds(60))
                let took = clock.now - t0
                guard exit == .shutdown else { throw CLIError("exit benchmark guest ended with \(exit)") }
                samples.append(millis(took) * 1000 / Double(n)) // µs per exit
            } catch let e as CLIError {
                throw e
            } catch {
                throw CLIError("\(error)")
            }
        }
        return samples
    }

    private func snapshotRestore(_ iterations: Int) throws -> [Double] {
        let dir = NSTemporaryDirectory() + "ktstr-bench-snapshot-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let bytes: UInt64 = 64 << 20
            let m = try TinyGuestMachine(payload: TinyGuestPayloads.serialCounter, mode: .long,
                                         memoryBytes: bytes, log: .silent)
            // Every page non-zero, so the image is a full 64 MiB file (no holes).
            try m.guestMemory.fill(0xa5, at: 2 << 20, count: Int(bytes - (2 << 20)))
            try m.start()
            let clock = ContinuousClock()
            let ready = clock.now + .seconds(5)
            while m.consoleByteCount < 100 {
                guard clock.now < ready else { throw CLIError("the guest printed nothing within 5 s") }
                Thread.sleep(forTimeInterval: 0.001)
            }
            _ = try m.freeze(timeout: .seconds(2))
            try m.snapshot(to: dir)
            m.kill()
            _ = m.wait(timeout: .seconds(5))

            var samples: [Double] = []
            for i in 0..<iterations {
                let t0 = clock.now
                let r = try TinyGuestMachine.restore(from: dir, log: .silent)
                try r.start()
                let deadline = t0 + .seconds(5)
                while r.consoleByteCount == 0 {
                    guard clock.now < deadline else { throw CLIError("restore \(i + 1): no byte within 5 s") }
                }
                samples.append(millis(clock.now - t0))
                r.kill()
                _ = r.wait(timeout: .seconds(5))
            }
            return samples
        } catch let e as CLIError {
            throw e
        } catch {
            throw CLIError("\(error)")
        }
    }

    private func freeze(_ iterations: Int, vcpus: Int) throws -> [Double] {
        do {
            let m = try TinyGuestMachine(payload: TinyGuestPayloads.counterLoop, mode: .long, vcpus: vcpus, log: .silent)
            try m.start()
            defer { m.kill(); _ = m.wait(timeout: .seconds(5)) }
            let clock = ContinuousClock()
            let ready = clock.now + .seconds(5)
            while try (0..<vcpus).contains(where: { try m.counter(of: $0) == 0 }) {
                guard clock.now < ready else { throw CLIError("vCPUs did not start spinning within 5 s") }
                Thread.sleep(forTimeInterval: 0.001)
            }
            var samples: [Double] = []
            for _ in 0..<iterations {
                let t0 = clock.now
                _ = try m.freeze(timeout: .seconds(2))
                samples.append(millis(clock.now - t0))
                try m.thaw()
                Thread.sleep(forTimeInterval: 0.005) // let them run between samples
            }
            return samples
        } catch let e as CLIError {
            throw e
        } catch {
            throw CLIError("\(error)")
        }
    }
}
