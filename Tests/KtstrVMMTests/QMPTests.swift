import Foundation
import Glibc
import Testing
@testable import KtstrVMM

/// A QMP server stand-in on an abstract socket: greeting, capabilities, one scripted reply
/// per command, with an event injected before each reply.
final class FakeQMPServer: @unchecked Sendable {
    let name = "ktstr-test-qmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    private let listenFD: Int32
    private(set) var received: [String] = []
    private let lock = NSLock()
    var receivedCommands: [String] { lock.lock(); defer { lock.unlock() }; return received }

    init(replies: @escaping @Sendable (String) -> String?) throws {
        let s = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(name.utf8)
        withUnsafeMutableBytes(of: &addr.sun_path) { p in for (i, b) in bytes.enumerated() { p[i + 1] = b } }
        let len = socklen_t(MemoryLayout<sa_family_t>.size + 1 + bytes.count)
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, len) } }
        guard rc == 0, listen(s, 1) == 0 else { throw QMPClient.QMPError.connect("fake server bind") }
        listenFD = s
        Thread { [self] in
            let c = accept(s, nil, nil)
            guard c >= 0 else { return }
            defer { close(c) }
            func send(_ t: String) { let b = Array((t + "\n").utf8); _ = b.withUnsafeBytes { write(c, $0.baseAddress, $0.count) } }
            send(#"{"QMP": {"version": {}, "capabilities": []}}"#)
            var splitter = LineSplitter()
            var buf = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buf.withUnsafeMutableBytes { read(c, $0.baseAddress, $0.count) }
                guard n > 0 else { return }
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

    deinit { close(listenFD) }
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
        let q = try QMPClient(abstractName: server.name, timeout: .seconds(5))
        try q.execute("stop")
        let text = try q.human("info registers -a")
        #expect(text.hasPrefix("CPU#0"), "\(text)")
        #expect(QEMURegisterParser.parse(text).first?.rip == 1)
        #expect(throws: QMPClient.QMPError.self) { try q.execute("bogus") }
        #expect(server.receivedCommands == ["qmp_capabilities", "stop", "human-monitor-command", "bogus"])
    }

    @Test func aSilentServerTimesOut() throws {
        let server = try FakeQMPServer { _ in nil }
        let q = try QMPClient(abstractName: server.name, timeout: .seconds(5))
        let t0 = ContinuousClock.now
        #expect(throws: QMPClient.QMPError.self) { try q.execute("stop", timeout: .milliseconds(200)) }
        #expect(ContinuousClock.now - t0 < .seconds(3))
    }

    @Test func noServerIsAConnectError() {
        #expect(throws: QMPClient.QMPError.self) {
            try QMPClient(abstractName: "ktstr-test-nobody-\(getpid())", timeout: .milliseconds(200))
        }
    }
}
