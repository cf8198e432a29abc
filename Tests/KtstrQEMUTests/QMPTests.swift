import Foundation
import Glibc
import Testing
@testable import KtstrMachine
@testable import KtstrQEMU
@testable import KtstrHost
@testable import KtstrProtocol

/// A QMP server stand-in on one end of a socketpair (as qemu is): greeting, capabilities, one
/// scripted reply per command, with an event injected before each reply. `clientFD` is the
/// other end, for `QMPClient(connected:)`.
final class FakeQMPServer: @unchecked Sendable {
    let clientFD: Int32
    private(set) var received: [String] = []
    private let lock = NSLock()
    var receivedCommands: [String] { lock.lock(); defer { lock.unlock() }; return received }

    init(replies: @escaping @Sendable (String) -> String?) throws {
        var sv: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &sv) == 0 else {
            throw QMPClient.QMPError.connect("fake server socketpair")
        }
        clientFD = sv[0]
        let c = sv[1]
        Thread { [self] in
            defer { close(c) }
            func send(_ t: String) { let b = Array((t + "\n").utf8); _ = b.withUnsafeBytes { write(c, $0.baseAddress, $0.count) } }
            send(#"{"QMP": {"version": {}, "capabilities": []}}"#)
            var splitter = LineSplitter(maxLine: 1 << 20)
            var buf = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buf.withUnsafeMutableBytes { read(c, $0.baseAddress, $0.count) }
                if n <= 0 { break } // the client closed: the server is done
                for line in splitter.feed(buf[0..<n]) {
                    let obj = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
                    let cmd = obj?["execute"] as? String ?? "?"
                    lock.lock(); received.append(cmd); lock.unlock()
                    send(#"{"event": "SOMETHING", "data": {}}"#)
                    if cmd == "qmp_capabilities" { send(#"{"return": {}}"#); continue }
                    guard let r = replies(cmd) else { continue } // no reply: a wedged qemu
                    send(r)
                }
            }
        }.start()
    }

}

@Suite struct QMPTests {
    @Test func commandsGetTheirReturnAndSkipEvents() throws {
        let server = try FakeQMPServer { cmd in
            switch cmd {
            case "human-monitor-command": #"{"return": "CPU#0\r\nRIP=1 RSP=2\r\nCR3=3\r\n"}"#
            case "bogus": #"{"error": {"class": "CommandNotFound", "desc": "no such command"}}"#
            default: #"{"return": {}}"#
            }
        }
        let q = try QMPClient(connected: server.clientFD, timeout: .seconds(5))
        try q.execute("stop")
        let text = try q.human("info registers -a")
        #expect(text.hasPrefix("CPU#0"), "\(text)")
        #expect(QEMURegisterParser.parse(text).first?.rip == 1)
        #expect(throws: QMPClient.QMPError.self) { try q.execute("bogus") }
        #expect(server.receivedCommands == ["qmp_capabilities", "stop", "human-monitor-command", "bogus"])
    }

    @Test func aSilentServerTimesOut() throws {
        let server = try FakeQMPServer { _ in nil }
        let q = try QMPClient(connected: server.clientFD, timeout: .seconds(5))
        let t0 = ContinuousClock.now
        #expect(throws: QMPClient.QMPError.self) { try q.execute("stop", timeout: .milliseconds(200)) }
        #expect(ContinuousClock.now - t0 < .seconds(3))
    }

    @Test func aPeerThatClosesBeforeTheGreetingIsAnIOError() throws {
        var sv: [Int32] = [-1, -1]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &sv) == 0)
        close(sv[1]) // qemu exited during startup
        let t0 = ContinuousClock.now
        #expect(throws: QMPClient.QMPError.self) { try QMPClient(connected: sv[0], timeout: .seconds(5)) }
        #expect(ContinuousClock.now - t0 < .seconds(1), "EOF must fail at once, not at the timeout")
    }
}
