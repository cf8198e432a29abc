import Foundation
import KtstrHost
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol
import KtstrFixtures

/// `ktstr kernel fetch|list|add|remove`.
struct KernelCommand: CLICommand {
    let name = "kernel"
    let summary = "fetch / list / add / remove guest kernels"
    let help = """
        USAGE: ktstr kernel fetch [VERSION]
               ktstr kernel list [--json]
               ktstr kernel add PATH [--name NAME]
               ktstr kernel remove NAME

        fetch   downloads a Debian kernel (default \(Provisioning.defaultKernelVersion); any version
                apt sees as linux-binary-unsigned-VERSION in trixie-backports, e.g. 7.2.12+deb13-cloud-amd64)
                through a private apt config unless it is cached, extracts its vmlinux, fetches its
                config (linux-base-<version>; the guest's /boot/config-<release>), says whether it has
                sched_ext, and prints the bzImage's path. Cached: instant, same path. `--kernel VERSION`
                boots it.
        list    every kernel --kernel can name: the fetched Debian ones under $KTSTR_CACHE_DIR/kernels
                (default ~/.cache/ktstr/kernels) and the registered ones, with release, sched_ext, BTF,
                config and where each came from.
        add     registers PATH under NAME (default: the release its bzImage states) in
                $KTSTR_CACHE_DIR/kernels/registry.json. PATH is a built kernel tree (arch/x86/boot/bzImage,
                vmlinux, .config), a bzImage or a vmlinux. The registry references PATH, it copies
                nothing: a rebuilt tree is used as it is then, a deleted one is an error.
        remove  forgets NAME (its files are not touched).

        Everywhere a kernel is taken (`ktstr run|shell|boot --kernel K`, `.ktstr(kernel: K)`,
        KTSTR_KERNEL), K is a path (tree, bzImage, vmlinux), a registered name or a fetched version.
        """

    func run(_ args: inout Arguments) async throws -> Int32 {
        switch args.positional() {
        case "fetch":
            let version = args.positional() ?? Provisioning.defaultKernelVersion
            try args.finish()
            guard Provisioning.isValidKernelVersion(version) else {
                throw CLIError("'\(version)' is not a Debian kernel version (like \(Provisioning.defaultKernelVersion))", status: 2)
            }
            InterruptForwarding.install()
            let kernel = try Provisioning.fetchKernel(version: version, progress: { Progress.step($0) })
            if let v = kernel.vmlinux, !KernelCapabilities.hasSchedExt(vmlinux: v) {
                Progress.step("warning: \(version) has no sched_ext in its BTF: scheduler runs on it will be refused")
            }
            print(kernel.image)
            return 0
        case "list":
            let json = args.flag("json")
            try args.finish()
            let kernels = Provisioning.kernelListing()
            if json {
                let enc = JSONEncoder()
                enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                FileHandle.standardOutput.write(try enc.encode(kernels) + Data("\n".utf8))
                return 0
            }
            if kernels.isEmpty {
                print("no kernels in \(Provisioning.cacheDirectory)/kernels — run `swift run ktstr kernel fetch` or `ktstr kernel add PATH`")
                return 0
            }
            print(Self.table(kernels), terminator: "")
            return 0
        case "add":
            guard let path = args.positional() else { throw CLIError("add needs a PATH (kernel tree, bzImage or vmlinux)", status: 2) }
            let name = try args.option("name")
            try args.finish()
            if let name, !KernelRegistry.isValidName(name) {
                throw CLIError("--name '\(name)': no '/', no spaces, at most 64 characters", status: 2)
            }
            let (entry, kernel) = try KernelRegistry.default.add(path: path, name: name)
            let l = Provisioning.describe(kernel, name: entry.name, origin: "registered", source: entry.path)
            print("registered \(entry.name) → \(entry.path) (referenced, not copied): release \(l.release ?? "?"), "
                + "sched_ext \(Self.yesNo(l.schedExt)), BTF \(Self.yesNo(l.btf)), config \(l.config == nil ? "no" : "yes")")
            if l.schedExt == false { Progress.step("warning: \(entry.name) has no sched_ext: scheduler runs on it will be refused") }
            return 0
        case "remove":
            guard let name = args.positional() else { throw CLIError("remove needs a NAME (see `ktstr kernel list`)", status: 2) }
            try args.finish()
            guard try KernelRegistry.default.remove(name: name) else {
                throw CLIError("'\(name)' is not registered (fetched Debian kernels live in \(Provisioning.cacheDirectory)/kernels: delete the directory)")
            }
            print("removed \(name)")
            return 0
        case let other?:
            throw CLIError("unknown subcommand '\(other)' (fetch, list, add, remove)", status: 2)
        case nil:
            throw CLIError("needs a subcommand: fetch, list, add or remove (see --help)", status: 2)
        }
    }

    static func yesNo(_ b: Bool?) -> String { b.map { $0 ? "yes" : "no" } ?? "?" }

    /// One kernel per line, aligned columns, then each problem.
    static func table(_ kernels: [KernelListing]) -> String {
        let header = ["NAME", "RELEASE", "SCHED_EXT", "BTF", "CONFIG", "ORIGIN", "SOURCE"]
        let rows = kernels.map { k in
            [k.name, k.release ?? "?", yesNo(k.schedExt), yesNo(k.btf), k.config == nil ? "no" : "yes", k.origin, k.source]
        }
        let widths = header.indices.map { i in ([header] + rows).map { $0[i].count }.max() ?? 0 }
        func line(_ r: [String]) -> String {
            r.enumerated().map { i, c in i == r.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ") + "\n"
        }
        var s = line(header) + rows.map(line).joined()
        for k in kernels { if let p = k.problem { s += "  \(k.name): \(p)\n" } }
        return s
    }

    static func mib(_ bytes: UInt64?) -> String {
        guard let b = bytes else { return "missing" }
        return String(format: "%.1f MiB", Double(b) / 1_048_576)
    }
}
