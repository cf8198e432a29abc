import Foundation
import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrQEMU
@testable import KtstrSchedExt
@testable import KtstrProtocol
@testable import KtstrHost

@Suite struct AptSourcesTests {
    static let bookworm = """
        Types: deb
        # http://snapshot.debian.org/archive/debian/20250520T000000Z
        URIs: http://deb.debian.org/debian
        Suites: bookworm bookworm-updates
        Components: main
        Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

        Types: deb
        # http://snapshot.debian.org/archive/debian-security/20250520T000000Z
        URIs: http://deb.debian.org/debian-security
        Suites: bookworm-security
        Components: main
        Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
        """

    @Test func deb822PicksTheArchiveNotSecurity() {
        let entries = AptSources.parseDeb822(Self.bookworm)
        #expect(entries.count == 2)
        #expect(entries[0].suites == ["bookworm", "bookworm-updates"])
        #expect(AptSources(entries: entries).debianMirror == "http://deb.debian.org/debian")
    }

    @Test func securityFirstStillYieldsTheArchive() {
        let text = """
            Types: deb
            URIs: http://security.debian.org/debian-security
            Suites: trixie-security
            Components: main

            Types: deb-src
            URIs: http://src.example/debian
            Suites: trixie

            Types: deb
            URIs: https://mirror.example.org/debian/
            Suites: trixie
            Components: main
            """
        #expect(AptSources(entries: AptSources.parseDeb822(text)).debianMirror == "https://mirror.example.org/debian")
    }

    @Test func disabledAndNonDebianEntriesAreIgnored() {
        let text = """
            Types: deb
            URIs: http://archive.ubuntu.com/ubuntu
            Suites: noble noble-updates
            Components: main

            Enabled: no
            Types: deb
            URIs: http://off.example/debian
            Suites: bookworm
            """
        #expect(AptSources(entries: AptSources.parseDeb822(text)).debianMirror == nil)
    }

    @Test func oneLineFormatWithOptions() {
        let text = """
            # comment
            deb-src http://deb.debian.org/debian bookworm main
            deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://ftp.de.debian.org/debian bookworm main contrib
            deb http://security.debian.org/debian-security bookworm-security main
            """
        let entries = AptSources.parseOneLine(text)
        #expect(entries.count == 3)
        #expect(AptSources(entries: entries).debianMirror == "http://ftp.de.debian.org/debian")
    }

    @Test func systemReadsAFakeEtcApt() throws {
        let root = try ProvisioningFiles.scratchDirectory(in: NSTemporaryDirectory(), prefix: "ktstr-apt-test")
        defer { try? FileManager.default.removeItem(atPath: root) }
        try ProvisioningFiles.makeDirectory(root + "/sources.list.d")
        try Data(Self.bookworm.utf8).write(to: URL(fileURLWithPath: root + "/sources.list.d/debian.sources"))
        try Data("deb http://archive.ubuntu.com/ubuntu noble main\n".utf8).write(to: URL(fileURLWithPath: root + "/sources.list"))
        #expect(AptSources.system(root: root).debianMirror == "http://deb.debian.org/debian")
    }

    @Test func privateSourceIsTheTrixieBackportsParagraph() {
        let text = AptSources.privateSource(mirror: "http://deb.debian.org/debian")
        let e = AptSources.parseDeb822(text)
        #expect(e == [AptSources.Entry(types: ["deb"], uris: ["http://deb.debian.org/debian"],
                                       suites: ["trixie-backports"], enabled: true)])
        #expect(text.contains("\nComponents: main\n"))
        #expect(text.contains("\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"))
    }

    @Test func privateAptNeverPointsAtTheSystemLists() {
        let apt = PrivateApt(root: "/c/apt", shell: ProvisioningShell(log: .silent))
        let o = apt.options.joined(separator: " ")
        #expect(o.contains("Dir::Etc::SourceList=/dev/null"))
        #expect(o.contains("Dir::Etc::SourceParts=/c/apt/sources.list.d"))
        #expect(o.contains("Dir::State::Lists=/c/apt/lists"))
        #expect(o.contains("Dir::Cache=/c/apt/cache"))
    }
}

@Suite struct BzImagePayloadTests {
    /// A fake bzImage: setup_sects, header magic, protocol 2.15, payload fields.
    static func fake(setupSects: UInt8 = 3, payload: [UInt8], payloadOffset: UInt32 = 16, extra: Int = 0) -> [UInt8] {
        let pm = (Int(setupSects == 0 ? 4 : setupSects) + 1) * 512
        var b = [UInt8](repeating: 0, count: pm + Int(payloadOffset) + payload.count + extra)
        b[0x1f1] = setupSects
        b.replaceSubrange(0x202..<0x206, with: Array("HdrS".utf8))
        b[0x206] = 0x0f; b[0x207] = 0x02
        func put32(_ v: UInt32, _ o: Int) { for i in 0..<4 { b[o + i] = UInt8((v >> (8 * UInt32(i))) & 0xff) } }
        put32(payloadOffset, 0x248)
        put32(UInt32(payload.count), 0x24c)
        b.replaceSubrange((pm + Int(payloadOffset))..<(pm + Int(payloadOffset) + payload.count), with: payload)
        return b
    }

    @Test func findsTheFrameAndTheSizeTrailer() throws {
        let payload: [UInt8] = [0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3, 0x78, 0x56, 0x34, 0x12]
        let image = Self.fake(setupSects: 3, payload: payload, payloadOffset: 16, extra: 100)
        let p = try BzImagePayload(bzImage: image)
        #expect(p.frame == (4 * 512 + 16)..<(4 * 512 + 16 + 7))
        #expect(p.decompressedSize == 0x1234_5678)
        #expect(p.compression == .zstd)
    }

    @Test func zeroSetupSectsMeansFour() throws {
        let p = try BzImagePayload(bzImage: Self.fake(setupSects: 0, payload: [0x1f, 0x8b, 0, 1, 0, 1, 0, 0], payloadOffset: 0))
        #expect(p.frame.lowerBound == 5 * 512)
        #expect(p.compression == .gzip)
        #expect(p.decompressedSize == 1 << 8)
    }

    @Test func rejectsHostileOrWrongInput() {
        #expect(throws: BzImagePayload.ParseError.tooShort(100)) { try BzImagePayload(bzImage: [UInt8](repeating: 0, count: 100)) }
        #expect(throws: BzImagePayload.ParseError.notBzImage) { try BzImagePayload(bzImage: [UInt8](repeating: 0, count: 4096)) }
        var image = Self.fake(payload: [1, 2, 3, 4, 5, 6])
        image[0x24c] = 0xff; image[0x24d] = 0xff; image[0x24e] = 0xff; image[0x24f] = 0xff  // length 4 GiB
        #expect(throws: BzImagePayload.ParseError.self) { try BzImagePayload(bzImage: image) }
        var old = Self.fake(payload: [1, 2, 3, 4, 5, 6])
        old[0x206] = 0x04
        #expect(throws: BzImagePayload.ParseError.protocolTooOld(0x0204)) { try BzImagePayload(bzImage: old) }
        #expect(throws: BzImagePayload.ParseError.self) { try BzImagePayload(bzImage: Self.fake(payload: [1, 2, 3, 4])) }
    }

    static let cachedKernel = Provisioning.cacheDirectory + "/kernels/\(Provisioning.defaultKernelVersion)"

    @Test(.enabled(if: FileManager.default.fileExists(atPath: cachedKernel + "/vmlinuz"),
                   "the default kernel is not cached (run `swift run ktstr kernel fetch`)"))
    func realDebianKernelHasAZstdPayloadOfTheVmlinuxSize() throws {
        let bytes = try #require(FileManager.default.contents(atPath: Self.cachedKernel + "/vmlinuz"))
        let p = try BzImagePayload(bzImage: Array(bytes))
        #expect(p.compression == .zstd)
        #expect(p.frame.upperBound + 4 <= bytes.count)
        // The 7.3 cloud kernel unpacks to ~60 MB; when vmlinux is cached it must match exactly.
        #expect(p.decompressedSize > 20_000_000 && p.decompressedSize < 200_000_000)
        if let size = ProvisioningFiles.size(Self.cachedKernel + "/vmlinux") {
            #expect(UInt64(p.decompressedSize) == size)
            #expect(BzImagePayload.isELF(atPath: Self.cachedKernel + "/vmlinux", size: p.decompressedSize))
        }
        #expect(BzImagePayload.looksLikeBzImage(atPath: Self.cachedKernel + "/vmlinuz"))
        #expect(!BzImagePayload.looksLikeBzImage(atPath: Self.cachedKernel + "/vmlinux"))
    }
}

@Suite struct ProvisioningStampTests {
    func scratch() throws -> String {
        try ProvisioningFiles.scratchDirectory(in: NSTemporaryDirectory(), prefix: "ktstr-stamp-test")
    }

    @Test func validOnlyForTheSameKeyWithAllOutputs() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let out = dir + "/artifact"
        let stamp = ProvisioningStamp(path: dir + "/.stamp")
        #expect(!stamp.isValid(key: "k1", outputs: []))
        try ProvisioningFiles.writeAtomically(Data("x".utf8), to: out)
        try stamp.write(key: "k1")
        #expect(stamp.isValid(key: "k1", outputs: [out]))
        #expect(!stamp.isValid(key: "k2", outputs: [out]))
        #expect(!stamp.isValid(key: "k1", outputs: [out, dir + "/missing"]))
        try FileManager.default.removeItem(atPath: out)
        #expect(!stamp.isValid(key: "k1", outputs: [out]))
        stamp.remove()
        #expect(!stamp.isValid(key: "k1", outputs: []))
        // Atomic writes leave no temporary files behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
    }

    @Test func fingerprintFollowsContentsNotOrder() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try ProvisioningFiles.makeDirectory(dir + "/sub")
        try ProvisioningFiles.writeAtomically(Data("a".utf8), to: dir + "/a.c")
        try ProvisioningFiles.writeAtomically(Data("b".utf8), to: dir + "/sub/b.c")
        try ProvisioningFiles.writeAtomically(Data("n".utf8), to: dir + "/notes.txt")
        let files = ProvisioningFiles.files(under: dir, suffixes: [".c"])
        #expect(files == [dir + "/a.c", dir + "/sub/b.c"])
        let f1 = ProvisioningFiles.fingerprint(files: files, root: dir)
        #expect(ProvisioningFiles.fingerprint(files: files.reversed(), root: dir) == f1)
        try ProvisioningFiles.writeAtomically(Data("b2".utf8), to: dir + "/sub/b.c")
        #expect(ProvisioningFiles.fingerprint(files: files, root: dir) != f1)
    }

    @Test func lddOutputNamesLibraries() {
        let out = """
            \tlinux-vdso.so.1 (0x00007ffd)
            \tlibstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007f)
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f)
            """
        let libs = Provisioning.lddLibraries(out)
        #expect(libs == ["linux-vdso.so.1", "libstdc++.so.6", "libc.so.6", "ld-linux-x86-64.so.2"])
        #expect(libs.allSatisfy { l in Provisioning.agentAllowedLibraries.contains { l.hasPrefix($0) } })
        #expect(!Provisioning.agentAllowedLibraries.contains { "libswiftCore.so".hasPrefix($0) })
    }

    @Test func namesAndPaths() {
        #expect(Provisioning.majorMinor("7.3.4+deb13-cloud-amd64") == "7.3")
        #expect(FileManager.default.fileExists(atPath: Provisioning.packageRoot + "/Package.swift"))
        #expect(FileManager.default.fileExists(atPath: Provisioning.packageRoot + "/Schedulers/Makefile"))
    }
}

@Suite struct ProvisioningShellTests {
    let shell = ProvisioningShell(log: .silent)

    @Test func statusAndOutputTail() throws {
        let ok = try shell.run(["sh", "-c", "echo one; echo two >&2"], timeout: 10)
        #expect(ok.status == 0)
        #expect(ok.tail == "one\ntwo")
        #expect(try shell.run(["sh", "-c", "exit 3"], timeout: 10).status == 3)
        #expect(throws: ProvisioningError.self) { try shell.check(["false"], timeout: 10, fix: "none") }
    }

    @Test func aMissingToolSaysSo() {
        #expect(throws: ProvisioningError.self) { try shell.run(["ktstr-no-such-tool-xyz"], timeout: 10) }
    }

    @Test func runsPastTheLimitAreStoppedBySIGTERM() throws {
        let start = Date()
        #expect(throws: ProvisioningError.self) { try shell.run(["sleep", "30"], timeout: 0.3) }
        // Well under the 5 s grace before SIGKILL: SIGTERM reached the child.
        #expect(Date().timeIntervalSince(start) < 3)
    }

    @Test func childrenStartWithNoBlockedSignalsInTheGivenDirectory() throws {
        let r = try shell.run(["sh", "-c", "pwd; grep SigBlk /proc/self/status"], cwd: "/tmp", timeout: 10)
        #expect(r.tail == "/tmp\nSigBlk:\t0000000000000000")
    }

    @Test(.enabled(if: ProvisioningShell.which("dpkg-query") != nil, "dpkg-query is not installed (not a Debian host)"))
    func dpkgReportsAnUnknownPackageAsMissing() throws {
        let missing = try Provisioning.missingPackages(["dpkg", "ktstr-no-such-package"], shell: shell)
        #expect(missing == ["ktstr-no-such-package"])
    }
}

@Suite struct CustomSchedulerTests {
    @Test func stemIsTheOnlyBPFSourceOrTheGivenName() throws {
        let dir = try ProvisioningFiles.scratchDirectory(in: NSTemporaryDirectory(), prefix: "ktstr-custom-test")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(throws: ProvisioningError.self) { try Provisioning.schedulerStem(in: dir, name: nil) }
        for f in ["scx_a.bpf.c", "scx_a.c"] { try ProvisioningFiles.writeAtomically(Data(), to: dir + "/" + f) }
        #expect(try Provisioning.schedulerStem(in: dir, name: nil) == "scx_a")
        try ProvisioningFiles.writeAtomically(Data(), to: dir + "/scx_b.bpf.c")
        #expect(throws: ProvisioningError.self) { try Provisioning.schedulerStem(in: dir, name: nil) }
        #expect(try Provisioning.schedulerStem(in: dir, name: "scx_a") == "scx_a")
        // scx_b has no loader.
        #expect(throws: ProvisioningError.self) { try Provisioning.schedulerStem(in: dir, name: "scx_b") }
        #expect(Provisioning.pathHash("/a") != Provisioning.pathHash("/b"))
    }
}

extension CustomSchedulerTests {
    static var kernelSources: String {
        Provisioning.cacheDirectory + "/src/linux-\(Provisioning.majorMinor(Provisioning.defaultKernelVersion))/tools/sched_ext"
    }
    static var setupDone: Bool {
        (try? Provisioning.scheduler("fault")) != nil && FileManager.default.fileExists(atPath: kernelSources + "/scx_cpu0.bpf.c")
    }

    /// Builds the kernel's scx_cpu0 from a copy, as a downstream repository's scheduler.
    @Test(.enabled(if: setupDone, "needs `swift run ktstr setup` (built schedulers and sources)"))
    func buildsADownstreamSchedulerWithTheSharedToolchain() throws {
        // A fixed directory: same path, same cache entry, so reruns are cached.
        let dir = NSTemporaryDirectory() + "/ktstr-custom-sched-test"
        try? FileManager.default.removeItem(atPath: dir)
        try ProvisioningFiles.makeDirectory(dir)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for f in ["scx_cpu0.bpf.c", "scx_cpu0.c"] {
            try FileManager.default.copyItem(atPath: Self.kernelSources + "/" + f, toPath: dir + "/" + f)
        }
        let binary = try Provisioning.buildScheduler(sourceDirectory: dir, log: .silent)
        #expect(binary.hasSuffix("/scx_cpu0"))
        #expect(access(binary, X_OK) == 0)
        // Second call: cached, same path.
        #expect(try Provisioning.buildScheduler(sourceDirectory: dir, log: .silent) == binary)
    }
}

@Suite struct SettingsTests {
    @Test func environmentIsReadIntoOneValue() {
        let s = KtstrSettings(environment: ["KTSTR_LOG": "debug", "KTSTR_MONITOR": "off", "KTSTR_MAX_VMS": "0",
                                            "KTSTR_KERNEL": "", "KTSTR_CMDLINE": "loglevel=7"])
        #expect(s.logLevel == .debug && !s.monitorEnabled)
        #expect(s.maxVMs == nil, "0 is not a VM count")
        #expect(s.kernel == nil, "empty counts as unset")
        #expect(SchedulerRun.extraCmdline(s) == " loglevel=7")
        #expect(KtstrSettings(environment: [:]) == KtstrSettings(environment: ["UNRELATED": "1"]))
    }

    /// The README's environment table lists exactly the variables the code reads.
    @Test func readmeListsEveryVariable() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        for v in KtstrSettings.variables { #expect(readme.contains("| `\(v.name)` |"), "README lacks \(v.name)") }
        let listed = readme.matches(of: /\| `(KTSTR_[A-Z_]+)` \|/).map { String($0.1) }
        #expect(Set(listed) == Set(KtstrSettings.variables.map(\.name)))
    }
}
