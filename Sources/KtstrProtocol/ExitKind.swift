/// A sched_ext exit kind (`enum scx_exit_kind`), named as the kernel names it, in snake case
/// without the `SCX_EXIT_` prefix: `error_bpf`, `error_stall`, `unreg_bpf`...
///
/// A struct, not an enum: the guest kernel's BTF may name kinds newer than this code
/// (the monitor takes names from `enum scx_exit_kind` in BTF); `table` is used when no BTF
/// is available and when the kind must be recovered from text.
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
    public static let parent: ExitKind = "parent"
    public static let parentKill: ExitKind = "parent_kill"
    public static let error: ExitKind = "error"
    public static let errorBPF: ExitKind = "error_bpf"
    public static let errorStall: ExitKind = "error_stall"
    public static let errorReenq: ExitKind = "error_reenq"
    public static let errorRescue: ExitKind = "error_rescue"

    /// SCX_EXIT_ERROR: kinds at or above it are failures (and trigger the failure dump).
    public static let errorThreshold = 1024

    /// One kind the kernel knows: its `enum scx_exit_kind` value and the reason string
    /// `scx_exit_reason()` prints for it (nil for none and done, which it never prints).
    public struct Entry: Sendable, Equatable {
        public let value: Int
        public let kind: ExitKind
        public let reason: String?
    }

    /// The kinds of kernel/sched/ext (internal.h, ext.c): the one table host and guest share.
    public static let table: [Entry] = [
        Entry(value: 0, kind: .none, reason: nil),
        Entry(value: 1, kind: .done, reason: nil),
        Entry(value: 64, kind: .unreg, reason: "unregistered from user space"),
        Entry(value: 65, kind: .unregBPF, reason: "unregistered from BPF"),
        Entry(value: 66, kind: .unregKern, reason: "unregistered from the main kernel"),
        Entry(value: 67, kind: .sysrq, reason: "disabled by sysrq-S"),
        Entry(value: 68, kind: .parent, reason: "parent exiting"),
        Entry(value: 69, kind: .parentKill, reason: "killed by parent scheduler"),
        Entry(value: 1024, kind: .error, reason: "runtime error"),
        Entry(value: 1025, kind: .errorBPF, reason: "scx_bpf_error"),
        Entry(value: 1026, kind: .errorStall, reason: "runnable task stall"),
        Entry(value: 1027, kind: .errorReenq, reason: "reenqueue limit"),
        Entry(value: 1028, kind: .errorRescue, reason: "rescue bandwidth overload"),
    ]

    /// `table` by value (the monitor's fallback when the kernel has no BTF).
    public static let fallbackTable: [Int: ExitKind] = Dictionary(uniqueKeysWithValues: table.map { ($0.value, $0.kind) })

    /// `table` by reason string, to recover the kind from text when memory could not be read.
    public static let kernelReasons: [String: ExitKind] =
        Dictionary(uniqueKeysWithValues: table.compactMap { e in e.reason.map { ($0, e.kind) } })

    /// The kind `table` lists for `value`; nil for a value it does not know.
    public init?(value: Int) {
        guard let k = Self.fallbackTable[value] else { return nil }
        self = k
    }

    /// The kind whose `scx_exit_reason()` string is `reason`; nil for any other text.
    public init?(kernelReason reason: String) {
        guard let k = Self.kernelReasons[reason] else { return nil }
        self = k
    }

    /// The kind's `enum scx_exit_kind` value per `table`; nil for a kind it does not know.
    public var value: Int? { Self.table.first { $0.kind == self }?.value }

    /// Snake-case name from a BTF enumerator (`SCX_EXIT_ERROR_BPF` → `error_bpf`).
    public static func fromEnumerator(_ enumerator: String) -> ExitKind {
        var s = Substring(enumerator)
        if s.hasPrefix("SCX_EXIT_") { s = s.dropFirst("SCX_EXIT_".count) }
        return ExitKind(s.lowercased())
    }
}
