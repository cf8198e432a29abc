// Small wrappers over Glibc for the agent: files, mounts, time, processes.
import Glibc

enum Sys {
    /// Milliseconds on CLOCK_MONOTONIC.
    static func nowMillis() -> Int {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int(ts.tv_sec) * 1000 + Int(ts.tv_nsec) / 1_000_000
    }

    static func sleepMillis(_ ms: Int) {
        guard ms > 0 else { return }
        var ts = timespec(tv_sec: ms / 1000, tv_nsec: (ms % 1000) * 1_000_000)
        var rem = timespec()
        while nanosleep(&ts, &rem) != 0 && errno == EINTR { ts = rem }
    }

    static func errnoText(_ e: Int32 = errno) -> String { String(cString: strerror(e)) }

    /// Reads a whole file, at most `limit` bytes (proc/sysfs files report size 0, so read until EOF).
    static func read(_ path: String, limit: Int = 1 << 20) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while out.count < limit {
            let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, min($0.count, limit - out.count)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            out += buf[0..<n]
        }
        return out
    }

    static func readText(_ path: String, limit: Int = 1 << 20) -> String? {
        read(path, limit: limit).map { String(decoding: $0, as: UTF8.self) }
    }

    /// The last `limit` bytes of a file.
    static func tail(_ path: String, limit: Int) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        let size = lseek(fd, 0, SEEK_END)
        guard size >= 0 else { return nil }
        lseek(fd, max(0, size - off_t(limit)), SEEK_SET)
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 16384)
        while out.count < limit {
            let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            out += buf[0..<n]
        }
        return String(decoding: out.suffix(limit), as: UTF8.self)
    }

    @discardableResult
    static func write(_ path: String, _ text: String) -> Bool {
        let fd = open(path, O_WRONLY | O_CLOEXEC | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return writeAll(fd, Array(text.utf8))
    }

    @discardableResult
    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }
            off += n
        }
        return true
    }

    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// libbpf reads the kernel config from /boot/config-<release> (docs/PROTOCOLS.md
    /// "Initramfs the host builds"); the host links it when it knows the release. This adds
    /// the link when it did not (or named another release). Returns an error text or nil.
    static func linkKernelConfig(release: String) -> String? {
        let config = "/ktstr/kconfig", link = "/boot/config-" + release
        guard exists(config), !exists(link), !release.isEmpty, !release.contains("/") else { return nil }
        mkdir("/boot", 0o755)
        return symlink(config, link) == 0 ? nil : "symlink \(link): \(errnoText())"
    }

    /// Mounts a pseudo filesystem; returns an error text or nil.
    static func mountFS(_ type: String, at target: String, flags: UInt = 0, options: String? = nil) -> String? {
        mkdir(target, 0o755)
        let rc = options.map { o in o.withCString { mount(type, target, type, flags, $0) } }
            ?? mount(type, target, type, flags, nil)
        if rc != 0 && errno != EBUSY { return "mount \(type) on \(target): \(errnoText())" }
        return nil
    }

    /// posix_spawn with stdin from /dev/null and stdout+stderr to `output` (a file path) or
    /// inherited. Returns the pid or an error text.
    static func spawn(_ path: String, _ args: [String], output: String?, env: [String]) -> Result<pid_t, SpawnError> {
        spawn(path, args, env: env, newSession: false) { actions in
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            if let output {
                posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_APPEND, 0o644)
                posix_spawn_file_actions_adddup2(&actions, 1, 2)
            }
        }
    }

    /// posix_spawn with `stdio` setting up the child's fds 0...2, default signal state, and
    /// SCHED_OTHER; `newSession`: the child leads a new session (its first tty opened without
    /// O_NOCTTY becomes its controlling terminal).
    static func spawn(_ path: String, _ args: [String], env: [String], newSession: Bool,
                      stdio: (inout posix_spawn_file_actions_t) -> Void) -> Result<pid_t, SpawnError> {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        stdio(&actions)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        // PID 1 blocks/ignores nothing, but reset signal state for children explicitly.
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigdefault(&attr, &all)
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attr, &none)
        // The agent runs SCHED_FIFO (see Agent.run); what it starts runs as a normal task,
        // under the scheduler being tested.
        posix_spawnattr_setschedpolicy(&attr, SCHED_OTHER)
        var normal = sched_param(sched_priority: 0)
        posix_spawnattr_setschedparam(&attr, &normal)
        let setsid: Int32 = 0x80 // POSIX_SPAWN_SETSID (glibc ≥ 2.26)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSCHEDULER
                                              | (newSession ? setsid : 0)))

        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + args).map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = env.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) }; envp.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, &attr, argv, envp)
        guard rc == 0 else { return .failure(SpawnError(text: "spawn \(path): \(errnoText(rc))")) }
        return .success(pid)
    }

    struct SpawnError: Error { var text: String }

    /// Non-blocking reap: the wait status when `pid` has exited, else nil.
    static func reapIfExited(_ pid: pid_t) -> Int32? {
        var st: Int32 = 0
        let r = waitpid(pid, &st, WNOHANG)
        return r == pid ? st : nil
    }

    /// Waits up to `millis` for `pid`; the wait status or nil on timeout.
    static func waitFor(_ pid: pid_t, millis: Int) -> Int32? {
        let end = nowMillis() + millis
        while true {
            if let st = reapIfExited(pid) { return st }
            if nowMillis() >= end { return nil }
            sleepMillis(10)
        }
    }

    static func describe(status st: Int32) -> String {
        let sig = st & 0x7F
        if sig == 0 { return "exit status \((st >> 8) & 0xFF)" }
        return "killed by signal \(sig)"
    }

    /// reboot(2) through glibc's wrapper, found with dlsym: <sys/reboot.h> is not in the
    /// Glibc module. Resolved once at startup so the deadline signal handler only calls it.
    nonisolated(unsafe) static var rebootFn: (@convention(c) (Int32) -> Int32)? = {
        guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "reboot") else { return nil }
        return unsafeBitCast(sym, to: (@convention(c) (Int32) -> Int32).self)
    }()

    /// LINUX_REBOOT_CMD_RESTART: with `reboot=k` the kernel resets through the i8042 and
    /// qemu (-no-reboot) exits. Falls back to exiting PID 1 (a panic; panic=-1 reboots).
    static func restart() -> Never {
        sync()
        _ = rebootFn?(0x0123_4567)
        _exit(1)
    }

    static func lines(_ text: String) -> [Substring] { text.split(separator: "\n", omittingEmptySubsequences: true) }
}
