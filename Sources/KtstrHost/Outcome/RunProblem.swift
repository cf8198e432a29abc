import Foundation
import KtstrMachine

/// Something that went wrong around a run, apart from how the scheduler exited. Code decides
/// on `kind`; `detail` is text that came from elsewhere (a kernel log line, the agent's words)
/// and `description` is for people.
public struct RunProblem: Codable, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Codable, Sendable, CaseIterable {
        /// No hello from the agent: kernel panic, agent crash, or a boot slower than the timeout.
        case guestNeverSaidHello = "guest_never_said_hello"
        /// The agent said hello but never sent `done`.
        case agentDidNotFinish = "agent_did_not_finish"
        /// A scheduler was asked for, the agent finished, and no exit was reported.
        case noSchedulerExit = "no_scheduler_exit"
        /// The VM ran past its timeout and was killed.
        case timeout
        /// The guest kernel printed a panic, Oops or BUG (detail: that line).
        case guestKernelCrash = "guest_kernel_crash"
        /// The agent reported a problem (detail: its message).
        case agentReported = "agent_reported"
        /// The failure monitor could not start, so a missing dump proves nothing (detail: why).
        case failureMonitorUnavailable = "failure_monitor_unavailable"
        /// The run's task was cancelled and the VM killed.
        case cancelled
        /// The scheduler never attached: verifier or libbpf error, crash, attach timeout
        /// (detail: the last lines of its log, else the agent's account).
        case schedulerFailedToLoad = "scheduler_failed_to_load"
        /// The scheduler exited before the planned duration, so the workload was stopped early
        /// (detail: "<ran> s of the planned <planned> s").
        case workloadCutShort = "workload_cut_short"
        /// The host's sampler saw a stall in guest memory: a task runnable past the threshold,
        /// or a CPU's rq clock stopped with tasks runnable (detail: the CPU, the task, how long,
        /// when it was seen against the scheduler's exit, and the CPU's last samples).
        case hostStallDetected = "host_stall_detected"
        /// The live handle (`during:` closure, watchdog override) failed or could not start
        /// (detail: why).
        case liveHandle = "live_handle"
        /// The guest's L3 groups or NUMA nodes differ from the requested topology (detail:
        /// what was asked and what the guest reported).
        case topologyMismatch = "topology_mismatch"
        /// A scenario was planned and the agent sent no `scenario` report (an older agent, or
        /// the run ended before the report); the checks could not be evaluated.
        case scenarioNotReported = "scenario_not_reported"
        /// The run was to restore a boot snapshot and booted cold instead: the snapshot could
        /// not be built or restored (detail: why). Kept in `RunOutcome.snapshot.problem`, not
        /// in `problems`: the run itself is whole, so it never fails a test by itself.
        case snapshotFallback = "snapshot_fallback"
        /// KVMMachine failed before the agent's hello (boot error, VMM fatal, guest died, no
        /// hello within the bound) and the run was retried once on qemu; this outcome is the
        /// retry's (detail: the KVMMachine failure and the backend of the retry).
        case kvmFallback = "kvm_fallback"
    }

    public var kind: Kind
    public var detail: String?

    /// `detail` is kept on one line (line breaks become " | ").
    public init(_ kind: Kind, _ detail: String? = nil) {
        self.kind = kind
        self.detail = detail.map(Self.oneLine)
    }

    static func oneLine(_ s: String) -> String {
        s.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            .joined(separator: " | ")
    }

    public var description: String {
        let d = detail ?? ""
        return switch kind {
        case .guestNeverSaidHello: "the guest never said hello (kernel panic, agent crash or boot too slow) — see consoleTail"
        case .agentDidNotFinish: "the agent did not finish (machine \(d)) — see consoleTail"
        case .noSchedulerExit: "no scheduler exit was reported" + (d.isEmpty ? "" : ": \(d)")
        case .timeout: "the VM ran past its timeout and was killed"
        case .guestKernelCrash: "guest kernel: \(d)"
        case .agentReported: d
        case .failureMonitorUnavailable: "failure monitor: \(d)"
        case .cancelled: "cancelled: the VM was killed"
        case .schedulerFailedToLoad: "the scheduler failed to load or attach: \(d)"
        case .workloadCutShort: "the workload was cut short at \(d) because the scheduler exited"
        case .hostStallDetected: "the host saw a stall: \(d)"
        case .liveHandle: "live: \(d)"
        case .topologyMismatch: "topology mismatch: \(d)"
        case .scenarioNotReported: "the agent sent no scenario report" + (d.isEmpty ? "" : ": \(d)")
        case .snapshotFallback: "booted cold instead of restoring the boot snapshot: \(d)"
        case .kvmFallback: "KVMMachine failed before the agent's hello, the run fell back to qemu: \(d)"
        }
    }

    private enum CodingKeys: String, CodingKey { case kind, detail, message }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        kind = try c.decode(Kind.self, forKey: .kind)
        detail = try c.decodeIfPresent(String.self, forKey: .detail)
    }

    /// `message` (the description) is written for readers of the JSON; it is not read back.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(kind, forKey: .kind)
        try c.encodeIfPresent(detail, forKey: .detail)
        try c.encode(description, forKey: .message)
    }
}

extension Array where Element == RunProblem {
    public func contains(_ kind: RunProblem.Kind) -> Bool { contains { $0.kind == kind } }
}
