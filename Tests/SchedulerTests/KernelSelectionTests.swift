import Foundation
import KtstrTesting

// Your own kernel: `--kernel` / `.ktstr(kernel:)` / `VMConfig.kernel` take a kernel tree, a
// bzImage (vmlinux and config next to it) or a name registered with `ktstr kernel add`. Each
// test boots a COPY of the default kernel's files given that way, runs scx_simple on it, and
// checks the guest reports the release the image states.

/// A temp dir holding a copy of the default kernel as a plain file set and as a kernel tree
/// (arch/x86/boot/bzImage, vmlinux, .config). Deleted by `remove()`.
struct CopiedKernel {
    let root: String
    let release: String
    var file: String { root + "/files/vmlinuz" }
    var tree: String { root + "/tree" }

    static func make() throws -> CopiedKernel {
        let k = try Provisioning.kernel(explicit: nil)
        let vmlinux = try #require(k.vmlinux, "the default kernel has no vmlinux: run `swift run ktstr kernel fetch`")
        let config = try #require(k.config, "the default kernel has no config: run `swift run ktstr kernel fetch`")
        let release = try #require(KernelRelease.fromImage(atPath: k.image))
        let root = NSTemporaryDirectory() + "ktstr-kernel-copy-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fm = FileManager.default
        try fm.createDirectory(atPath: root + "/files", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: root + "/tree/arch/x86/boot", withIntermediateDirectories: true)
        try fm.copyItem(atPath: k.image, toPath: root + "/files/vmlinuz")
        try fm.copyItem(atPath: vmlinux, toPath: root + "/files/vmlinux")
        try fm.copyItem(atPath: config, toPath: root + "/files/config")
        try fm.copyItem(atPath: k.image, toPath: root + "/tree/arch/x86/boot/bzImage")
        try fm.copyItem(atPath: vmlinux, toPath: root + "/tree/vmlinux")
        try fm.copyItem(atPath: config, toPath: root + "/tree/.config")
        return CopiedKernel(root: root, release: release)
    }

    func remove() { try? FileManager.default.removeItem(atPath: root) }
}

@Suite(.ktstr(cpus: 2, memoryMiB: 512), .serialized)
struct OwnKernel {
    /// One run of scx_simple on `vm`'s kernel; the guest must report `release`.
    func bootAndCheck(_ vm: VMConfig, release: String, expectedFiles: (image: String, vmlinux: String, config: String)) async throws {
        let resolved = try Provisioning.kernel(explicit: vm.kernel, registry: vm.registry)
        #expect(resolved.image == expectedFiles.image)
        #expect(resolved.vmlinux == expectedFiles.vmlinux)
        #expect(resolved.config == expectedFiles.config)
        let outcome = try await SchedulerRun.run(vm: vm, scheduler: .simple, workload: .spinners(2), duration: .seconds(1),
                                                 artifactsDirectory: nil, log: .silent)
        #expect(outcome.kernelRelease == release, "console: \(outcome.consoleTail.suffix(800))")
        #expect(outcome.schedulerExit?.kind == .unreg, "\(String(describing: outcome.schedulerExit)) \(outcome.problems)")
        #expect(outcome.problems.isEmpty, "\(outcome.problems)")
    }

    @Test func aBzImagePathWithItsVmlinuxAndConfigNextToIt() async throws {
        let copy = try CopiedKernel.make()
        defer { copy.remove() }
        try await bootAndCheck(VMConfig(cpus: 2, kernel: copy.file), release: copy.release,
                               expectedFiles: (copy.file, copy.root + "/files/vmlinux", copy.root + "/files/config"))
    }

    @Test func aKernelTreeDirectory() async throws {
        let copy = try CopiedKernel.make()
        defer { copy.remove() }
        try await bootAndCheck(VMConfig(cpus: 2, kernel: copy.tree), release: copy.release,
                               expectedFiles: (copy.tree + "/arch/x86/boot/bzImage", copy.tree + "/vmlinux", copy.tree + "/.config"))
    }

    /// `ktstr kernel add TREE --name N` then `--kernel N`, with a registry of the test's own
    /// (the cache's registry is shared with other users of the cache).
    @Test func aRegisteredName() async throws {
        let copy = try CopiedKernel.make()
        defer { copy.remove() }
        let registry = KernelRegistry(path: copy.root + "/registry.json")
        let (entry, _) = try registry.add(path: copy.tree, name: "my-tree")
        #expect(entry == KernelRegistry.Entry(name: "my-tree", path: copy.tree))
        var vm = VMConfig(cpus: 2, kernel: "my-tree")
        vm.kernelRegistry = registry.path
        try await bootAndCheck(vm, release: copy.release,
                               expectedFiles: (copy.tree + "/arch/x86/boot/bzImage", copy.tree + "/vmlinux", copy.tree + "/.config"))
        // The listing shows it with its facts, and where it came from.
        let listed = try #require(Provisioning.kernelListing(registry: registry).first { $0.name == "my-tree" })
        #expect(listed.origin == "registered" && listed.source == copy.tree)
        #expect(listed.release == copy.release && listed.schedExt == true && listed.btf == true && listed.config != nil)
        #expect(try registry.remove(name: "my-tree"))
        #expect(throws: ProvisioningError.self) { try Provisioning.kernel(explicit: "my-tree", registry: registry) }
    }
}
