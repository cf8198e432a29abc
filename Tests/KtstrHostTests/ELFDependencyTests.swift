import Foundation
import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrQEMU
@testable import KtstrSchedExt
@testable import KtstrProtocol
@testable import KtstrHost

private func bytes(_ path: String) -> [UInt8]? { FileManager.default.contents(atPath: path).map { [UInt8]($0) } }

@Suite struct ELFDependencyTests {
    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/bin/ls"), "needs /bin/ls"))
    func readsARealBinary() throws {
        let info = try ELFDynamicInfo.parse(try #require(bytes("/bin/ls")), path: "/bin/ls")
        #expect(info.interpreter == "/lib64/ld-linux-x86-64.so.2")
        #expect(info.needed.contains("libc.so.6"))
        #expect(info.isExecutableOrShared)
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/bin/ls"), "needs /bin/ls"))
    func closureOfLsHasLoaderAndLibc() throws {
        let files = try SharedLibraryClosure(extraDirectories: [], ldLibraryPath: []).resolve([("/bin/ls", "/ktstr/bin/scheduler")])
        let guest = Set(files.map(\.guestPath))
        #expect(guest.contains("/ktstr/bin/scheduler"))
        #expect(guest.contains("/lib64/ld-linux-x86-64.so.2"))
        #expect(guest.contains("/lib/x86_64-linux-gnu/libc.so.6"))
        // Symlinks are resolved: the host side is the real file.
        for f in files {
            let attrs = try FileManager.default.attributesOfItem(atPath: f.hostPath)
            #expect(attrs[.type] as? FileAttributeType == .typeRegular, "\(f.hostPath)")
        }
    }

    /// The agent links the Swift runtime through RUNPATH (/opt/swift/...:$ORIGIN).
    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/opt/swift/usr/lib/swift/linux/libswiftCore.so"), "needs the Swift toolchain"))
    func closureFollowsRunpathIntoTheSwiftRuntime() throws {
        let lib = "/opt/swift/usr/lib/swift/linux/libswift_Concurrency.so"
        let files = try SharedLibraryClosure(extraDirectories: [], ldLibraryPath: []).resolve([(lib, lib)])
        let guest = Set(files.map(\.guestPath))
        #expect(guest.contains("/opt/swift/usr/lib/swift/linux/libswiftCore.so"))
        #expect(guest.contains("/opt/swift/usr/lib/swift/linux/libdispatch.so"))
        #expect(guest.contains { $0.hasSuffix("/libstdc++.so.6") })
    }

    @Test func originIsExpandedPerSide() {
        #expect(SharedLibraryClosure.expandOrigin("$ORIGIN/../lib", origin: "/ktstr/bin") == "/ktstr/lib")
        #expect(SharedLibraryClosure.expandOrigin("${ORIGIN}", origin: "") == "/")
        #expect(SharedLibraryClosure.normalize("//a/./b/../c") == "/a/c")
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/bin/ls"), "needs /bin/ls"))
    func corruptInputsAreErrorsNotCrashes() throws {
        #expect(throws: ELFDynamicInfo.ELFError.notELF("x")) { try ELFDynamicInfo.parse([1, 2, 3], path: "x") }
        var e32 = [UInt8](repeating: 0, count: 64); e32[0...3] = [0x7F, 0x45, 0x4C, 0x46]; e32[4] = 1; e32[5] = 1
        #expect(throws: ELFDynamicInfo.ELFError.self) { try ELFDynamicInfo.parse(e32) }
        let ls = try #require(bytes("/bin/ls"), "/bin/ls exists but cannot be read")
        // Truncations at many points, and program headers pointing past the end.
        for cut in stride(from: 64, to: min(ls.count, 70_000), by: 997) {
            _ = try? ELFDynamicInfo.parse(Array(ls.prefix(cut)))
        }
        var bad = ls
        bad[32..<40] = [0xF0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F][...] // e_phoff huge
        #expect(throws: ELFDynamicInfo.ELFError.self) { try ELFDynamicInfo.parse(bad) }
        var many = ls
        many[56] = 0xFF; many[57] = 0xFF // e_phnum 65535
        #expect(throws: ELFDynamicInfo.ELFError.self) { try ELFDynamicInfo.parse(many) }
        // Random bytes behind a valid header never crash.
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            var junk = Array(ls.prefix(64)) + (0..<512).map { _ in UInt8.random(in: 0...255, using: &rng) }
            junk[32..<40] = [64, 0, 0, 0, 0, 0, 0, 0][...]
            _ = try? ELFDynamicInfo.parse(junk)
        }
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/bin/ls"), "needs /bin/ls"))
    func missingLibraryNamesWhatAndWhere() throws {
        let dir = FileManager.default.temporaryDirectory.path + "/ktstr-elf-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // /bin/ls with its first DT_NEEDED string renamed in place → unresolvable.
        var ls = try #require(bytes("/bin/ls"), "/bin/ls exists but cannot be read")
        let name = try #require(try ELFDynamicInfo.parse(ls).needed.first { $0.count > 1 }, "/bin/ls has no DT_NEEDED entry")
        let needle = Array(name.utf8)
        let at = try #require((0..<(ls.count - needle.count)).first(where: { ls[$0..<$0 + needle.count].elementsEqual(needle) }),
                              "\(name) not found in /bin/ls's bytes")
        ls[at] = UInt8(ascii: "X")
        let renamed = "X" + name.dropFirst()
        try Data(ls).write(to: URL(fileURLWithPath: dir + "/ls"))
        #expect {
            try SharedLibraryClosure(extraDirectories: [], ldLibraryPath: []).resolve([(dir + "/ls", "/x")])
        } throws: { e in
            "\(e)".contains(renamed) && "\(e)".contains("needed by")
        }
    }
}

@Suite struct BackendSelectionTests {
    let noVirt = BackendSelection.Host(cpuinfo: "processor : 0\nflags : fpu sse2 hypervisor\n", kvmOpens: true)
    let vmx = BackendSelection.Host(cpuinfo: "flags : fpu vmx sse2\n", kvmOpens: true)

    @Test func automaticChoice() throws {
        #expect(try BackendSelection.decide(.auto, settings: KtstrSettings(environment: [:]), host: noVirt).backend == .qemuTCG)
        #expect(try BackendSelection.decide(.auto, settings: KtstrSettings(environment: [:]), host: vmx).backend == .kvm)
        #expect(try BackendSelection.decide(.qemu, settings: KtstrSettings(environment: [:]), host: vmx).backend == .qemuKVM)
        #expect(try BackendSelection.decide(.qemu, settings: KtstrSettings(environment: [:]), host: noVirt).backend == .qemuTCG)
        let closed = BackendSelection.Host(cpuinfo: vmx.cpuinfo, kvmOpens: false)
        #expect(try BackendSelection.decide(.auto, settings: KtstrSettings(environment: [:]), host: closed).backend == .qemuTCG)
    }

    @Test func environmentOverridesAuto() throws {
        #expect(try BackendSelection.decide(.auto, settings: KtstrSettings(environment: ["KTSTR_BACKEND": "qemu-tcg"]), host: vmx).backend == .qemuTCG)
        // Explicit kvm only needs /dev/kvm (the decision carries a warning without vmx/svm).
        let forced = try BackendSelection.decide(.auto, settings: KtstrSettings(environment: ["KTSTR_BACKEND": "kvm"]), host: noVirt)
        #expect(forced.backend == .kvm)
        #expect(forced.warning?.contains("boot takes minutes") == true, "\(forced)")
        #expect(try BackendSelection.decide(.kvm, settings: KtstrSettings(environment: [:]), host: vmx).warning == nil)
        #expect(throws: BackendSelection.SelectionError.self) {
            try BackendSelection.decide(.kvm, settings: KtstrSettings(environment: [:]), host: .init(cpuinfo: "flags : vmx", kvmOpens: false))
        }
        #expect(throws: BackendSelection.SelectionError.self) {
            try BackendSelection.decide(.auto, settings: KtstrSettings(environment: ["KTSTR_BACKEND": "vmware"]), host: noVirt)
        }
        // An explicit argument wins over the environment.
        #expect(try BackendSelection.decide(.qemuTCG, settings: KtstrSettings(environment: ["KTSTR_BACKEND": "kvm"]), host: noVirt).backend == .qemuTCG)
    }

    @Test func slotsBoundConcurrentVMs() async throws {
        let slots = VMSlots(settings: KtstrSettings(environment: ["KTSTR_MAX_VMS": "1"]))
        let a = try await slots.acquire(vcpus: 2)
        let second = Task { try await slots.acquire(vcpus: 2) }
        try await Task.sleep(for: .milliseconds(50))
        await slots.release(a)
        let b = try await second.value
        #expect(b == 1)
        // A waiter that is cancelled leaves the queue with CancellationError.
        let third = Task { try await slots.acquire(vcpus: 2) }
        try await Task.sleep(for: .milliseconds(50))
        third.cancel()
        await #expect(throws: CancellationError.self) { try await third.value }
        await slots.release(b)
        let c = try await slots.acquire(vcpus: 2)
        await slots.release(c)
    }
}
