/// Watches a running guest for a sched_ext failure and captures a `FailureDump` from the
/// frozen guest. One per run: the run orchestration creates it, calls `start` once the agent's
/// hello has delivered the kernel symbols, and `finish` when the VM is done.
///
/// Stub shape agreed in docs/PROTOCOLS.md; the monitor work (issue 5) owns this file and
/// fills in the bodies (poll scx_root->exit_kind ≤ 10 ms, watchpoint where it fires,
/// freeze → read → thaw on a kind ≥ SCX_EXIT_ERROR).
public final class FailureMonitor: @unchecked Sendable {
    /// Symbols the agent must look up in /proc/kallsyms and report in its hello.
    public static let requiredSymbols: [String] = [
        "scx_root", "page_offset_base", "phys_base", "__start_BTF", "__stop_BTF",
        "__per_cpu_offset", "runqueues", "map_idr", "init_top_pgt",
    ]

    private let log: Log

    public init(log: Log = .default) { self.log = log }

    /// Begin watching. `kallsyms` are the addresses from the agent's hello; `vmlinux` is the
    /// guest kernel's ELF when known (BTF source if guest memory has none).
    public func start(machine: any Machine, kallsyms: [String: UInt64], vmlinux: String?) {}

    /// Stop watching; the dump when a failure was caught, else nil.
    public func finish() -> FailureDump? { nil }
}
