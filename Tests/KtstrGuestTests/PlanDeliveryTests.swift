import Foundation
import Testing
@testable import KtstrGuest
@testable import KtstrProtocol

/// The restored agent's unpacking, into a temporary root instead of /: files with their
/// modes, symlinks, replaced files, and no way out of the root through a symlink.
@Suite struct PlanDeliveryTests {
    static func newc(_ records: [(String, UInt32, [UInt8])]) -> [UInt8] {
        var out: [UInt8] = []
        func hex(_ v: UInt32) -> [UInt8] {
            let h = String(v, radix: 16)
            return Array((String(repeating: "0", count: 8 - h.count) + h).utf8)
        }
        for (k, r) in (records + [("TRAILER!!!", 0, [])]).enumerated() {
            let name = Array(r.0.utf8) + [0]
            out += Array("070701".utf8)
            for f in [UInt32(k + 1), r.1, 0, 0, 1, 0, UInt32(r.2.count), 0, 0, 0, 0, UInt32(name.count), 0] { out += hex(f) }
            out += name
            while out.count % 4 != 0 { out.append(0) }
            out += r.2
            while out.count % 4 != 0 { out.append(0) }
        }
        return out
    }

    static func scratch() throws -> String {
        let root = NSTemporaryDirectory() + "ktstr-unpack-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: false)
        return root
    }

    @Test func unpacksFilesDirectoriesAndLinks() throws {
        let root = try Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: root) }
        // An old plan is replaced, not written through.
        try FileManager.default.createDirectory(atPath: root + "/ktstr", withIntermediateDirectories: false)
        try Data("old".utf8).write(to: URL(fileURLWithPath: root + "/ktstr/plan.json"))
        let archive = Self.newc([("/ktstr/plan.json", 0o100644, Array("{\"x\":1}".utf8)),
                                 ("ktstr/bin/scheduler", 0o100755, [1, 2, 3]),
                                 ("boot/config-7.3", 0o120777, Array("/ktstr/kconfig".utf8)),
                                 ("./empty", 0o040700, [])])
        #expect(PlanDelivery.unpack(archive, root: root) == nil)
        #expect(String(decoding: try Data(contentsOf: URL(fileURLWithPath: root + "/ktstr/plan.json")), as: UTF8.self) == "{\"x\":1}")
        #expect(try Data(contentsOf: URL(fileURLWithPath: root + "/ktstr/bin/scheduler")) == Data([1, 2, 3]))
        let attrs = try FileManager.default.attributesOfItem(atPath: root + "/ktstr/bin/scheduler")
        #expect((attrs[.posixPermissions] as? NSNumber)?.intValue == 0o755)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: root + "/boot/config-7.3") == "/ktstr/kconfig")
        var isDir: ObjCBool = false
        #expect(FileManager.default.fileExists(atPath: root + "/empty", isDirectory: &isDir) && isDir.boolValue)
    }

    @Test func aSymlinkInTheArchiveCannotLeadOutOfTheRoot() throws {
        let root = try Self.scratch(), outside = try Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: root); try? FileManager.default.removeItem(atPath: outside) }
        // "lib" → a directory outside the root, then a file "under" it.
        let archive = Self.newc([("lib", 0o120777, Array(outside.utf8)), ("lib/evil", 0o100644, [0x41])])
        let error = try #require(PlanDelivery.unpack(archive, root: root))
        #expect(error.contains("lib/evil"), "\(error)")
        #expect(!FileManager.default.fileExists(atPath: outside + "/evil"))
        // A file entry over an existing symlink replaces the link, it does not write through it.
        try Data("keep".utf8).write(to: URL(fileURLWithPath: outside + "/target"))
        try FileManager.default.createSymbolicLink(atPath: root + "/f", withDestinationPath: outside + "/target")
        #expect(PlanDelivery.unpack(Self.newc([("f", 0o100644, [0x42])]), root: root) == nil)
        #expect(String(decoding: try Data(contentsOf: URL(fileURLWithPath: outside + "/target")), as: UTF8.self) == "keep")
        #expect(try Data(contentsOf: URL(fileURLWithPath: root + "/f")) == Data([0x42]))
    }

    @Test func unsafeNamesRefuseTheWholeArchive() throws {
        let root = try Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let error = PlanDelivery.unpack(Self.newc([("a", 0o100644, [1]), ("../b", 0o100644, [2])]), root: root)
        #expect(error?.contains("unsafe path") == true, "\(String(describing: error))")
        #expect(!FileManager.default.fileExists(atPath: root + "/a"), "nothing is written from a refused archive")
    }
}
