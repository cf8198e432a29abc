// Snapshot boot (docs/PROTOCOLS.md "Plan request"): with `ktstr.snapshot=1` on the kernel
// command line the agent says hello and `ready`, then blocks on a virtio-serial port until
// the host sends a plan request. The host saves the VM while it blocks; every restored copy
// gets its own request: fresh entropy, the host's clock, the run's files. After unpacking
// them the agent returns to the ordinary run, which reads /ktstr/plan.json as always.
import Glibc
import KtstrProtocol

enum PlanDelivery {
    static let commandLineFlag = "ktstr.snapshot=1"
    /// The virtserialport's name (`-device virtserialport,name=...` on the host).
    static let portName = "org.ktstr.plan"

    /// The kallsyms found at boot: the run's hello reuses them when the run's plan asks for
    /// the same names (nokaslr, same kernel image: the addresses cannot have moved).
    nonisolated(unsafe) static var bootKallsyms: (names: [String], found: [(String, String)])?

    /// The boot's kallsyms for `names`, or nil when this was no snapshot boot or the plan
    /// asks for other names.
    static func kallsyms(for names: [String]) -> [(String, String)]? {
        guard let b = bootKallsyms, b.names == names else { return nil }
        return b.found
    }

    static func isSnapshotBoot() -> Bool {
        let line = Sys.readText("/proc/cmdline", limit: 4096) ?? ""
        return line.split(whereSeparator: { $0 == " " || $0 == "\n" }).contains { $0 == commandLineFlag }
    }

    /// The hook in `Agent.run`: returns at once on an ordinary boot. On a snapshot boot it
    /// returns once a request has been unpacked (any failure ends the run with a problem).
    static func awaitPlanIfSnapshotBoot() {
        guard isSnapshotBoot() else { return }
        guard let bytes = Sys.read("/ktstr/plan.json") else { Agent.finish(problem: "snapshot boot: cannot read the boot plan: \(Sys.errnoText())") }
        let boot: RunPlan
        switch RunPlan.decode(bytes) {
        case let .success(p): boot = p
        case let .failure(e): Agent.finish(problem: "snapshot boot: \(e.text)")
        }
        let found = Kallsyms.lookup(boot.kallsyms)
        bootKallsyms = (boot.kallsyms, found)
        sendHello(found)
        let fd: Int32
        switch openPort() {
        case let .success(f): fd = f
        case let .failure(why): Agent.finish(problem: "snapshot boot: \(why.text)")
        }
        Channel.send(.ready)

        // --- The host saves the VM here; everything below runs in a restored copy. ---
        let request: PlanRequest
        switch readRequest(fd) {
        case let .success(r): request = r
        case let .failure(why): Agent.finish(problem: "plan request: \(why.text)")
        }
        close(fd)
        let t = Sys.nowMillis()
        if let e = reseed(request.entropy) { Channel.problem("RNG reseed: \(e)") }
        var ts = timespec(tv_sec: Int(request.realtimeSeconds), tv_nsec: Int(request.realtimeNanoseconds))
        if clock_settime(CLOCK_REALTIME, &ts) != 0 { Channel.problem("clock_settime: \(Sys.errnoText())") }
        if let e = unpack(request.archive) { Agent.finish(problem: "plan request: \(e)") }
        Console.say("restored: plan request of \(request.archive.count >> 10) KiB unpacked in \(Sys.nowMillis() - t) ms")
        Channel.send(.restored(random: randomHex(16)))
    }

    static func sendHello(_ syms: [(String, String)]) {
        var uts = utsname()
        uname(&uts)
        let release = withUnsafeBytes(of: &uts.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let addresses = Dictionary(syms.compactMap { name, hex in UInt64(hex, radix: 16).map { (name, $0) } },
                                   uniquingKeysWith: { a, _ in a })
        let cpus = sysconf(Int32(_SC_NPROCESSORS_ONLN))
        Channel.send(.hello(release: release, cpus: cpus, kallsyms: addresses, topology: TopologyReader.read(cpus: cpus)))
    }

    struct Failure: Error { var text: String }

    /// /dev/vportNpM of the port named `portName` (virtio_console names them in sysfs).
    static func openPort() -> Result<Int32, Failure> {
        let base = "/sys/class/virtio-ports"
        guard let dir = opendir(base) else { return .failure(Failure(text: "\(base): \(Sys.errnoText()) — no virtio-serial device")) }
        defer { closedir(dir) }
        while let e = readdir(dir) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard name.hasPrefix("vport"),
                  Sys.readText("\(base)/\(name)/name", limit: 256)?.split(separator: "\n").first == Substring(portName) else { continue }
            let fd = open("/dev/\(name)", O_RDWR | O_CLOEXEC)
            guard fd >= 0 else { return .failure(Failure(text: "open /dev/\(name): \(Sys.errnoText())")) }
            return .success(fd)
        }
        return .failure(Failure(text: "no virtio port named \(portName)"))
    }

    /// Header, then exactly the lengths it states (bounded by `PlanRequest`'s limits).
    static func readRequest(_ fd: Int32) -> Result<PlanRequest, Failure> {
        guard let head = readExactly(fd, PlanRequest.headerBytes) else { return .failure(Failure(text: "read: \(Sys.errnoText())")) }
        let h: PlanRequest.Header
        switch PlanRequest.decodeHeader(head) {
        case let .success(x): h = x
        case let .failure(e): return .failure(Failure(text: e.description))
        }
        guard let entropy = readExactly(fd, h.entropyBytes), let archive = readExactly(fd, h.archiveBytes) else {
            return .failure(Failure(text: "the request ended early: \(Sys.errnoText())"))
        }
        return .success(PlanRequest(realtimeSeconds: h.realtimeSeconds, realtimeNanoseconds: h.realtimeNanoseconds,
                                    entropy: entropy, archive: archive))
    }

    /// Blocks until `count` bytes came. A read of 0 means no host is connected to the port
    /// (yet): wait and read again. Only a real error gives up.
    static func readExactly(_ fd: Int32, _ count: Int) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = out.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + got, count - got) }
            if n < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            if n < 0 { return nil }
            if n == 0 { Sys.sleepMillis(5); continue }
            got += n
        }
        return out
    }

    /// RNDADDENTROPY (credited) and RNDRESEEDCRNG: the restored kernel's CRNG state is the
    /// snapshot's, the same in every copy, until it is reseeded with something new.
    static func reseed(_ entropy: [UInt8]) -> String? {
        guard !entropy.isEmpty else { return "the request carried no entropy" }
        let fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return "open /dev/urandom: \(Sys.errnoText())" }
        defer { close(fd) }
        // struct rand_pool_info { int entropy_count (bits); int buf_size (bytes); u32 buf[]; }
        var info = [UInt8](repeating: 0, count: 8 + entropy.count)
        withUnsafeBytes(of: Int32(entropy.count * 8).littleEndian) { info.replaceSubrange(0..<4, with: $0) }
        withUnsafeBytes(of: Int32(entropy.count).littleEndian) { info.replaceSubrange(4..<8, with: $0) }
        info.replaceSubrange(8..., with: entropy)
        let rndAddEntropy: UInt = 0x4008_5203 // _IOW('R', 0x03, int[2])
        let rndReseedCRNG: UInt = 0x5207       // _IO('R', 0x07)
        let added = info.withUnsafeMutableBytes { ioctl(fd, rndAddEntropy, $0.baseAddress!) }
        guard added == 0 else { return "RNDADDENTROPY: \(Sys.errnoText())" }
        guard ioctl(fd, rndReseedCRNG) == 0 else { return "RNDRESEEDCRNG: \(Sys.errnoText())" }
        return nil
    }

    /// `n` bytes from the kernel's CRNG (the standard library's generator is getrandom(2)).
    static func randomHex(_ n: Int) -> String {
        var g = SystemRandomNumberGenerator()
        let b = (0..<n).map { _ in UInt8.random(in: 0...255, using: &g) }
        let digits = Array("0123456789abcdef".utf8)
        return String(decoding: b.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] }, as: UTF8.self)
    }

    /// Writes the archive's entries under `root` (/ in the guest; a directory in tests).
    /// Paths were checked by `NewcArchive.entries` (no `..`, no absolute escape); directories
    /// are walked with O_NOFOLLOW, so a symlink in the archive cannot redirect a later entry
    /// outside the tree. Returns an error text.
    static func unpack(_ archive: [UInt8], root: String = "/") -> String? {
        let entries: [NewcArchive.Entry]
        switch NewcArchive.entries(archive) {
        case let .success(e): entries = e
        case let .failure(e): return e.description
        }
        for e in entries {
            guard let dir = openDirectory(e.components.dropLast(), root: root) else { return "\(e.path): parent: \(Sys.errnoText())" }
            defer { close(dir) }
            let leaf = e.components[e.components.count - 1]
            switch e.kind {
            case .directory:
                if mkdirat(dir, leaf, mode_t(e.permissions)) != 0, errno != EEXIST { return "mkdir \(e.path): \(Sys.errnoText())" }
            case .file:
                _ = unlinkat(dir, leaf, 0) // replace, never write through an old file or link
                let fd = openat(dir, leaf, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode_t(e.permissions))
                guard fd >= 0 else { return "create \(e.path): \(Sys.errnoText())" }
                let ok = Sys.writeAll(fd, Array(archive[e.data]))
                fchmod(fd, mode_t(e.permissions))
                close(fd)
                if !ok { return "write \(e.path): \(Sys.errnoText())" }
            case let .symlink(target):
                _ = unlinkat(dir, leaf, 0)
                if symlinkat(target, dir, leaf) != 0 { return "symlink \(e.path): \(Sys.errnoText())" }
            }
        }
        return nil
    }

    /// An fd of the directory `<root>/<parts>`, made where missing, never following a symlink.
    static func openDirectory(_ parts: ArraySlice<String>, root: String) -> Int32? {
        var fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        for p in parts {
            if mkdirat(fd, p, 0o755) != 0, errno != EEXIST { close(fd); return nil }
            let next = openat(fd, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            close(fd)
            guard next >= 0 else { return nil }
            fd = next
        }
        return fd
    }
}
