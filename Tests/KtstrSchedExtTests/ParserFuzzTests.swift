import Foundation
import Testing
@testable import KtstrMachine
@testable import KtstrSchedExt
@testable import KtstrProtocol
import KtstrHost

/// Hostile ELF files, BTF blobs and kallsyms tables: each parser returns a value or throws
/// its typed error, never traps, never loops without bound.
@Suite struct ParserFuzzTests {
    static func timed(_ name: String, _ body: () -> [String]) {
        let clock = ContinuousClock.now
        let problems = body()
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
        print("fuzz \(name): \(Fuzz.iterations) inputs per seed in \(ContinuousClock.now - clock)")
    }

    // MARK: ELF sections

    /// ELF64 header, the section names, a `.BTF` section, then the section header table
    /// (null, .shstrtab, .BTF).
    static func elfWithBTF(_ btf: [UInt8]) -> [UInt8] {
        let names = Array("\0.shstrtab\0.BTF\0".utf8)
        let namesOff = 64, btfOff = namesOff + names.count
        let shoff = (btfOff + btf.count + 7) & ~7
        var b = [UInt8](repeating: 0, count: shoff + 3 * 64)
        b.putBytes([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], at: 0)
        b.putLE(UInt16(2), at: 16); b.putLE(UInt16(62), at: 18)
        b.putLE(UInt64(shoff), at: 0x28); b.putLE(UInt16(64), at: 0x3A); b.putLE(UInt16(3), at: 0x3C); b.putLE(UInt16(1), at: 0x3E)
        b.putBytes(names, at: namesOff)
        b.putBytes(btf, at: btfOff)
        for (i, (name, off, size)) in [(UInt32(1), namesOff, names.count), (11, btfOff, btf.count)].enumerated() {
            let h = shoff + (i + 1) * 64
            b.putLE(name, at: h); b.putLE(UInt32(3), at: h + 4)
            b.putLE(UInt64(off), at: h + 0x18); b.putLE(UInt64(size), at: h + 0x20)
        }
        return b
    }

    @Test func elfSectionMutants() throws {
        let btf = SyntheticGuest.kernelBTF().blob()
        let seed = Self.elfWithBTF(btf)
        #expect(try ELFSection.read(".BTF", from: seed) == btf)
        let shoff = (64 + 16 + btf.count + 7) & ~7
        var hot = [4, 5, 0x28, 0x2C, 0x3A, 0x3C, 0x3E]
        for h in [shoff + 64, shoff + 128] { hot += [h, h + 0x18, h + 0x1C, h + 0x20, h + 0x24] }
        Self.timed("ELF sections") {
            Fuzz.run("ELF .BTF", seed: seed, baseSeed: 0xE1F5_EC00, hotOffsets: hot) { b in
                do {
                    let s = try ELFSection.read(".BTF", from: b)
                    guard s.count <= b.count else { return "section of \(s.count) bytes from a \(b.count)-byte file" }
                } catch {} // typed: ELFSectionError
                return nil
            }
        }
    }

    /// Found by reading: a section offset ≥ 2^63 trapped in off_t(_:) (the file path).
    @Test func sectionOffsetPastOffTIsCorrupt() throws {
        let btf = SyntheticGuest.kernelBTF().blob()
        var b = Self.elfWithBTF(btf)
        let shoff = (64 + 16 + btf.count + 7) & ~7
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ktstr-elf-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for (field, value) in [(shoff + 128 + 0x18, UInt64(1) << 63), (shoff + 128 + 0x18, UInt64.max),
                               (shoff + 128 + 0x18, UInt64(Int64.max) - 2), (0x28, UInt64.max)] {
            var m = b
            m.putLE(value, at: field)
            let p = dir.appendingPathComponent("vmlinux").path
            try Data(m).write(to: URL(fileURLWithPath: p))
            #expect(throws: ELFSectionError.self) { try ELFSection.read(".BTF", from: p) }
            #expect(throws: ELFSectionError.self) { try ELFSection.read(".BTF", from: m) }
        }
        // A size the file cannot hold is refused before anything is allocated.
        b.putLE(UInt64(200 << 20), at: shoff + 128 + 0x20)
        #expect(throws: ELFSectionError.self) { try ELFSection.read(".BTF", from: b) }
    }

    // MARK: BTF

    /// Queries the monitor makes, run on every BTF that parses.
    static func query(_ btf: BTF) -> String? {
        guard btf.types.first?.kind == .void else { return "type 0 is not void" }
        for id in 0..<UInt32(btf.types.count) {
            _ = try? btf.resolve(id)
            if let s = try? btf.size(of: id), s < 0 { return "type \(id) has size \(s)" }
            _ = btf.name(of: id)
            _ = btf.sectionVariables(id)
            if btf.type(id)?.kind == .datasec { _ = BPFMapReader.decode(btf: btf, datasec: id, bytes: Array(repeating: 0xA5, count: 24)) }
            if let t = btf.type(id), t.kind == .struct || t.kind == .union {
                for m in t.members.prefix(8) { _ = try? btf.member(btf.string(at: m.nameOffset), in: id) }
            }
        }
        for (path, s) in [("exit_kind", "scx_sched"), ("exit_info", "scx_sched"), ("scx.nr_running", "rq"), ("idr_rt.xa_head", "idr"),
                          ("name", "bpf_ksym"), ("value", "bpf_array"), ("lnode", "bpf_ksym"), ("scx.runnable_node", "task_struct")] {
            if let f = try? btf.field(path, in: s), f.offset < 0 || f.size < 0 { return "\(s).\(path) at \(f.offset) size \(f.size)" }
        }
        _ = try? btf.enumValues("scx_exit_kind")
        _ = btf.enumerator("SCX_EXIT_ERROR_STALL")
        _ = btf.enumerators(withPrefix: "SCX_EFLAG_")
        _ = try? btf.size(ofTypeNamed: "bpf_map")
        return nil
    }

    @Test func btfMutants() {
        let kernel = SyntheticGuest.kernelBTF().blob()
        let program = SyntheticGuest.programBTF().blob
        Self.timed("BTF") {
            var problems: [String] = []
            for (name, seed, baseSeed) in [("kernel BTF", kernel, UInt64(0xB7F0_0001)), ("program BTF", program, 0xB7F0_0002)] {
                // Header fields, then the first type records.
                let hot = [0, 1, 2, 4, 8, 12, 16, 20] + (0..<24).map { 24 + 4 * $0 }
                problems += Fuzz.run(name, seed: seed, baseSeed: baseSeed, hotOffsets: hot) { b in
                    do throws(BTFError) { return Self.query(try BTF(bytes: b)) } catch { return nil }
                }
            }
            return problems
        }
    }

    /// Hostile but well-formed BTF: a struct holding many anonymous members of its own type
    /// made `member(_:in:)` take (members)^8 steps.
    @Test func selfNestedAnonymousMembersAreBounded() throws {
        var b = BTFBuilder()
        let u32 = b.int("unsigned int", size: 4)
        // Type 2 is the struct; every anonymous member refers to type 2 itself.
        let members = [("x", u32, 0)] + (0..<200).map { _ in ("", UInt32(2), UInt32(0)) }
        _ = b.structure("loop", size: 4, members: members)
        let btf = try BTF(bytes: b.blob())
        let clock = ContinuousClock.now
        #expect(throws: BTFError.self) { try btf.field("nope", in: "loop") }
        #expect(ContinuousClock.now - clock < .seconds(5))
    }

    // MARK: kallsyms

    @Test func guestKallsymsMutants() throws {
        let (space, sym, syms) = try KernelSymbolsTests.guestTables()
        let k: UInt64 = 0xFFFF_FFFF_8200_0000
        let gpa = k - KernelAddressSpace.startKernelMap
        let tableBytes = 0x9000 + syms.count * 4
        let seed = try space.memory.readBytes(at: gpa, count: tableBytes)
        // num_syms, token index entries, markers, the first offsets, the first names.
        let hot = [0, 1, 2, 3, 0x100, 0x101, 0x1FE, 0x8000, 0x8004, 0x9000, 0x9004, 0x9400, 0x1000, 0x1001, 0x1005]
        let names = GuestKallsyms.symbolNames + ["kallsyms_relative_base"]
        let probes: [UInt64] = [0xFFFF_FFFF_8100_0000, 0xFFFF_FFFF_8100_0000 + 7 * 0x100 + 0x42,
                                0xFFFF_FFFF_8100_0000 + 302 * 0x100, 0, .max, 0xFFFF_FFFF_8100_FFFF]
        Self.timed("guest kallsyms") {
            Fuzz.run("kallsyms tables", seed: seed, baseSeed: 0x6A11_5000, hotOffsets: hot) { b in
                var rng = SplitMix64(seed: UInt64(b.count) &* 31 &+ UInt64(b.first ?? 0))
                try? space.memory.write(b, at: gpa)
                // Some inputs also move a table symbol somewhere hostile.
                var s = sym
                if Int.random(in: 0..<4, using: &rng) == 0 {
                    let n = names.randomElement(using: &rng)!
                    s[n] = Bool.random(using: &rng) ? Fuzz.boundaries.randomElement(using: &rng)! : k &+ UInt64.random(in: 0..<0x20000, using: &rng)
                }
                guard let g = GuestKallsyms(symbols: s, space: space) else { return nil }
                for a in probes { _ = g.symbolize(a) }
                return nil
            }
        }
        try space.memory.write(seed, at: gpa)
    }

    /// Found by reading: a hostile `kallsyms_token_table` address near 2^64 trapped in
    /// `table + offset` while reading the tokens.
    @Test func tokenTableAddressNearTheTop() throws {
        let (space, sym, _) = try KernelSymbolsTests.guestTables()
        for v: UInt64 in [.max, .max - 1, 0xFFFF_FFFF_FFFF_FF00] {
            var s = sym
            s["kallsyms_token_table"] = v
            #expect(GuestKallsyms(symbols: s, space: space) == nil)
        }
    }

    @Test func systemMapMutants() {
        var text = ""
        for i in 0..<64 { text += String(0xFFFF_FFFF_8100_0000 + UInt64(i) * 0x40, radix: 16) + " \(i % 3 == 0 ? "t" : "T") fn\(i)\n" }
        text += "ffffffff82000000 D scx_root\nffffffff81001000 T mod_func\t[ext4]\n"
        let probes: [UInt64] = [0, .max, 0xFFFF_FFFF_8100_0000, 0xFFFF_FFFF_8100_0041, 0xFFFF_FFFF_8200_0000]
        Self.timed("System.map") {
            Fuzz.run("System.map", seed: Array(text.utf8), baseSeed: 0x5757_3A90) { b in
                let s = KernelSymbols(systemMap: String(decoding: b, as: UTF8.self))
                for a in probes {
                    guard let r = s.symbolize(a) else { continue }
                    guard r.contains("+0x") else { return "symbolized \(a) as \(r)" }
                }
                return nil
            }
        }
    }

    // MARK: page tables

    /// Random page-table contents and CR3 values: every walk ends in a GPA inside RAM or an
    /// AddressError.
    @Test func pageTableWalkMutants() throws {
        let mem = try GuestMemory.anonymous(layout: [(0, 1 << 20)])
        Self.timed("page-table walk") {
            var problems: [String] = []
            for i in 0..<Fuzz.iterations {
                var rng = SplitMix64(seed: 0x9A6E_0000 ^ UInt64(i))
                // Scatter entries: present, huge, pointing in and out of RAM.
                for _ in 0..<16 {
                    let slot = UInt64.random(in: 0..<(1 << 17), using: &rng) * 8
                    let e = Bool.random(using: &rng) ? Fuzz.boundaries.randomElement(using: &rng)!
                        : (UInt64.random(in: 0..<(1 << 20), using: &rng) & ~0xFFF) | UInt64.random(in: 0..<0x200, using: &rng)
                    try? mem.write(e, at: slot)
                }
                let cr3 = Bool.random(using: &rng) ? UInt64.random(in: 0..<(1 << 20), using: &rng) : rng.next()
                let w = PageTableWalker(memory: mem, cr3: cr3, fiveLevel: Bool.random(using: &rng))
                for _ in 0..<4 {
                    let va = Bool.random(using: &rng) ? rng.next() : Fuzz.boundaries.randomElement(using: &rng)!
                    if let g = try? w.translate(va), !mem.contains(g) { problems.append("iteration \(i): 0x\(String(va, radix: 16)) → 0x\(String(g, radix: 16)) outside RAM") }
                }
                if problems.count >= 10 { break }
            }
            return problems
        }
    }
}

/// Issue 10: a kernel whose BTF has no sched_ext is refused before boot, by the CLI in one
/// line with a non-zero status. The kernel is the real bzImage with a synthetic `vmlinux`
/// next to it whose BTF lacks `scx_sched` and `sched_ext_ops` (as a kernel built without
/// CONFIG_SCHED_CLASS_EXT).
@Suite struct KernelWithoutSchedExtCLITests {
    static let ktstr: String = {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return root.appendingPathComponent(".build/debug/ktstr").path
    }()
    static let skip: String? = {
        guard FileManager.default.isExecutableFile(atPath: ktstr) else { return "needs a built `ktstr` (swift build)" }
        do { _ = try Provisioning.kernel() } catch { return "\(error)" }
        return nil
    }()

    @Test(.enabled(if: skip == nil, Comment(rawValue: skip ?? "")))
    func theCLIRefusesItInOneLine() throws {
        let dir = NSTemporaryDirectory() + "ktstr-noscx-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createSymbolicLink(atPath: dir + "/vmlinuz", withDestinationPath: try Provisioning.kernel().image)
        var b = BTFBuilder()
        let u32 = b.int("unsigned int", size: 4)
        _ = b.structure("task_struct", size: 8, members: [("pid", u32, 0)])
        try #require(FileManager.default.createFile(atPath: dir + "/vmlinux", contents: Data(ParserFuzzTests.elfWithBTF(b.blob()))))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.ktstr)
        p.arguments = ["run", "--kernel", dir + "/vmlinuz", "--scheduler", "simple", "--duration", "1"]
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 1, "\(text)")
        let lines = text.split(separator: "\n").filter { !$0.hasPrefix("==>") && !$0.hasPrefix("ktstr[") }
        #expect(lines.count == 1 && lines.first?.contains("no sched_ext") == true, "\(text)")
        #expect(QEMUFreeCheck.noQEMU(of: p.processIdentifier), "a VM was started")
    }
}

/// No qemu was started on behalf of `pid` (its machines are named `ktstr-<pid>-...`).
enum QEMUFreeCheck {
    static func noQEMU(of pid: pid_t) -> Bool {
        !((try? FileManager.default.contentsOfDirectory(atPath: "/dev/shm")) ?? []).contains { $0.hasPrefix("ktstr-\(pid)-") }
    }
}
