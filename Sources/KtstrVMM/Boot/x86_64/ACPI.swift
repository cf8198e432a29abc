import KtstrMachine

/// Minimal ACPI tables that describe the CPUs and the IOAPIC: RSDP (v2) → XSDT → MADT.
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

    /// Bytes to write at `base` (16-byte aligned, below 4 GiB); the RSDP is at `base`.
    public static func build(apicIDs: [UInt32], base: UInt64 = BootLayout.acpi,
                             ioapicID: UInt8? = nil, ioapicAddress: UInt32 = BootLayout.ioapic,
                             lapicAddress: UInt32 = BootLayout.lapic) -> [UInt8] {
        let madt = madt(apicIDs: apicIDs, ioapicID: ioapicID ?? UInt8(truncatingIfNeeded: (apicIDs.max() ?? 0) + 1),
                        ioapicAddress: ioapicAddress, lapicAddress: lapicAddress)
        let xsdtOff = 48
        let madtOff = xsdtOff + 48
        var xsdtBody = [UInt8](repeating: 0, count: 8)
        xsdtBody.putLE(base + UInt64(madtOff), at: 0)
        let xsdt = table("XSDT", revision: 1, body: xsdtBody)

        var out = [UInt8](repeating: 0, count: madtOff + madt.count)
        out.putBytes(rsdp(xsdt: base + UInt64(xsdtOff)), at: 0)
        out.putBytes(xsdt, at: xsdtOff)
        out.putBytes(madt, at: madtOff)
        return out
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
