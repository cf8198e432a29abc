import Foundation
import Glibc
import Testing
@testable import KtstrHost

/// `ktstr shell` end to end through the built CLI: a guest with scx_simple loaded runs a
/// command on busybox's sh and the host gets its output and status; nothing is left behind.
@Suite(.serialized, .timeLimit(.minutes(6)))
struct ShellCommandTests {
    static let missing: String? = {
        if let m = QEMUEnv.missingAgent { return m }
        guard FileManager.default.isExecutableFile(atPath: ktstrBinary) else { return "needs a built `ktstr` (swift build)" }
        do { _ = try Provisioning.busyboxBinary(); _ = try Provisioning.scheduler("simple") } catch { return "\(error)" }
        return nil
    }()

    /// Runs the CLI; (status, stdout, stderr, pid).
    static func ktstr(_ args: [String]) throws -> (Int32, String, String, pid_t) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: ktstrBinary)
        p.arguments = args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self), p.processIdentifier)
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func schedExtStateIsEnabledInsideTheShell() throws {
        let (rc, out, err, pid) = try Self.ktstr(["shell", "-c", "cat /sys/kernel/sched_ext/state", "--scheduler", "simple"])
        #expect(rc == 0, "stderr: \(err)")
        #expect(out == "enabled\n", "stdout: \(out.debugDescription) stderr: \(err)")
        #expect(QEMUEnv.leftovers(pid: pid).isEmpty, "\(QEMUEnv.leftovers(pid: pid))")
    }

    /// The command's status is ktstr's; its output (stderr included: both are the console)
    /// arrives byte for byte; busybox applets are on PATH.
    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func theCommandsStatusAndOutput() throws {
        let (rc, out, err, pid) = try Self.ktstr(["shell", "--scheduler", "none", "--cpus", "1", "-c",
                                                  "printf 'a\\nb\\n'; ls / | grep -c proc; echo oops >&2; exit 7"])
        #expect(rc == 7, "stderr: \(err)")
        #expect(out == "a\nb\n1\noops\n", "stdout: \(out.debugDescription) stderr: \(err)")
        #expect(QEMUEnv.leftovers(pid: pid).isEmpty, "\(QEMUEnv.leftovers(pid: pid))")
    }

    /// An interactive session driven through tmux: `ls /`, then `exit` returns to the host
    /// shell with nothing left running.
    @Test(.enabled(if: missing == nil && ProvisioningShell.which("tmux") != nil,
                   "\(missing ?? "needs tmux (apt-get install tmux)")"))
    func anInteractiveSessionInTmux() async throws {
        let session = "ktstr-shell-test-\(getpid())"
        // Not Foundation's Process: it never reaped the tmux client that starts the server
        // (waitUntilExit hung with a zombie child). A private server (-L): other users'
        // `tmux kill-server` must not end this session.
        func tmux(_ args: String...) throws -> String {
            try ProvisioningShell().run(["tmux", "-L", session] + args, timeout: 30, tailLines: 200).tail
        }
        func waitFor(_ text: String, seconds: Int) async throws -> String {
            let deadline = ContinuousClock.now + .seconds(seconds)
            var screen = ""
            while ContinuousClock.now < deadline {
                screen = try tmux("capture-pane", "-p", "-t", session)
                if screen.contains(text) { return screen }
                try await Task.sleep(for: .milliseconds(300))
            }
            return screen
        }
        _ = try tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "40", "bash", "--norc", "--noprofile")
        defer { _ = try? tmux("kill-server") }
        try await Task.sleep(for: .seconds(1)) // bash reads its first line
        _ = try tmux("send-keys", "-t", session, "PS1='host$ '; \(ktstrBinary) shell --scheduler simple; echo \"rc=$?\"", "Enter")
        let prompt = try await waitFor("ktstr:/#", seconds: 240)
        try #require(prompt.contains("ktstr:/#"), "no guest prompt:\n\(prompt)")
        _ = try tmux("send-keys", "-t", session, "ls /", "Enter")
        let listed = try await waitFor("proc", seconds: 30)
        #expect(listed.contains("sys") && listed.contains("ktstr") && listed.contains("proc"), "\(listed)")
        _ = try tmux("send-keys", "-t", session, "exit", "Enter")
        let back = try await waitFor("rc=0", seconds: 60)
        #expect(back.contains("rc=0"), "\(back)")
        #expect(back.contains("rc=0\nhost$"), "\(back)")
        // The host shell's child is gone: no qemu, no RAM file of any ktstr run in the pane.
        let panePID = pid_t(try tmux("display-message", "-p", "-t", session, "#{pane_pid}").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        let children = (try? String(contentsOfFile: "/proc/\(panePID)/task/\(panePID)/children", encoding: .utf8)) ?? ""
        #expect(children.trimmingCharacters(in: .whitespaces).isEmpty, "children of the pane's shell: \(children)")
    }
}
