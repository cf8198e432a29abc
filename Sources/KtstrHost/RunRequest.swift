import Foundation
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

/// Which VMM to use. `.auto`: KVMMachine when the host can boot Linux under KVM (vmx/svm
/// present and /dev/kvm usable), else qemu with TCG. `KTSTR_BACKEND=kvm|qemu|qemu-tcg`
/// overrides `.auto`.
public enum BackendChoice: String, Codable, Sendable {
    case auto, kvm, qemu, qemuTCG = "qemu-tcg"
}

/// The VM a run boots.
public struct VMConfig: Codable, Sendable, Hashable {
    public var topology: Topology
    public var memoryMiB: Int
    /// Explicit kernel: a kernel tree directory, a bzImage or vmlinux, a registered name
    /// (`ktstr kernel add`) or a cached Debian version. nil: `KTSTR_KERNEL`, else the cached default.
    public var kernel: String?
    /// The kernel registry `kernel` names are looked up in (a registry.json path); nil: the
    /// cache's (`KernelRegistry.default`). Tests point it at their own.
    public var kernelRegistry: String? = nil
    public var backend: BackendChoice
    /// Hard limit for the whole VM (boot + run + teardown), seconds.
    /// The longest a VM may run (a day): bounds `timeoutSeconds` before it becomes milliseconds.
    public static let maxTimeoutSeconds: Double = 86_400
    public var timeoutSeconds: Double
    /// The live sampler's period in ms (`RunOutcome.timeline`): nil = 100, 0 = no sampling,
    /// otherwise at least 10.
    public var sampleIntervalMillis: Int?
    /// The host flags a stall (`hostStallDetected`) when a runnable task waited this long or a
    /// CPU's rq clock lags this far with tasks runnable (guest time): nil = 2000 ms.
    public var hostStallThresholdMillis: Int?
    /// false: boot cold even where a boot snapshot could be restored (`ktstr bench boot`'s
    /// cold variants); nil or true: restore when `KTSTR_SNAPSHOT` allows (QEMU, no NUMA).
    public var bootSnapshot: Bool? = nil

    public init(cpus: Int = 2, memoryMiB: Int = 512, topology: Topology? = nil, kernel: String? = nil,
                backend: BackendChoice = .auto, timeoutSeconds: Double = 120) {
        self.topology = topology ?? .flat(cpus)
        self.memoryMiB = memoryMiB; self.kernel = kernel; self.backend = backend; self.timeoutSeconds = timeoutSeconds
    }

    public var cpus: Int { topology.vcpuCount }
}

/// The scheduler to load in the guest.
public enum SchedulerSpec: Codable, Sendable, Hashable {
    /// No sched_ext scheduler (the kernel's default class).
    case none
    /// scx_simple from the kernel's tools/sched_ext.
    case simple(args: [String] = [])
    /// ktstr's fault-injection scheduler (`--error-after N`, `--stall-pid-every N`,
    /// `--exit-after N --code C`, `--bogus-dsq`, `--timeout-ms MS`), and its unfairness knob
    /// (`--favour-comm PREFIX [--favour-count N] [--favour-slice-ms MS]`: the first N tasks whose
    /// comm starts with PREFIX always run first; Schedulers/README.md).
    case fault(args: [String] = [])
    /// Any scheduler binary on the host; its shared libraries travel with it.
    case binary(path: String, args: [String] = [])

    public static var simple: SchedulerSpec { .simple() }
    public static func fault(_ args: String...) -> SchedulerSpec { .fault(args: args) }
    /// The fault scheduler, unfair on purpose: the first `count` tasks whose comm starts with
    /// `comm` always run before every other task — a true positive for fairness and gap checks.
    public static func unfair(favouring comm: String, count: Int = 1, sliceMillis: Int? = nil) -> SchedulerSpec {
        .fault(args: ["--favour-comm", comm, "--favour-count", String(count)]
               + (sliceMillis.map { ["--favour-slice-ms", String($0)] } ?? []))
    }
}

/// What runs under the scheduler. Small and deterministic.
public struct WorkloadSpec: Codable, Sendable, Hashable {
    /// The plan's workload kinds (KtstrProtocol), named here for existing callers.
    public typealias Kind = WorkloadKind
    public var kind: Kind
    /// Workers (threads/processes; pairs for ping-pong).
    public var count: Int
    /// Sleepers: sleep period in microseconds.
    public var periodMicros: Int?
    /// Place the workers in this cgroup (created under /sys/fs/cgroup).
    public var cgroup: String?

    public init(kind: Kind, count: Int, periodMicros: Int? = nil, cgroup: String? = nil) {
        self.kind = kind; self.count = count; self.periodMicros = periodMicros; self.cgroup = cgroup
    }

    public static func spinners(_ n: Int, cgroup: String? = nil) -> WorkloadSpec { .init(kind: .spinners, count: n, cgroup: cgroup) }
    public static func sleepers(_ n: Int, periodMicros: Int = 1000, cgroup: String? = nil) -> WorkloadSpec {
        .init(kind: .sleepers, count: n, periodMicros: periodMicros, cgroup: cgroup)
    }
    public static func pingPong(pairs: Int = 1) -> WorkloadSpec { .init(kind: .pingPong, count: pairs) }
    public static func forkStorm(_ n: Int) -> WorkloadSpec { .init(kind: .forkStorm, count: n) }
    public static let idle = WorkloadSpec(kind: .idle, count: 0)
}

extension VMConfig {
    /// The registry `kernel` names resolve in.
    public var registry: KernelRegistry { kernelRegistry.map(KernelRegistry.init(path:)) ?? .default }
}
