import Foundation
import Glibc
import Testing
@testable import KtstrMachine
@testable import KtstrQEMU
@testable import KtstrHost
@testable import KtstrProtocol
import KtstrSchedExt

/// QEMU boot snapshots end to end (docs/DESIGN-NOTES.md "Boot snapshots"): restores differ in
/// their randomness, every input makes its own snapshot, a corrupt one falls back to a cold boot.
@Suite(.timeLimit(.minutes(8)), .enabled(if: QEMUEnv.missingAgent == nil, Comment(rawValue: QEMUEnv.missingAgent ?? "")))
struct BootSnapshotTests {
    /// The default test VM (2 vCPUs, 512 MiB): the snapshot the scheduler tests use too.
    static let vm = VMConfig(cpus: 2, memoryMiB: 512, backend: .qemuTCG, timeoutSeconds: 120)

    static func idleRun(_ settings: KtstrSettings = .current) async throws -> RunOutcome {
        try await SchedulerRun.run(vm: vm, scheduler: .none, workload: .idle, duration: .zero, artifactsDirectory: nil,
                                   log: .silent, agentPath: nil, settings: settings)
    }

    /// These settings with a kernel argument of the test's own: a configuration (and so a
    /// snapshot) no other test shares.
    static func settingsWithOwnSnapshot() -> (KtstrSettings, String) {
        let marker = "ktstr.snaptest=\(UInt32.random(in: 0...UInt32.max))"
        var env = ProcessInfo.processInfo.environment
        env["KTSTR_CMDLINE"] = [env["KTSTR_CMDLINE"], marker].compactMap { $0 }.joined(separator: " ")
        env["KTSTR_SNAPSHOT"] = nil
        return (KtstrSettings(environment: env), marker)
    }

    static func remove(snapshot key: String) {
        let root = SnapshotCache.root()
        try? FileManager.default.removeItem(atPath: root + "/" + key)
        unlink(root + "/" + key + ".lock")
    }

    /// The configuration a default run of `vm` uses, for key comparisons.
    static func configuration(_ settings: KtstrSettings = .current) throws -> SnapshotCache.Configuration {
        SnapshotCache.Configuration(
            qemuPath: try Provisioning.qemuBinary(), kernelImage: try Provisioning.kernel().image,
            commandLine: QEMUMachine.baseCmdline + " " + SchedulerRun.cmdlineExtras + SchedulerRun.extraCmdline(settings),
            topology: vm.topology, memoryMiB: vm.memoryMiB, accelerator: .tcg,
            agentPath: try Provisioning.agentBinary(), kallsyms: FailureMonitor.requiredSymbols)
    }

    @Test func twoRestoresOfOneSnapshotSeeDifferentRandomBytes() async throws {
        var settings = KtstrSettings.current
        settings.snapshotEnabled = true
        let a = try await Self.idleRun(settings)
        let b = try await Self.idleRun(settings)
        for o in [a, b] {
            let s = try #require(o.snapshot, "no snapshot use recorded")
            #expect(s.restored, "not restored: \(s.problem?.description ?? "")")
            #expect(s.guestRandom?.count == 32, "\(s)")
            #expect(o.problems.isEmpty, "\(o.problems)")
            #expect(o.kernelRelease != nil && o.machineExit == .shutdown)
        }
        let expected = try Self.keyOf(Self.configuration(settings))
        #expect(a.snapshot?.key == b.snapshot?.key && a.snapshot?.key == expected)
        #expect(a.snapshot?.guestRandom != b.snapshot?.guestRandom, "two restores drew the same random bytes")
        #expect(b.snapshot?.built == false, "the second run must reuse the first one's snapshot")
    }

    static func keyOf(_ c: SnapshotCache.Configuration) throws -> String { try SnapshotCache.key(c).key.hash }

    /// Every input is part of the key; a copy of the same kernel bytes is the same kernel.
    @Test func theKeyFollowsEveryInput() throws {
        let base = try Self.configuration()
        let k = try Self.keyOf(base)
        #expect(try Self.keyOf(base) == k, "the key is stable")
        var c = base; c.commandLine += " loglevel=7"
        #expect(try Self.keyOf(c) != k, "command line")
        c = base; c.memoryMiB = 1024
        #expect(try Self.keyOf(c) != k, "memory")
        c = base; c.topology = Topology(llcs: 2, coresPerLLC: 1, threadsPerCore: 1)
        #expect(try Self.keyOf(c) != k, "topology")
        c = base; c.tcgThreads = .multi
        #expect(try Self.keyOf(c) != k, "TCG threading")
        c = base; c.kallsyms.append("jiffies_64")
        #expect(try Self.keyOf(c) != k, "boot plan")

        let dir = try ProvisioningFiles.scratchDirectory(in: NSTemporaryDirectory(), prefix: "ktstr-snapkey")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Another agent build: one byte more.
        var agent = try #require(FileManager.default.contents(atPath: base.agentPath))
        agent.append(0)
        #expect(FileManager.default.createFile(atPath: dir + "/ktstr-guest", contents: agent, attributes: [.posixPermissions: 0o755]))
        c = base; c.agentPath = dir + "/ktstr-guest"
        #expect(try Self.keyOf(c) != k, "agent build")
        // The same kernel bytes elsewhere: the same snapshot.
        try FileManager.default.copyItem(atPath: base.kernelImage, toPath: dir + "/bzImage")
        c = base; c.kernelImage = dir + "/bzImage"
        #expect(try Self.keyOf(c) == k, "a copy of the kernel")
    }

    @Test func aChangedCommandLineMakesANewSnapshot() async throws {
        let (settings, marker) = Self.settingsWithOwnSnapshot()
        let o = try await Self.idleRun(settings)
        defer { o.snapshot?.key.map { Self.remove(snapshot: $0) } }
        let s = try #require(o.snapshot)
        #expect(s.built && s.restored, "\(s)")
        let defaultKey = try Self.keyOf(Self.configuration()), ownKey = try Self.keyOf(Self.configuration(settings))
        #expect(s.key != defaultKey)
        #expect(s.key == ownKey)
        let meta = try #require(FileManager.default.contents(atPath: SnapshotCache.root() + "/\(s.key ?? "")/meta.json"))
        #expect(String(decoding: meta, as: UTF8.self).contains(marker), "the snapshot booted with the run's command line")
        #expect(o.problems.isEmpty, "\(o.problems)")
    }

    @Test func aCorruptSnapshotFallsBackToAColdBootWithTheProblemRecorded() async throws {
        let (settings, _) = Self.settingsWithOwnSnapshot()
        let first = try await Self.idleRun(settings)
        let key = try #require(first.snapshot?.key)
        defer { Self.remove(snapshot: key) }
        #expect(first.snapshot?.restored == true)
        // Garbage over the start of the device state: qemu refuses the stream.
        let state = SnapshotCache.root() + "/\(key)/state.bin"
        let fd = open(state, O_WRONLY | O_CLOEXEC)
        try #require(fd >= 0)
        let junk = [UInt8](repeating: 0xA5, count: 4096)
        #expect(junk.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) } == 4096)
        close(fd)

        let o = try await Self.idleRun(settings)
        let s = try #require(o.snapshot)
        #expect(!s.restored)
        #expect(s.problem?.kind == .snapshotFallback, "\(s)")
        // The cold boot is a whole run: hello, done, power-off, no problem of its own.
        #expect(o.problems.isEmpty, "\(o.problems)")
        #expect(o.kernelRelease != nil && o.machineExit == .shutdown, "\(o.machineExit)")
        // The broken snapshot is gone, so the next run builds a good one.
        #expect(SnapshotCache.valid(SnapshotCache.root() + "/\(key)", nodeMiB: nil) == nil)
    }
}

/// A configuration whose snapshot cannot be built fails once: the error is remembered, so
/// later runs boot cold at once instead of paying a doomed cold boot each.
@Suite(.timeLimit(.minutes(5)), .enabled(if: QEMUEnv.missing == nil, Comment(rawValue: QEMUEnv.missing ?? "")))
struct BootSnapshotFailureTests {
    @Test func aFailedBuildIsRememberedAndNamesItsCause() throws {
        let cache = try ProvisioningFiles.scratchDirectory(in: NSTemporaryDirectory(), prefix: "ktstr-snapcache")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        // Not an agent: /init exits at once, the kernel panics, nobody ever says ready.
        var c = try BootSnapshotTests.configuration()
        c.agentPath = "/bin/true"
        c.memoryMiB = 256
        let t0 = ContinuousClock.now
        #expect(throws: SnapshotCache.CacheError.self) { try SnapshotCache.prepare(c, cache: cache, log: .silent) }
        let firstTook = t0.duration(to: .now)
        let key = try SnapshotCache.key(c).key.hash
        let marker = SnapshotCache.root(cache) + "/\(key).failed"
        let text = String(decoding: try #require(FileManager.default.contents(atPath: marker)), as: UTF8.self)
        #expect(text.contains("never said ready"), "\(text)")
        let mode = try FileManager.default.attributesOfItem(atPath: marker)[.posixPermissions] as? NSNumber
        #expect(mode?.intValue == 0o600)
        // Nothing half-built is left: no snapshot directory, no build directory.
        let names = try FileManager.default.contentsOfDirectory(atPath: SnapshotCache.root(cache))
        #expect(Set(names) == [key + ".failed", key + ".lock"], "\(names)")

        let t1 = ContinuousClock.now
        do {
            _ = try SnapshotCache.prepare(c, cache: cache, log: .silent)
            Issue.record("a remembered failure must throw")
        } catch {
            #expect("\(error)".contains("an earlier build of this configuration failed") && "\(error)".contains(marker), "\(error)")
        }
        #expect(t1.duration(to: .now) < .seconds(2) && t1.duration(to: .now) < firstTook)
        // An old failure is forgotten.
        let old = timespec(tv_sec: time(nil) - 2 * 24 * 3600, tv_nsec: 0)
        _ = [old, old].withUnsafeBufferPointer { utimensat(AT_FDCWD, marker, $0.baseAddress, 0) }
        #expect(throws: Never.self) { try SnapshotCache.rememberedFailure(marker) }
        #expect(!FileManager.default.fileExists(atPath: marker))
    }
}
