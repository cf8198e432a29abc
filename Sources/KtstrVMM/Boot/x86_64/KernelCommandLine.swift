import KtstrMachine

/// The guest kernel command line. The base line keeps the kernel away from hardware we do
/// not emulate (PCI, i8042 probing, modules), makes it fail fast (panic=-1 reboots at once)
/// and turns its reboot into an i8042 reset (reboot=k), which the VMM treats as shutdown.
/// (ktstr also passes lockdown=none; 7.x kernels reject that value as a malformed early
/// option, so it is left out.)
public struct KernelCommandLine: Sendable, Equatable, CustomStringConvertible {
    public static let base: [String] = [
        "console=ttyS0", "earlyprintk=serial,ttyS0,115200", "nomodules", "mitigations=off",
        "no_timer_check", "clocksource=kvm-clock", "random.trust_cpu=on", "swiotlb=noforce",
        "i8042.noaux", "i8042.nomux", "i8042.nopnp", "i8042.dumbkbd", "pci=off", "reboot=k",
        "panic=-1", "nokaslr", "sysctl.kernel.unprivileged_bpf_disabled=0",
        "sysctl.kernel.sched_schedstats=1", "rdinit=/init",
    ]

    public var words: [String]

    public init(extra: String = "") {
        words = Self.base + extra.split(separator: " ").map(String.init)
    }

    public var description: String { words.joined(separator: " ") }

    /// NUL-terminated bytes, refused when longer than the kernel's `cmdline_size`.
    public func bytes(maxLength: Int) throws -> [UInt8] {
        let b = Array(description.utf8)
        guard b.count <= maxLength else { throw BootParamsError.commandLineTooLong(length: b.count, max: maxLength) }
        return b + [0]
    }
}
