import Foundation
import KtstrHost
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol
import KtstrFixtures

/// `ktstr doctor`: what this host can run and why, what is cached, what is missing.
struct DoctorCommand: CLICommand {
    let name = "doctor"
    let summary = "say which backend will be used and why; check kernel, qemu, clang, caches"
    let help = """
    USAGE: ktstr doctor [--json]

    Checks /dev/kvm and vmx/svm (can KVM boot a stock kernel?), qemu, the guest kernel
    (and whether it has sched_ext), clang with the BPF target, the built schedulers and the
    guest agent, and lists the KTSTR_* variables that are set. Exit status 0 when a scheduler
    test can run here.

    KVMMachine self-test (our own VMM): kvm:tiny boots a tiny guest that prints on COM1;
    kvm:agent (vmx/svm hosts only) boots the cached kernel to the agent's hello within 30 s.
    A failed kvm:agent means scheduler runs fall back to qemu (a kvm_fallback problem).

    OPTIONS:
      --json    the report as JSON (checks, backend, environment, kvmSelfTest)
    """

    struct Check: Codable {
        var name: String
        var ok: Bool
        var detail: String
    }

    struct Report: Codable {
        var backend: String?
        var backendReason: String
        var checks: [Check]
        var ready: Bool
        /// The `KTSTR_*` variables that are set (`NAME=value`).
        var environment: [String] = KtstrSettings.setVariables()
        /// What the KVMMachine self-test found (also among `checks` as kvm:tiny / kvm:agent).
        var kvmSelfTest: DoctorKVMSelfTest?
    }

    func run(_ args: inout Arguments) async throws -> Int32 {
        let json = args.flag("json")
        try args.finish()
        var report = Self.diagnose()
        let selfTest = await DoctorKVMSelfTest.run(host: .probe(), kernelCached: report.checks.contains { $0.name == "kernel" && $0.ok },
                                                   agentCached: report.checks.contains { $0.name == "agent" && $0.ok })
        report.kvmSelfTest = selfTest
        report.checks += selfTest.checks
        if json {
            let e = JSONEncoder()
            e.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try e.encode(report), as: UTF8.self))
        } else {
            for c in report.checks {
                let mark = c.ok ? "ok     " : (Self.required.contains(c.name) ? "MISSING" : "no     ")
                print("\(mark) \(c.name.padding(toLength: 12, withPad: " ", startingAt: 0)) \(c.detail)")
            }
            print("\nbackend: \(report.backend ?? "none") — \(report.backendReason)")
            print("environment: \(report.environment.isEmpty ? "no KTSTR_* variable set" : report.environment.joined(separator: " "))")
            print(report.ready ? "ready: scheduler tests can run here" : "not ready: fix the MISSING lines (usually `swift run ktstr setup`)")
        }
        return report.ready ? 0 : 1
    }

    static func diagnose() -> Report {
        var checks: [Check] = []
        let host = BackendSelection.Host.probe()
        checks.append(Check(name: "/dev/kvm", ok: host.kvmOpens, detail: host.kvmOpens ? "opens read-write" : "not usable"))
        checks.append(Check(name: "vmx/svm", ok: host.hasHardwareVirtualization,
                            detail: host.hasHardwareVirtualization
                                ? "hardware virtualization present" : "absent: KVM cannot run a stock kernel here (tiny guests only)"))
        let qemu = Result { try Provisioning.qemuBinary() }
        checks.append(check("qemu", qemu) { path in "\(path) (\(firstLine(of: [path, "--version"]) ?? "version unknown"))" })
        let kernel = Result { try Provisioning.kernel() }
        checks.append(check("kernel", kernel) { k in
            var s = k.image
            if let v = k.version { s += " (\(v))" }
            if let vm = k.vmlinux { s += KernelCapabilities.hasSchedExt(vmlinux: vm) ? ", sched_ext: yes" : ", sched_ext: NO" }
            return s
        })
        if case let .success(k) = kernel {
            checks.append(Check(name: "kconfig", ok: k.config != nil,
                                detail: k.config.map { "\($0) (the guest's /boot/config-<release>)" }
                                    ?? Provisioning.missingKernelConfigAdvice(k)))
        }
        let clangPath = which("clang")
        checks.append(Check(name: "clang", ok: clangPath != nil,
                            detail: clangPath.map { "\($0) (\(firstLine(of: [$0, "--version"]) ?? "?"))" } ?? "not found — the Swift toolchain ships one; check PATH"))
        for s in ["simple", "fault"] {
            checks.append(check("sched:\(s)", Result { try Provisioning.scheduler(s) }) { $0 })
        }
        checks.append(check("agent", Result { try Provisioning.agentBinary() }) { $0 })
        checks.append(Check(name: "cache", ok: true, detail: Provisioning.cacheDirectory + " (" + du(Provisioning.cacheDirectory) + ")"))

        let backend: String?
        let reason: String
        do {
            let d = try BackendSelection.decide(.auto, host: host)
            backend = d.backend.rawValue
            reason = d.why
        } catch {
            backend = nil
            reason = "\(error)"
        }
        // qemu is only required when it is the backend.
        let needed = backend?.hasPrefix("qemu") == true ? required : required.subtracting(["qemu"])
        let ready = backend != nil && checks.filter { needed.contains($0.name) }.allSatisfy(\.ok)
        return Report(backend: backend, backendReason: reason, checks: checks, ready: ready)
    }

    static let required: Set<String> = ["qemu", "kernel", "sched:simple", "sched:fault", "agent"]

    static func check<T>(_ name: String, _ r: Result<T, Error>, _ detail: (T) -> String) -> Check {
        switch r {
        case let .success(v): Check(name: name, ok: true, detail: detail(v))
        case let .failure(e): Check(name: name, ok: false, detail: "\(e)")
        }
    }

    static func which(_ tool: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/\(tool)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static func firstLine(of argv: [String]) -> String? {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: argv[0])
        p.arguments = Array(argv.dropFirst())
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return nil }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data, as: UTF8.self).split(separator: "\n").first.map(String.init)
    }

    static func du(_ dir: String) -> String {
        guard let e = FileManager.default.enumerator(atPath: dir) else { return "empty" }
        var total: UInt64 = 0
        while let f = e.nextObject() as? String {
            if let a = try? FileManager.default.attributesOfItem(atPath: dir + "/" + f), let n = a[.size] as? UInt64 { total += n }
        }
        return "\(total >> 20) MiB"
    }
}
