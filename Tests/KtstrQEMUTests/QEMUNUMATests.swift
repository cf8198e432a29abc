import Foundation
import Glibc
import Testing
@testable import KtstrMachine
@testable import KtstrQEMU
@testable import KtstrHost
@testable import KtstrProtocol

@Suite struct QEMUNUMAArgumentTests {
    static func machine(_ t: Topology, memoryMiB: Int = 512) -> QEMUMachine {
        QEMUMachine(.init(qemuPath: "/bin/false", kernelPath: "/k", initrdFD: nil, kernelCmdline: "", topology: t,
                          memoryMiB: memoryMiB, accelerator: .tcg, console: { _ in }, channel: { _ in }), log: .silent)
    }

    @Test func numaNodesGetOneBackendEach() {
        let a = Self.machine(.twoNodes).arguments()
        let joined = a.joined(separator: " ")
        #expect(joined.contains("-M pc "))
        #expect(!joined.contains("memory-backend=ktstr-mem"))
        #expect(a.contains("memory-backend-file,id=ktstr-mem0,size=256M,mem-path=/proc/self/fd/3,share=on"))
        #expect(a.contains("memory-backend-file,id=ktstr-mem1,size=256M,mem-path=/proc/self/fd/9,share=on"))
        #expect(a.contains("node,nodeid=0,cpus=0-1,memdev=ktstr-mem0"))
        #expect(a.contains("node,nodeid=1,cpus=2-3,memdev=ktstr-mem1"))
        #expect(a.contains("4,sockets=2,cores=2,threads=1"))
    }

    @Test func withoutNUMAOneSharedBackend() {
        let a = Self.machine(.twoLLCs).arguments()
        #expect(a.contains("pc,memory-backend=ktstr-mem"))
        #expect(a.contains("memory-backend-file,id=ktstr-mem,size=512M,mem-path=/proc/self/fd/3,share=on"))
        #expect(!a.contains("-numa"))
    }

    /// Two files, one after the other in RAM offsets, read back through one contiguous GPA
    /// region (a read across the node boundary works).
    @Test func mapFilesJoinsNodeFiles() throws {
        var fds: [Int32] = []
        defer { fds.forEach { close($0) } }
        for i in 0..<2 {
            let path = "/dev/shm/ktstr-test-\(getpid())-\(i)"
            let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            try #require(fd >= 0)
            unlink(path)
            fds.append(fd)
            #expect(ftruncate(fd, 1 << 20) == 0)
            var b = [UInt8](repeating: UInt8(0xA0 + i), count: 1 << 20)
            #expect(pwrite(fd, &b, b.count, 0) == b.count)
        }
        let mem = try GuestMemory.mapFiles(backing: [(fds[0], 0, 1 << 20), (fds[1], 1 << 20, 1 << 20)],
                                           layout: [(0x1000_0000, 2 << 20, 0)])
        #expect(mem.regions.count == 1)
        #expect(try mem.readBytes(at: 0x1000_0000 + (1 << 20) - 2, count: 4) == [0xA0, 0xA0, 0xA1, 0xA1])
        try mem.write(UInt8(0x55), at: 0x1000_0000 + (1 << 20))
        var back: UInt8 = 0
        #expect(pread(fds[1], &back, 1, 0) == 1 && back == 0x55)
        #expect(throws: (any Error).self) {
            try GuestMemory.mapFiles(backing: [(fds[0], 0, 1 << 20)], layout: [(0, 2 << 20, 0)])
        }
    }
}

/// A 2-node guest on qemu: the agent's hello reports both nodes with their CPUs and one L3
/// group per LLC, and the host's mapping of the two RAM files shows the kernel where qemu put it.
@Suite(.serialized, .timeLimit(.minutes(5)))
struct QEMUNUMABootTests {
    @Test(.enabled(if: QEMUEnv.missingAgent == nil, Comment(rawValue: QEMUEnv.missingAgent ?? "")))
    func twoNodeGuestSeesItsNodesAndHostReadsItsRAM() async throws {
        let kernel = try Provisioning.kernel()
        let plan = RunPlan(scheduler: nil, workload: .init(kind: .idle, count: 0), durationMillis: 3000,
                           kallsyms: ["init_top_pgt", "_text"], attachTimeoutMillis: 1000)
        let image = try InitramfsAssembler(agentPath: try Provisioning.agentBinary(), schedulerPath: nil,
                                           planJSON: plan.encoded()).assemble()
        let initrd = try UnlinkedFile(contents: image.bytes)
        let collector = RunCollector(log: .silent) { _ in }
        let m = QEMUMachine(.init(qemuPath: try Provisioning.qemuBinary(), kernelPath: kernel.image, initrdFD: initrd.fd,
                                  kernelCmdline: QEMUMachine.baseCmdline, topology: .twoNodes, memoryMiB: 256,
                                  accelerator: .tcg, console: { collector.consoleBytes($0) },
                                  channel: { collector.channelBytes($0) }), log: .silent)
        defer { m.kill(); withExtendedLifetime(initrd) {} }
        try m.start()
        // Both nodes' RAM files: qemu holds them as fds 3 and 9, unlinked; the sh wrapper and
        // its watchdog hold neither; nothing of the run is in /dev/shm.
        let group = try #require(m.processGroup)
        let members = QEMUPrivacyTests.members(of: group)
        let qemu = try #require(members.first { QEMUPrivacyTests.command(of: $0).hasPrefix("qemu-system") })
        for fd in ["3", "9"] {
            let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(qemu)/fd/\(fd)")) ?? ""
            #expect(target.hasPrefix("/dev/shm/\(m.instanceName)") && target.hasSuffix("(deleted)"), "qemu fd \(fd): \(target)")
        }
        for pid in members where pid != qemu {
            let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
            #expect(!fds.contains("3") && !fds.contains("9"), "\(QEMUPrivacyTests.command(of: pid)) \(pid) holds \(fds)")
        }
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: "/dev/shm")) ?? []).allSatisfy { !$0.hasPrefix(m.instanceName) })
        let deadline = ContinuousClock.now + .seconds(150)
        while collector.snapshot.helloAt == nil, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        try #require(collector.snapshot.helloAt != nil, "no hello: \(collector.consoleTail.suffix(1000)) \(m.qemuStderr)")

        let hello = try #require(collector.snapshot.messages.first)
        let fields: (Int, [String: UInt64], GuestTopology?)? = if case let .hello(_, c, s, t) = hello { (c, s, t) } else { nil }
        let (cpus, syms, topology) = try #require(fields, "the first message is not a hello: \(hello)")
        #expect(cpus == 4)
        let topo = try #require(topology, "the agent sent no topology (KTSTR_AGENT must be an agent built from this tree)")
        #expect(topo.numaNodes == ["0-1", "2-3"])
        #expect(topo.l3Groups == ["0-1", "2-3"])
        #expect(RunOutcome.topologyDifference(requested: .twoNodes, guest: topo) == nil)

        // Guest RAM through the host's mapping of both files: the kernel banner (node 0,
        // image at 16 MiB with nokaslr), and the kernel text where kallsyms says (_text).
        let mem = m.guestMemory
        #expect(mem.totalSize == 256 << 20)
        #expect(mem.regions.count == 1, "one contiguous GPA region over both node files")
        let ram = Data(try mem.readBytes(at: 0, count: 96 << 20))
        #expect(ram.range(of: Data("Linux version 7.".utf8)) != nil)
        // Node 1's half (128 MiB up) is RAM the guest uses: the kernel allocates node 1's
        // NODE_DATA at its top, so it is not all zero.
        let high = try mem.readBytes(at: 128 << 20, count: 128 << 20)
        #expect(high.contains { $0 != 0 }, "node 1's RAM file reads as all zero")
        #expect(syms["_text"] != nil)
        let exit = try await Blocking.run { m.wait(timeout: .seconds(120)) }
        #expect(exit == .shutdown)
        #expect(QEMUEnv.leftovers(tag: m.instanceName).isEmpty)
    }
}
