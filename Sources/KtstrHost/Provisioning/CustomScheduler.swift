import Foundation
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

extension Provisioning {
    /// Builds a scheduler laid out like the kernel's tools/sched_ext ones — `<name>.bpf.c`
    /// plus a loader `<name>.c` that includes `"<name>.bpf.skel.h"` — against the default
    /// guest kernel, with the libbpf/bpftool/vmlinux.h that `ktstr setup` built, and returns
    /// the binary's path. Provisions what is missing first (kernel, sources, libbpf), cached
    /// by a fingerprint of the directory's .c/.h files. `name`: the stem, when the directory
    /// holds more than one `.bpf.c`.
    public static func buildScheduler(sourceDirectory: String, name: String? = nil, log: Log = .default,
                                      progress: ProvisioningProgress = { _ in }) throws -> String {
        let dir = URL(fileURLWithPath: sourceDirectory).standardizedFileURL.path
        let stem = try schedulerStem(in: dir, name: name)
        let lock = try lockCache(progress: progress)
        defer { close(lock) }
        let shell = ProvisioningShell(log: log)
        let kernel = try ensureDefaultKernel(shell: shell, progress: progress).artifacts
        let sources = try ensureSchedulerSources(kernelVersion: defaultKernelVersion, shell: shell, progress: progress).0
        _ = try buildSchedulers(kernel: kernel, sources: sources, shell: shell, progress: progress)

        guard let vmlinux = kernel.vmlinux else {
            throw ProvisioningError.missing(what: "the default kernel has no vmlinux", fix: "run `swift run ktstr kernel fetch`")
        }
        let shared = schedulersDirectory()
        let schedSrc = packageRoot + "/Schedulers"
        let out = customSchedulerDirectory(sourceDirectory: dir, stem: stem)
        let inputs = ProvisioningFiles.files(under: dir, suffixes: [".c", ".h"])
        let key = "custom v1 \(stem) kernel=\(defaultKernelVersion) src=\(ProvisioningFiles.fingerprint(files: inputs, root: dir)) "
            + "make=\(ProvisioningFiles.fingerprint(files: [schedSrc + "/Makefile"], root: schedSrc))"
        let binary = out + "/" + stem
        let stamp = ProvisioningStamp(path: out + "/.stamp")
        if stamp.isValid(key: key, outputs: [binary]) { return binary }
        stamp.remove()
        try ProvisioningFiles.makeDirectory(out)
        progress("building \(stem) from \(dir)")
        try shell.check(["make", "-C", schedSrc, "KSRC=\(sources)", "VMLINUX_BTF=\(vmlinux)", "OUT=\(out)",
                         "KBUILD=\(shared)/kbuild", "SCHED_SRC=\(dir)", "SCHED_NAME=\(stem)", "CLANG=\(try bpfClang())",
                         "custom"],
                        logFile: out + "/build.log", timeout: 900,
                        fix: "fix the compiler errors in \(dir) (full log: \(out)/build.log)")
        guard access(binary, X_OK) == 0 else {
            throw ProvisioningError.failed(step: "build \(stem)", detail: "\(binary) was not produced — see \(out)/build.log")
        }
        try stamp.write(key: key)
        return binary
    }

    /// Where `buildScheduler` puts one scheduler's binary, objects and build.log.
    static func customSchedulerDirectory(sourceDirectory dir: String, stem: String) -> String {
        "\(schedulersDirectory())/custom/\(stem)-\(pathHash(dir))"
    }

    /// The scheduler's file stem: `name`, or the only `*.bpf.c` in `dir`; both files must exist.
    static func schedulerStem(in dir: String, name: String?) throws -> String {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        let stems = files.filter { $0.hasSuffix(".bpf.c") }.map { String($0.dropLast(".bpf.c".count)) }.sorted()
        let stem: String
        if let name { stem = name } else {
            guard stems.count == 1, let only = stems.first else {
                throw ProvisioningError.missing(
                    what: stems.isEmpty ? "no <name>.bpf.c in \(dir)" : "several schedulers in \(dir): \(stems.joined(separator: ", "))",
                    fix: stems.isEmpty ? "point at the directory with the BPF source" : "pass name: one of them")
            }
            stem = only
        }
        for f in ["\(stem).bpf.c", "\(stem).c"] where !files.contains(f) {
            throw ProvisioningError.missing(what: "\(dir)/\(f) not found",
                                            fix: "a scheduler is <name>.bpf.c (BPF) plus <name>.c (loader including \"<name>.bpf.skel.h\")")
        }
        return stem
    }

    /// Short stable tag for a source path, so two directories with the same stem do not share outputs.
    static func pathHash(_ path: String) -> String {
        var h: UInt64 = 0xcbf29ce484222325
        for b in path.utf8 { h ^= UInt64(b); h = h &* 0x100000001b3 }
        return String(h & 0xffff_ffff, radix: 16)
    }
}
