/// A sched_ext exit kind (`enum scx_exit_kind`), named as the kernel names it, in snake case
/// without the `SCX_EXIT_` prefix: `error_bpf`, `error_stall`, `unreg_bpf`...
///
/// A struct, not an enum: the guest kernel's BTF may name kinds newer than this code
/// (the monitor takes names from `enum scx_exit_kind` in BTF); `fallbackTable` is only used
/// when no BTF is available.
public struct ExitKind: Hashable, Codable, Sendable, CustomStringConvertible, ExpressibleByStringLiteral {
    public let name: String

    public init(_ name: String) { self.name = name }
    public init(stringLiteral value: String) { self.name = value }
    public init(from decoder: Decoder) throws { name = try decoder.singleValueContainer().decode(String.self) }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(name)
    }
    public var description: String { name }

    public static let none: ExitKind = "none"
    public static let done: ExitKind = "done"
    public static let unreg: ExitKind = "unreg"
    public static let unregBPF: ExitKind = "unreg_bpf"
    public static let unregKern: ExitKind = "unreg_kern"
    public static let sysrq: ExitKind = "sysrq"
    public static let error: ExitKind = "error"
    public static let errorBPF: ExitKind = "error_bpf"
    public static let errorStall: ExitKind = "error_stall"

    /// SCX_EXIT_ERROR: kinds at or above it are failures (and trigger the failure dump).
    public static let errorThreshold = 1024

    /// Values of the kinds every sched_ext kernel has. Newer kinds come from BTF.
    public static let fallbackTable: [Int: ExitKind] = [
        0: .none, 1: .done,
        64: .unreg, 65: .unregBPF, 66: .unregKern, 67: .sysrq,
        1024: .error, 1025: .errorBPF, 1026: .errorStall,
    ]

    /// The human reason string the kernel prints for a kind (`scx_exit_reason()`), used to
    /// recover the kind from text when memory could not be read.
    public static let kernelReasons: [String: ExitKind] = [
        "unregistered from user space": .unreg,
        "unregistered from BPF": .unregBPF,
        "unregistered from the main kernel": .unregKern,
        "disabled by sysrq-S": .sysrq,
        "runtime error": .error,
        "scx_bpf_error": .errorBPF,
        "runnable task stall": .errorStall,
        "parent exiting": "parent",
        "killed by parent scheduler": "parent_kill",
        "reenqueue limit": "error_reenq",
        "rescue bandwidth overload": "error_rescue",
    ]

    /// Snake-case name from a BTF enumerator (`SCX_EXIT_ERROR_BPF` → `error_bpf`).
    public static func fromEnumerator(_ enumerator: String) -> ExitKind {
        var s = Substring(enumerator)
        if s.hasPrefix("SCX_EXIT_") { s = s.dropFirst("SCX_EXIT_".count) }
        return ExitKind(s.lowercased())
    }
}
