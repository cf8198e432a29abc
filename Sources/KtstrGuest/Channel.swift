// The agent → host channel: COM2 (/dev/ttyS1) in raw mode, one `@ktstr {json}\n` per message
// (KtstrProtocol's AgentMessage writes the line).
import Glibc
import KtstrProtocol

/// The channel's fd, also used by the SIGALRM deadline handler (async-signal-safe write).
nonisolated(unsafe) var channelFD: Int32 = -1

enum Channel {
    static func open(_ path: String = "/dev/ttyS1") -> String? {
        let fd = Glibc.open(path, O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard fd >= 0 else { return "open \(path): \(Sys.errnoText())" }
        var t = termios()
        if tcgetattr(fd, &t) == 0 {
            cfmakeraw(&t)
            cfsetispeed(&t, speed_t(B115200))
            cfsetospeed(&t, speed_t(B115200))
            tcsetattr(fd, TCSANOW, &t)
        }
        channelFD = fd
        return nil
    }

    static func send(_ message: AgentMessage, extra: [(String, JSON)] = []) {
        let line = message.line(extra: extra)
        if channelFD >= 0 {
            Sys.writeAll(channelFD, Array(line.utf8))
            tcdrain(channelFD)
        } else {
            // No channel: the console still carries it, and the host reads both.
            Sys.writeAll(2, Array(line.utf8))
        }
    }

    static func problem(_ message: String, kind: AgentProblemKind? = nil) {
        Console.say("problem\(kind.map { " (\($0.rawValue))" } ?? ""): \(message)")
        send(.problem(message, kind: kind))
    }
}

/// Human-readable progress on the console (COM1 through /dev/console).
enum Console {
    static func say(_ text: String) {
        Sys.writeAll(2, Array("ktstr-guest: \(text)\n".utf8))
    }
}
