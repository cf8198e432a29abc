import Foundation
import Glibc
import KtstrHost
import KtstrMachine
import KtstrProtocol

/// `ktstr shell`: a shell in a fresh VM with the scheduler loaded (plan mode `shell`).
struct ShellCommand: CLICommand {
    let name = "shell"
    let summary = "a shell (busybox) in a fresh VM with the scheduler loaded"
    let help = """
        USAGE: ktstr shell [--scheduler simple|fault|none|PATH] [--scheduler-args "ARGS"]
                           [--cpus N] [--memory MiB] [--kernel PATH|NAME] [--backend auto|qemu|qemu-tcg]
                           [-c COMMAND] [--timeout S]

        Boots the guest kernel, starts the scheduler (default simple), and runs busybox's sh on
        the guest console, connected to this terminal (raw mode while it runs; restored on every
        exit). `exit` or Ctrl-D stops the scheduler and powers the guest off; Ctrl-] kills the VM.
        Nothing is left behind (no qemu, no /dev/shm files). Input that is not a terminal is sent
        line by line; its end sends Ctrl-D.
        -c COMMAND runs `sh -c COMMAND` instead, prints its output and exits with its status
        (no input; --timeout, default 600 s). Busybox comes from Debian's busybox-static
        (`ktstr setup` installs it). Always the QEMU backend (the console needs an input path);
        with KVM usable, qemu runs with KVM. Exit status: the shell's; 1 when the VM could not
        run the shell; 2 for a usage error.
        """

    func run(_ args: inout Arguments) async throws -> Int32 {
        let command = try args.shortOption("c")
        let schedName = try args.option("scheduler") ?? "simple"
        let schedArgs = (try args.option("scheduler-args") ?? "").split(separator: " ").map(String.init)
        let cpus = try args.intOption("cpus") ?? 2
        let memory = try args.intOption("memory") ?? 512
        let kernel = try args.option("kernel")
        let backendText = try args.option("backend") ?? "auto"
        let timeout = try args.doubleOption("timeout") ?? (command == nil ? VMConfig.maxTimeoutSeconds : 600)
        try args.finish()
        guard (1...64).contains(cpus) else { throw CLIError("--cpus must be 1...64", status: 2) }
        try RunArguments.checkMemory(memory)
        try RunArguments.checkTimeout(timeout)
        guard let backend = BackendChoice(rawValue: backendText), backend != .kvm else {
            throw CLIError("--backend must be auto, qemu or qemu-tcg, not '\(backendText)' (the shell needs qemu's console input)", status: 2)
        }
        let scheduler = RunArguments.scheduler(schedName, args: schedArgs)
        if let kernel { try RunArguments.checkKernel(kernel) }
        let vm = VMConfig(cpus: cpus, memoryMiB: memory, kernel: kernel, backend: backend, timeoutSeconds: timeout)

        let interactive = command == nil
        let terminal = interactive && isatty(0) == 1
        var size = winsize()
        let haveSize = isatty(1) == 1 && ioctl(1, UInt(TIOCGWINSZ), &size) == 0 && size.ws_col > 0
        let (rows, columns) = haveSize ? (Int(size.ws_row), Int(size.ws_col)) : (nil, nil)
        let term = ProcessInfo.processInfo.environment["TERM"]
        if interactive {
            Progress.step("booting \(cpus) vCPUs / \(memory) MiB with scheduler \(schedName); `exit` or Ctrl-D powers off, Ctrl-] kills the VM")
        }
        let raw = terminal ? RawTerminal(fd: 0) : nil
        defer { raw?.restore() }
        let result: (value: ShellRun.Result, signal: Int32?)
        do {
            result = try await Interruption.run {
                try await ShellRun.run(vm: vm, scheduler: scheduler, command: command, term: term,
                                       rows: rows, columns: columns,
                                       inputFD: interactive ? 0 : nil, output: { Self.writeOut($0) }, log: .default)
            }
        } catch let i as Interruption.Interrupted {
            raw?.restore()
            throw CLIError("interrupted by \(i.name); the VM is gone", status: i.status)
        } catch let e as SchedulerRun.RunError {
            raw?.restore()
            throw CLIError(e.description)
        }
        raw?.restore()
        let r = result.value
        if let sig = result.signal { throw CLIError("interrupted by \(sig == SIGINT ? "SIGINT" : "SIGTERM"); the VM is gone", status: 128 + sig) }
        if r.escaped {
            Self.writeOut(Array("\n".utf8)) // the guest's prompt line is still open
            throw CLIError("Ctrl-]: killed the VM", status: 130)
        }
        if let e = r.outcome.schedulerExit, (e.kindValue ?? 0) >= ExitKind.errorThreshold {
            Progress.step("the scheduler exited during the session: \(e.kind.name) \(e.reason) \(e.message)")
        }
        guard let status = r.status else {
            let why = r.outcome.problems.map(\.description).joined(separator: "; ")
            // An agent older than plan mode shell runs the plan as an empty ordinary run.
            let old = why.isEmpty && r.outcome.kernelRelease != nil
                ? "the guest agent never started a shell — it predates `ktstr shell`: run `swift run ktstr setup` (rebuilds it)"
                : why.isEmpty ? r.outcome.machineExit.description : why
            throw CLIError("the shell did not run to the end: \(old)")
        }
        return Int32(clamping: status)
    }

    static func writeOut(_ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return }
            off += n
        }
    }
}

/// The user's terminal in raw mode (no echo, no line editing, no signals: every key goes to
/// the guest) until `restore()`, which is idempotent.
final class RawTerminal: @unchecked Sendable {
    private let fd: Int32
    private var saved = termios()
    private var active = false
    private let lock = NSLock()

    init?(fd: Int32) {
        self.fd = fd
        guard tcgetattr(fd, &saved) == 0 else { return nil }
        var raw = saved
        cfmakeraw(&raw)
        guard tcsetattr(fd, TCSAFLUSH, &raw) == 0 else { return nil }
        active = true
    }

    func restore() {
        lock.lock(); defer { lock.unlock() }
        guard active else { return }
        active = false
        tcsetattr(fd, TCSAFLUSH, &saved)
    }

    deinit { restore() }
}
