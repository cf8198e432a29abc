import Testing
@testable import KtstrProtocol

/// The plan request a restored agent reads (PROTOCOLS.md "Plan request") and the newc reader
/// it unpacks with: round trips, every bound, unsafe paths.
@Suite struct PlanRequestTests {
    /// A newc archive written by hand (KtstrProtocol has no writer; the host's Initramfs is
    /// checked against this reader in KtstrHostTests).
    static func newc(_ records: [(name: String, mode: UInt32, data: [UInt8])]) -> [UInt8] {
        var out: [UInt8] = []
        func hex(_ v: UInt32) -> [UInt8] { Array(String(v, radix: 16, uppercase: true).leftPad(8).utf8) }
        for (k, r) in (records + [("TRAILER!!!", 0, [])]).enumerated() {
            let name = Array(r.name.utf8) + [0]
            out += Array("070701".utf8)
            for f in [UInt32(k + 1), r.mode, 0, 0, 1, 0, UInt32(r.data.count), 0, 0, 0, 0, UInt32(name.count), 0] { out += hex(f) }
            out += name
            while out.count % 4 != 0 { out.append(0) }
            out += r.data
            while out.count % 4 != 0 { out.append(0) }
        }
        return out
    }

    static let sample = newc([("ktstr", 0o040755, []), ("ktstr/plan.json", 0o100644, Array("{}".utf8)),
                              ("/ktstr/bin/scheduler", 0o100755, [0x7f, 0x45, 0x4c, 0x46]),
                              ("boot/config-7.3", 0o120777, Array("/ktstr/kconfig".utf8))])

    @Test func requestRoundTrips() throws {
        let r = PlanRequest(realtimeSeconds: 1_764_000_000, realtimeNanoseconds: 999_999_999,
                            entropy: (0..<64).map { UInt8($0) }, archive: Self.sample)
        let bytes = r.encoded()
        #expect(bytes.count == PlanRequest.headerBytes + 64 + Self.sample.count)
        #expect(try PlanRequest.decode(bytes).get() == r)
        let h = try PlanRequest.decodeHeader(Array(bytes.prefix(PlanRequest.headerBytes))).get()
        #expect(h.entropyBytes == 64 && h.archiveBytes == Self.sample.count && h.realtimeSeconds == 1_764_000_000)
    }

    @Test func headerBoundsAreChecked() {
        let ok = PlanRequest(realtimeSeconds: 1, realtimeNanoseconds: 0, entropy: [1], archive: []).encoded()
        func with(_ at: Int, _ value: UInt64, width: Int) -> [UInt8] {
            var b = ok
            for i in 0..<width { b[at + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
            return b
        }
        #expect(PlanRequest.decodeHeader(Array(ok.prefix(31))) == .failure(.short(31)))
        var bad = ok; bad[0] = 0x41
        #expect(PlanRequest.decodeHeader(bad) == .failure(.badMagic))
        #expect(PlanRequest.decodeHeader(with(16, 1_000_000_000, width: 4)) == .failure(.badTime))
        #expect(PlanRequest.decodeHeader(with(8, UInt64.max, width: 8)) == .failure(.badTime))
        #expect(PlanRequest.decodeHeader(with(20, 513, width: 4)) == .failure(.entropyTooLong(513)))
        #expect(PlanRequest.decodeHeader(with(24, UInt64.max, width: 8)) == .failure(.archiveTooLong(UInt64.max)))
        #expect(PlanRequest.decode(ok + [0]) == .failure(.bodyLength(expected: 1, got: 2)))
    }

    @Test func archiveEntriesAreMadeSafe() throws {
        let entries = try NewcArchive.entries(Self.sample).get()
        #expect(entries.map(\.path) == ["/ktstr", "/ktstr/plan.json", "/ktstr/bin/scheduler", "/boot/config-7.3"])
        #expect(entries.map(\.kind) == [.directory, .file, .file, .symlink(target: "/ktstr/kconfig")])
        #expect(entries[2].permissions == 0o755)
        #expect(Array(Self.sample[entries[1].data]) == Array("{}".utf8))
        // The root entry is skipped, "." parts dropped.
        #expect(try NewcArchive.entries(Self.newc([(".", 0o040755, []), ("./a/./b", 0o100644, [])])).get().map(\.path) == ["/a/b"])
    }

    @Test(arguments: ["../etc/passwd", "/ktstr/../../x", "a/..", "..", "a/\u{0}b"])
    func escapingPathsAreRefused(_ name: String) {
        #expect(NewcArchive.entries(Self.newc([(name, 0o100644, [1])])) == .failure(.unsafePath(name)))
    }

    @Test func otherFileTypesAndBrokenArchivesAreRefused() {
        #expect(NewcArchive.entries(Self.newc([("dev/null", 0o020666, [])])) == .failure(.unsupportedType("dev/null", mode: 0o020666)))
        let a = Self.sample
        #expect((try? NewcArchive.records(Array(a.prefix(a.count - 20))).get()) == nil, "no trailer: truncated")
        var bad = a; bad[3] = 0x39
        #expect(NewcArchive.records(bad) == .failure(.badMagic(offset: 0)))
        var field = a; field[6 + 8 * 6] = 0x5A // size field not hex
        #expect(NewcArchive.records(field) == .failure(.badField(offset: 0)))
        // A name size beyond the bound is refused before it is used.
        var huge = a
        for (i, c) in "FFFFFFFF".utf8.enumerated() { huge[6 + 8 * 11 + i] = c }
        #expect(NewcArchive.records(huge) == .failure(.badField(offset: 0)))
    }

    /// Seeded mutants of a request and of an archive: the decoders return a value or an
    /// error, never trap, and what they return stays inside the input.
    @Test func fuzzRequestsAndArchives() {
        let request = PlanRequest(realtimeSeconds: 5, realtimeNanoseconds: 6, entropy: [1, 2, 3, 4], archive: Self.sample).encoded()
        ProtocolFuzzTests.timed("plan request", inputs: Fuzz.iterations) {
            Fuzz.run("plan request", seed: request, baseSeed: 0x9_1A4_0001, hotOffsets: [8, 16, 20, 24, 28]) { b in
                guard case let .success(r) = PlanRequest.decode(b) else { return nil }
                return r.encoded() == b ? nil : "decoded request does not re-encode to its input"
            }
        }
        // Hot offsets: the first header's mode, size and name size fields.
        ProtocolFuzzTests.timed("newc archive", inputs: Fuzz.iterations) {
            Fuzz.run("newc archive", seed: Self.sample, baseSeed: 0x9_1A4_0002, hotOffsets: [14, 54, 94, 110, 128]) { b in
                switch NewcArchive.entries(b) {
                case .failure: return nil
                case let .success(entries):
                    for e in entries {
                        guard e.data.lowerBound >= 0, e.data.upperBound <= b.count else { return "entry \(e.path) data outside the input" }
                        guard !e.components.isEmpty, !e.components.contains(".."), !e.components.contains("") else { return "unsafe path \(e.path)" }
                    }
                    return nil
                }
            }
        }
    }
}

extension String {
    fileprivate func leftPad(_ n: Int) -> String { String(repeating: "0", count: max(0, n - count)) + self }
}
