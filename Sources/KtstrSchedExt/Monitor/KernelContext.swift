import Foundation
import KtstrMachine
import KtstrProtocol

/// Why the monitor could not make sense of the guest kernel.
public enum MonitorError: Error, CustomStringConvertible {
    case missingSymbol(String)
    case physBase
    case noBTF(String)
    case layout(BTFError)

    public var description: String {
        switch self {
        case let .missingSymbol(s): "monitor: the agent did not report \(s) — add it to FailureMonitor.requiredSymbols / check /proc/kallsyms in the guest"
        case .physBase: "monitor: could not locate the kernel image in guest RAM (phys_base) — is the RAM mapping the guest's?"
        case let .noBTF(why): "monitor: no kernel BTF: \(why) — boot a kernel with CONFIG_DEBUG_INFO_BTF or pass its vmlinux"
        case let .layout(e): "monitor: \(e)"
        }
    }
}

/// Everything needed to read the guest kernel: how to translate its addresses, its types.
public struct KernelContext: Sendable {
    public static let maxBTF = 64 << 20

    public let space: KernelAddressSpace
    public let btf: BTF
    public let btfSource: String
    public let layout: ScxLayout
    public let symbols: [String: UInt64]

    public init(space: KernelAddressSpace, btf: BTF, btfSource: String, symbols: [String: UInt64]) throws(MonitorError) {
        self.space = space; self.btf = btf; self.btfSource = btfSource; self.symbols = symbols
        do { layout = try ScxLayout(btf: btf) } catch { throw .layout(error) }
    }

    /// Locates the kernel image (phys_base), the direct map (page_offset_base), the kernel
    /// page table (init_top_pgt) and the BTF: from guest RAM first, then `vmlinux`.
    /// `aroundSlowParse` wraps a BTF parse that missed the cache (the monitor pauses the
    /// guest around it, so a scheduler cannot attach and fail unobserved meanwhile).
    public static func resolve(memory: GuestMemory, symbols: [String: UInt64], vmlinux: String?, log: Log,
                               aroundSlowParse: (() -> Void) -> Void = { $0() }) throws(MonitorError) -> KernelContext {
        guard let physSym = symbols["phys_base"] else { throw .missingSymbol("phys_base") }
        guard let physBase = KernelAddressSpace.discoverPhysBase(memory: memory, physBaseSymbol: physSym, startBTF: symbols["__start_BTF"])
        else { throw .physBase }
        let range = KernelAddressSpace.imageRange(symbols: symbols)
        let image = KernelAddressSpace(memory: memory, physBase: physBase, pageOffsetBase: nil, walker: nil, imageRange: range)
        let pob = symbols["page_offset_base"].flatMap { try? image.readPointer(at: $0) }
        // 5-level paging moves the direct map out of the 48-bit canonical range.
        var fiveLevel = pob.map { !PageTableWalker(memory: memory, cr3: 0, fiveLevel: false).isCanonical($0) } ?? false
        if let l5 = symbols["__pgtable_l5_enabled"], let v = try? image.read(UInt32.self, at: l5), v != 0 { fiveLevel = true }
        let walker = symbols["init_top_pgt"].flatMap { image.imageGPA($0) }.map {
            PageTableWalker(memory: memory, cr3: $0, fiveLevel: fiveLevel)
        }
        let space = KernelAddressSpace(memory: memory, physBase: physBase, pageOffsetBase: pob, walker: walker, imageRange: range)
        log.debug("monitor: phys_base=0x\(String(physBase, radix: 16)) page_offset_base=\(pob.map { "0x" + String($0, radix: 16) } ?? "?") levels=\(fiveLevel ? 5 : 4)")

        var why: [String] = []
        if let start = symbols["__start_BTF"], let stop = symbols["__stop_BTF"] {
            if stop > start, stop - start <= UInt64(maxBTF), let g = image.imageGPA(start),
               let bytes = try? memory.readBytes(at: g, count: Int(stop - start)) {
                var parsed: Result<BTF, any Error> = .failure(MonitorError.noBTF("not parsed"))
                if let hit = BTFCache.shared.cached(bytes) {
                    parsed = .success(hit)
                } else {
                    aroundSlowParse { parsed = Result { try BTFCache.shared.parse(bytes) } }
                }
                do { return try KernelContext(space: space, btf: parsed.get(), btfSource: "guest memory (__start_BTF)", symbols: symbols) }
                catch let e as MonitorError { throw e }
                catch { why.append("guest BTF: \(error)") }
            } else {
                why.append("guest BTF range [\(String(start, radix: 16)), \(String(stop, radix: 16))) unreadable")
            }
        } else {
            why.append("__start_BTF/__stop_BTF not reported")
        }
        if let vmlinux {
            do { return try KernelContext(space: space, btf: BTFCache.shared.load(vmlinux: vmlinux), btfSource: "vmlinux .BTF (\(vmlinux))", symbols: symbols) }
            catch let e as MonitorError { throw e }
            catch { why.append("\(error)") }
        }
        throw .noBTF(why.joined(separator: "; "))
    }
}

/// Parsing the kernel's BTF costs ~0.5 s in a debug build (several seconds while qemu TCG
/// saturates the cores), long enough for a fast-failing scheduler to attach and exit before
/// the monitor is ready. Parsed BTF is kept by content (the guest's `__start_BTF` blob and
/// the vmlinux `.BTF` section are byte-identical for the same kernel), so `warmUp` during the
/// boot makes the hello-time setup a memcmp. Parses are serialised: a second caller waits for
/// the first and then hits the cache.
final class BTFCache: @unchecked Sendable {
    static let shared = BTFCache()
    static let capacity = 4
    private let lock = NSLock()
    private var entries: [(bytes: [UInt8], btf: BTF)] = []

    /// The parsed BTF for exactly these bytes, if any; never parses. Waits for a parse in flight.
    func cached(_ bytes: [UInt8]) -> BTF? {
        lock.lock()
        defer { lock.unlock() }
        return lookup(bytes)
    }

    private func lookup(_ bytes: [UInt8]) -> BTF? {
        for e in entries where e.bytes.count == bytes.count {
            let same = e.bytes.withUnsafeBytes { a in bytes.withUnsafeBytes { b in
                a.count == 0 || (a.baseAddress.flatMap { pa in b.baseAddress.map { memcmp(pa, $0, a.count) == 0 } } ?? false)
            } }
            if same { return e.btf }
        }
        return nil
    }

    func parse(_ bytes: [UInt8]) throws -> BTF {
        lock.lock()
        defer { lock.unlock() }
        if let hit = lookup(bytes) { return hit }
        let btf = try BTF(bytes: bytes)
        entries.append((bytes, btf))
        if entries.count > Self.capacity { entries.removeFirst() }
        return btf
    }

    func load(vmlinux path: String) throws -> BTF {
        try parse(ELFSection.read(".BTF", from: path))
    }
}
