import KtstrMachine

/// A segment register's hidden cache as KVM's `kvm_segment` holds it, derived from a GDT
/// descriptor so the loaded selectors and caches can never disagree.
public struct SegmentState: Sendable, Equatable {
    public var base: UInt64
    public var limit: UInt32
    public var selector: UInt16
    public var type: UInt8
    public var present: Bool
    public var dpl: UInt8
    public var db: Bool
    public var s: Bool
    public var l: Bool
    public var g: Bool
    public var avl: Bool
    public var unusable: Bool { !present }

    /// Decodes an 8-byte descriptor (limit scaled by G, as the CPU caches it).
    public init(descriptor d: UInt64, selector: UInt16) {
        let rawLimit = UInt32(d & 0xffff) | UInt32((d >> 48) & 0xf) << 16
        g = (d >> 55) & 1 == 1
        limit = g ? (rawLimit << 12) | 0xfff : rawLimit
        base = (d >> 16) & 0xff_ffff | ((d >> 56) & 0xff) << 24
        type = UInt8((d >> 40) & 0xf)
        s = (d >> 44) & 1 == 1
        dpl = UInt8((d >> 45) & 3)
        present = (d >> 47) & 1 == 1
        avl = (d >> 52) & 1 == 1
        l = (d >> 53) & 1 == 1
        db = (d >> 54) & 1 == 1
        self.selector = selector
    }
}

/// The boot GDT. The 64-bit boot protocol requires flat segments at __BOOT_CS (0x10,
/// execute/read) and __BOOT_DS (0x18, read/write); entry 4 is a TSS so TR is valid.
public enum GDT {
    public static let null: UInt64 = 0
    /// 64-bit code: P, DPL0, S, type 0xb (exec/read, accessed), L, G, limit 0xfffff.
    public static let code64: UInt64 = 0x00af_9b00_0000_ffff
    /// Data: P, DPL0, S, type 0x3 (read/write, accessed), D/B, G.
    public static let data: UInt64 = 0x00cf_9300_0000_ffff
    /// 64-bit TSS (busy, type 0xb), base 0: the kernel loads its own before using it.
    public static let tss: UInt64 = 0x008f_8b00_0000_ffff

    public static let codeSelector: UInt16 = 0x10
    public static let dataSelector: UInt16 = 0x18
    public static let tssSelector: UInt16 = 0x20

    public static let entries: [UInt64] = [null, null, code64, data, tss]
    public static var limit: UInt16 { UInt16(entries.count * 8 - 1) }

    public static var bytes: [UInt8] {
        var b = [UInt8](repeating: 0, count: entries.count * 8)
        for (i, e) in entries.enumerated() { b.putLE(e, at: i * 8) }
        return b
    }

    public static func segment(_ selector: UInt16) -> SegmentState {
        SegmentState(descriptor: entries[Int(selector >> 3)], selector: selector)
    }
}
