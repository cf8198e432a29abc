import Foundation
import KtstrHost
import KtstrMachine

/// `ktstr schedulers build <dir>` / `ktstr schedulers build-kernel [NAME...]`.
struct SchedulersCommand: CLICommand {
    let name = "schedulers"
    let summary = "build a scheduler, or every scheduler of the kernel's tools/sched_ext"
    let help = """
        USAGE: ktstr schedulers build <dir> [--name NAME]
               ktstr schedulers build-kernel [--json] [NAME...]

        build         builds the scheduler in <dir> (<name>.bpf.c + <name>.c, as in tools/sched_ext)
                      with ktstr's recipe (Schedulers/Makefile) and prints the binary's path.
        build-kernel  builds every scheduler of the default kernel's tools/sched_ext (or the NAMEs)
                      with the same recipe; one line each: `ok NAME PATH` or `FAILED NAME: <error line>`.
                      Exit status 1 when any failed. Built binaries are cached by source fingerprint
                      under $KTSTR_CACHE_DIR/schedulers/<kernel>/custom/.
        """

    func run(_ args: inout Arguments) async throws -> Int32 {
        switch args.positional() {
        case "build":
            let name = try args.option("name")
            guard let dir = args.positional() else { throw CLIError("build needs a source directory", status: 2) }
            try args.finish()
            InterruptForwarding.install()
            print(try Provisioning.buildScheduler(sourceDirectory: dir, name: name, progress: { Progress.step($0) }))
            return 0
        case "build-kernel":
            let json = args.flag("json")
            var names: [String] = []
            while let n = args.positional() { names.append(n) }
            try args.finish()
            InterruptForwarding.install()
            let results = try Provisioning.buildKernelSchedulers(names.isEmpty ? nil : names, progress: { Progress.step($0) })
            if json {
                let enc = JSONEncoder()
                enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                FileHandle.standardOutput.write(try enc.encode(results) + Data("\n".utf8))
            } else {
                for r in results {
                    let t = String(format: "%.1f s", r.seconds)
                    print(r.ok ? "ok      \(r.name)  \(r.binary ?? "")  (\(t))" : "FAILED  \(r.name): \(r.error ?? "?")  (\(t))")
                }
            }
            return results.allSatisfy(\.ok) ? 0 : 1
        case let other?:
            throw CLIError("unknown subcommand '\(other)' (build, build-kernel)", status: 2)
        case nil:
            throw CLIError("needs a subcommand: build or build-kernel (see --help)", status: 2)
        }
    }
}
