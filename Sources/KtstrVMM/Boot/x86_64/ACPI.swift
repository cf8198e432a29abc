import KtstrMachine

/// Minimal ACPI tables that describe the CPUs and the IOAPIC: RSDP (v2) → XSDT → MADT (and
/// SRAT + SLIT for a NUMA topology).
/// Kernels built without CONFIG_X86_MPPARSE (Debian's cloud flavour) find CPUs only here.
///
/// Deliberately no FADT: a hardware-reduced FADT (the usual way to say "no PM hardware")
/// also makes Linux drop the legacy PIC, after which the 8250 ports' fixed ISA IRQs 3/4 are no
/// longer GSIs 3/4 (nothing in an empty DSDT describes them). Without a FADT the kernel keeps
/// the PIC, maps ISA IRQs 0-15 to IOAPIC pins 0-15 (our in-kernel irqchip's wiring), and
/// its ACPI interpreter simply stays off. Layouts from the ACPI 6.x specification; the
/// tables live in the reserved BIOS area.
public enum ACPITables {
    public static let rsdpSignature = Array("RSD PTR ".utf8)
    static let oemID = Array("KTSTR ".utf8)           // 6 bytes
    static let oemTableID = Array("SWIFTVMM".utf8)    // 8 bytes
    static let creatorID = Array("KTSR".utf8)

    /// NUMA affinity for SRAT and SLIT: each vCPU's node (same order as `apicIDs`) and the
    /// guest-physical RAM ranges of each node.
    public struct NUMA: Sendable, Equatable {
        public var nodeOfCPU: [Int]
        public var memory: [(base: UInt64, size: UInt64, node: Int)]
        public var nodeCount: Int { (nodeOfCPU + memory.map(\.node)).max().map { $0 + 1 } ?? 1 }

        public init(nodeOfCPU: [Int], memory: [(base: UInt64, size: UInt64, node: Int)]) {
            self.nodeOfCPU = nodeOfCPU; self.memory = memory
        }

        /// `topology`'s nodes over RAM laid out as `ramRegions`: each node gets its share of the
        /// RAM bytes (Topology.nodeMemoryMiB) in order, split where a share crosses a gap.
        public init(topology: Topology, ramRegions: [(gpa: UInt64, size: UInt64)]) {
            let total = ramRegions.reduce(0) { $0 + $1.size }
            let mib = Int(total >> 20)
            var shares = topology.nodeMemoryMiB(mib).map { UInt64($0) << 20 }
            shares[shares.count - 1] += total - (UInt64(mib) << 20)
            var memory: [(base: UInt64, size: UInt64, node: Int)] = []
            var node = 0, left = shares[0]
            for r in ramRegions {
                var at = r.gpa, rest = r.size
                while rest > 0 {
                    while left == 0 && node + 1 < shares.count { node += 1; left = shares[node] }
                    let n = node + 1 == shares.count ? rest : min(rest, left)
                    memory.append((at, n, node))
                    at += n; rest -= n; left -= min(left, n)
                }
            }
            self.init(nodeOfCPU: (0..<topology.vcpuCount).map(topology.node(ofCPU:)), memory: memory)
        }

        public static func == (a: NUMA, b: NUMA) -> Bool {
            a.nodeOfCPU == b.nodeOfCPU && a.memory.elementsEqual(b.memory) { $0 == $1 }
        }
    }

    /// Bytes to write at `base` (16-byte aligned, below 4 GiB); the RSDP is at `base`. With
    /// `numa`, an SRAT (CPU and memory affinity) and a SLIT (distances 10 local, 20 remote) too.
    public static func build(apicIDs: [UInt32], base: UInt64 = BootLayout.acpi,
                             ioapicID: UInt8? = nil, ioapicAddress: UInt32 = BootLayout.ioapic,
                             lapicAddress: UInt32 = BootLayout.lapic, numa: NUMA? = nil) -> [UInt8] {
        let madt = madt(apicIDs: apicIDs, ioapicID: ioapicID ?? UInt8(truncatingIfNeeded: (apicIDs.max() ?? 0) + 1),
                        ioapicAddress: ioapicAddress, lapicAddress: lapicAddress)
        var tables = [madt]
        if let numa { tables += [srat(apicIDs: apicIDs, numa: numa), slit(nodes: numa.nodeCount)] }
        let xsdtOff = 48
        var xsdtBody = [UInt8](repeating: 0, count: 8 * tables.count)
        var offsets: [Int] = []
        var at = xsdtOff + 36 + xsdtBody.count
        for t in tables {
            at = (at + 7) & ~7
            offsets.append(at)
            at += t.count
        }
        for (i, off) in offsets.enumerated() { xsdtBody.putLE(base + UInt64(off), at: 8 * i) }
        let xsdt = table("XSDT", revision: 1, body: xsdtBody)

        var out = [UInt8](repeating: 0, count: at)
        out.putBytes(rsdp(xsdt: base + UInt64(xsdtOff)), at: 0)
        out.putBytes(xsdt, at: xsdtOff)
        for (t, off) in zip(tables, offsets) { out.putBytes(t, at: off) }
        return out
    }

    /// System Resource Affinity Table (revision 3): a Processor Local APIC Affinity entry per
    /// vCPU (type 0, 16 bytes) and a Memory Affinity entry per node range (type 1, 40 bytes).
    static func srat(apicIDs: [UInt32], numa: NUMA) -> [UInt8] {
        var body = [UInt8](repeating: 0, count: 12)
        body.putLE(UInt32(1), at: 0) // reserved, 1 for compatibility
        for (cpu, id) in apicIDs.enumerated() {
            let node = UInt32(cpu < numa.nodeOfCPU.count ? numa.nodeOfCPU[cpu] : 0)
            var e = [UInt8](repeating: 0, count: 16)
            e[0] = 0; e[1] = 16
            e[2] = UInt8(truncatingIfNeeded: node)
            e[3] = UInt8(truncatingIfNeeded: id)
            e.putLE(UInt32(1), at: 4) // enabled
            e[9] = UInt8(truncatingIfNeeded: node >> 8); e[10] = UInt8(truncatingIfNeeded: node >> 16)
            e[11] = UInt8(truncatingIfNeeded: node >> 24)
            body += e
        }
        for m in numa.memory {
            var e = [UInt8](repeating: 0, count: 40)
            e[0] = 1; e[1] = 40
            e.putLE(UInt32(m.node), at: 2)
            e.putLE(m.base, at: 8)
            e.putLE(m.size, at: 16)
            e.putLE(UInt32(1), at: 28) // enabled
            body += e
        }
        return table("SRAT", revision: 3, body: body)
    }

    /// System Locality Information Table: an N×N distance matrix, 10 local and 20 remote.
    static func slit(nodes: Int) -> [UInt8] {
        var body = [UInt8](repeating: 0, count: 8)
        body.putLE(UInt64(nodes), at: 0)
        for i in 0..<nodes { for j in 0..<nodes { body.append(i == j ? 10 : 20) } }
        return table("SLIT", revision: 1, body: body)
    }

    static func rsdp(xsdt: UInt64) -> [UInt8] {
        var r = [UInt8](repeating: 0, count: 36)
        r.putBytes(rsdpSignature, at: 0)
        r.putBytes(oemID, at: 9)
        r[15] = 2 // ACPI 2.0+ (XSDT)
        r.putLE(UInt32(36), at: 20)
        r.putLE(xsdt, at: 24)
        r[8] = checksum(r[0..<20])
        r[32] = checksum(r[0..<36])
        return r
    }

    /// A System Description Table: 36-byte header + body, checksummed.
    static func table(_ signature: String, revision: UInt8, body: [UInt8]) -> [UInt8] {
        var t = [UInt8](repeating: 0, count: 36)
        t.putBytes(Array(signature.utf8.prefix(4)), at: 0)
        t.putLE(UInt32(36 + body.count), at: 4)
        t[8] = revision
        t.putBytes(oemID, at: 10)
        t.putBytes(oemTableID, at: 16)
        t.putLE(UInt32(1), at: 24)
        t.putBytes(creatorID, at: 28)
        t.putLE(UInt32(1), at: 32)
        t += body
        t[9] = checksum(t[...])
        return t
    }

    static func madt(apicIDs: [UInt32], ioapicID: UInt8, ioapicAddress: UInt32, lapicAddress: UInt32) -> [UInt8] {
        var body = [UInt8](repeating: 0, count: 8)
        body.putLE(lapicAddress, at: 0)
        body.putLE(UInt32(1), at: 4) // PCAT_COMPAT: the 8259s exist (in-kernel PIC)
        for (uid, id) in apicIDs.enumerated() {
            // Processor Local APIC: type 0, length 8, UID, APIC id, flags (enabled).
            var e: [UInt8] = [0, 8, UInt8(truncatingIfNeeded: uid), UInt8(truncatingIfNeeded: id), 0, 0, 0, 0]
            e.putLE(UInt32(1), at: 4)
            body += e
        }
        // I/O APIC: type 1, length 12, id, reserved, address, GSI base 0.
        var io: [UInt8] = [1, 12, ioapicID, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        io.putLE(ioapicAddress, at: 4)
        body += io
        // Local APIC NMI: type 4, length 6, all processors (0xff), flags 0, LINT1.
        body += [4, 6, 0xff, 0, 0, 1]
        return table("APIC", revision: 4, body: body)
    }

    /// The byte that makes the sum of `bytes` (with this byte still zero) wrap to 0.
    static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt8 { 0 &- bytes.reduce(0, &+) }
}
