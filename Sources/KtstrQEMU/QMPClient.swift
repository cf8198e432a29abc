import Foundation
import Glibc
import KtstrMachine

/// A blocking QMP client over a connected unix socket (a socketpair with qemu: nothing has a name).
/// Commands are serialised; every read is bounded by a deadline; asynchronous events that
/// arrive between replies are skipped.
public final class QMPClient: @unchecked Sendable {
    public enum QMPError: Error, CustomStringConvertible {
        case connect(String)
        case io(String)
        case timeout(command: String)
        case failed(command: String, message: String)
        public var description: String {
            switch self {
            case let .connect(why): "QMP: cannot connect: \(why) — is qemu still running?"
            case let .io(why): "QMP: \(why) — qemu probably exited"
            case let .timeout(c): "QMP: no reply to '\(c)' in time — qemu is wedged or gone"
            case let .failed(c, m): "QMP: '\(c)' failed: \(m)"
            }
        }
    }

    private let fd: Int32
    private let lock = NSLock()
    private var splitter = LineSplitter(maxLine: 4 << 20)
    private var pending: [String] = []

    /// Takes ownership of `fd`, an already-connected stream socket (our end of the
    /// socketpair qemu inherited), reads the greeting and negotiates capabilities. On a
    /// throw the fd is closed.
    public init(connected fd: Int32, timeout: Duration) throws {
        self.fd = fd
        let deadline = ContinuousClock.now + timeout
        _ = try readMessage(until: deadline, command: "greeting")
        _ = try execute("qmp_capabilities", timeout: timeout)
    }

    deinit { close(fd) }

    /// Runs one command; returns its "return" value.
    @discardableResult
    public func execute(_ command: String, arguments: [String: Any]? = nil, timeout: Duration = .seconds(10)) throws -> Any {
        lock.lock()
        defer { lock.unlock() }
        var msg: [String: Any] = ["execute": command]
        if let arguments { msg["arguments"] = arguments }
        let data = try JSONSerialization.data(withJSONObject: msg) + Data("\n".utf8)
        try writeAll([UInt8](data))
        let deadline = ContinuousClock.now + timeout
        while true {
            let obj = try readMessage(until: deadline, command: command)
            if let r = obj["return"] { return r }
            if let e = obj["error"] as? [String: Any] {
                throw QMPError.failed(command: command, message: e["desc"] as? String ?? "\(e)")
            }
            // {"event": ...}: not ours.
        }
    }

    /// `human-monitor-command`: the text an HMP command prints.
    public func human(_ commandLine: String, timeout: Duration = .seconds(10)) throws -> String {
        let r = try execute("human-monitor-command", arguments: ["command-line": commandLine], timeout: timeout)
        return r as? String ?? ""
    }

    private func writeAll(_ bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw QMPError.io("write: \(String(cString: strerror(errno)))") }
            off += n
        }
    }

    private func readMessage(until deadline: ContinuousClock.Instant, command: String) throws -> [String: Any] {
        while true {
            while !pending.isEmpty {
                let line = pending.removeFirst()
                if let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] { return obj }
            }
            let left = deadline - ContinuousClock.now
            guard left > .zero else { throw QMPError.timeout(command: command) }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ms = Int32(min(left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1, 60_000))
            let r = poll(&p, 1, ms)
            if r < 0 && errno == EINTR { continue }
            guard r > 0 else { continue }
            var buf = [UInt8](repeating: 0, count: 65536)
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            guard n > 0 else { throw QMPError.io("connection closed") }
            pending += splitter.feed(buf[0..<n])
        }
    }
}
