import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol
#endif

/// Runs the external tools provisioning needs (apt-get, dpkg-deb, tar, zstd, make, swift)
/// with their output in a log file, a time limit, and errors that quote the output's tail.
public struct ProvisioningShell: Sendable {
    public struct Result: Sendable {
        public var status: Int32
        /// Last lines of stdout+stderr.
        public var tail: String
        public var seconds: Double
    }

    public var log: Log

    /// Process groups of the commands running now (each command leads its own group, so a
    /// time limit or an interrupt stops make's compilers too, not only make).
    static let running = Mutex<Set<pid_t>>([])

    /// SIGTERM to every running command's process group. For a CLI's SIGINT/SIGTERM handler:
    /// the commands are in their own groups, so a terminal's Ctrl-C does not reach them.
    public static func terminateRunningCommands() {
        for pgid in running.withLock({ $0 }) { kill(-pgid, SIGTERM) }
    }

    public init(log: Log = .default) { self.log = log }

    /// Finds `name` on PATH (or takes it as a path when it contains a slash).
    public static func which(_ name: String) -> String? {
        if name.contains("/") { return access(name, X_OK) == 0 ? name : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in path.split(separator: ":") where !dir.isEmpty {
            let candidate = "\(dir)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    /// Runs `argv` and returns its status and output tail; throws only when it cannot start
    /// or runs past `timeout` (then it is terminated, and killed 5 s later).
    /// `logFile`: where the full output goes (kept); nil: a temporary file, removed after.
    @discardableResult
    public func run(_ argv: [String], cwd: String? = nil, environment: [String: String] = [:],
                    logFile: String? = nil, timeout: Double, tailLines: Int = 15) throws -> Result {
        guard let tool = argv.first, let exe = Self.which(tool) else {
            throw ProvisioningError.missing(what: "\(argv.first ?? "?") not found on PATH",
                                            fix: "install it (see `ktstr setup`) or add it to PATH")
        }
        let outPath = logFile ?? (NSTemporaryDirectory() + "/ktstr-cmd-\(getpid())-\(UInt64.random(in: 0...UInt64.max)).log")
        try ProvisioningFiles.makeDirectory((outPath as NSString).deletingLastPathComponent)
        guard FileManager.default.createFile(atPath: outPath, contents: nil),
              let out = FileHandle(forWritingAtPath: outPath) else {
            throw ProvisioningError.failed(step: tool, detail: "cannot create log file \(outPath) — check permissions")
        }
        defer {
            try? out.close()
            if logFile == nil { try? FileManager.default.removeItem(atPath: outPath) }
        }
        var argv = argv
        argv[0] = exe
        if let cwd {
            // No chdir file action in Swift's Glibc view of posix_spawn: let sh change directory.
            argv = ["/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", cwd] + argv
        }
        var env = ProcessInfo.processInfo.environment
        env["LC_ALL"] = "C"
        for (k, v) in environment { env[k] = v }
        log.debug("provisioning: \(argv.joined(separator: " "))")
        let start = Date()
        let pid = try Self.spawn(argv, environment: env, output: out.fileDescriptor)
        Self.running.withLock { _ = $0.insert(pid) }
        defer { Self.running.withLock { _ = $0.remove(pid) } }
        let deadline = start.addingTimeInterval(timeout)
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { break }
            if r < 0 && errno != EINTR {
                throw ProvisioningError.failed(step: tool, detail: "waitpid: \(String(cString: strerror(errno)))")
            }
            if Date() >= deadline {
                kill(-pid, SIGTERM)
                let killAt = Date().addingTimeInterval(5)
                while waitpid(pid, &status, WNOHANG) == 0 {
                    if Date() >= killAt { kill(-pid, SIGKILL); _ = waitpid(pid, &status, 0); break }
                    usleep(20_000)
                }
                kill(-pid, SIGKILL)  // whatever of the group outlived its leader
                throw ProvisioningError.failed(
                    step: argv.prefix(3).joined(separator: " "),
                    detail: "no result after \(Int(timeout)) s, stopped it — check the network/mirror; output: \(outPath)")
            }
            usleep(20_000)
        }
        let seconds = Date().timeIntervalSince(start)
        // Exit status, or 128 + signal like a shell.
        let code: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return Result(status: code, tail: Self.tail(ofFile: outPath, lines: tailLines), seconds: seconds)
    }

    /// Like `run`, but a non-zero status is an error naming the command, its output tail
    /// and `fix`.
    @discardableResult
    public func check(_ argv: [String], cwd: String? = nil, environment: [String: String] = [:],
                      logFile: String? = nil, timeout: Double, fix: String) throws -> Result {
        let r = try run(argv, cwd: cwd, environment: environment, logFile: logFile, timeout: timeout)
        guard r.status == 0 else {
            let where_ = logFile.map { " (full log: \($0))" } ?? ""
            let tail = r.tail.split(separator: "\n").suffix(6).joined(separator: " | ")
            throw ProvisioningError.failed(step: argv.prefix(4).joined(separator: " "),
                                           detail: "exit \(r.status): \(tail)\(where_) — \(fix)")
        }
        return r
    }

    /// posix_spawn in a new process group with a clean signal state: callers run on Dispatch/cooperative threads
    /// whose blocked-signal mask a child would otherwise inherit (then SIGTERM never reaches
    /// it, and `Process.terminate()` does nothing). stdin is /dev/null; stdout and stderr go
    /// to `output`.
    static func spawn(_ argv: [String], environment: [String: String], output: Int32) throws -> pid_t {
        var attr = posix_spawnattr_t()
        var actions = posix_spawn_file_actions_t()
        posix_spawnattr_init(&attr)
        posix_spawn_file_actions_init(&actions)
        defer {
            posix_spawnattr_destroy(&attr)
            posix_spawn_file_actions_destroy(&actions)
        }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for sig in [SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGPIPE, SIGCHLD] { sigaddset(&defaults, sig) }
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setpgroup(&attr, 0)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, output, 1)
        posix_spawn_file_actions_adddup2(&actions, output, 2)

        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            cArgs.forEach { free($0) }
            cEnv.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &actions, &attr, cArgs, cEnv)
        guard rc == 0 else {
            throw ProvisioningError.failed(step: argv[0], detail: "cannot start it: \(String(cString: strerror(rc)))")
        }
        return pid
    }

    static func tail(ofFile path: String, lines: Int) -> String {
        guard let h = FileHandle(forReadingAtPath: path) else { return "" }
        defer { try? h.close() }
        let size = (try? h.seekToEnd()) ?? 0
        let from = size > 16_384 ? size - 16_384 : 0
        try? h.seek(toOffset: from)
        let data = (try? h.readToEnd()) ?? Data()
        let text = String(decoding: data, as: UTF8.self)
        return text.split(separator: "\n").suffix(lines).joined(separator: "\n")
    }
}
