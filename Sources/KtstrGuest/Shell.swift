// Plan mode "shell" (`ktstr shell`, docs/PROTOCOLS.md "plan.json"): the scheduler is running;
// busybox's sh runs on the console (ttyS0) as its controlling terminal until it exits, then
// the agent stops the scheduler, reports and powers off.
import Glibc
import KtstrProtocol

enum ShellMode {
    static let console = "/dev/ttyS0"
    static let busybox = RunPlan.Shell.busyboxPath

    static func run(plan: RunPlan, shell: RunPlan.Shell, scheduler: pid_t?) -> Never {
        let status = session(shell)
        Channel.send(.shellExit(status: Int(status)))
        if let pid = scheduler {
            let st = Sys.reapIfExited(pid) ?? Agent.stopScheduler(pid)
            Agent.reportExit(plan: plan, status: st)
        }
        Agent.finish(problem: nil)
    }

    /// Runs the shell; its status (exit code, or 128 + signal; 127 when it could not start).
    static func session(_ shell: RunPlan.Shell) -> Int32 {
        guard Sys.exists(busybox) else {
            Channel.problem("\(busybox) missing from the initramfs — run `ktstr setup` (installs busybox-static)")
            return 127
        }
        for d in ["/bin", "/sbin", "/usr", "/usr/bin", "/usr/sbin", "/root"] { mkdir(d, 0o755) }
        // Applet links (/bin/ls → /bin/busybox ...): `busybox --install -s`.
        switch Sys.spawn(busybox, ["--install", "-s"], output: "/tmp/ktstr-busybox-install.log", env: ["PATH=/bin:/sbin:/usr/bin:/usr/sbin"]) {
        case let .success(pid): if Sys.waitFor(pid, millis: 10_000) == nil { kill(pid, SIGKILL); _ = Sys.waitFor(pid, millis: 1000) }
        case let .failure(e): Channel.problem("busybox --install: \(e.text)")
        }
        let con = open(console, O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard con >= 0 else {
            Channel.problem("open \(console): \(Sys.errnoText())")
            return 127
        }
        defer { close(con) }
        var t = termios()
        if tcgetattr(con, &t) == 0 {
            // Cooked, echoing, signals on: an ordinary terminal line. `-c`: no CR added before
            // NL, so the command's output reaches the host byte for byte.
            t.c_iflag |= tcflag_t(ICRNL | IXON)
            t.c_lflag |= tcflag_t(ISIG | ICANON | ECHO | ECHOE | ECHOK | IEXTEN)
            t.c_oflag |= tcflag_t(OPOST)
            if shell.command != nil { t.c_oflag &= ~tcflag_t(ONLCR) } else { t.c_oflag |= tcflag_t(ONLCR) }
            tcsetattr(con, TCSANOW, &t)
        }
        Sys.writeAll(con, Array("\n\(RunPlan.Shell.beginMarker)\n".utf8))
        var env = ["PATH=/bin:/sbin:/usr/bin:/usr/sbin", "HOME=/root", "SHELL=/bin/sh", "USER=root", "LOGNAME=root",
                   "TERM=\(shell.term ?? "vt100")", "PS1=ktstr:\\w# "]
        if let r = shell.rows { env.append("LINES=\(r)") }
        if let c = shell.columns { env.append("COLUMNS=\(c)") }
        let args = shell.command.map { ["-c", $0] } ?? []
        let pid: pid_t
        switch spawnOnTerminal("/bin/sh", args, env: env, controlling: shell.command == nil) {
        case let .success(p): pid = p
        case let .failure(e):
            Sys.writeAll(con, Array("\(e.text)\n\(RunPlan.Shell.endMarker)\n".utf8))
            Channel.problem(e.text)
            return 127
        }
        var st: Int32 = 0
        while waitpid(pid, &st, 0) < 0 && errno == EINTR {}
        // Whatever the shell left in the background goes with it.
        kill(-pid, SIGKILL)
        // The session leader's exit hung up the terminal (disassociate_ctty: vhangup for a
        // non-pty tty), `con` included: the end marker needs a fresh open.
        let after = open(console, O_WRONLY | O_NOCTTY | O_CLOEXEC)
        let fd = after >= 0 ? after : con
        Sys.writeAll(fd, Array("\(RunPlan.Shell.endMarker)\n".utf8))
        tcdrain(fd)
        if after >= 0 { close(after) }
        return st & 0x7F == 0 ? (st >> 8) & 0xFF : 128 + (st & 0x7F)
    }

    /// posix_spawn in a new session. `controlling` (an interactive shell): the console becomes
    /// its controlling terminal (the first tty a session leader opens without O_NOCTTY), so job
    /// control and Ctrl-C work. Not for `-c`: when a controlling terminal's session leader exits,
    /// the kernel hangs the terminal up and drops output still queued for the UART, so a
    /// command's last bytes could vanish; without one, they stay queued ahead of the end marker.
    static func spawnOnTerminal(_ path: String, _ args: [String], env: [String], controlling: Bool) -> Result<pid_t, Sys.SpawnError> {
        Sys.spawn(path, args, env: env, newSession: true) { actions in
            posix_spawn_file_actions_addopen(&actions, 0, console, O_RDWR | (controlling ? 0 : O_NOCTTY), 0)
            posix_spawn_file_actions_adddup2(&actions, 0, 1)
            posix_spawn_file_actions_adddup2(&actions, 0, 2)
        }
    }
}
