import Foundation
import Glibc
import Testing
@testable import KtstrMachine
@testable import KtstrQEMU
@testable import KtstrHost
@testable import KtstrProtocol

/// Issue 16: while a run is live, another local uid must not reach the run's qemu. The
/// probe connects, as `nobody`, to every unix socket qemu holds and must get no QMP greeting.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct QEMUPrivacyTests {
    static let skip: String? = QEMUEnv.missing ?? ForeignUserProbe.cannotSwitchUID

    @Test(.enabled(if: skip == nil, Comment(rawValue: skip ?? "")))
    func anotherUIDGetsNoQMPGreetingFromALiveRun() async throws {
        var config = QEMUMachine.Configuration(qemuPath: try Provisioning.qemuBinary(), kernelPath: try Provisioning.kernel().image,
                                               initrdFD: nil, kernelCmdline: QEMUMachine.baseCmdline, topology: .flat(2),
                                               memoryMiB: 256, accelerator: .tcg, console: { _ in }, channel: { _ in })
        // With the plan port a restored run's agent reads its request from: one more socket.
        config.planPort = true
        let m = QEMUMachine(config, log: .silent)
        defer { m.kill() }
        try m.start()
        let group = try #require(m.processGroup, "the machine is not running")
        let qemu = try #require(Self.members(of: group).first { Self.command(of: $0).hasPrefix("qemu-system") },
                                "no qemu process in group \(group)")
        let sockets = ForeignUserProbe.unixSockets(of: qemu)
        // qemu holds its QMP connection whatever the fix: finding none means the scan is broken.
        #expect(!sockets.isEmpty, "found no unix socket in /proc/\(qemu)/fd")
        // Every named socket (QMP used to be "@ktstr-…-qmp"), and every fd qemu holds by its
        // /proc path: the RAM file, the console and channel pipes, the QMP socket.
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(qemu)/fd")) ?? []
        #expect(fds.contains("3") && fds.contains("8") && fds.contains("9"), "qemu's RAM file (fd 3), QMP socket (fd 8), plan port (fd 9): \(fds)")
        #expect(sockets.count >= 2, "QMP and the plan port: \(sockets)")
        let targets = sockets.map(\.path).filter { !$0.isEmpty }.map(ForeignUserProbe.Target.socket)
            + fds.map { .file("/proc/\(qemu)/fd/\($0)") }
        let uid = ForeignUserProbe.foreignUID
        let attempts = try ForeignUserProbe.attempt(targets, as: uid)
        #expect(attempts.count == targets.count, "the probe reported \(attempts.count) of \(targets.count) targets")
        for a in attempts {
            #expect(!a.greeting.contains("QMP"), "uid \(uid) got a QMP greeting on \(a.target.path)")
            #expect(!a.reached, "uid \(uid) reached \(a.target)")
        }
        // The probe ran against a live machine (the guest, with no initrd, ends in a panic later).
        #expect(m.processGroup != nil, "qemu exited before the probe finished")
    }

    /// The probe itself can see a hole: an abstract socket that greets (what QMP was) and a
    /// world-readable file are reached; a root-only file is not.
    @Test(.enabled(if: ForeignUserProbe.cannotSwitchUID == nil, Comment(rawValue: ForeignUserProbe.cannotSwitchUID ?? "")))
    func theProbeReachesWhatIsOpenToEveryone() throws {
        let name = "ktstr-probe-control-\(getpid())"
        let s = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(s) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { p in for (i, b) in name.utf8.enumerated() { p[i + 1] = b } }
        let len = socklen_t(MemoryLayout<sa_family_t>.size + 1 + name.utf8.count)
        try #require(withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, len) } } == 0)
        try #require(listen(s, 1) == 0)
        let server = Thread {
            // A failed accept leaves the probe with no greeting: the expectation below fails.
            let c = accept(s, nil, nil)
            if c >= 0 {
                _ = "{\"QMP\": {}}\n".utf8CString.withUnsafeBytes { write(c, $0.baseAddress, $0.count - 1) }
                close(c)
            }
        }
        server.start()
        let secret = "/proc/\(getpid())/fd/\(s)" // this (root) process's fd: another uid may not open it
        let attempts = try ForeignUserProbe.attempt([.socket("@" + name), .file("/etc/passwd"), .file(secret)],
                                                    as: ForeignUserProbe.foreignUID)
        try #require(attempts.count == 3)
        #expect(attempts[0].reached && attempts[0].greeting.contains("QMP"), "\(attempts[0])")
        #expect(attempts[1].reached, "\(attempts[1])")
        #expect(!attempts[2].reached, "\(attempts[2])")
    }

    static func members(of group: pid_t) -> [pid_t] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { pid_t($0) }.filter { pid in
            // /proc/PID/stat: "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after ')'.
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return false }
            let f = stat[stat.index(after: close)...].split(separator: " ")
            return f.count > 2 && pid_t(f[2]) == group
        }
    }

    static func command(of pid: pid_t) -> String {
        (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
    }
}
