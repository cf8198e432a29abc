import Foundation
#if canImport(Glibc)
import Glibc
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
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = Array(argv.dropFirst())
        if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
        var env = ProcessInfo.processInfo.environment
        env["LC_ALL"] = "C"
        for (k, v) in environment { env[k] = v }
        p.environment = env
        p.standardOutput = out
        p.standardError = out
        p.standardInput = FileHandle.nullDevice
        log.debug("provisioning: \(argv.joined(separator: " "))\(cwd.map { " (in \($0))" } ?? "")")
        let start = Date()
        do { try p.run() } catch {
            throw ProvisioningError.failed(step: tool, detail: "cannot start \(exe): \(error)")
        }
        let deadline = start.addingTimeInterval(timeout)
        while p.isRunning {
            if Date() >= deadline {
                p.terminate()
                let killAt = Date().addingTimeInterval(5)
                while p.isRunning && Date() < killAt { usleep(50_000) }
                if p.isRunning { kill(p.processIdentifier, SIGKILL) }
                p.waitUntilExit()
                throw ProvisioningError.failed(
                    step: argv.prefix(3).joined(separator: " "),
                    detail: "no result after \(Int(timeout)) s, stopped it — check the network/mirror; output: \(outPath)")
            }
            usleep(20_000)
        }
        p.waitUntilExit()
        let seconds = Date().timeIntervalSince(start)
        return Result(status: p.terminationStatus, tail: Self.tail(ofFile: outPath, lines: tailLines), seconds: seconds)
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
