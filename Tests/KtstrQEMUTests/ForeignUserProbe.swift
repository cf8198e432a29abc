import Foundation
import Glibc
@testable import KtstrMachine
@testable import KtstrQEMU
@testable import KtstrHost
@testable import KtstrProtocol

/// Plays the local attacker of issue 16: another, unprivileged uid that tries every unix
/// socket a process holds. Finds the sockets through `/proc/<pid>/fd` and `/proc/net/unix`,
/// then connects to each named one from a forked child that has dropped to `uid`, and reports
/// what answered.
enum ForeignUserProbe {
    struct UnixSocket: Equatable {
        let inode: UInt64
        /// As /proc/net/unix shows it: "" for an unnamed socket, "@name" for an abstract one.
        let path: String
    }

    enum Target: Equatable {
        /// A unix socket to connect to ("@name" for an abstract one).
        case socket(String)
        /// A file to open read-only (for example /proc/<pid>/fd/N).
        case file(String)
        var path: String { switch self { case let .socket(p), let .file(p): p } }
    }

    struct Attempt {
        let target: Target
        /// Connected to the socket, or opened the file.
        let reached: Bool
        /// The first bytes the socket sent within the wait (a QMP greeting starts `{"QMP"`).
        let greeting: String
    }

    /// Why this process cannot act as another uid, or nil.
    static var cannotSwitchUID: String? {
        geteuid() == 0 ? nil : "needs root to switch to another uid (running as uid \(geteuid()))"
    }

    /// The unprivileged uid to probe as: `nobody` where it exists, else 65534 (a uid needs no
    /// passwd entry to be switched to).
    static var foreignUID: uid_t {
        getpwnam("nobody").map { $0.pointee.pw_uid } ?? 65534
    }

    /// The unix sockets `pid` holds open, with their names from /proc/net/unix.
    static func unixSockets(of pid: pid_t) -> [UnixSocket] {
        let dir = "/proc/\(pid)/fd"
        var inodes: Set<UInt64> = []
        for fd in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(dir)/\(fd)"),
                  target.hasPrefix("socket:["), target.hasSuffix("]"),
                  let inode = UInt64(target.dropFirst(8).dropLast()) else { continue }
            inodes.insert(inode)
        }
        let table = (try? String(contentsOfFile: "/proc/net/unix", encoding: .utf8)) ?? ""
        var named: [UInt64: String] = [:]
        // Num RefCount Protocol Flags Type St Inode [Path]
        for line in table.split(separator: "\n").dropFirst() {
            let cols = line.split(separator: " ", omittingEmptySubsequences: true)
            guard cols.count >= 7, let inode = UInt64(cols[6]) else { continue }
            named[inode] = cols.count > 7 ? String(cols[7]) : ""
        }
        // A socket of another namespace is not in our table: it counts as unnamed here.
        return inodes.sorted().map { UnixSocket(inode: $0, path: named[$0] ?? "") }
    }

    /// Tries each target as `uid` (gid the same, no supplementary groups) from a forked child;
    /// a socket that accepts gets up to `wait` to send its first bytes. Throws if the child
    /// could not drop privileges, so a probe that ran as root never passes for one that ran
    /// as `uid`.
    static func attempt(_ targets: [Target], as uid: uid_t, wait: Duration = .seconds(2)) throws -> [Attempt] {
        guard !targets.isEmpty else { return [] }
        // Everything the child needs is built before fork: it only makes system calls.
        let addresses: [[UInt8]?] = try targets.map {
            if case let .socket(p) = $0 { try socketAddress(p) } else { nil }
        }
        let files: [[CChar]] = targets.map { Array($0.path.utf8CString) }
        let waitMillis = Int32(wait.components.seconds * 1000)
        var p: [Int32] = [-1, -1]
        guard pipe(&p) == 0 else { throw ProbeError("pipe: \(String(cString: strerror(errno)))") }
        let child = fork()
        if child == 0 {
            close(p[0])
            runChild(addresses: addresses, files: files, uid: uid, waitMillis: waitMillis, report: p[1])
        }
        close(p[1])
        guard child > 0 else { close(p[0]); throw ProbeError("fork: \(String(cString: strerror(errno)))") }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buf.withUnsafeMutableBytes { read(p[0], $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            out += buf[0..<n]
        }
        close(p[0])
        var status: Int32 = 0
        while waitpid(child, &status, 0) < 0 && errno == EINTR {}
        // Report lines: "uid <n>" then "<index> <0|1> <greeting hex>" per path.
        let lines = String(decoding: out, as: UTF8.self).split(separator: "\n")
        guard let first = lines.first, first == "uid \(uid)" else {
            throw ProbeError("the probe child did not run as uid \(uid): \(lines.first ?? "no report")")
        }
        return lines.dropFirst().compactMap { line -> Attempt? in
            let f = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
            guard f.count == 3, let i = Int(f[0]), targets.indices.contains(i) else { return nil }
            return Attempt(target: targets[i], reached: f[1] == "1", greeting: unhex(f[2]))
        }
    }

    struct ProbeError: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    private static func socketAddress(_ path: String) throws -> [UInt8] {
        // (Privileged setgid/setuid set the real, effective and saved ids alike.)
        // sockaddr_un: family, then the path; an abstract name starts with a NUL byte.
        var name = Array(path.utf8)
        if name.first == UInt8(ascii: "@") { name[0] = 0 }
        guard name.count < 108 else { throw ProbeError("socket path too long: \(path)") }
        let family = UInt16(AF_UNIX)
        return [UInt8(family & 0xFF), UInt8(family >> 8)] + name
    }

    private static func runChild(addresses: [[UInt8]?], files: [[CChar]], uid: uid_t, waitMillis: Int32,
                                 report: Int32) -> Never {
        func say(_ s: String) { _ = s.utf8CString.withUnsafeBytes { write(report, $0.baseAddress, $0.count - 1) } }
        guard setgroups(0, nil) == 0, setgid(uid) == 0, setuid(uid) == 0,
              getuid() == uid, geteuid() == uid else {
            say("cannot drop privileges: errno \(errno)\n")
            _exit(1)
        }
        say("uid \(uid)\n")
        for (i, file) in files.enumerated() {
            guard let addr = addresses[i] else {
                let fd = open(file, O_RDONLY | O_NONBLOCK | O_NOCTTY)
                if fd >= 0 { close(fd) }
                say("\(i) \(fd >= 0 ? 1 : 0) \n")
                continue
            }
            let s = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            let rc = addr.withUnsafeBytes { b in
                b.baseAddress!.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(s, $0, socklen_t(b.count)) }
            }
            var got: [UInt8] = []
            if rc == 0 {
                var pfd = pollfd(fd: s, events: Int16(POLLIN), revents: 0)
                if poll(&pfd, 1, waitMillis) > 0 {
                    var buf = [UInt8](repeating: 0, count: 64)
                    let n = buf.withUnsafeMutableBytes { read(s, $0.baseAddress, $0.count) }
                    if n > 0 { got = Array(buf[0..<n]) }
                }
            }
            close(s)
            say("\(i) \(rc == 0 ? 1 : 0) \(got.map { String(format: "%02x", $0) }.joined())\n")
        }
        _exit(0)
    }

    private static func unhex(_ s: Substring) -> String {
        var bytes: [UInt8] = []
        var it = s.makeIterator()
        while let h = it.next(), let l = it.next(), let b = UInt8(String([h, l]), radix: 16) { bytes.append(b) }
        return String(decoding: bytes, as: UTF8.self)
    }
}
