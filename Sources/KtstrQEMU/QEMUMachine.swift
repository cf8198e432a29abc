import Foundation
import Glibc
import KtstrMachine

/// The fallback backend: a `qemu-system-x86_64` process (`-M pc`, TCG or KVM) booting the
/// kernel directly, with the console on COM1 and the agent channel on COM2 (both host pipes),
/// guest RAM in a shared memory file the host maps too, and QMP for stop/cont/registers.
///
/// Nothing of a live run can be reached by another process, and nothing is left on disk: the
/// RAM file is created 0600 and unlinked right after (qemu opens it as /proc/self/fd/3), the
/// initrd is passed the same way by the caller, console and channel are pipes, and QMP runs
/// over one end of a `socketpair` that qemu inherits as fd 8 (no listening socket, no name).
/// docs/SECURITY.md says why each channel is private. qemu runs under a small `sh` in its own
/// process group that kills it when the host process goes away (its stdin is a pipe whose
/// write end only this process holds: EOF means we died).
public final class QEMUMachine: Machine, @unchecked Sendable {
    public enum Accelerator: String, Sendable { case tcg, kvm }

    /// `KTSTR_TCG_THREAD=single|multi`, default single. With one host thread per vCPU
    /// (MTTCG, qemu 7.2) the 7.3 guest intermittently died of an "Oops: int3" in code that
    /// text_poke_bp was patching on another vCPU (3 of ~60 boots here, also with no scheduler
    /// and no freeze); with all vCPUs on one thread it did not happen in ~30 boots, and boot
    /// time is the same (boot is mostly one CPU, and this host has 2 cores).
    public enum TCGThreads: String, Sendable {
        case single, multi
        public static func from(_ settings: KtstrSettings = .current) -> TCGThreads {
            settings.tcgThreads.flatMap(TCGThreads.init(rawValue:)) ?? .single
        }
    }

    public struct Configuration: Sendable {
        public var qemuPath: String
        public var kernelPath: String
        /// An open fd of the initrd (may be unlinked); passed to qemu as /proc/self/fd/6.
        public var initrdFD: Int32?
        public var kernelCmdline: String
        public var topology: Topology
        public var memoryMiB: Int
        public var accelerator: Accelerator
        public var console: ByteSink
        public var channel: ByteSink
        /// TCG only: one host thread per vCPU (`multi`) or all vCPUs on one (`single`).
        public var tcgThreads: TCGThreads = TCGThreads.from()
        /// COM1 takes input too (`sendToConsole`, `ktstr shell`): the console is a socketpair
        /// qemu inherits as fd 4 (`-chardev socket,fd=4`) instead of an output-only pipe.
        public var consoleInput = false
        /// A virtio-serial port named `org.ktstr.plan` whose host end is one end of a
        /// socketpair (qemu inherits the other as `planPortFD`): the channel a snapshot-booted
        /// agent reads its plan request from (`sendToPlanPort`).
        public var planPort = false
        /// Restore instead of boot (QEMUMachine+Snapshot.swift): each NUMA node's RAM image (one
        /// without NUMA) is copied into its fresh RAM file and the device state loaded from
        /// `stateFile` (fd 6, no initrd).
        public var restore: Restore?

        public struct Restore: Sendable {
            public var ramImages: [String]
            public var stateFile: String
            public init(ramImages: [String], stateFile: String) { self.ramImages = ramImages; self.stateFile = stateFile }
        }

        public init(qemuPath: String, kernelPath: String, initrdFD: Int32?, kernelCmdline: String, topology: Topology,
                    memoryMiB: Int, accelerator: Accelerator, console: @escaping ByteSink, channel: @escaping ByteSink) {
            self.qemuPath = qemuPath; self.kernelPath = kernelPath; self.initrdFD = initrdFD
            self.kernelCmdline = kernelCmdline; self.topology = topology; self.memoryMiB = memoryMiB
            self.accelerator = accelerator; self.console = console; self.channel = channel
        }
    }

    public enum QEMUError: Error, CustomStringConvertible {
        case notStarted
        case setup(String)
        case spawn(String)
        case exitedEarly(String)
        public var description: String {
            switch self {
            case .notStarted: "qemu: the machine is not running — call start() first"
            case let .setup(why): "qemu: \(why)"
            case let .spawn(why): "qemu: cannot start: \(why) — check that qemu-system-x86 is installed"
            case let .exitedEarly(stderr): "qemu exited during startup: \(stderr) — check the kernel path and memory size"
            }
        }
    }

    /// The kernel command line every QEMU run starts with.
    public static let baseCmdline = "console=ttyS0 reboot=k panic=-1 nokaslr rdinit=/init random.trust_cpu=on"

    public let backend: BackendKind
    public var vcpuCount: Int { config.topology.vcpuCount }
    public let config: Configuration
    let log: Log

    let state = NSLock()
    private var pid: pid_t = 0
    private var exitStatus: Int32?
    private var killedByUs = false
    private var memory: GuestMemory?
    var memFDs: [Int32] = []
    private var watchdogWrite: Int32 = -1
    private var consoleInputFD: Int32 = -1
    private var planPortHostFD: Int32 = -1
    var qmp: QMPClient?
    private var readers: [Thread] = []
    private let readersDone = DispatchGroup()
    private let stderrText = LockedText(limit: 8192)
    private static let counter = AtomicCounter()
    /// Serialises fd creation + spawn across machines (see start()).
    static let spawnLock = NSLock()

    /// Unique per machine (`ktstr-<host pid>-<n>-<random>`): names its RAM file while it exists
    /// and is qemu's `-name`, so `ps` and the leftover checks can tell machines apart.
    public let instanceName: String

    public init(_ config: Configuration, log: Log = .default) {
        instanceName = "ktstr-\(getpid())-\(Self.counter.next())-\(UInt32.random(in: 0...UInt32.max))"
        self.config = config
        self.log = log
        backend = config.accelerator == .kvm ? .qemuKVM : .qemuTCG
    }

    deinit {
        kill()
        reap(blocking: true)
        closeFDs()
    }

    public var guestMemory: GuestMemory {
        state.lock()
        defer { state.unlock() }
        // Before start there is no RAM; an empty mapping keeps the protocol non-throwing.
        return memory ?? Self.emptyMemory
    }
    private static let emptyMemory: GuestMemory = (try? GuestMemory.anonymous(layout: [])) ?? { fatalError("empty GuestMemory") }()

    /// The fd qemu inherits its end of the QMP socketpair as.
    static let qmpFD: Int32 = 8
    /// The fd of qemu's end of the plan port's socketpair (`Configuration.planPort`): the
    /// first after the RAM files' (9 without NUMA, 10 with two nodes).
    var planPortFD: Int32 { Self.memoryFD(node: config.topology.numaNodes) }
    /// The fd qemu reads a restored machine's device state from (`-incoming`, `fd:6`): a
    /// restore has no initrd, whose fd this is otherwise.
    static let incomingFD: Int32 = 6

    /// The fd qemu inherits node `n`'s RAM file as: 3 for node 0 (and without NUMA), 9 for
    /// node 1, then 10, 11, … (dash redirects only single-digit fds, so the wrapper cannot
    /// close fds from 10 on in its own copies; they are unlinked 0600 RAM files of this user).
    static func memoryFD(node n: Int) -> Int32 { n == 0 ? 3 : Int32(8 + n) }

    /// qemu's argument vector (without the binary), fds 3..6 and 8 as set up by `start()`.
    public func arguments() -> [String] {
        let t = config.topology
        var a = ["-name", instanceName,
                 "-accel", config.accelerator == .tcg ? "tcg,thread=\(config.tcgThreads.rawValue)" : "kvm",
                 "-M", t.numaNodes > 1 ? "pc" : "pc,memory-backend=ktstr-mem"]
        // Guest RAM: one shared file backend; with NUMA one per node (qemu 7.2's
        // memory-backend-file has no offset=, so each node has its own file and fd). qemu lays
        // the nodes' RAM out one after the other (QEMUMemoryLayout.pc).
        if t.numaNodes > 1 {
            let sizes = t.nodeMemoryMiB(config.memoryMiB)
            for n in 0..<t.numaNodes {
                a += ["-object", "memory-backend-file,id=ktstr-mem\(n),size=\(sizes[n])M,mem-path=/proc/self/fd/\(Self.memoryFD(node: n)),share=on"]
            }
            for (n, cpus) in t.nodeCPUs.enumerated() {
                a += ["-numa", "node,nodeid=\(n),cpus=\(cpus.lowerBound)-\(cpus.upperBound),memdev=ktstr-mem\(n)"]
            }
        } else {
            a += ["-object", "memory-backend-file,id=ktstr-mem,size=\(config.memoryMiB)M,mem-path=/proc/self/fd/3,share=on"]
        }
        // Each LLC is a socket: qemu's CPUID leaf 4 shares the L3 per socket (die), so the
        // guest sees one L3 sharing group per LLC.
        a += ["-m", "\(config.memoryMiB)M",
                 "-smp", "\(t.vcpuCount),sockets=\(t.llcs),cores=\(t.coresPerLLC),threads=\(t.threadsPerCore)",
                 "-nographic", "-nodefaults", "-no-reboot", "-no-user-config",
                 "-kernel", config.kernelPath,
                 "-append", config.kernelCmdline,
                 "-chardev", config.consoleInput ? "socket,id=ktstr-con,fd=4" : "file,id=ktstr-con,path=/proc/self/fd/4",
                 "-serial", "chardev:ktstr-con",
                 "-chardev", "file,id=ktstr-chan,path=/proc/self/fd/5", "-serial", "chardev:ktstr-chan",
                 // An already-connected socket: qemu listens nowhere, so no other process
                 // can reach the monitor (an abstract socket was open to every local uid).
                 "-chardev", "socket,id=ktstr-qmp,fd=\(Self.qmpFD)",
                 "-mon", "chardev=ktstr-qmp,mode=control"]
        if config.planPort {
            a += ["-device", "virtio-serial-pci,id=ktstr-vser",
                  "-chardev", "socket,id=ktstr-plan,fd=\(planPortFD)",
                  "-device", "virtserialport,bus=ktstr-vser.0,chardev=ktstr-plan,name=\(Self.planPortName)"]
        }
        // RDRAND lets the guest seed its CRNG at once (with random.trust_cpu=on): the Swift
        // runtime of the agent calls getrandom() at startup, which otherwise blocks under TCG
        // until "crng init done", seconds into the boot.
        a += ["-cpu", config.accelerator == .kvm ? "host" : "qemu64,+rdrand"]
        if config.restore != nil {
            // The capability x-ignore-shared must be set before the stream is read: defer it.
            a += ["-incoming", "defer"]
        } else if config.initrdFD != nil {
            a += ["-initrd", "/proc/self/fd/6"]
        }
        return a
    }

    /// Runs qemu under sh: the watchdog reads stdin (fd 7 after the dup) and kills qemu at EOF.
    /// Only qemu keeps fds 3..6, 8 and 9 (RAM of NUMA node 1), so qemu's exit closes the QMP socket and the pipes.
    static let wrapper = """
        exec 7<&0
        "$@" </dev/null &
        q=$!
        { exec 3<&- 4>&- 5>&- 6<&- 8<&- 9<&-; read -r _ <&7; kill -9 $q; } >/dev/null 2>&1 &
        w=$!
        exec 3<&- 4>&- 5>&- 6<&- 7<&- 8<&- 9<&-
        wait $q
        rc=$?
        kill $w 2>/dev/null
        exit $rc
        """

    public func start() throws {
        state.lock()
        let already = pid != 0
        state.unlock()
        guard !already else { throw QEMUError.setup("start() called twice") }
        let unique = instanceName
        let ramBytes = UInt64(config.memoryMiB) << 20

        // Guest RAM: a /dev/shm file per NUMA node (one without NUMA), unlinked at once; qemu
        // and we keep them through fds.
        let nodeMiB = config.topology.nodeMemoryMiB(config.memoryMiB)
        for (n, mib) in nodeMiB.enumerated() {
            let shm = "/dev/shm/\(unique)" + (n == 0 ? "" : "-n\(n)")
            let mfd = open(shm, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard mfd >= 0 else { closeFDs(); throw QEMUError.setup("cannot create \(shm): \(String(cString: strerror(errno)))") }
            unlink(shm)
            memFDs.append(mfd)
            guard ftruncate(mfd, off_t(mib) << 20) == 0 else {
                let e = errno
                closeFDs()
                throw QEMUError.setup("cannot size guest RAM to \(config.memoryMiB) MiB in /dev/shm: \(String(cString: strerror(e)))")
            }
        }
        if let r = config.restore {
            do {
                guard r.ramImages.count == memFDs.count else {
                    throw QEMURAMImage.ImageError.io("\(r.ramImages.count) images for \(memFDs.count) RAM files")
                }
                for (k, image) in r.ramImages.enumerated() {
                    try QEMURAMImage.load(image, into: memFDs[k], size: UInt64(nodeMiB[k]) << 20)
                }
            } catch {
                closeFDs()
                throw QEMUError.setup("restore: \(error)")
            }
        }

        // pipe2 is not in the Glibc module: pipe + FD_CLOEXEC under the lock our spawns take,
        // so no concurrently started qemu inherits these ends.
        Self.spawnLock.lock()
        var spawnLocked = true
        defer { if spawnLocked { Self.spawnLock.unlock() } }
        // Every fd made here until it has an owner; closed on any early throw.
        var open: [Int32] = []
        var handedOver = false
        defer { if !handedOver { open.forEach { close($0) } } }
        func pair(_ make: (UnsafeMutablePointer<Int32>) -> Int32, _ what: String) throws -> (Int32, Int32) {
            var p: [Int32] = [-1, -1]
            guard p.withUnsafeMutableBufferPointer({ make($0.baseAddress!) }) == 0 else {
                throw QEMUError.setup("\(what): \(String(cString: strerror(errno)))")
            }
            for fd in p { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
            open += p
            return (p[0], p[1])
        }
        // The console: a pipe, or with input a connected socketpair (like QMP: nothing has a name).
        let con = config.consoleInput ? try pair({ socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, $0) }, "socketpair")
            : try pair({ pipe($0) }, "pipe")
        let chan = try pair({ pipe($0) }, "pipe")
        let err = try pair({ pipe($0) }, "pipe"), dog = try pair({ pipe($0) }, "pipe")
        // QMP: a connected pair, ours and qemu's; no socket anyone else could connect to.
        let qmpPair = try pair({ socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, $0) }, "socketpair")
        // The plan port: connected like QMP, so nothing of it has a name either.
        let planPair = config.planPort ? try pair({ socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, $0) }, "socketpair") : nil
        var incoming: Int32 = -1
        if let r = config.restore {
            incoming = Glibc.open(r.stateFile, O_RDONLY | O_CLOEXEC)
            guard incoming >= 0 else { throw QEMUError.setup("restore: open \(r.stateFile): \(String(cString: strerror(errno)))") }
            open.append(incoming)
        }
        var ramOffset: UInt64 = 0
        let backing = zip(memFDs, nodeMiB).map { fd, mib in
            defer { ramOffset += UInt64(mib) << 20 }
            return (fd: fd, ramOffset: ramOffset, size: UInt64(mib) << 20)
        }
        let memory = try GuestMemory.mapFiles(backing: backing, layout: QEMUMemoryLayout.pc(ramBytes: ramBytes))

        // The child's fd table: target fd -> our fd. The dup2s run in order in the child, so a
        // source numbered below a target could be overwritten by an earlier one: use copies ≥ 64
        // (targets are 0..9, and 10+ for NUMA nodes beyond the second).
        var targets: [(Int32, Int32)] = [(0, dog.0), (1, err.1), (2, err.1), (4, con.1), (5, chan.1),
                                         (Self.qmpFD, qmpPair.1)]
        for (n, fd) in memFDs.enumerated() { targets.append((Self.memoryFD(node: n), fd)) }
        if let planPair { targets.append((planPortFD, planPair.1)) }
        if incoming >= 0 {
            targets.append((Self.incomingFD, incoming))
        } else if let initrd = config.initrdFD {
            targets.append((6, initrd))
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (target, fd) in targets {
            let copy = fcntl(fd, F_DUPFD_CLOEXEC, 64)
            guard copy >= 0 else { throw QEMUError.setup("fcntl(F_DUPFD_CLOEXEC): \(String(cString: strerror(errno)))") }
            open.append(copy)
            posix_spawn_file_actions_adddup2(&actions, copy, target)
        }
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        posix_spawnattr_setpgroup(&attr, 0)
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attr, &none)
        var dfl = sigset_t()
        sigemptyset(&dfl)
        for s in [SIGPIPE, SIGINT, SIGTERM, SIGCHLD] { sigaddset(&dfl, s) }
        posix_spawnattr_setsigdefault(&attr, &dfl)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv = ["/bin/sh", "-c", Self.wrapper, "ktstr-qemu", config.qemuPath] + arguments()
        log.debug("qemu: \(argv.dropFirst(4).joined(separator: " "))")
        let cargv: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { cargv.forEach { free($0) } }
        var child: pid_t = 0
        let rc = posix_spawn(&child, "/bin/sh", &actions, &attr, cargv, environ)
        // The child has its copies. Ours of its ends must go, so that our readers see EOF and
        // qemu's exit closes the QMP connection; we keep the read ends, QMP and the watchdog.
        var kept: Set<Int32> = [con.0, chan.0, err.0, dog.1, qmpPair.0]
        if let planPair { kept.insert(planPair.0) }
        // Input goes to our end of the console socketpair through a copy (the reader closes con.0 at EOF).
        let conInput = config.consoleInput ? fcntl(con.0, F_DUPFD_CLOEXEC, 0) : -1
        if conInput >= 0 { kept.insert(conInput) }
        for fd in open where !kept.contains(fd) { close(fd) }
        open = Array(kept)
        Self.spawnLock.unlock()
        spawnLocked = false
        guard rc == 0 else { throw QEMUError.spawn(String(cString: strerror(rc))) }
        handedOver = true
        state.lock()
        pid = child
        watchdogWrite = dog.1
        consoleInputFD = conInput
        planPortHostFD = planPair?.0 ?? -1
        self.memory = memory
        state.unlock()

        startReader(fd: con.0, name: "console", sink: config.console)
        startReader(fd: chan.0, name: "channel", sink: config.channel)
        let errText = stderrText
        startReader(fd: err.0, name: "stderr") { errText.append($0) }

        // The greeting comes once qemu has parsed its options and built the machine; if qemu
        // exits first, its end closes and the client fails at once.
        do {
            let c = try QMPClient(connected: qmpPair.0, timeout: .seconds(20))
            state.lock(); qmp = c; state.unlock()
            if config.restore != nil { try loadIncoming(c) }
        } catch let e as QEMUError {
            kill()
            throw e
        } catch {
            if !reap(blocking: false) { usleep(200_000) }
            if reap(blocking: false) {
                state.lock(); let killed = killedByUs; state.unlock()
                if killed { throw QEMUError.setup("killed while starting") }
                throw QEMUError.exitedEarly(Self.oneLine(stderrText.text))
            }
            kill()
            throw QEMUError.setup("QMP did not come up within 20 s: \(error) (\(Self.oneLine(stderrText.text)))")
        }
        log.debug("qemu: pid \(child) started (\(backend.rawValue), \(config.topology), \(config.memoryMiB) MiB)")
    }

    private func startReader(fd: Int32, name: String, sink: @escaping ByteSink) {
        let drained = readersDone
        drained.enter()
        let t = Thread {
            defer { drained.leave() }
            var buf = [UInt8](repeating: 0, count: 16384)
            while true {
                let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { break }
                sink(buf[0..<n])
            }
            close(fd)
        }
        t.name = "ktstr-qemu-\(name)"
        t.start()
        readers.append(t)
    }

    func requireQMP() throws -> QMPClient {
        state.lock()
        defer { state.unlock() }
        guard let q = qmp, exitStatus == nil else { throw QEMUError.notStarted }
        return q
    }

    public func freeze(timeout: Duration) throws -> [VCPURegisterSnapshot] {
        let q = try requireQMP()
        try q.execute("stop", timeout: timeout)
        let text = try q.human("info registers -a", timeout: timeout)
        let regs = QEMURegisterParser.parse(text)
        guard regs.count == vcpuCount else {
            throw QEMUError.setup("info registers gave \(regs.count) of \(vcpuCount) vCPUs")
        }
        return regs
    }

    public func thaw() throws {
        try requireQMP().execute("cont")
    }

    /// The exit as qemu saw it: status 0 after the guest reset (-no-reboot) or powered off.
    public func wait(timeout: Duration) -> MachineExit {
        let deadline = ContinuousClock.now + timeout
        while !reap(blocking: false) {
            if ContinuousClock.now >= deadline {
                log.warning("qemu: no exit within \(timeout); killing it")
                kill()
                reap(blocking: true)
                return .timeout
            }
            usleep(10_000)
        }
        // The readers end at EOF, right after qemu; let them hand over the last bytes.
        _ = readersDone.wait(timeout: .now() + 2)
        state.lock()
        let st = exitStatus ?? 0, killed = killedByUs
        state.unlock()
        if killed { return .killed }
        if st & 0x7F == 0, (st >> 8) & 0xFF == 0 { return .shutdown }
        let why = st & 0x7F == 0 ? "exit status \((st >> 8) & 0xFF)" : "signal \(st & 0x7F)"
        return .fatal("qemu \(why): \(Self.oneLine(stderrText.text))")
    }

    /// qemu's stderr as one line (errors are reported on one line).
    static func oneLine(_ text: String) -> String {
        text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }.joined(separator: "; ")
    }

    /// The machine's process group (the sh wrapper, its watchdog and qemu), or nil before
    /// start and after exit. Tests use it to find qemu's pid and look at what it holds open.
    public var processGroup: pid_t? {
        state.lock()
        defer { state.unlock() }
        return pid > 0 && exitStatus == nil ? pid : nil
    }

    /// Bytes for the guest's COM1 input (`Configuration.consoleInput`). False when the machine
    /// has no console input, is not running, or qemu is gone (never SIGPIPE).
    @discardableResult
    public func sendToConsole(_ bytes: [UInt8]) -> Bool {
        state.lock()
        let fd = exitStatus == nil ? consoleInputFD : -1
        state.unlock()
        guard fd >= 0 else { return false }
        return Self.sendAll(fd, bytes)
    }

    /// True once qemu's wrapper has exited (reaps it: `processGroup` alone stays set after a
    /// kill until someone reaps).
    public var hasExited: Bool { reap(blocking: false) }

    /// Bytes for the guest's plan port (`Configuration.planPort`), blocking until qemu took
    /// them all (the guest reads as it unpacks). False when there is no port or qemu is gone.
    @discardableResult
    public func sendToPlanPort(_ bytes: [UInt8]) -> Bool {
        state.lock()
        let fd = exitStatus == nil && planPortHostFD >= 0 ? dup(planPortHostFD) : -1
        state.unlock()
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return Self.sendAll(fd, bytes)
    }

    /// Writes all of `bytes` to a socket (no SIGPIPE when the peer is gone); false when it
    /// could not.
    private static func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }
            off += n
        }
        return true
    }

    /// qemu's own stderr (errors about options, files, accelerators).
    public var qemuStderr: String { stderrText.text }

    public func kill() {
        state.lock()
        defer { state.unlock() }
        guard pid > 0, exitStatus == nil else { return }
        killedByUs = true
        // The whole group: sh, its watchdog and qemu.
        Glibc.kill(-pid, SIGKILL)
    }

    /// Reaps the sh wrapper; true once it has exited.
    @discardableResult
    private func reap(blocking: Bool) -> Bool {
        state.lock()
        defer { state.unlock() }
        guard pid > 0 else { return true }
        if exitStatus != nil { return true }
        var st: Int32 = 0
        while true {
            let r = waitpid(pid, &st, blocking ? 0 : WNOHANG)
            if r < 0 && errno == EINTR { continue }
            if r == pid || (r < 0 && errno == ECHILD) {
                exitStatus = r == pid ? st : 0
                // Anything left in the group (qemu if sh died first) goes too.
                Glibc.kill(-pid, SIGKILL)
                closeWatchdogLocked()
                return true
            }
            return false
        }
    }

    private func closeWatchdogLocked() {
        if watchdogWrite >= 0 { close(watchdogWrite); watchdogWrite = -1 }
        if consoleInputFD >= 0 { close(consoleInputFD); consoleInputFD = -1 }
        if planPortHostFD >= 0 { close(planPortHostFD); planPortHostFD = -1 }
    }

    private func closeFDs() {
        state.lock()
        defer { state.unlock() }
        closeWatchdogLocked()
        memFDs.forEach { close($0) }
        memFDs = []
        qmp = nil
    }
}

/// A bounded, lock-protected text buffer (qemu's stderr).
final class LockedText: @unchecked Sendable {
    private let lock = NSLock()
    private var bytes: [UInt8] = []
    private let limit: Int
    init(limit: Int) { self.limit = limit }
    func append(_ b: ArraySlice<UInt8>) {
        lock.lock(); defer { lock.unlock() }
        bytes += b
        if bytes.count > limit { bytes.removeFirst(bytes.count - limit) }
    }
    var text: String { lock.lock(); defer { lock.unlock() }; return String(decoding: bytes, as: UTF8.self) }
}

final class AtomicCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    func next() -> Int { lock.lock(); defer { lock.unlock() }; value += 1; return value }
}
