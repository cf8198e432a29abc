import Foundation
import KtstrMachine
import KtstrQEMU
import KtstrProtocol

/// A boot snapshot of one configuration, ready to restore (docs/DESIGN-NOTES.md "Boot
/// snapshots"): `<cache>/snapshots/<key>/` with `state.bin` (qemu's device state),
/// `ram.img` (guest RAM, sparse; with NUMA one per node: `ram.img`, `ram-n1.img`, …) and
/// `meta.json` (written last: the inputs, for people).
struct BootSnapshot: Sendable, Equatable {
    var key: String
    var directory: String
    var nodes: Int
    var ramImages: [String] { SnapshotCache.ramImageNames(nodes: nodes).map { directory + "/" + $0 } }
    var stateFile: String { directory + "/state.bin" }
    /// The command line the snapshot booted with (the run's plus `ktstr.snapshot=1`).
    var commandLine: String
    /// Guest paths of the snapshot's initramfs: a plan request leaves them out.
    var guestPaths: Set<String>
    /// This process built it for this run.
    var built: Bool
    /// meta.json's `buildID`: which build of `key` this is (a failed restore discards only that).
    var buildID: String
}

enum SnapshotCache {
    /// The agent waits for a plan request when the command line has this (PlanDelivery.swift).
    static let commandLineFlag = "ktstr.snapshot=1"
    /// How long a build may take: a cold boot under TCG on a loaded host, then the save.
    static let buildTimeout = Duration.seconds(240)
    /// Snapshots not used for this long are removed when another is built.
    static let maxIdleSeconds: TimeInterval = 3 * 24 * 3600
    static let maxSnapshots = 16
    /// A failed build leaves `<key>.failed` (its error): runs of that configuration boot cold
    /// at once for this long instead of paying a doomed cold boot each (a kernel without
    /// virtio_console cannot wait for a plan request).
    static let failedBuildMemorySeconds: TimeInterval = 24 * 3600

    /// What a snapshot is made of; `SnapshotKey` hashes it.
    struct Configuration: Sendable {
        var qemuPath: String
        var kernelImage: String
        /// The run's cold-boot command line.
        var commandLine: String
        var topology: Topology
        var memoryMiB: Int
        var accelerator: QEMUMachine.Accelerator
        var tcgThreads: QEMUMachine.TCGThreads = .from()
        var agentPath: String
        var kallsyms: [String]
    }

    enum CacheError: Error, CustomStringConvertible {
        case failed(String)
        var description: String {
            switch self { case let .failed(why): "boot snapshot: \(why)" }
        }
    }

    static func root(_ cache: String = Provisioning.cacheDirectory) -> String { cache + "/snapshots" }

    /// The plan the snapshot boots with: no scheduler, no work; only its kallsyms matter
    /// (the agent looks them up before it waits, and a run asking for the same names reuses them).
    static func bootPlan(kallsyms: [String]) -> [UInt8] {
        RunPlan(scheduler: nil, workload: RunPlan.Workload(kind: .idle, count: 0), durationMillis: 0,
                kallsyms: kallsyms, attachTimeoutMillis: 1000).encoded()
    }

    /// The key of `c` and what goes into its initramfs.
    static func key(_ c: Configuration, closure: SharedLibraryClosure = SharedLibraryClosure()) throws
        -> (key: SnapshotKey, files: [SharedLibraryClosure.Placement]) {
        let files = try closure.resolve([(hostPath: c.agentPath, guestPath: "/init")])
        let key = SnapshotKey(kernelImage: c.kernelImage, qemuPath: c.qemuPath,
                              commandLine: c.commandLine + " " + commandLineFlag, topology: c.topology,
                              memoryMiB: c.memoryMiB, accelerator: c.accelerator, tcgThreads: c.tcgThreads,
                              files: files.map { ($0.guestPath, $0.hostPath) }, bootPlan: bootPlan(kallsyms: c.kallsyms))
        return (key, files)
    }

    /// The snapshot of `c`: from the cache, or built now (a cold boot to the agent's `ready`,
    /// then a save) under a lock on `<root>/<key>.lock`, so that parallel processes build it
    /// once and the others wait and use it.
    /// `cancel`: the run's cancellation; it kills a build's VM and ends a wait for the lock.
    static func prepare(_ c: Configuration, cache: String = Provisioning.cacheDirectory, cancel: BuildCancellation = BuildCancellation(),
                        log: Log) throws -> BootSnapshot {
        let (key, files) = try key(c)
        let hash = key.hash
        let root = root(cache)
        let dir = root + "/" + hash
        let guestPaths = Set(files.map(\.guestPath) + ["/ktstr/ok"])
        func ready(built: Bool) -> BootSnapshot? {
            guard let id = valid(dir, nodeMiB: c.topology.nodeMemoryMiB(c.memoryMiB)) else { return nil }
            return BootSnapshot(key: hash, directory: dir, nodes: c.topology.numaNodes, commandLine: key.commandLine, guestPaths: guestPaths, built: built, buildID: id)
        }
        if let s = ready(built: false) { touch(s); return s }
        let failedMarker = root + "/" + hash + ".failed"
        try rememberedFailure(failedMarker)

        try makePrivateDirectory(root)
        let lock = try FileLock(root + "/" + hash + ".lock", waitingFor: "the boot snapshot \(hash)", cancel: cancel, log: log)
        defer { lock.release() }
        if let s = ready(built: false) { touch(s); return s }
        try rememberedFailure(failedMarker)
        let t0 = ContinuousClock.now
        log.info("boot snapshot \(hash): building (a cold boot to the agent's ready point, then a save; once per configuration)")
        do {
            try build(c, key: key, into: dir, cancel: cancel, log: log)
        } catch {
            if !cancel.isCancelled {
                _ = FileManager.default.createFile(atPath: failedMarker, contents: Data("\(error)\n".utf8),
                                                   attributes: [.posixPermissions: 0o600])
            }
            throw error
        }
        log.info("boot snapshot \(hash): built in \(t0.duration(to: .now))")
        prune(root, keeping: hash, log: log)
        guard let s = ready(built: true) else { throw CacheError.failed("built \(dir) but it does not check out") }
        return s
    }

    /// Throws the error of a recent failed build of this key (see `failedBuildMemorySeconds`).
    static func rememberedFailure(_ marker: String) throws {
        let fm = FileManager.default
        guard let attrs = try? fm.attributesOfItem(atPath: marker), let when = attrs[.modificationDate] as? Date else { return }
        guard Date().timeIntervalSince(when) < failedBuildMemorySeconds else {
            unlink(marker)
            return
        }
        let why = String(decoding: (fm.contents(atPath: marker) ?? Data()).prefix(2000), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        throw CacheError.failed("an earlier build of this configuration failed (\(why)) — fix that, or delete \(marker) to try again")
    }

    /// Removes a snapshot whose restore failed (only the build that failed, under the lock),
    /// so that the next run builds it again rather than failing the same way.
    static func discard(_ s: BootSnapshot, log: Log) {
        let root = (s.directory as NSString).deletingLastPathComponent
        guard let lock = try? FileLock(root + "/" + s.key + ".lock", waitingFor: "the boot snapshot \(s.key)", log: log) else { return }
        defer { lock.release() }
        guard valid(s.directory, nodeMiB: nil) == s.buildID else { return }
        let away = s.directory + ".bad-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        if rename(s.directory, away) == 0 { try? FileManager.default.removeItem(atPath: away) }
        log.info("boot snapshot \(s.key): discarded after a failed restore")
    }

    /// `ram.img` for node 0 (the only one without NUMA), `ram-n<k>.img` for node k.
    static func ramImageNames(nodes: Int) -> [String] {
        (0..<max(1, nodes)).map { $0 == 0 ? "ram.img" : "ram-n\($0).img" }
    }

    /// The build ID of a complete snapshot in `dir` (nil: missing or incomplete); with
    /// `nodeMiB`, each node's RAM image must have its node's size.
    static func valid(_ dir: String, nodeMiB: [Int]?) -> String? {
        guard let data = FileManager.default.contents(atPath: dir + "/meta.json"),
              let meta = try? JSONDecoder().decode(Meta.self, from: data), meta.version == 1 else { return nil }
        let fm = FileManager.default
        func size(_ name: String) -> UInt64? { ((try? fm.attributesOfItem(atPath: dir + "/" + name))?[.size] as? NSNumber)?.uint64Value }
        guard let state = size("state.bin"), state > 0 else { return nil }
        if let nodeMiB {
            for (name, mib) in zip(ramImageNames(nodes: nodeMiB.count), nodeMiB) where size(name) != UInt64(mib) << 20 { return nil }
        }
        return meta.buildID
    }

    struct Meta: Codable {
        var version = 1
        var buildID: String
        var built: String
        var inputs: [String]
        var buildMillis: Int
    }

    static func build(_ c: Configuration, key: SnapshotKey, into dir: String, cancel: BuildCancellation, log: Log) throws {
        let tmp = dir + ".build-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try makePrivateDirectory(tmp)
        var moved = false
        defer { if !moved { try? FileManager.default.removeItem(atPath: tmp) } }
        let t0 = ContinuousClock.now

        let image = try InitramfsAssembler(agentPath: c.agentPath, schedulerPath: nil, planJSON: key.bootPlan).assemble()
        let initrd = try UnlinkedFile(contents: image.bytes)
        let watch = ReadyWatch()
        var mc = QEMUMachine.Configuration(
            qemuPath: c.qemuPath, kernelPath: c.kernelImage, initrdFD: initrd.fd, kernelCmdline: key.commandLine,
            topology: c.topology, memoryMiB: c.memoryMiB, accelerator: c.accelerator,
            console: { watch.console($0) }, channel: { watch.channel($0) })
        mc.tcgThreads = c.tcgThreads
        mc.planPort = true
        let m = QEMUMachine(mc, log: log)
        defer { m.kill(); _ = m.wait(timeout: .seconds(10)) }
        try cancel.attach(m)
        try m.start()
        guard watch.waitReady(timeout: buildTimeout, alive: { !m.hasExited }) else {
            if cancel.isCancelled { throw CancellationError() }
            throw CacheError.failed("the agent never said ready (\(m.hasExited ? "qemu exited: \(BootBaseline.oneLine(m.qemuStderr))" : "timeout"))"
                                    + " — \(watch.evidence)")
        }
        try m.saveSnapshot(statePath: tmp + "/state.bin",
                           ramImagePaths: ramImageNames(nodes: c.topology.numaNodes).map { tmp + "/" + $0 })
        withExtendedLifetime(initrd) {}
        let meta = Meta(buildID: "\(getpid())-\(UInt64.random(in: 0...UInt64.max))", built: ISO8601DateFormatter().string(from: Date()),
                        inputs: key.lines, buildMillis: SchedulerRun.millis(t0.duration(to: .now)))
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        let metaPath = tmp + "/meta.json"
        guard FileManager.default.createFile(atPath: metaPath, contents: try enc.encode(meta), attributes: [.posixPermissions: 0o600]) else {
            throw CacheError.failed("cannot write \(metaPath)")
        }
        guard rename(tmp, dir) == 0 else { throw CacheError.failed("rename \(tmp) → \(dir): \(String(cString: strerror(errno)))") }
        moved = true
    }

    /// Marks a snapshot as used (its meta.json's mtime), for `prune`.
    static func touch(_ s: BootSnapshot) {
        _ = utimensat(AT_FDCWD, s.directory + "/meta.json", nil, 0)
    }

    /// Removes snapshots idle for `maxIdleSeconds`, the least recently used beyond
    /// `maxSnapshots`, and leftovers of builds that died and orphaned locks (older than an hour).
    static func prune(_ root: String, keeping: String, log: Log) {
        let fm = FileManager.default
        guard let names = try? fm.contentsOfDirectory(atPath: root) else { return }
        let now = Date()
        func mtime(_ p: String) -> Date? { (try? fm.attributesOfItem(atPath: p))?[.modificationDate] as? Date }
        var live: [(name: String, used: Date)] = []
        for n in names where n != keeping {
            let p = root + "/" + n
            if n.hasSuffix(".lock") {
                // The lock of a snapshot that is gone (a cancelled or failed build).
                if !fm.fileExists(atPath: String(p.dropLast(5))), let d = mtime(p), now.timeIntervalSince(d) > 3600 { unlink(p) }
                continue
            }
            if n.hasSuffix(".failed") {
                if let d = mtime(p), now.timeIntervalSince(d) > failedBuildMemorySeconds { unlink(p) }
                continue
            }
            if n.contains(".build-") || n.contains(".bad-") {
                if let d = mtime(p), now.timeIntervalSince(d) > 3600 { try? fm.removeItem(atPath: p) }
                continue
            }
            live.append((n, mtime(p + "/meta.json") ?? .distantPast))
        }
        live.sort { $0.used > $1.used }
        for (i, s) in live.enumerated() where i >= maxSnapshots - 1 || now.timeIntervalSince(s.used) > maxIdleSeconds {
            try? fm.removeItem(atPath: root + "/" + s.name)
            unlink(root + "/" + s.name + ".lock")
            log.debug("boot snapshot \(s.name): removed (unused)")
        }
    }

    static func makePrivateDirectory(_ path: String) throws {
        if mkdir(path, 0o700) != 0 && errno != EEXIST {
            throw CacheError.failed("mkdir \(path): \(String(cString: strerror(errno))) — check permissions")
        }
        _ = chmod(path, 0o700)
    }
}

/// An exclusive flock on a file in the cache (0600), waited for with progress and a bound.
final class FileLock {
    private var fd: Int32

    init(_ path: String, waitingFor what: String, timeout: Duration = .seconds(600),
         cancel: BuildCancellation = BuildCancellation(), log: Log) throws {
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SnapshotCache.CacheError.failed("open \(path): \(String(cString: strerror(errno)))") }
        let start = ContinuousClock.now
        var said = false
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            guard errno == EWOULDBLOCK || errno == EINTR else {
                let e = errno
                close(fd)
                throw SnapshotCache.CacheError.failed("flock \(path): \(String(cString: strerror(e)))")
            }
            let waited = start.duration(to: .now)
            if cancel.isCancelled {
                close(fd)
                throw CancellationError()
            }
            if waited > timeout {
                close(fd)
                throw SnapshotCache.CacheError.failed("\(path) still locked after \(timeout) — another process builds \(what); remove the lock file if none does")
            }
            if !said, waited > .seconds(1) {
                log.info("waiting for another process to finish \(what)")
                said = true
            }
            usleep(50_000)
        }
    }

    func release() {
        guard fd >= 0 else { return }
        flock(fd, LOCK_UN)
        close(fd)
        fd = -1
    }

    deinit { release() }
}

/// A run's cancellation, seen from the thread that builds a snapshot: it kills the build's VM.
final class BuildCancellation: @unchecked Sendable {
    private let lock = NSLock()
    private var cancelled = false
    private var machine: QEMUMachine?

    var isCancelled: Bool { lock.lock(); defer { lock.unlock() }; return cancelled }

    func cancel() {
        lock.lock()
        cancelled = true
        let m = machine
        lock.unlock()
        m?.kill()
    }

    /// Registers the build's VM; throws when the run is already cancelled.
    func attach(_ m: QEMUMachine) throws {
        lock.lock(); defer { lock.unlock() }
        guard !cancelled else { throw CancellationError() }
        machine = m
    }
}

/// Watches a building VM's channel for the agent's `ready` (and keeps the console's tail for
/// the error when it never comes).
final class ReadyWatch: @unchecked Sendable {
    private let lock = NSLock()
    private var splitter = LineSplitter(maxLine: AgentMessage.maxLineBytes)
    private var console: [UInt8] = []
    private var isReady = false
    private var problem: String?

    func console(_ b: ArraySlice<UInt8>) {
        lock.lock(); defer { lock.unlock() }
        console += b
        if console.count > 16384 { console.removeFirst(console.count - 8192) }
    }

    func channel(_ b: ArraySlice<UInt8>) {
        lock.lock(); defer { lock.unlock() }
        for line in splitter.feed(b) {
            switch AgentMessage.parse(Substring(line)) {
            case .ready: isReady = true
            case let .problem(text, _): problem = String(text.prefix(500))
            default: break
            }
        }
    }

    /// The agent's own problem when it reported one, else the console's tail.
    var evidence: String {
        lock.lock(); defer { lock.unlock() }
        if let problem { return "the agent: \(problem)" }
        return BootBaseline.oneLine(String(decoding: console.suffix(600), as: UTF8.self))
    }

    func waitReady(timeout: Duration, alive: () -> Bool) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            lock.lock(); let r = isReady; lock.unlock()
            if r { return true }
            guard alive() else { return false }
            usleep(20_000)
        }
        return false
    }
}
