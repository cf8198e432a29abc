/// Whether a kernel has sched_ext, from its BTF: decided before a boot, so a kernel without it
/// is a setup error, not a run that "succeeded" without ever loading the scheduler.
public enum SchedExtSupport {
    /// True when the BTF names `struct scx_sched` (what the monitor reads) or
    /// `struct sched_ext_ops` (older sched_ext kernels, before scx_sched).
    public static func present(in btf: BTF) -> Bool {
        btf.compositeID(named: "scx_sched") != nil || btf.compositeID(named: "sched_ext_ops") != nil
    }

    /// From a vmlinux's `.BTF` (parsed once per content and cached, shared with the monitor).
    /// Throws when the BTF cannot be read: the caller decides what an unknown means.
    public static func present(vmlinux: String) throws -> Bool {
        present(in: try BTFCache.shared.load(vmlinux: vmlinux))
    }
}
