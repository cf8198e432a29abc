import Foundation
import KtstrHost
import KtstrMachine
import KtstrVMM
import KtstrFixtures

/// `ktstr doctor`'s short KVMMachine self-test: a tiny guest (our VMM, no kernel) wherever
/// /dev/kvm opens, and on vmx/svm hosts a boot of the cached kernel to the agent's hello
/// within `KVMSelfTest.agentBootBound`. Without vmx/svm the agent boot is skipped with the
/// reason: a stock kernel's code is emulated there (minutes, if it boots at all).
struct DoctorKVMSelfTest: Codable {
    struct TinyGuest: Codable {
        var ok: Bool
        var millis: Int
        var detail: String
    }

    var tinyGuest: TinyGuest?
    var agentBoot: KVMSelfTest.AgentBoot?
    /// Why a part did not run.
    var tinyGuestSkipped: String?
    var agentBootSkipped: String?

    static let marker = "ktstr-doctor\n"

    static func run(host: BackendSelection.Host, kernelCached: Bool, agentCached: Bool) async -> DoctorKVMSelfTest {
        var r = DoctorKVMSelfTest()
        guard host.kvmOpens else {
            r.tinyGuestSkipped = "/dev/kvm cannot be opened"
            r.agentBootSkipped = r.tinyGuestSkipped
            return r
        }
        let started = ContinuousClock.now
        do {
            let t = try TinyGuestDemo.run(text: marker, mode: .long, timeout: .seconds(10), log: .silent)
            let ms = Self.millis(ContinuousClock.now - started)
            let ok = t.exit == .shutdown && t.console == marker
            r.tinyGuest = TinyGuest(ok: ok, millis: ms, detail: ok ? "printed on COM1 and halted in \(ms) ms"
                : "exit \(t.exit)\(t.detail.map { " (\($0))" } ?? ""), COM1 got \(t.console.debugDescription)")
        } catch {
            r.tinyGuest = TinyGuest(ok: false, millis: Self.millis(ContinuousClock.now - started), detail: "\(error)")
        }
        if !host.hasHardwareVirtualization {
            r.agentBootSkipped = "no vmx/svm: KVM emulates a stock kernel's code here (minutes; `KTSTR_BACKEND=kvm ktstr run` tries it)"
        } else if !kernelCached || !agentCached {
            r.agentBootSkipped = "no cached kernel or agent (run `swift run ktstr setup`)"
        } else {
            Progress.step("KVMMachine self-test: booting the kernel to the agent (at most \(KVMSelfTest.agentBootBound))")
            r.agentBoot = await KVMSelfTest.bootToAgent()
        }
        return r
    }

    static func millis(_ d: Duration) -> Int { Int(d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000) }

    /// The doctor's lines for it.
    var checks: [DoctorCommand.Check] {
        var out: [DoctorCommand.Check] = []
        if let t = tinyGuest { out.append(.init(name: "kvm:tiny", ok: t.ok, detail: t.detail)) }
        if let a = agentBoot {
            out.append(.init(name: "kvm:agent", ok: a.ok, detail: a.ok
                ? "KVMMachine booted the kernel to the agent's hello in \(a.bootMillis ?? 0) ms"
                : "KVMMachine did not reach the agent: \(a.failure ?? "?") — runs fall back to qemu (kvm_fallback problem)"))
        }
        if let s = tinyGuestSkipped { out.append(.init(name: "kvm:tiny", ok: false, detail: "not run: \(s)")) }
        if let s = agentBootSkipped { out.append(.init(name: "kvm:agent", ok: false, detail: "not run: \(s)")) }
        return out
    }
}
