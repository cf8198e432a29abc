import Foundation
import Testing
@testable import KtstrMachine
@testable import KtstrSchedExt
@testable import KtstrProtocol
@testable import KtstrVMM
@testable import KtstrFixtures

/// Builds a BTF blob byte by byte, the way the kernel lays it out.
struct BTFBuilder {
    var types: [UInt8] = []
    var strings: [UInt8] = [0]
    private(set) var count: UInt32 = 0

    mutating func str(_ s: String) -> UInt32 {
        if s.isEmpty { return 0 }
        let off = UInt32(strings.count)
        strings += Array(s.utf8) + [0]
        return off
    }
    mutating func u32(_ v: UInt32) { types += withUnsafeBytes(of: v.littleEndian, Array.init) }
    @discardableResult
    mutating func type(_ name: String, kind: UInt32, vlen: UInt32 = 0, kflag: Bool = false, sizeOrType: UInt32, extra: [UInt32] = []) -> UInt32 {
        let n = str(name)
        u32(n); u32((kflag ? 1 << 31 : 0) | kind << 24 | vlen); u32(sizeOrType)
        for e in extra { u32(e) }
        count += 1
        return count
    }
    mutating func int(_ name: String, size: UInt32, signed: Bool = false) -> UInt32 {
        type(name, kind: 1, sizeOrType: size, extra: [(signed ? 1 << 24 : 0) | size * 8])
    }
    mutating func structure(_ name: String, size: UInt32, union: Bool = false, kflag: Bool = false, members: [(String, UInt32, UInt32)]) -> UInt32 {
        var extra: [UInt32] = []
        for (n, t, off) in members { extra += [str(n), t, off] }
        return type(name, kind: union ? 5 : 4, vlen: UInt32(members.count), kflag: kflag, sizeOrType: size, extra: extra)
    }
    mutating func enumeration(_ name: String, _ values: [(String, Int32)]) -> UInt32 {
        var extra: [UInt32] = []
        for (n, v) in values { extra += [str(n), UInt32(bitPattern: v)] }
        return type(name, kind: 6, vlen: UInt32(values.count), kflag: true, sizeOrType: 4, extra: extra)
    }
    func blob() -> [UInt8] {
        var b: [UInt8] = []
        func put(_ v: UInt32) { b += withUnsafeBytes(of: v.littleEndian, Array.init) }
        b += [0x9F, 0xEB, 1, 0]
        put(24); put(0); put(UInt32(types.count)); put(UInt32(types.count)); put(UInt32(strings.count))
        return b + types + strings
    }
}

@Suite struct BTFTests {
    /// A miniature of the kernel's scx types: typedef/volatile chains, an anonymous union,
    /// a bitfield struct, an enum with a kind newer than our fallback table.
    static func sample() throws -> BTF {
        var b = BTFBuilder()
        let u32 = b.int("unsigned int", size: 4)                        // 1
        let s64 = b.int("long long", size: 8, signed: true)             // 2
        let chr = b.int("char", size: 1, signed: true)                  // 3
        let pchr = b.type("", kind: 2, sizeOrType: chr)                 // 4 char *
        let td = b.type("u32", kind: 8, sizeOrType: u32)                // 5 typedef
        let vol = b.type("", kind: 9, sizeOrType: td)                   // 6 volatile u32
        let atomic = b.structure("atomic_t", size: 4, members: [("counter", vol, 0)])
        let ei = b.structure("scx_exit_info", size: 56, members: [
            ("kind", u32, 0), ("exit_cpu", u32, 32), ("exit_code", s64, 64), ("reason", pchr, 192), ("msg", pchr, 320),
        ])
        let pei = b.type("", kind: 2, sizeOrType: ei)
        let arr = b.type("", kind: 3, sizeOrType: 0, extra: [chr, u32, 16])
        let anon = b.structure("", size: 8, union: true, members: [("value", arr, 0), ("ptrs", pchr, 0)])
        let bits = b.structure("flags", size: 4, kflag: true, members: [("a", u32, 3 << 24 | 0), ("b", u32, 5 << 24 | 3)])
        _ = b.structure("scx_sched", size: 64, members: [
            ("name", arr, 0), ("exit_kind", atomic, 128), ("exit_info", pei, 192), ("", anon, 256), ("fl", bits, 320),
        ])
        _ = b.enumeration("scx_exit_kind", [("SCX_EXIT_NONE", 0), ("SCX_EXIT_ERROR", 1024), ("SCX_EXIT_ERROR_STALL", 1026), ("SCX_EXIT_ERROR_RESCUE", 1028)])
        _ = b.type("scx_exit_info", kind: 7, sizeOrType: 0) // a FWD with the same name must not win
        return try BTF(bytes: b.blob())
    }

    @Test func offsetsSizesAndPaths() throws {
        let btf = try Self.sample()
        #expect(try btf.offset(of: "exit_info", in: "scx_sched") == 24)
        #expect(try btf.offset(of: "exit_kind.counter", in: "scx_sched") == 16)
        #expect(try btf.field("exit_kind", in: "scx_sched").size == 4)
        #expect(try btf.offset(of: "value", in: "scx_sched") == 32) // through the anonymous union
        #expect(try btf.field("name", in: "scx_sched").size == 16)
        #expect(try btf.offset(of: "msg", in: "scx_exit_info") == 40)
        #expect(try btf.size(ofTypeNamed: "scx_exit_info") == 56)
        let counter = try btf.field("exit_kind.counter", in: "scx_sched")
        #expect(btf.type(try btf.resolve(counter.type))?.kind == .int)
        #expect(throws: BTFError.self) { try btf.offset(of: "nope", in: "scx_sched") }
        #expect(throws: BTFError.bitfield("fl.b")) { try btf.offset(of: "fl.b", in: "scx_sched") }
        let b = try #require(try btf.member("b", in: btf.compositeID(named: "flags") ?? 0))
        #expect(b.bitOffset == 3 && b.member.bitfieldSize == 5)
    }

    @Test func enumNamesIncludeKindsNewerThanTheFallbackTable() throws {
        let btf = try Self.sample()
        let kinds = try btf.enumValues("scx_exit_kind")
        #expect(kinds[1026] == "SCX_EXIT_ERROR_STALL")
        #expect(ExitKind.fromEnumerator(kinds[1028] ?? "") == "error_rescue")
        #expect(btf.enumerator("SCX_EXIT_ERROR") == 1024)
    }

    @Test func everyTruncationThrows() throws {
        var b = BTFBuilder()
        let i = b.int("int", size: 4, signed: true)
        _ = b.structure("s", size: 8, members: [("x", i, 0), ("y", i, 32)])
        let blob = b.blob()
        _ = try BTF(bytes: blob)
        for n in 0..<blob.count {
            // Cutting the blob anywhere must throw, never trap.
            #expect(throws: BTFError.self) { try BTF(bytes: Array(blob[0..<n])) }
        }
    }

    @Test func hostileHeadersAndRecordsThrow() throws {
        var good = BTFBuilder()
        _ = good.int("int", size: 4)
        var blob = good.blob()
        blob[0] = 0
        #expect(throws: BTFError.badMagic(0xEB00)) { try BTF(bytes: blob) }
        blob = good.blob()
        blob[12] = 0xFF; blob[13] = 0xFF; blob[14] = 0xFF; blob[15] = 0xFF // type_len = 4 GiB
        #expect(throws: BTFError.self) { try BTF(bytes: blob) }
        // vlen of 16M members in a tiny blob: refused before allocating.
        var big = BTFBuilder()
        big.type("s", kind: 4, vlen: 0xFF_FFFF, sizeOrType: 4)
        #expect(throws: BTFError.self) { try BTF(bytes: big.blob()) }
        var unknown = BTFBuilder()
        unknown.type("x", kind: 99, sizeOrType: 0)
        #expect(throws: BTFError.unknownKind(99, typeID: 1)) { try BTF(bytes: unknown.blob()) }
        // A typedef loop ends in an error, not a hang.
        var loop = BTFBuilder()
        loop.type("a", kind: 8, sizeOrType: 2)
        loop.type("b", kind: 8, sizeOrType: 1)
        let btf = try BTF(bytes: loop.blob())
        #expect(throws: BTFError.chainTooLong(1)) { try btf.resolve(1) }
        #expect(throws: BTFError.self) { try btf.size(of: 1) }
    }

    @Test func everyKindParses() throws {
        var b = BTFBuilder()
        let i = b.int("int", size: 4, signed: true)                                       // 1
        let flt = b.type("double", kind: 16, sizeOrType: 8)                                // 2 FLOAT
        let cst = b.type("", kind: 10, sizeOrType: i)                                      // 3 CONST
        let tag = b.type("rcu", kind: 18, sizeOrType: cst)                                 // 4 TYPE_TAG
        let ptr = b.type("", kind: 2, sizeOrType: tag)                                     // 5 PTR
        let rst = b.type("", kind: 11, sizeOrType: ptr)                                    // 6 RESTRICT
        let proto = b.type("", kind: 13, vlen: 2, sizeOrType: i, extra: [b.str("a"), rst, b.str("b"), flt]) // 7 FUNC_PROTO
        let fn = b.type("do_thing", kind: 12, sizeOrType: proto, extra: [])               // 8 FUNC
        _ = b.type("noinline", kind: 17, sizeOrType: fn, extra: [UInt32(bitPattern: -1)]) // 9 DECL_TAG
        let e64 = b.type("big", kind: 19, vlen: 1, kflag: true, sizeOrType: 8,
                         extra: [b.str("BIG_NEG"), 0xFFFF_FFFE, 0xFFFF_FFFF])             // 10 ENUM64 = -2
        _ = b.type("later", kind: 7, sizeOrType: 0)                                        // 11 FWD
        let v = b.type("counter", kind: 14, sizeOrType: i, extra: [1])                     // 12 VAR
        _ = b.type(".data", kind: 15, vlen: 1, sizeOrType: 4, extra: [v, 0, 4])            // 13 DATASEC
        _ = b.structure("holder", size: 16, members: [("p", rst, 0), ("e", e64, 64)])
        let btf = try BTF(bytes: b.blob())
        #expect(btf.types.map(\.kind) == [.void, .int, .float, .const, .typeTag, .ptr, .restrict, .funcProto, .func, .declTag, .enum64, .fwd, .var, .datasec, .struct])
        #expect(try btf.size(of: flt) == 8 && btf.resolve(tag) == i && btf.resolve(rst) == ptr)
        #expect(btf.type(proto)?.members.map { btf.string(at: $0.nameOffset) } == ["a", "b"])
        #expect(btf.type(9)?.extra == -1)
        #expect(try btf.enumValues("big") == [-2: "BIG_NEG"])
        #expect(btf.sectionVariables(13).map(\.name) == ["counter"])
        #expect(try btf.field("e", in: "holder").size == 8)
        #expect(btf.compositeID(named: "later") == nil) // a FWD is not a definition
    }

    /// Random byte flips in a valid blob: every outcome is a parse or a typed error, and every
    /// query on what parsed terminates.
    @Test func flippedBytesNeverCrashOrHang() throws {
        let blob = SyntheticGuest.kernelBTF().blob()
        var rng = SystemRandomNumberGenerator()
        var parsed = 0
        for _ in 0..<300 {
            var b = blob
            for _ in 0..<Int.random(in: 1...8, using: &rng) {
                b[Int.random(in: 0..<b.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            }
            guard let btf = try? BTF(bytes: b) else { continue }
            parsed += 1
            for id in 0..<UInt32(btf.types.count) { _ = try? btf.size(of: id); _ = try? btf.resolve(id) }
            _ = try? ScxLayout(btf: btf)
            _ = try? btf.enumValues("scx_exit_kind")
        }
        #expect(parsed > 0) // some flips land in names/values and still parse: the queries ran
    }

    @Test func corruptELFFilesThrow() throws {
        let path = NSTemporaryDirectory() + "ktstr-elf-test-\(getpid())"
        defer { unlink(path) }
        for blob: [UInt8] in [[], Array("not an elf at all".utf8), [0x7F, 0x45, 0x4C, 0x46, 2, 1] + [UInt8](repeating: 0xFF, count: 58)] {
            _ = FileManager.default.createFile(atPath: path, contents: Data(blob))
            #expect(throws: ELFSectionError.self) { try ELFSection.read(".BTF", from: path) }
        }
        #expect(throws: ELFSectionError.self) { try ELFSection.read(".BTF", from: "/nonexistent/vmlinux") }
    }

    static let vmlinux = "/root/.cache/ktstr/kernels/7.3.4+deb13-cloud-amd64/vmlinux"

    @Test(.enabled(if: FileManager.default.fileExists(atPath: vmlinux), "no cached vmlinux: run `swift run ktstr setup`"))
    func realKernelBTF() throws {
        let btf = try BTF.load(vmlinux: Self.vmlinux)
        #expect(btf.types.count > 10000)
        let kinds = try btf.enumValues("scx_exit_kind")
        #expect(kinds[1026] == "SCX_EXIT_ERROR_STALL")
        #expect(kinds[1025] == "SCX_EXIT_ERROR_BPF")
        let ei = try btf.offset(of: "exit_info", in: "scx_sched")
        let ek = try btf.offset(of: "exit_kind", in: "scx_sched")
        #expect(ei > 0 && ek > 0 && ei != ek)
        #expect(try btf.field("exit_kind", in: "scx_sched").size == 4)
        // Layout of scx_exit_info in 7.3: kind, exit_cpu, exit_code, flags, reason, bt, bt_len, msg, dump.
        #expect(try btf.offset(of: "kind", in: "scx_exit_info") == 0)
        #expect(try btf.offset(of: "exit_code", in: "scx_exit_info") == 8)
        #expect(try btf.offset(of: "msg", in: "scx_exit_info") > btf.offset(of: "bt_len", in: "scx_exit_info"))
        #expect(try btf.field("scx.nr_running", in: "rq").size == 4)
        #expect(try btf.field("comm", in: "task_struct").size == 16)
        #expect(try btf.offset(of: "value", in: "bpf_array") > 0)
        #expect(try btf.offset(of: "idr_rt.xa_head", in: "idr") >= 0)
        #expect(btf.enumerators(withPrefix: "SCX_EFLAG_").contains { $0.name == "SCX_EFLAG_INITIALIZED" && $0.value == 1 })
        // Everything the monitor reads resolves on the real kernel.
        let layout = try ScxLayout(btf: btf)
        #expect(layout.perCPU != nil, "\(layout.perCPUProblem ?? "")")
        #expect(layout.maps != nil, "\(layout.mapsProblem ?? "")")
        #expect(layout.maps?.slotCount == 64)
        #expect(layout.perCPU?.runnableList?.taskDSQ != nil && layout.perCPU?.runnableList?.dsqID != nil)
        #expect(layout.perCPU?.localDSQDepth != nil && layout.perCPU?.rqClock != nil && layout.perCPU?.scxClock != nil)
        #expect(layout.schedOpsName != nil && layout.eiExitCPU != nil)
        #expect(layout.maps?.typeNames[2] == "BPF_MAP_TYPE_ARRAY")
    }
}
