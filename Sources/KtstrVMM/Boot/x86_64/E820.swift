import KtstrMachine

/// One BIOS e820 memory-map entry as the zero page stores it (20 bytes, packed).
public struct E820Entry: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: UInt32, Sendable { case ram = 1, reserved = 2, acpi = 3, nvs = 4, unusable = 5 }
    public var address: UInt64
    public var size: UInt64
    public var kind: Kind

    public init(address: UInt64, size: UInt64, kind: Kind) {
        self.address = address; self.size = size; self.kind = kind
    }

    public var end: UInt64 { address + size }
    public var description: String {
        "[0x\(String(address, radix: 16)), 0x\(String(end, radix: 16))) \(kind)"
    }

    public static let byteSize = 20
    public var bytes: [UInt8] {
        var b = [UInt8](repeating: 0, count: Self.byteSize)
        b.putLE(address, at: 0); b.putLE(size, at: 8); b.putLE(kind.rawValue, at: 16)
        return b
    }
}

/// The memory map the guest sees: low RAM up to the EBDA, the EBDA/VGA/BIOS hole reserved,
/// RAM from 1 MiB to min(top, 3 GiB), and the rest above the 4 GiB line.
public enum E820 {
    public static func map(memoryBytes: UInt64) -> [E820Entry] {
        var out = [
            E820Entry(address: 0, size: BootLayout.ebda, kind: .ram),
            E820Entry(address: BootLayout.ebda, size: BootLayout.highMemory - BootLayout.ebda, kind: .reserved),
        ]
        let lowTop = min(memoryBytes, BootLayout.mmioGapStart)
        if lowTop > BootLayout.highMemory {
            out.append(E820Entry(address: BootLayout.highMemory, size: lowTop - BootLayout.highMemory, kind: .ram))
        }
        if memoryBytes > lowTop {
            out.append(E820Entry(address: BootLayout.mmioGapEnd, size: memoryBytes - lowTop, kind: .ram))
        }
        return out
    }
}
