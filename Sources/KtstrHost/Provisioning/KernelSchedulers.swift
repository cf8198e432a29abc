import Foundation
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

/// How building one scheduler went (`ktstr schedulers build-kernel`).
public struct SchedulerBuildResult: Sendable, Codable, Equatable {
    public var name: String
    /// The binary, when it built.
    public var binary: String?
    /// The first error line of the build (compiler, libbpf, bpftool, linker), when it failed.
    public var error: String?
    public var seconds: Double
    public var ok: Bool { binary != nil }
}

extension Provisioning {
    /// `<cache>/src/linux-<mm>/tools/sched_ext` of the default kernel (there after `ktstr setup`).
    public static var kernelSchedExtDirectory: String {
        sourceDirectory(version: defaultKernelVersion) + "/tools/sched_ext"
    }

    /// The schedulers in the default kernel's tools/sched_ext: every `<name>.bpf.c` with a
    /// `<name>.c` loader, sorted.
    public static func kernelSchedulerNames() -> [String] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: kernelSchedExtDirectory)) ?? []
        return files.filter { $0.hasSuffix(".bpf.c") }.map { String($0.dropLast(".bpf.c".count)) }
            .filter { files.contains($0 + ".c") }.sorted()
    }

    /// Builds one of the kernel's tools/sched_ext schedulers (`scx_central`, ...) with ktstr's
    /// recipe (`Schedulers/Makefile`, the `custom` target, as for any scheduler repository),
    /// cached under `<cache>/schedulers/<kernel>/custom/` by a fingerprint of the sources.
    public static func buildKernelScheduler(_ name: String, log: Log = .default,
                                            progress: ProvisioningProgress = { _ in }) throws -> String {
        try buildScheduler(sourceDirectory: kernelSchedExtDirectory, name: name, log: log, progress: progress)
    }

    /// Builds every scheduler of the default kernel's tools/sched_ext (or `names`) and says,
    /// for each, where the binary is or which line of the build failed. Never throws for one
    /// scheduler's failure; throws when the sources cannot be provisioned at all.
    public static func buildKernelSchedulers(_ names: [String]? = nil, log: Log = .default,
                                             progress: ProvisioningProgress = { _ in }) throws -> [SchedulerBuildResult] {
        do {
            let lock = try lockCache(progress: progress)
            defer { close(lock) }
            _ = try ensureSchedulerSources(kernelVersion: defaultKernelVersion, shell: ProvisioningShell(log: log), progress: progress)
        }
        let dir = URL(fileURLWithPath: kernelSchedExtDirectory).standardizedFileURL.path
        return (names ?? kernelSchedulerNames()).map { name in
            let t0 = Date()
            do {
                let binary = try buildKernelScheduler(name, log: log, progress: progress)
                return SchedulerBuildResult(name: name, binary: binary, error: nil, seconds: Date().timeIntervalSince(t0))
            } catch {
                let buildLog = customSchedulerDirectory(sourceDirectory: dir, stem: name) + "/build.log"
                let line = (try? String(contentsOfFile: buildLog, encoding: .utf8)).flatMap(firstErrorLine) ?? "\(error)"
                return SchedulerBuildResult(name: name, binary: nil, error: line, seconds: Date().timeIntervalSince(t0))
            }
        }
    }

    /// The line of a build log that says what went wrong first: a compiler `error:`, a
    /// libbpf/bpftool complaint, a linker error, or make's own `***` line.
    static func firstErrorLine(_ log: String) -> String? {
        let lines = log.split(separator: "\n").map(String.init)
        let markers = ["error: ", "libbpf: ", "Error: ", "undefined reference"]
        return lines.first { l in markers.contains { l.contains($0) } } ?? lines.first { $0.contains("*** ") }
    }
}
