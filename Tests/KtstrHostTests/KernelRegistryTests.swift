import Foundation
import Testing
@testable import KtstrHost
@testable import KtstrProtocol

/// Kernel resolution and the registry, on small fake files (no boot).
@Suite struct KernelRegistryTests {
    /// A fake bzImage: boot sector, HdrS, a version string; enough for the resolver (the
    /// registry's validate step needs a real image, see SchedulerTests.OwnKernel).
    static func fakeBzImage(release: String) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 0x400)
        b[0x1FE] = 0x55; b[0x1FF] = 0xAA
        b.replaceSubrange(0x202..<0x206, with: Array("HdrS".utf8))
        b[0x20E] = 0x00; b[0x20F] = 0x01 // string at 0x300
        b.replaceSubrange(0x300..<(0x300 + release.utf8.count), with: Array(release.utf8))
        return b
    }

    func tempDir() throws -> String {
        let d = NSTemporaryDirectory() + "ktstr-reg-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    @Test func resolvesTreesFilesNamesAndSaysWhatIsMissing() throws {
        let d = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: d) }
        let fm = FileManager.default
        try fm.createDirectory(atPath: d + "/tree/arch/x86/boot", withIntermediateDirectories: true)
        _ = fm.createFile(atPath: d + "/tree/arch/x86/boot/bzImage", contents: Data(Self.fakeBzImage(release: "6.99.0-test")))
        _ = fm.createFile(atPath: d + "/tree/vmlinux", contents: Data("x".utf8))
        _ = fm.createFile(atPath: d + "/tree/.config", contents: Data("CONFIG_SCHED_CLASS_EXT=y\n".utf8))
        let tree = try Provisioning.kernel(atPath: d + "/tree/")
        #expect(tree.image == d + "/tree/arch/x86/boot/bzImage" && tree.vmlinux == d + "/tree/vmlinux")
        #expect(tree.config == d + "/tree/.config" && tree.version == "6.99.0-test")
        let file = try Provisioning.kernel(atPath: d + "/tree/arch/x86/boot/bzImage")
        #expect(file.image == tree.image && file.config == d + "/tree/.config" && file.vmlinux == nil)
        // A directory without a kernel, a path that is not there, a name nobody registered.
        try fm.createDirectory(atPath: d + "/empty", withIntermediateDirectories: true)
        #expect(throws: ProvisioningError.self) { try Provisioning.kernel(atPath: d + "/empty") }
        #expect(throws: ProvisioningError.self) { try Provisioning.kernel(named: d + "/nope") }
        let registry = KernelRegistry(path: d + "/registry.json")
        #expect(throws: ProvisioningError.self) { try Provisioning.kernel(named: "nobody-registered-this", registry: registry) }
    }

    @Test func registryAddRemoveAndAStaleEntry() throws {
        let d = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: d) }
        let registry = KernelRegistry(path: d + "/kernels/registry.json")
        #expect(try registry.entries().isEmpty)
        // add validates the image: a fake one is refused and nothing is written.
        _ = FileManager.default.createFile(atPath: d + "/junk", contents: Data("not a kernel".utf8))
        #expect(throws: ProvisioningError.self) { try registry.add(path: d + "/junk", name: "junk") }
        #expect(try registry.entries().isEmpty)
        // A real entry (written by hand, as add would): resolution follows the path each time.
        let image = try #require(try? Provisioning.kernel(explicit: nil).image, "needs the cached default kernel")
        let (e, k) = try registry.add(path: image, name: "dflt")
        #expect(e.path == image && k.image == image)
        #expect(throws: ProvisioningError.self) { try registry.add(path: image, name: "dflt") } // taken
        #expect(try Provisioning.kernel(named: "dflt", registry: registry).image == image)
        let stale = KernelRegistry.Entry(name: "gone", path: d + "/gone/bzImage")
        try Data(#"{"version":1,"kernels":[{"name":"gone","path":"\#(stale.path)"}]}"#.utf8).write(to: URL(fileURLWithPath: d + "/stale.json"))
        let staleRegistry = KernelRegistry(path: d + "/stale.json")
        #expect(try staleRegistry.entries() == [stale])
        #expect(throws: ProvisioningError.self) { try Provisioning.kernel(named: "gone", registry: staleRegistry) }
        #expect(Provisioning.kernelListing(registry: staleRegistry).first { $0.name == "gone" }?.problem != nil)
        #expect(try registry.remove(name: "dflt"))
        #expect(try !registry.remove(name: "dflt"))
        #expect(!KernelRegistry.isValidName("a/b") && !KernelRegistry.isValidName("a b") && KernelRegistry.isValidName("7.2.12-mine"))
        #expect(Provisioning.isValidKernelVersion("7.2.12+deb13-cloud-amd64") && !Provisioning.isValidKernelVersion("../x"))
    }

    /// The console filter shows exactly what lies between the agent's markers, however the
    /// bytes are split.
    @Test func shellConsoleFilterCutsAtTheMarkers() {
        let text = "boot noise\r\n\n\(RunPlan.Shell.beginMarker)\r\nenabled\n\(RunPlan.Shell.endMarker)\r\nreboot: Restarting\n"
        let bytes = Array(text.utf8)
        for split in [1, 2, 3, 5, 7, 64, bytes.count] {
            var f = ShellConsoleFilter()
            var out: [UInt8] = []
            var i = 0
            while i < bytes.count { out += f.feed(bytes[i..<min(bytes.count, i + split)]); i += split }
            out += f.flush()
            #expect(String(decoding: out, as: UTF8.self) == "enabled\n", "split \(split)")
            #expect(f.ended)
        }
    }

    @Test func shellPlanAndMessageRoundTrip() throws {
        var plan = RunPlan(scheduler: nil, workload: .init(kind: .idle, count: 0), durationMillis: 0, kallsyms: [], attachTimeoutMillis: 1000)
        plan.shell = RunPlan.Shell(command: "cat /sys/kernel/sched_ext/state", term: "xterm", rows: 40, columns: 120)
        let decoded = try RunPlan.decode(plan.encoded()).get()
        #expect(decoded.shell == plan.shell)
        let text = String(decoding: plan.encoded(), as: UTF8.self)
        #expect(text.contains(#""mode":"shell""#))
        plan.shell = nil
        #expect(try RunPlan.decode(plan.encoded()).get().shell == nil)
        #expect(throws: RunPlan.DecodeError.self) { try RunPlan.decode(Array(#"{"mode":"turbo"}"#.utf8)).get() }
        #expect(AgentMessage.parse(Substring(AgentMessage.shellExit(status: 3).line())) == .shellExit(status: 3))
    }
}
