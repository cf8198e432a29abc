import Foundation
import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrProtocol
@testable import KtstrHost

/// The KVMMachine safety net: when and how a run falls back to qemu.
@Suite struct KVMFallbackPolicyTests {
    static func settings(_ fault: String? = nil) -> KtstrSettings {
        KtstrSettings(environment: fault.map { ["KTSTR_KVM_FAULT": $0] } ?? [:])
    }

    @Test func onlyKVMMachineRunsOnVMXHostsGetTheNet() throws {
        let vmx = try KVMFallback.Policy(backend: .kvm, settings: Self.settings(), timeoutSeconds: 120, hardwareVirtualization: true)
        #expect(vmx.enabled && vmx.fault == nil && vmx.helloBound == KVMFallback.helloBound)
        // No vmx/svm (nested PVM): a forced kvm boots for minutes on purpose — no net, no bound.
        let pvm = try KVMFallback.Policy(backend: .kvm, settings: Self.settings(), timeoutSeconds: 1200, hardwareVirtualization: false)
        #expect(!pvm.enabled && pvm.helloBound == nil)
        for b in [BackendKind.qemuKVM, .qemuTCG] {
            let q = try KVMFallback.Policy(backend: b, settings: Self.settings("boot"), timeoutSeconds: 120, hardwareVirtualization: true)
            #expect(!q.enabled && q.fault == nil && q.helloBound == nil, "\(b)")
        }
        // The doctor's self-test reports the failure itself.
        let off = try KVMFallback.Policy(backend: .kvm, settings: Self.settings(), timeoutSeconds: 120, allowed: false,
                                         hardwareVirtualization: true)
        #expect(!off.enabled && off.helloBound == nil)
        // A timeout shorter than the bound ends the machine first: no separate bound.
        let short = try KVMFallback.Policy(backend: .kvm, settings: Self.settings(), timeoutSeconds: 30, hardwareVirtualization: true)
        #expect(short.enabled && short.helloBound == nil)
    }

    @Test func faultsTurnTheNetOnAnywhere() throws {
        let boot = try KVMFallback.Policy(backend: .kvm, settings: Self.settings("boot"), timeoutSeconds: 120, hardwareVirtualization: false)
        #expect(boot.enabled && boot.fault == .boot)
        let silent = try KVMFallback.Policy(backend: .kvm, settings: Self.settings("No-Hello"), timeoutSeconds: 120, hardwareVirtualization: false)
        #expect(silent.enabled && silent.fault == .noHello && silent.helloBound == KVMFallback.injectedHelloBound)
        #expect(throws: KVMFallback.UnknownFault.self) {
            try KVMFallback.Policy(backend: .kvm, settings: Self.settings("sometimes"), timeoutSeconds: 120)
        }
    }

    @Test func guardBootTurnsErrorsIntoBeforeHelloOnlyWithTheNet() throws {
        struct Refused: Error, CustomStringConvertible { var description: String { "KVM_CREATE_VM: EPERM" } }
        let on = try KVMFallback.Policy(backend: .kvm, settings: Self.settings(), timeoutSeconds: 120, hardwareVirtualization: true)
        let e = try #require(throws: KVMFallback.BeforeHello.self) { try on.guardBoot { throw Refused() } }
        #expect(e.why == "KVM_CREATE_VM: EPERM")
        #expect(try on.guardBoot { 7 } == 7)
        let off = try KVMFallback.Policy(backend: .kvm, settings: Self.settings(), timeoutSeconds: 120, hardwareVirtualization: false)
        #expect(throws: Refused.self) { try off.guardBoot { throw Refused() } }
        let injected = try KVMFallback.Policy(backend: .kvm, settings: Self.settings("boot"), timeoutSeconds: 120, hardwareVirtualization: false)
        var ran = false
        let i = try #require(throws: KVMFallback.BeforeHello.self) { try injected.guardBoot { ran = true } }
        #expect(!ran && i.why.contains("KTSTR_KVM_FAULT=boot"))
    }

    @Test func failureTextNamesTheExitOrTheBoundAndTheConsole() {
        let fatal = KVMFallback.failure(exit: .fatal("KVM_EXIT_INTERNAL_ERROR on vCPU 0"), stopDetail: "KVM_EXIT_INTERNAL_ERROR on vCPU 0",
                                        boundMissed: nil, consoleTail: "[ 1.0] a\n[ 2.0] int3 selftest\n\n")
        #expect(fatal.contains("KVM_EXIT_INTERNAL_ERROR on vCPU 0"))
        #expect(fatal.hasSuffix("console's last line: [ 2.0] int3 selftest"))
        let silent = KVMFallback.failure(exit: .killed, stopDetail: "killed", boundMissed: .seconds(60), consoleTail: "")
        #expect(silent == "no hello within 60 s; the console stayed empty")
        let p = KVMFallback.problem(silent, retriedOn: .init(backend: .qemuKVM, why: "qemu requested; KVM usable"))
        #expect(p.kind == .kvmFallback && p.detail?.contains("retried once on qemu-kvm") == true)
        #expect(p.description.hasPrefix("KVMMachine failed before the agent's hello"))
    }
}

enum FallbackEnv {
    static let missing: String? = {
        do {
            _ = try Provisioning.qemuBinary(); _ = try Provisioning.kernel(); _ = try Provisioning.agentBinary()
            _ = try Provisioning.scheduler("simple")
            return nil
        } catch { return "\(error) (run `swift run ktstr setup`)" }
    }()
}

/// End to end: a forced KVMMachine failure falls back to qemu (TCG on a host without vmx/svm,
/// `-accel kvm` on one) and the outcome says so. Needs /dev/kvm only to choose kvm at all.
@Suite(.serialized,
       .enabled(if: KVMSystem.unavailableReason() == nil, Comment(rawValue: KVMSystem.unavailableReason() ?? "")),
       .enabled(if: FallbackEnv.missing == nil, Comment(rawValue: FallbackEnv.missing ?? "")))
struct KVMFallbackRunTests {
    static func run(fault: String, artifacts: String? = nil) async throws -> RunOutcome {
        var env = ProcessInfo.processInfo.environment
        env["KTSTR_KVM_FAULT"] = fault
        env["KTSTR_BACKEND"] = nil
        return try await SchedulerRun.run(vm: VMConfig(topology: .flat(2), backend: .kvm, timeoutSeconds: 180), scheduler: .simple,
                                          workload: .spinners(2), duration: .seconds(1), artifactsDirectory: artifacts,
                                          log: .silent, agentPath: nil, settings: KtstrSettings(environment: env))
    }

    static func expectFellBack(_ o: RunOutcome, saying text: String) throws {
        let qemu: BackendKind = CPUID.hostHasHardwareVirtualization() ? .qemuKVM : .qemuTCG
        #expect(o.backend == qemu)
        let p = try #require(o.problems.first { $0.kind == .kvmFallback }, "problems: \(o.problems)")
        #expect(p.detail?.contains(text) == true, "\(p)")
        #expect(p.detail?.contains("retried once on \(qemu.rawValue)") == true, "\(p)")
        // The retry is a whole run: hello, the scheduler's clean exit, nothing else wrong.
        #expect(o.bootMillis != nil)
        #expect(o.schedulerExit?.isError == false, "\(String(describing: o.schedulerExit))")
        #expect(o.problems.map(\.kind) == [.kvmFallback], "\(o.problems)")
    }

    @Test(.timeLimit(.minutes(10))) // the wait for a VM slot counts too
    func bootErrorFallsBackToQEMUAndIsRecorded() async throws {
        let dir = NSTemporaryDirectory() + "ktstr-fallback-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let o = try await Self.run(fault: "boot", artifacts: dir)
        try Self.expectFellBack(o, saying: "injected boot failure (KTSTR_KVM_FAULT=boot)")
        // Written once, by the retry, with the problem in it.
        let json = try String(contentsOfFile: dir + "/outcome.json", encoding: .utf8)
        #expect(json.contains("\"kvm_fallback\""))
    }

    /// A KVMMachine that runs but never says hello is stopped at the bound, then retried.
    @Test(.timeLimit(.minutes(10))) // the wait for a VM slot counts too
    func missingHelloFallsBackAfterTheBound() async throws {
        let o = try await Self.run(fault: "no-hello")
        // The problem names the bound: the KVMMachine try ended there, not at the run's 180 s
        // timeout (wall time would also count the wait for a VM slot in a full `swift test`).
        try Self.expectFellBack(o, saying: "no hello within \(KVMFallback.injectedHelloBound.components.seconds) s")
    }
}

/// `ktstr doctor`'s agent boot: KVMMachine's own result, never a fallback. With vmx/svm it must
/// reach the agent; without (nested PVM) the bound must stop it and say the guest never spoke.
@Suite(.enabled(if: KVMSystem.unavailableReason() == nil, Comment(rawValue: KVMSystem.unavailableReason() ?? "")),
       .enabled(if: FallbackEnv.missing == nil, Comment(rawValue: FallbackEnv.missing ?? "")))
struct KVMSelfTestTests {
    // The limit covers the wait for a VM slot too: in a full `swift test` other VMs hold them.
    @Test(.timeLimit(.minutes(10)))
    func agentBootReportsKVMMachineItself() async throws {
        let hw = CPUID.hostHasHardwareVirtualization()
        let r = await KVMSelfTest.bootToAgent(bound: hw ? KVMSelfTest.agentBootBound : .seconds(4))
        if hw {
            #expect(r.ok, "\(r.failure ?? "")")
            #expect(r.bootMillis != nil)
        } else {
            #expect(!r.ok)
            #expect(r.bootMillis == nil)
            let why = try #require(r.failure)
            #expect(why.contains("never said hello"), "\(why)")
            #expect(!why.contains("fell back"), "\(why)")
            // The machine's own time (from its start, not the slot wait): the 4 s bound stopped it.
            #expect(r.wallMillis < 60_000, "KVMMachine ran \(r.wallMillis) ms past a 4 s bound")
        }
    }
}
