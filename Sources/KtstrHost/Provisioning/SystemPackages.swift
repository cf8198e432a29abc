import Foundation
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

extension Provisioning {
    /// Debian packages `ktstr setup` needs, with what each is for.
    public static let systemPackages: [(name: String, why: String)] = [
        ("qemu-system-x86", "the QEMU backend"),
        ("make", "building the schedulers"),
        ("gcc", "building libbpf, bpftool and the scheduler loaders"),
        ("libc6-dev", "building the scheduler loaders"),
        ("libelf-dev", "libbpf and bpftool"),
        ("zlib1g-dev", "libbpf and bpftool"),
        ("python3", "libbpf's header generator (scripts/bpf_doc.py)"),
        ("xz-utils", "unpacking linux-source"),
        ("zstd", "unpacking the kernel's vmlinux"),
        ("debian-archive-keyring", "verifying the trixie-backports downloads"),
        ("busybox-static", "the guest shell of `ktstr shell` (/bin/busybox, static)"),
    ]

    /// The packages from `names` that dpkg does not report as installed.
    static func missingPackages(_ names: [String], shell: ProvisioningShell) throws -> [String] {
        let r = try shell.run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\n"] + names, timeout: 60, tailLines: 200)
        var installed = Set<String>()
        for line in r.tail.split(separator: "\n") {
            let w = line.split(separator: " ")
            if w.count >= 2, w[1].hasPrefix("ii") { installed.insert(String(w[0]).split(separator: ":").first.map(String.init) ?? "") }
        }
        return names.filter { !installed.contains($0) }
    }

    /// Installs the missing ones (root only; otherwise an error that names the command).
    static func ensureSystemPackages(shell: ProvisioningShell, progress: ProvisioningProgress) throws -> (StepOutcome, String) {
        let names = systemPackages.map(\.name)
        guard ProvisioningShell.which("dpkg-query") != nil, ProvisioningShell.which("apt-get") != nil else {
            throw ProvisioningError.missing(what: "dpkg/apt not found: ktstr setup installs its tools with apt",
                                            fix: "install the equivalents of \(names.joined(separator: " ")) yourself")
        }
        let missing = try missingPackages(names, shell: shell)
        if missing.isEmpty { return (.cached, "\(names.count) packages installed") }
        let install = ["apt-get", "install", "-y", "--no-install-recommends"] + missing
        guard geteuid() == 0 else {
            throw ProvisioningError.missing(what: "missing packages: \(missing.joined(separator: ", "))",
                                            fix: "run `sudo \(install.joined(separator: " "))` (needs root), then ktstr setup again")
        }
        let env = ["DEBIAN_FRONTEND": "noninteractive"]
        let logs = cacheDirectory + "/logs"
        let haveLists = ((try? FileManager.default.contentsOfDirectory(atPath: "/var/lib/apt/lists")) ?? [])
            .contains { $0.contains("_Packages") }
        if !haveLists {
            progress("apt-get update")
            try shell.check(["apt-get", "update"], environment: env, logFile: logs + "/apt-update.log", timeout: 900,
                            fix: "check the network and /etc/apt/sources.list*")
        }
        progress("apt-get install \(missing.joined(separator: " "))")
        var r = try shell.run(install, environment: env, logFile: logs + "/apt-install.log", timeout: 1800)
        if r.status != 0, haveLists {
            // The system's lists may be stale: refresh once and retry.
            progress("apt-get update (install failed; lists may be stale)")
            try shell.check(["apt-get", "update"], environment: env, logFile: logs + "/apt-update.log", timeout: 900,
                            fix: "check the network and /etc/apt/sources.list*")
            r = try shell.run(install, environment: env, logFile: logs + "/apt-install.log", timeout: 1800)
        }
        guard r.status == 0 else {
            let tail = r.tail.split(separator: "\n").suffix(4).joined(separator: " | ")
            throw ProvisioningError.failed(step: install.joined(separator: " "),
                                           detail: "exit \(r.status): \(tail) (log: \(logs)/apt-install.log)")
        }
        let still = try missingPackages(missing, shell: shell)
        guard still.isEmpty else {
            throw ProvisioningError.failed(step: "apt-get install", detail: "still missing: \(still.joined(separator: ", "))")
        }
        return (.done, "installed \(missing.joined(separator: " "))")
    }
}
