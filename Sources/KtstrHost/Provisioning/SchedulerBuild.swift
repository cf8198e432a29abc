import Foundation
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

extension Provisioning {
    /// The parts of the kernel tree that building tools/sched_ext needs (libbpf, bpftool,
    /// the scheduler headers and the kbuild helpers), found by building with less and
    /// adding back what failed. ~6 MB instead of ~1.5 GB.
    public static let schedulerSourceSubset = [
        "tools/sched_ext", "tools/lib/bpf", "tools/bpf/bpftool", "tools/include", "tools/build",
        "tools/scripts", "tools/arch/x86/include", "kernel/bpf/disasm.c", "kernel/bpf/disasm.h",
        "scripts/bpf_doc.py",
    ]

    /// "7.3" from "7.3.4+deb13-cloud-amd64".
    static func majorMinor(_ version: String) -> String {
        version.split(separator: ".").prefix(2).joined(separator: ".")
    }

    static func sourceDirectory(version: String) -> String {
        "\(cacheDirectory)/src/linux-\(majorMinor(version))"
    }

    public static func schedulersDirectory(kernelVersion: String = defaultKernelVersion) -> String {
        "\(cacheDirectory)/schedulers/\(kernelVersion)"
    }

    /// The package's own root (holds Package.swift, Schedulers/, Sources/KtstrGuest/), from
    /// this file's path: right for this repository and for a checkout a downstream package
    /// depends on.
    public static var packageRoot: String {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<4 { url.deleteLastPathComponent() }  // Provisioning, KtstrHost, Sources, file
        return url.path
    }

    /// Downloads linux-source-<major.minor> and unpacks `schedulerSourceSubset` into
    /// `<cache>/src/linux-<major.minor>` (by rename, stamped).
    static func ensureSchedulerSources(kernelVersion: String, shell: ProvisioningShell,
                                       progress: ProvisioningProgress) throws -> (String, StepOutcome, String) {
        let mm = majorMinor(kernelVersion)
        let package = "linux-source-\(mm)"
        let dst = sourceDirectory(version: kernelVersion)
        let key = "sources v1 \(package) " + schedulerSourceSubset.joined(separator: " ")
        let stamp = ProvisioningStamp(path: dst + "/.stamp")
        if stamp.isValid(key: key, outputs: [dst + "/tools/sched_ext/Makefile"]) {
            return (dst, .cached, "\(package) subset at \(dst)")
        }
        let scratch = try ProvisioningFiles.scratchDirectory(in: scratchParent, prefix: "src")
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let root = try PrivateApt(root: aptDirectory, shell: shell)
            .downloadAndUnpack(package, into: scratch, timeout: 600, progress: progress)
        let tarball = root + "/usr/src/linux-source-\(mm).tar.xz"
        guard FileManager.default.fileExists(atPath: tarball) else {
            throw ProvisioningError.failed(step: "unpack \(package)",
                                           detail: "no usr/src/linux-source-\(mm).tar.xz in the package — its layout changed")
        }
        let tree = scratch + "/tree"
        try ProvisioningFiles.makeDirectory(tree)
        let members = schedulerSourceSubset.map { "linux-source-\(mm)/\($0)" }
        try shell.check(["tar", "-xJf", tarball, "-C", tree, "--strip-components=1"] + members, timeout: 600,
                        fix: "needs xz-utils; the tarball may lack a path ktstr expects")
        try stamp.withDirectory(tree).write(key: key)
        try ProvisioningFiles.makeDirectory((dst as NSString).deletingLastPathComponent)
        try? FileManager.default.removeItem(atPath: dst)
        try ProvisioningFiles.rename(tree, to: dst)
        return (dst, .done, "unpacked \(package) subset into \(dst)")
    }

    /// The clang that builds BPF: the Swift toolchain's (it has the BPF target), else PATH's.
    static func bpfClang() throws -> String {
        if let swift = ProvisioningShell.which("swift") {
            let dir = (URL(fileURLWithPath: swift).resolvingSymlinksInPath().path as NSString).deletingLastPathComponent
            if access(dir + "/clang", X_OK) == 0 { return dir + "/clang" }
        }
        if let clang = ProvisioningShell.which("clang") { return clang }
        throw ProvisioningError.missing(what: "clang not found (builds the BPF schedulers)",
                                        fix: "put the Swift toolchain's usr/bin on PATH (it ships clang), or apt-get install clang")
    }

    /// Builds scx_simple and ktstr-fault for the kernel with `Schedulers/Makefile`.
    static func buildSchedulers(kernel: KernelArtifacts, sources: String, shell: ProvisioningShell,
                                progress: ProvisioningProgress) throws -> (StepOutcome, String) {
        guard let vmlinux = kernel.vmlinux, let version = kernel.version else {
            throw ProvisioningError.missing(what: "the kernel has no vmlinux (its BTF is what the schedulers build against)",
                                            fix: "run `swift run ktstr kernel fetch`")
        }
        let out = schedulersDirectory(kernelVersion: version)
        let schedSrc = packageRoot + "/Schedulers"
        guard FileManager.default.fileExists(atPath: schedSrc + "/Makefile") else {
            throw ProvisioningError.missing(what: "\(schedSrc)/Makefile not found (package root \(packageRoot))",
                                            fix: "use a complete checkout of swift-ktstr")
        }
        let clang = try bpfClang()
        let inputs = ProvisioningFiles.files(under: schedSrc, suffixes: [".c", ".h", "Makefile"])
        let key = "schedulers v1 kernel=\(version) vmlinux=\(ProvisioningFiles.size(vmlinux) ?? 0) clang=\(clang) "
            + "src=\(ProvisioningFiles.fingerprint(files: inputs, root: schedSrc))"
        let outputs = [out + "/scx_simple", out + "/ktstr-fault"]
        let stamp = ProvisioningStamp(path: out + "/.stamp")
        if stamp.isValid(key: key, outputs: outputs) { return (.cached, "scx_simple, ktstr-fault in \(out)") }
        stamp.remove()
        try ProvisioningFiles.makeDirectory(out)
        progress("building libbpf, bpftool, scx_simple and ktstr-fault for \(version) (about a minute)")
        let jobs = max(1, ProcessInfo.processInfo.activeProcessorCount)
        try shell.check(["make", "-C", schedSrc, "-j\(jobs)", "KSRC=\(sources)", "VMLINUX_BTF=\(vmlinux)",
                         "OUT=\(out)", "CLANG=\(clang)"],
                        logFile: out + "/build.log", timeout: 1800,
                        fix: "needs make, gcc, libelf-dev, zlib1g-dev, python3 (run `swift run ktstr setup` as root to install them)")
        for o in outputs where access(o, X_OK) != 0 {
            throw ProvisioningError.failed(step: "build schedulers", detail: "\(o) was not produced — see \(out)/build.log")
        }
        try stamp.write(key: key)
        return (.done, "built scx_simple, ktstr-fault in \(out)")
    }
}

extension ProvisioningStamp {
    /// The same stamp file name inside another directory (a tree built before its rename).
    func withDirectory(_ dir: String) -> ProvisioningStamp {
        ProvisioningStamp(path: dir + "/" + (path as NSString).lastPathComponent)
    }
}
