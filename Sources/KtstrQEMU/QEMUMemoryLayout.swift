import KtstrMachine

/// Where qemu's `pc` machine puts RAM in guest-physical space, as file offsets of the
/// memory backend: RAM below 4 GiB up to the PCI hole, the rest from 4 GiB.
///
/// From qemu's pc_piix.c (gigabyte-aligned machine types): with RAM ≥ 0xE000_0000 (3.5 GiB)
/// the low part is exactly 3 GiB; otherwise all RAM is below 4 GiB.
public enum QEMUMemoryLayout {
    public static func pc(ramBytes: UInt64) -> [(gpa: UInt64, size: UInt64, fileOffset: UInt64)] {
        let lowMax: UInt64 = ramBytes >= 0xE000_0000 ? 0xC000_0000 : 0xE000_0000
        if ramBytes <= lowMax { return [(0, ramBytes, 0)] }
        return [(0, lowMax, 0), (1 << 32, ramBytes - lowMax, lowMax)]
    }
}
