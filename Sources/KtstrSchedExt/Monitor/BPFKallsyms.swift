import KtstrMachine
import KtstrProtocol

/// Names for addresses in BPF programs and trampolines (`bpf_prog_<tag>_<name>`,
/// `bpf__sched_ext_ops_enqueue`): the kernel keeps them off its static kallsyms tables, in
/// the `bpf_kallsyms` list of `struct bpf_ksym` (start, end, name). Read once, bounded.
public struct BPFKallsyms: Sendable, Symbolizer {
    public static let maxEntries = 4096
    public let symbols: [(start: UInt64, end: UInt64, name: String)]

    /// nil when `bpf_kallsyms` is unknown or `struct bpf_ksym` is not in the BTF.
    public init?(head: UInt64?, btf: BTF, space: KernelAddressSpace) {
        guard let head, let lnode = try? btf.offset(of: "lnode", in: "bpf_ksym"),
              let startOff = try? btf.offset(of: "start", in: "bpf_ksym"),
              let endOff = try? btf.offset(of: "end", in: "bpf_ksym"),
              let name = try? btf.field("name", in: "bpf_ksym") else { return nil }
        var out: [(UInt64, UInt64, String)] = []
        var node = (try? space.readPointer(at: head)) ?? head
        var seen = 0
        while node != head, node != 0, seen < Self.maxEntries {
            seen += 1
            let ksym = node &- UInt64(lnode)
            guard let s = try? space.readPointer(at: ksym &+ UInt64(startOff)),
                  let e = try? space.readPointer(at: ksym &+ UInt64(endOff)),
                  let n = try? space.readCString(at: ksym &+ UInt64(name.offset), maxLength: min(name.size, 512)),
                  let next = try? space.readPointer(at: node) else { break }
            if e > s { out.append((s, e, n)) }
            node = next
        }
        symbols = out.sorted { $0.0 < $1.0 }
    }

    public func symbolize(_ address: UInt64) -> String? {
        guard let s = symbols.last(where: { $0.start <= address }), address < s.end else { return nil }
        return "\(s.name)+0x\(String(address - s.start, radix: 16))"
    }
}
