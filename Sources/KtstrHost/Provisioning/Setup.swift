import Foundation
#if canImport(Glibc)
import Glibc
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol
#endif

/// One line of `ktstr setup`'s summary.
public struct SetupStep: Codable, Sendable, Equatable {
    public enum Status: String, Codable, Sendable {
        /// cached: already there; done: did work; failed; skipped: a step it needs failed;
        /// excluded: the user asked to leave it out (does not make setup fail).
        case cached, done, failed, skipped, excluded
    }

    public var name: String
    public var status: Status
    public var detail: String
    public var seconds: Double
}

/// What `ktstr setup` did; `ok` only when every step is cached or done.
public struct SetupReport: Codable, Sendable {
    public var cacheDirectory: String
    public var steps: [SetupStep]
    public var seconds: Double
    public var ok: Bool { steps.allSatisfy { [.cached, .done, .excluded].contains($0.status) } }
}

public struct SetupOptions: Sendable {
    /// Leave the guest agent alone (e.g. while its sources do not build yet).
    public var skipAgent: Bool
    public init(skipAgent: Bool = false) { self.skipAgent = skipAgent }
}

extension Provisioning {
    /// Everything ktstr needs, in order: system packages, the default kernel (+ vmlinux),
    /// the scheduler sources, scx_simple + ktstr-fault, the guest agent. Each step is
    /// cached; a failed step marks the steps that need it skipped. `onStep` sees each
    /// finished step (the CLI prints it as it goes).
    public static func setup(_ options: SetupOptions = SetupOptions(), log: Log = .default,
                             progress: ProvisioningProgress = { _ in },
                             onStep: @Sendable (SetupStep) -> Void = { _ in }) -> SetupReport {
        let start = Date()
        let shell = ProvisioningShell(log: log)
        var steps: [SetupStep] = []
        func step(_ name: String, needs: [String] = [], _ body: () throws -> (StepOutcome, String)) {
            let t0 = Date()
            let s: SetupStep
            if let failed = needs.first(where: { n in steps.contains { $0.name == n && !($0.status == .cached || $0.status == .done) } }) {
                s = SetupStep(name: name, status: .skipped, detail: "needs \(failed)", seconds: 0)
            } else {
                do {
                    let (outcome, detail) = try body()
                    s = SetupStep(name: name, status: outcome == .cached ? .cached : .done, detail: detail,
                                  seconds: Date().timeIntervalSince(t0))
                } catch {
                    s = SetupStep(name: name, status: .failed, detail: "\(error)", seconds: Date().timeIntervalSince(t0))
                }
            }
            steps.append(s)
            onStep(s)
        }

        let lock: Int32
        do { lock = try lockCache(progress: progress) } catch {
            let s = SetupStep(name: "cache", status: .failed, detail: "\(error)", seconds: 0)
            onStep(s)
            return SetupReport(cacheDirectory: cacheDirectory, steps: [s], seconds: 0)
        }
        defer {
            try? FileManager.default.removeItem(atPath: scratchParent)
            close(lock)
        }

        step("packages") {
            let r = try ensureSystemPackages(shell: shell, progress: progress)
            _ = try qemuBinary()
            return r
        }
        var kernel: KernelArtifacts?
        step("kernel") {
            let r = try ensureDefaultKernel(shell: shell, progress: progress)
            kernel = r.artifacts
            return (r.outcome, r.detail)
        }
        var sources: String?
        step("sources") {
            let r = try ensureSchedulerSources(kernelVersion: defaultKernelVersion, shell: shell, progress: progress)
            sources = r.0
            return (r.1, r.2)
        }
        step("schedulers", needs: ["kernel", "sources"]) {
            guard let kernel, let sources else { throw ProvisioningError.failed(step: "schedulers", detail: "internal: no kernel or sources") }
            return try buildSchedulers(kernel: kernel, sources: sources, shell: shell, progress: progress)
        }
        if options.skipAgent {
            let s = SetupStep(name: "agent", status: .excluded, detail: "--skip-agent", seconds: 0)
            steps.append(s)
            onStep(s)
        } else {
            step("agent") { try buildAgent(shell: shell, progress: progress) }
        }
        return SetupReport(cacheDirectory: cacheDirectory, steps: steps, seconds: Date().timeIntervalSince(start))
    }

    /// One provisioning run at a time per cache (flock on `<cache>/.lock`; released when the
    /// descriptor closes or the process dies). Holding it, scratch directories that an
    /// interrupted run left in `<cache>/tmp` are removed. Not re-entrant: take it once.
    static func lockCache(progress: ProvisioningProgress = { _ in }) throws -> Int32 {
        try ProvisioningFiles.makeDirectory(cacheDirectory)
        let path = cacheDirectory + "/.lock"
        let fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw ProvisioningError.failed(step: "lock \(path)", detail: "\(String(cString: strerror(errno))) — set KTSTR_CACHE_DIR to a writable directory")
        }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            progress("waiting for another ktstr provisioning run to finish (lock \(path))")
        }
        guard flock(fd, LOCK_EX) == 0 else {
            close(fd)
            throw ProvisioningError.failed(step: "lock \(path)", detail: String(cString: strerror(errno)))
        }
        try? FileManager.default.removeItem(atPath: scratchParent)
        return fd
    }
}
