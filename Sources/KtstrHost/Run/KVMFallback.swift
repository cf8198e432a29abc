import Foundation
import KtstrMachine
import KtstrVMM
import KtstrProtocol

/// A forced KVMMachine failure (`KTSTR_KVM_FAULT`), so the fallback below can be tested on any
/// host: the safety net exists for hosts where KVMMachine is the default, and a test must not
/// need a broken one.
public enum KVMFault: String, Sendable, CaseIterable {
    /// Creating the machine throws (as a kernel KVM cannot load, or an ioctl KVM refuses, would).
    case boot
    /// The machine runs but the agent channel is cut, so no hello arrives: the hello bound
    /// (`KVMFallback.injectedHelloBound`) kills it.
    case noHello = "no-hello"
}

/// The safety net of KVMMachine: where it is the default backend (vmx/svm), a run whose
/// KVMMachine fails before the agent's hello — a boot error, a VMM fatal, a guest that dies,
/// or no hello within `helloBound` — is retried once on qemu (`-accel kvm` there; whatever
/// `BackendSelection` gives for "qemu" elsewhere, TCG on a host without vmx/svm). The outcome
/// of the retry carries a `kvm_fallback` problem naming the KVMMachine failure, so the fallback
/// is visible and reportable, never silent. After the hello nothing is retried: what the
/// guest did from then on is the run's result.
///
/// Not on hosts without vmx/svm: a forced `kvm` there (nested PVM) boots for minutes by
/// design, and falling back would hide exactly what its user is looking at. `KVMFault` turns
/// the net on anywhere, for tests.
enum KVMFallback {
    /// How long a KVMMachine may take from start to the agent's hello on a vmx/svm host before
    /// it counts as failed. A boot there takes about a second; 60 s leaves room for a loaded
    /// host and a large initramfs.
    static let helloBound: Duration = .seconds(60)
    /// The bound under `KVMFault.noHello` (the channel is cut: nothing will come).
    static let injectedHelloBound: Duration = .seconds(3)

    /// Thrown by `SchedulerRun.attempt` when the net applies; `why` names the failure.
    struct BeforeHello: Error, CustomStringConvertible {
        var why: String
        var description: String { "KVMMachine failed before the agent's hello: \(why)" }
    }

    /// What `KVMFault.boot` throws where the machine would be created.
    struct InjectedFault: Error, CustomStringConvertible {
        var description: String { "injected boot failure (KTSTR_KVM_FAULT=boot)" }
    }

    struct UnknownFault: Error, CustomStringConvertible {
        var value: String
        var description: String {
            "KTSTR_KVM_FAULT='\(value)' is not one of \(KVMFault.allCases.map(\.rawValue).joined(separator: ", ")) — unset it outside tests"
        }
    }

    /// The net for one try.
    struct Policy: Sendable {
        /// The try runs on KVMMachine and a failure before the hello is retried on qemu.
        var enabled: Bool
        var fault: KVMFault?
        /// Kill the machine when the agent has not said hello by then (nil: the run's timeout).
        var helloBound: Duration?

        init(backend: BackendKind, settings: KtstrSettings, timeoutSeconds: Double, allowed: Bool = true,
             hardwareVirtualization: Bool = CPUID.hostHasHardwareVirtualization()) throws {
            let fault = try settings.kvmFault.map { raw in
                guard let f = KVMFault(rawValue: raw.lowercased()) else { throw UnknownFault(value: raw) }
                return f
            }
            self.fault = backend == .kvm ? fault : nil
            enabled = allowed && backend == .kvm && (hardwareVirtualization || fault != nil)
            let bound = self.fault == .noHello ? KVMFallback.injectedHelloBound : KVMFallback.helloBound
            // A bound past the run's own timeout adds nothing: the timeout ends the machine first.
            helloBound = (enabled || self.fault == .noHello) && Double(bound.components.seconds) < timeoutSeconds ? bound : nil
        }

        /// Runs `body` (creating or starting the machine); with the net on, its error becomes
        /// `BeforeHello`. `KVMFault.boot` fails here.
        func guardBoot<T>(_ body: () throws -> T) throws -> T {
            do {
                if fault == .boot { throw InjectedFault() }
                return try body()
            } catch {
                guard enabled else { throw error }
                throw BeforeHello(why: "\(error)")
            }
        }

        /// Starts the hello bound's timer (nil without a bound).
        func watchHello(collector: RunCollector, kill: @escaping @Sendable () -> Void, log: Log) -> HelloWatch? {
            helloBound.map { HelloWatch(bound: $0, collector: collector, kill: kill, log: log) }
        }

        /// After the machine is gone: throws `BeforeHello` when the net is on and the agent
        /// never said hello (not for a cancelled run: nothing is retried then).
        func checkHello(collector: RunCollector, machine: (any Machine)?, exit: MachineExit, watch: HelloWatch?) throws {
            guard enabled, collector.snapshot.helloAt == nil, !Task.isCancelled else { return }
            throw BeforeHello(why: KVMFallback.failure(exit: exit, stopDetail: (machine as? KVMMachine)?.stopDetail,
                                                       boundMissed: watch?.fired == true ? watch?.bound : nil,
                                                       consoleTail: collector.consoleTail))
        }
    }

    /// One line on how a KVMMachine ended without a hello: the bound it missed or the machine's
    /// exit (with the VMM's detail), and the console's last line (often the kernel's last word).
    static func failure(exit: MachineExit, stopDetail: String?, boundMissed: Duration?, consoleTail: String) -> String {
        var why: String
        if let b = boundMissed {
            why = "no hello within \(wholeSeconds(b)) s"
        } else {
            why = "the machine ended (\(exit))"
            if let d = stopDetail, !exit.description.contains(d) { why += ": \(d)" }
        }
        if let last = consoleTail.split(whereSeparator: \.isNewline).last(where: { !$0.allSatisfy(\.isWhitespace) }) {
            why += "; console's last line: \(last.prefix(200))"
        } else {
            why += "; the console stayed empty"
        }
        return why
    }

    /// The agent channel under `KVMFault.noHello`: bytes go nowhere.
    static let cutChannel: ByteSink = { _ in }

    static func wholeSeconds(_ d: Duration) -> Int64 { d.components.seconds }

    /// The problem the retry's outcome carries.
    static func problem(_ failure: String, retriedOn decision: BackendSelection.Decision) -> RunProblem {
        RunProblem(.kvmFallback, "\(failure) — retried once on \(decision.backend.rawValue) (\(decision.why))")
    }
}

/// Kills the machine when the agent has not said hello within `bound` (checked once, at the
/// bound). `cancel()` when the machine is gone.
final class HelloWatch: @unchecked Sendable {
    let bound: Duration
    private let item: DispatchWorkItem
    private let state = FiredFlag()

    init(bound: Duration, collector: RunCollector, kill: @escaping @Sendable () -> Void, log: Log) {
        self.bound = bound
        let state = self.state
        item = DispatchWorkItem {
            guard collector.snapshot.helloAt == nil else { return }
            state.set()
            log.warning("KVMMachine: no hello from the agent within \(KVMFallback.wholeSeconds(bound)) s — stopping it")
            kill()
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(SchedulerRun.millis(bound)), execute: item)
    }

    /// The bound passed without a hello and the machine was killed.
    var fired: Bool { state.value }

    func cancel() { item.cancel() }

    private final class FiredFlag: @unchecked Sendable {
        private let lock = NSLock()
        private var fired = false
        func set() { lock.lock(); fired = true; lock.unlock() }
        var value: Bool { lock.lock(); defer { lock.unlock() }; return fired }
    }
}

extension SchedulerRun {
    /// A run with the KVMMachine safety net (`KVMFallback`): one try, and on
    /// `KVMFallback.BeforeHello` one more on qemu. Same parameters as `attempt`.
    static func run(vm: VMConfig, scheduler: SchedulerSpec, workload: WorkloadSpec, duration: Duration,
                    artifactsDirectory: String?, log: Log, agentPath: String?, settings: KtstrSettings = .current,
                    partialOutcomeOnCancel: Bool = false, onMachine: (@Sendable (any Machine) -> Void)? = nil,
                    live: LiveOptions = LiveOptions(), scenario: Scenario? = nil) async throws -> RunOutcome {
        do {
            return try await attempt(vm: vm, scheduler: scheduler, workload: workload, duration: duration,
                                     artifactsDirectory: artifactsDirectory, log: log, agentPath: agentPath, settings: settings,
                                     partialOutcomeOnCancel: partialOutcomeOnCancel, onMachine: onMachine, live: live,
                                     scenario: scenario)
        } catch let failed as KVMFallback.BeforeHello {
            log.warning("\(failed) — retrying once on qemu")
            var retry = vm
            retry.backend = .qemu
            return try await attempt(vm: retry, scheduler: scheduler, workload: workload, duration: duration,
                                     artifactsDirectory: artifactsDirectory, log: log, agentPath: agentPath, settings: settings,
                                     partialOutcomeOnCancel: partialOutcomeOnCancel, onMachine: onMachine, live: live,
                                     scenario: scenario, fallbackFrom: failed.why)
        }
    }
}
