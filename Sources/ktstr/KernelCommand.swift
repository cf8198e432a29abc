import Foundation
import KtstrHost
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol
import KtstrFixtures

/// `ktstr kernel fetch` / `ktstr kernel list`.
struct KernelCommand: CLICommand {
    let name = "kernel"
    let summary = "fetch / list cached guest kernels"
    let help = """
        USAGE: ktstr kernel fetch
               ktstr kernel list [--json]

        fetch  downloads the default guest kernel (\(Provisioning.defaultKernelVersion), Debian
               trixie-backports, through a private apt config) unless it is cached, extracts its
               vmlinux, fetches its config (linux-base-<version>; the guest's /boot/config-<release>),
               and prints the bzImage's path. Cached: instant, same path.
        list   the kernels under $KTSTR_CACHE_DIR/kernels (default ~/.cache/ktstr/kernels).
        """

    func run(_ args: inout Arguments) async throws -> Int32 {
        switch args.positional() {
        case "fetch":
            try args.finish()
            InterruptForwarding.install()
            let kernel = try Provisioning.fetchDefaultKernel(progress: { Progress.step($0) })
            print(kernel.image)
            return 0
        case "list":
            let json = args.flag("json")
            try args.finish()
            let kernels = Provisioning.cachedKernels()
            if json {
                let enc = JSONEncoder()
                enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                FileHandle.standardOutput.write(try enc.encode(kernels) + Data("\n".utf8))
                return 0
            }
            if kernels.isEmpty {
                print("no kernels in \(Provisioning.cacheDirectory)/kernels — run `swift run ktstr kernel fetch`")
                return 0
            }
            for k in kernels {
                let mark = !k.complete ? "  (not verified: run `ktstr kernel fetch`)"
                    : k.config == nil ? "  (no config: run `ktstr kernel fetch`)" : ""
                print("\(k.version)  vmlinuz \(Self.mib(k.imageBytes))  vmlinux \(Self.mib(k.vmlinuxBytes))  \(k.directory)\(mark)")
            }
            return 0
        case let other?:
            throw CLIError("unknown subcommand '\(other)' (fetch, list)", status: 2)
        case nil:
            throw CLIError("needs a subcommand: fetch or list (see --help)", status: 2)
        }
    }

    static func mib(_ bytes: UInt64?) -> String {
        guard let b = bytes else { return "missing" }
        return String(format: "%.1f MiB", Double(b) / 1_048_576)
    }
}
