import Foundation
import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrQEMU
@testable import KtstrSchedExt
@testable import KtstrProtocol
@testable import KtstrHost

/// The kernel config reaches the guest (libbpf resolves `__kconfig` externs from
/// /boot/config-$(uname -r)), and every tools/sched_ext scheduler builds with ktstr's recipe.
@Suite struct KernelConfigTests {
    /// A bzImage setup header whose kernel_version points at `text`.
    static func fakeBzImage(version text: String) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 0x1000)
        b[0x1FE] = 0x55; b[0x1FF] = 0xAA
        b.replaceSubrange(0x202..<0x206, with: Array("HdrS".utf8))
        let at = 0x800
        b[0x20E] = UInt8((at - 0x200) & 0xff); b[0x20F] = UInt8((at - 0x200) >> 8)
        b.replaceSubrange(at..<at + text.utf8.count, with: Array(text.utf8))
        return b
    }

    @Test func releaseIsTheFirstWordOfTheImagesVersionString() {
        #expect(KernelRelease.fromBzImage(Self.fakeBzImage(version: "7.3.4+deb13-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP"))
                == "7.3.4+deb13-cloud-amd64")
        #expect(KernelRelease.fromBzImage(Self.fakeBzImage(version: "6.19.0-rc1")) == "6.19.0-rc1")
        var noMagic = Self.fakeBzImage(version: "6.1.0")
        noMagic[0x202] = 0
        #expect(KernelRelease.fromBzImage(noMagic) == nil)
        var outside = Self.fakeBzImage(version: "6.1.0")
        outside[0x20E] = 0xff; outside[0x20F] = 0xff
        #expect(KernelRelease.fromBzImage(outside) == nil)
        #expect(KernelRelease.fromBzImage(Self.fakeBzImage(version: "../etc")) == nil)
        #expect(KernelRelease.fromBzImage([1, 2, 3]) == nil)
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: BzImagePayloadTests.cachedKernel + "/vmlinuz"),
                   "the default kernel is not cached (run `swift run ktstr kernel fetch`)"))
    func cachedDefaultKernelStatesItsVersionAndHasItsConfig() throws {
        #expect(KernelRelease.fromImage(atPath: BzImagePayloadTests.cachedKernel + "/vmlinuz") == Provisioning.defaultKernelVersion)
        // No skip for a missing config: `ktstr kernel fetch` / `ktstr setup` must provide it.
        let kernel = try Provisioning.kernel()
        let config = try #require(kernel.config, "\(Provisioning.missingKernelConfigAdvice(kernel))")
        let text = try String(contentsOfFile: config, encoding: .utf8)
        #expect(text.contains("\nCONFIG_SCHED_CLASS_EXT=y\n"))
        #expect(text.contains("\nCONFIG_BPF_SYSCALL=y\n"))
    }

    @Test func userKernelConfigIsFoundNextToTheImageOrAtTheTreeRoot() throws {
        let root = URL(fileURLWithPath: try ProvisioningFiles.scratchDirectory(in: NSTemporaryDirectory(), prefix: "ktstr-kconfig-test"))
            .standardizedFileURL.path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fm = FileManager.default
        let config = Data("#\n# Linux/x86 7.3.0 Kernel Configuration\n#\nCONFIG_BPF=y\n".utf8)
        // A build tree: arch/x86/boot/bzImage, .config at the top.
        try ProvisioningFiles.makeDirectory(root + "/tree/arch/x86/boot")
        #expect(fm.createFile(atPath: root + "/tree/arch/x86/boot/bzImage", contents: Data([0])))
        #expect(Provisioning.kernelConfig(nextTo: root + "/tree/arch/x86/boot/bzImage") == nil)
        #expect(fm.createFile(atPath: root + "/tree/.config", contents: config))
        #expect(Provisioning.kernelConfig(nextTo: root + "/tree/arch/x86/boot/bzImage") == root + "/tree/.config")
        #expect(try Provisioning.kernel(explicit: root + "/tree/arch/x86/boot/bzImage").config == root + "/tree/.config")
        // /boot style: vmlinuz-<r> and config-<r>.
        try ProvisioningFiles.makeDirectory(root + "/boot")
        #expect(fm.createFile(atPath: root + "/boot/vmlinuz-7.3.0-test", contents: Data([0])))
        #expect(fm.createFile(atPath: root + "/boot/config-7.3.0-test", contents: config))
        #expect(Provisioning.kernelConfig(nextTo: root + "/boot/vmlinuz-7.3.0-test") == root + "/boot/config-7.3.0-test")
        // Something that is not a config is not taken for one.
        #expect(fm.createFile(atPath: root + "/boot/.config", contents: Data("hello\n".utf8)))
        #expect(Provisioning.kernelConfig(nextTo: root + "/boot/vmlinuz-7.3.0-test") == root + "/boot/config-7.3.0-test")
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/bin/true"), "needs /bin/true (stands in for the agent)"))
    func initramfsCarriesTheConfigUnderTheGuestsRelease() throws {
        let dir = try ProvisioningFiles.scratchDirectory(in: NSTemporaryDirectory(), prefix: "ktstr-kconfig-initramfs")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = dir + "/config"
        let text = "CONFIG_PREEMPT_RCU=y\nCONFIG_HZ=250\n"
        #expect(FileManager.default.createFile(atPath: config, contents: Data(text.utf8)))
        let agent = "/bin/true"
        let image = dir + "/vmlinuz"
        #expect(FileManager.default.createFile(atPath: image, contents: Data(Self.fakeBzImage(version: "7.3.9-test #1"))))

        let built = try InitramfsAssembler(agentPath: agent, schedulerPath: nil, planJSON: Array("{}".utf8),
                                           kernel: KernelArtifacts(image: image, version: "ignored", config: config)).assemble()
        let records = try #require(InitramfsReader.records(built.bytes))
        let file = try #require(records.first { $0.name == "ktstr/kconfig" }, "\(records.map(\.name))")
        #expect(String(decoding: file.data, as: UTF8.self) == text)
        let link = try #require(records.first { $0.name == "boot/config-7.3.9-test" }, "\(records.map(\.name))")
        #expect(link.mode & 0o170000 == 0o120000)
        #expect(String(decoding: link.data, as: UTF8.self) == InitramfsAssembler.kernelConfigGuestPath)

        // No config: neither entry (libbpf then fails on __kconfig, and the run log says why).
        let bare = try InitramfsAssembler(agentPath: agent, schedulerPath: nil, planJSON: Array("{}".utf8),
                                          kernel: KernelArtifacts(image: image)).assemble()
        let names = try #require(InitramfsReader.records(bare.bytes)).map(\.name)
        #expect(!names.contains("ktstr/kconfig") && !names.contains { $0.hasPrefix("boot/") })
    }

    @Test func buildLogErrorLineIsTheFirstComplaint() {
        let log = """
            clang -g -O2 -target bpf -c x.bpf.c
            bpftool gen object x.linked.o x.bpf.o
            libbpf: btf: type [453]: referenced type [0] is not FUNC_PROTO
            Error: failed to link 'x.bpf.o': Invalid argument (22)
            make: *** [Makefile:81: x.bpf.skel.h] Error 234
            """
        #expect(Provisioning.firstErrorLine(log) == "libbpf: btf: type [453]: referenced type [0] is not FUNC_PROTO")
        #expect(Provisioning.firstErrorLine("cc -c a.c\na.c:3:1: error: expected ';'\nmake: *** [x] Error 1")
                == "a.c:3:1: error: expected ';'")
        #expect(Provisioning.firstErrorLine("make: *** [x] Error 2") == "make: *** [x] Error 2")
        #expect(Provisioning.firstErrorLine("all fine") == nil)
    }
}

/// Every scheduler in the default kernel's tools/sched_ext builds with ktstr's recipe
/// (Schedulers/Makefile). Before `-Xclang -fno-split-cold-code`, scx_central and scx_sdt
/// failed at `bpftool gen object` with the Swift toolchain's clang.
@Suite struct KernelSchedulerBuildTests {
    static var missing: String? {
        if !FileManager.default.fileExists(atPath: Provisioning.kernelSchedExtDirectory + "/Makefile") {
            return "no kernel tools/sched_ext sources in the cache — run `swift run ktstr setup`"
        }
        if (try? Provisioning.scheduler("simple")) == nil { return "schedulers not built — run `swift run ktstr setup`" }
        if ProvisioningShell.which("clang") == nil { return "no clang on PATH" }
        return nil
    }

    @Test(.enabled(if: missing == nil, Comment(rawValue: missing ?? "")), .timeLimit(.minutes(20)))
    func everyToolsSchedExtSchedulerBuilds() throws {
        let names = Provisioning.kernelSchedulerNames()
        #expect(names.contains("scx_central") && names.contains("scx_sdt") && names.contains("scx_simple"), "\(names)")
        let results = try Provisioning.buildKernelSchedulers(log: .silent)
        #expect(results.map(\.name) == names)
        for r in results {
            #expect(r.ok, "\(r.name): \(r.error ?? "?")")
            #expect(access(r.binary ?? "/nonexistent", X_OK) == 0, "\(r.name): \(r.binary ?? "no binary")")
        }
    }
}
