import Foundation
import KtstrHost
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol
import KtstrFixtures

/// `ktstr setup`: installs and builds everything ktstr needs, each step cached.
struct SetupCommand: CLICommand {
    let name = "setup"
    let summary = "install and build what ktstr needs (idempotent, cached)"
    let help = """
        USAGE: ktstr setup [--json] [--skip-agent]

        Installs the Debian packages ktstr needs (when missing; needs root), fetches the default
        guest kernel (\(Provisioning.defaultKernelVersion)) and extracts its vmlinux, unpacks the
        tools/ subset of linux-source, builds scx_simple and ktstr-fault against the guest kernel,
        and builds the guest agent. Every step is cached under $KTSTR_CACHE_DIR (default
        ~/.cache/ktstr): a second run takes a second or two. Exit status 0 only when all is there.

        OPTIONS:
          --json         print the summary as JSON on stdout (progress stays on stderr)
          --skip-agent   do not build the guest agent
        """

    func run(_ args: inout Arguments) async throws -> Int32 {
        let json = args.flag("json")
        let skipAgent = args.flag("skip-agent")
        try args.finish()
        InterruptForwarding.install()
        let report = Provisioning.setup(
            SetupOptions(skipAgent: skipAgent),
            progress: { Progress.step($0) },
            onStep: { step in
                guard !json else { return }
                Progress.step("\(step.name): \(Self.describe(step))")
            })
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            let data = try enc.encode(JSONReport(report))
            FileHandle.standardOutput.write(data + Data("\n".utf8))
        } else {
            var s = "\nktstr setup: \(report.ok ? "ready" : "NOT ready") (\(Self.seconds(report.seconds)), cache \(report.cacheDirectory))\n"
            for step in report.steps {
                s += "  " + step.name.padding(toLength: 11, withPad: " ", startingAt: 0) + Self.describe(step) + "\n"
            }
            print(s, terminator: "")
        }
        return report.ok ? 0 : 1
    }

    static func describe(_ step: SetupStep) -> String {
        switch step.status {
        case .cached: "ok (cached) — \(step.detail)"
        case .done: "ok (\(seconds(step.seconds))) — \(step.detail)"
        case .failed: "FAILED (\(seconds(step.seconds))) — \(step.detail)"
        case .skipped: "skipped — \(step.detail)"
        case .excluded: "not requested — \(step.detail)"
        }
    }

    static func seconds(_ s: Double) -> String { String(format: "%.1f s", s) }

    /// The report plus `ok`, which is computed.
    struct JSONReport: Encodable {
        var ok: Bool
        var cacheDirectory: String
        var seconds: Double
        var steps: [SetupStep]
        init(_ r: SetupReport) { ok = r.ok; cacheDirectory = r.cacheDirectory; seconds = r.seconds; steps = r.steps }
    }
}

/// Provisioning commands run in their own process groups; on SIGINT/SIGTERM stop them and
/// exit 130, so an interrupted `ktstr setup` leaves no apt-get/make/tar running. (Everything
/// provisioning writes appears by rename, so the next run picks up where this one stopped.)
enum InterruptForwarding {
    nonisolated(unsafe) static var sources: [DispatchSourceSignal] = []

    static func install() {
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                ProvisioningShell.terminateRunningCommands()
                FileHandle.standardError.write(Data("\nktstr: interrupted\n".utf8))
                exit(130)
            }
            source.resume()
            sources.append(source)
        }
    }
}
