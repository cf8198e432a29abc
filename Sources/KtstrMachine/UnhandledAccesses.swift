/// Guest accesses to ports and MMIO addresses that no device claimed, counted per port /
/// per address. A guest probing absent hardware is normal (Linux pokes dozens of legacy
/// ports); a test can still assert that its payload touched exactly what it meant to.
///
/// Bounded: a hostile or broken guest can hit millions of distinct addresses, so at most
/// `maxDistinctKeys` ports and as many MMIO addresses get their own entry; accesses to
/// further ones are summed in `portOverflow` / `mmioOverflow`.
public struct UnhandledAccesses: Codable, Sendable, Equatable {
    /// Reads and writes to one port or address. A `rep ins/outs` counts each element.
    public struct Counts: Codable, Sendable, Equatable {
        public var reads: UInt64
        public var writes: UInt64
        public var total: UInt64 { reads &+ writes }

        public init(reads: UInt64 = 0, writes: UInt64 = 0) {
            self.reads = reads
            self.writes = writes
        }

        mutating func add(isWrite: Bool, count: UInt64) {
            if isWrite { writes &+= count } else { reads &+= count }
        }
    }

    public static let maxDistinctKeys = 256

    public private(set) var ports: [UInt16: Counts]
    /// Keyed by guest-physical address of the access.
    public private(set) var mmio: [UInt64: Counts]
    /// Accesses to ports beyond the first `maxDistinctKeys` distinct ones.
    public private(set) var portOverflow: Counts
    /// Accesses to MMIO addresses beyond the first `maxDistinctKeys` distinct ones.
    public private(set) var mmioOverflow: Counts

    public init() {
        ports = [:]
        mmio = [:]
        portOverflow = Counts()
        mmioOverflow = Counts()
    }

    /// What a backend that cannot count (QEMU) reports.
    public static let none = UnhandledAccesses()

    public var isEmpty: Bool { self == .none }

    public mutating func recordPort(_ port: UInt16, isWrite: Bool, count: Int = 1) {
        let n = UInt64(max(count, 0))
        if ports[port] != nil || ports.count < Self.maxDistinctKeys {
            ports[port, default: Counts()].add(isWrite: isWrite, count: n)
        } else {
            portOverflow.add(isWrite: isWrite, count: n)
        }
    }

    public mutating func recordMMIO(_ address: UInt64, isWrite: Bool) {
        if mmio[address] != nil || mmio.count < Self.maxDistinctKeys {
            mmio[address, default: Counts()].add(isWrite: isWrite, count: 1)
        } else {
            mmioOverflow.add(isWrite: isWrite, count: 1)
        }
    }
}
