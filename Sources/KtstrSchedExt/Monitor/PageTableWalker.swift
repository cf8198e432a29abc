import KtstrMachine
import KtstrProtocol

/// Why a kernel virtual address could not be turned into a guest-physical one.
public enum AddressError: Error, CustomStringConvertible, Equatable {
    case nonCanonical(UInt64)
    case notPresent(va: UInt64, level: Int)
    case tableOutOfRAM(va: UInt64, level: Int, gpa: UInt64)
    case pageOutOfRAM(va: UInt64, gpa: UInt64)
    case unmapped(UInt64, why: String)
    case read(UInt64, GuestMemoryError)

    public var description: String {
        func h(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
        return switch self {
        case let .nonCanonical(va): "address \(h(va)) is not canonical — a corrupt pointer"
        case let .notPresent(va, l): "address \(h(va)) is not mapped (level-\(l) entry not present) — a stale or corrupt pointer"
        case let .tableOutOfRAM(va, l, g): "address \(h(va)): level-\(l) table at \(h(g)) is outside guest RAM — corrupt page tables or wrong CR3"
        case let .pageOutOfRAM(va, g): "address \(h(va)) maps to \(h(g)), outside guest RAM — device memory or a corrupt entry"
        case let .unmapped(va, why): "address \(h(va)) cannot be translated: \(why)"
        case let .read(va, e): "address \(h(va)): \(e)"
        }
    }
}

/// x86-64 page-table walk (4- or 5-level) from a top-level table's guest-physical address.
///
/// The walk is a fixed number of steps (one per level), so garbage or self-referencing
/// tables cannot make it loop; every table read goes through `GuestMemory`'s bounds check.
public struct PageTableWalker: Sendable {
    public let memory: GuestMemory
    /// GPA of the top-level table (CR3 with the PCID/flag bits masked off).
    public let root: UInt64
    public let levels: Int

    static let addressMask: UInt64 = 0x000F_FFFF_FFFF_F000
    static let present: UInt64 = 1
    static let pageSize: UInt64 = 1 << 7

    public init(memory: GuestMemory, cr3: UInt64, fiveLevel: Bool) {
        self.memory = memory
        self.root = cr3 & Self.addressMask
        self.levels = fiveLevel ? 5 : 4
    }

    public func isCanonical(_ va: UInt64) -> Bool {
        let bits = levels == 5 ? 57 : 48
        let top = Int64(bitPattern: va) >> (bits - 1)
        return top == 0 || top == -1
    }

    public func translate(_ va: UInt64) throws(AddressError) -> UInt64 {
        guard isCanonical(va) else { throw .nonCanonical(va) }
        var table = root
        for level in stride(from: levels, through: 1, by: -1) {
            let shift = UInt64(12 + 9 * (level - 1))
            let index = (va >> shift) & 0x1FF
            let entryGPA = table &+ index * 8
            let entry: UInt64
            do { entry = try memory.read(UInt64.self, at: entryGPA) } catch { throw .tableOutOfRAM(va: va, level: level, gpa: table) }
            guard entry & Self.present != 0 else { throw .notPresent(va: va, level: level) }
            let frame = entry & Self.addressMask
            // PS at the PDPT (1 GiB) or PD (2 MiB) level ends the walk early.
            if level == 1 || ((level == 2 || level == 3) && entry & Self.pageSize != 0) {
                let pageMask: UInt64 = (1 << shift) - 1
                let gpa = (frame & ~pageMask) | (va & pageMask)
                guard memory.contains(gpa) else { throw .pageOutOfRAM(va: va, gpa: gpa) }
                return gpa
            }
            table = frame
        }
        throw .unmapped(va, why: "walk did not end") // unreachable: level 1 always returns
    }
}
