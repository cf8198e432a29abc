import Foundation
import Testing
@testable import KtstrGuest
@testable import KtstrProtocol

@Suite struct TopologyReaderTests {
    static func tree(_ files: [String: String]) throws -> String {
        let root = NSTemporaryDirectory() + "ktstr-sysfs-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        for (path, text) in files {
            let full = root + "/" + path
            try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try Data(text.utf8).write(to: URL(fileURLWithPath: full))
        }
        return root
    }

    @Test func readsDistinctL3GroupsAndNodes() throws {
        var files: [String: String] = [:]
        for cpu in 0..<4 {
            let c = "cpu/cpu\(cpu)/cache"
            files["\(c)/index0/level"] = "1\n"; files["\(c)/index0/shared_cpu_list"] = "\(cpu)\n"
            files["\(c)/index2/level"] = "2\n"; files["\(c)/index2/shared_cpu_list"] = "\(cpu)\n"
            // The L3 on index1 here: found by level, not by index number.
            files["\(c)/index1/level"] = "3\n"; files["\(c)/index1/shared_cpu_list"] = cpu < 2 ? "2-3\n" : "0-1\n"
        }
        // Reversed so that the order comes from the first CPU, not the scan.
        for cpu in 0..<2 { files["cpu/cpu\(cpu)/cache/index1/shared_cpu_list"] = "2-3\n" }
        for cpu in 2..<4 { files["cpu/cpu\(cpu)/cache/index1/shared_cpu_list"] = "0-1\n" }
        files["node/node0/cpulist"] = "0-1\n"; files["node/node1/cpulist"] = "2-3\n"
        let root = try Self.tree(files)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let t = TopologyReader.read(cpus: 4, root: root)
        #expect(t.l3Groups == ["0-1", "2-3"])
        #expect(t.numaNodes == ["0-1", "2-3"])
    }

    @Test func noL3AndNoNodesAreEmpty() throws {
        let root = try Self.tree(["cpu/cpu0/cache/index0/level": "1\n", "cpu/cpu0/cache/index0/shared_cpu_list": "0\n"])
        defer { try? FileManager.default.removeItem(atPath: root) }
        let t = TopologyReader.read(cpus: 1, root: root)
        #expect(t.l3Groups.isEmpty && t.numaNodes.isEmpty)
    }
}
