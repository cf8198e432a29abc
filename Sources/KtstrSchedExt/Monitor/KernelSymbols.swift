import KtstrMachine
import KtstrProtocol

/// Turns a kernel text address into `name+0xoff`.
public protocol Symbolizer: Sendable {
    func symbolize(_ address: UInt64) -> String?
}

/// Kernel symbol addresses by name, plus (when a full table was given) address → name.
///
/// Sources: the agent's hello (`/proc/kallsyms` addresses of the few symbols the monitor
/// needs: KASLR-correct, but too few to symbolize with) or a full table in System.map /
/// /proc/kallsyms format (`<hex address> <type> <name> [module]`). Only a full table is used
/// for symbolization: naming an address after the nearest of ten known symbols would lie.
/// Backtraces are normally symbolized from the guest's own kallsyms tables (`GuestKallsyms`).
public struct KernelSymbols: Sendable, Symbolizer {
    public private(set) var addresses: [String: UInt64]
    /// Text symbols sorted by address (empty unless built from a full table).
    private var text: [(address: UInt64, name: String)] = []
    /// The largest offset into a symbol we are willing to report (larger means a gap).
    public static let maxSymbolSize: UInt64 = 1 << 20

    public init(addresses: [String: UInt64]) { self.addresses = addresses }

    /// Parses System.map / /proc/kallsyms text. Malformed lines are skipped; all-zero
    /// addresses (kallsyms read without privilege) are ignored.
    public init(systemMap: String) {
        var addrs: [String: UInt64] = [:]
        var text: [(UInt64, String)] = []
        for line in systemMap.split(separator: "\n", omittingEmptySubsequences: true) {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 3, f[1].count == 1, let a = UInt64(f[0], radix: 16), a != 0 else { continue }
            let name = String(f[2])
            if addrs[name] == nil { addrs[name] = a }
            if "tTwW".contains(f[1]) { text.append((a, name)) }
        }
        self.addresses = addrs
        self.text = text.sorted { $0.0 < $1.0 }
    }

    /// The text of /proc/kallsyms (same format as System.map, optional `[module]` column).
    public init(kallsymsText: String) { self.init(systemMap: kallsymsText) }

    public subscript(name: String) -> UInt64? { addresses[name] }

    /// Adds names from `other` that this table lacks (hello addresses win over a map file).
    public mutating func merge(_ other: [String: UInt64]) {
        for (k, v) in other where addresses[k] == nil { addresses[k] = v }
    }

    public var canSymbolize: Bool { !text.isEmpty }

    public func symbolize(_ address: UInt64) -> String? {
        var lo = 0, hi = text.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if text[mid].address <= address { lo = mid + 1 } else { hi = mid }
        }
        guard lo > 0 else { return nil }
        let s = text[lo - 1]
        let off = address - s.address
        if lo < text.count, address >= text[lo].address { return nil }
        guard off < Self.maxSymbolSize else { return nil }
        return "\(s.name)+0x\(String(off, radix: 16))"
    }
}
