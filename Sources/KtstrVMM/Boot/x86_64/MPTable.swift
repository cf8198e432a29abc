import KtstrMachine

/// An Intel MultiProcessor Specification 1.4 table: the floating pointer ("_MP_") and the
/// configuration table ("PCMP") with one processor entry per vCPU, an ISA bus, the IOAPIC,
/// ISA interrupts 0-15 routed to IOAPIC pins 0-15, and LINT0 = ExtINT / LINT1 = NMI.
/// Linux finds it by scanning 0xF0000-0xFFFFF (arch/x86/kernel/mpparse.c) when ACPI is absent.
public enum MPTable {
    public enum Error: Swift.Error, CustomStringConvertible, Equatable {
        case tooManyCPUs(Int)
        public var description: String {
            switch self {
            case let .tooManyCPUs(n): "MP table: \(n) vCPUs need APIC ids above 254 — use at most 254 vCPUs"
            }
        }
    }

    public static let floatingSignature = Array("_MP_".utf8)
    public static let tableSignature = Array("PCMP".utf8)
    static let apicVersion: UInt8 = 0x14
    static let ioapicVersion: UInt8 = 0x11
    static let isaIRQs = 16

    /// The bytes to write at `address` (floating pointer first, table right after it).
    public static func build(apicIDs: [UInt32], address: UInt64 = BootLayout.mpTable,
                             ioapicAddress: UInt32 = BootLayout.ioapic, lapicAddress: UInt32 = BootLayout.lapic) throws -> [UInt8] {
        guard let maxID = apicIDs.max(), maxID < 254, apicIDs.count <= 254 else { throw Error.tooManyCPUs(apicIDs.count) }
        let ioapicID = UInt8(maxID + 1)
        var entries: [[UInt8]] = []
        for (i, id) in apicIDs.enumerated() {
            var p = [UInt8](repeating: 0, count: 20)
            p[0] = 0 // processor
            p[1] = UInt8(id)
            p[2] = apicVersion
            p[3] = 0x1 | (i == 0 ? 0x2 : 0) // enabled, BSP
            p.putLE(UInt32(0x600), at: 4) // family 6 signature
            p.putLE(UInt32(0x201), at: 8) // FPU | APIC feature flags
            entries.append(p)
        }
        entries.append([1, 0] + Array("ISA   ".utf8)) // bus 0
        var io = [UInt8](repeating: 0, count: 8)
        io[0] = 2; io[1] = ioapicID; io[2] = ioapicVersion; io[3] = 1
        io.putLE(ioapicAddress, at: 4)
        entries.append(io)
        for irq in 0..<isaIRQs {
            // type 3 I/O interrupt: INT, conforming polarity/trigger, bus 0 irq → IOAPIC pin irq.
            entries.append([3, 0, 0, 0, 0, UInt8(irq), ioapicID, UInt8(irq)])
        }
        // type 4 local interrupts to every LAPIC (0xff): ExtINT on LINT0, NMI on LINT1.
        entries.append([4, 3, 0, 0, 0, 0, 0xff, 0])
        entries.append([4, 1, 0, 0, 0, 0, 0xff, 1])

        let body = entries.flatMap { $0 }
        var table = [UInt8](repeating: 0, count: 44)
        table.putBytes(tableSignature, at: 0)
        table.putLE(UInt16(44 + body.count), at: 4)
        table[6] = 4 // spec revision 1.4
        table.putBytes(Array("KTSTR   ".utf8), at: 8)
        table.putBytes(Array("SWIFTVMM    ".utf8), at: 16)
        table.putLE(UInt16(entries.count), at: 34)
        table.putLE(lapicAddress, at: 36)
        table += body
        table[7] = checksum(table)

        var fp = [UInt8](repeating: 0, count: 16)
        fp.putBytes(floatingSignature, at: 0)
        fp.putLE(UInt32(address + 16), at: 4)
        fp[8] = 1 // length in 16-byte units
        fp[9] = 4 // spec 1.4
        fp[10] = checksum(fp)
        return fp + table
    }

    /// The byte that makes the sum of `bytes` (with this byte still zero) wrap to 0.
    static func checksum(_ bytes: [UInt8]) -> UInt8 {
        0 &- bytes.reduce(0, &+)
    }
}
