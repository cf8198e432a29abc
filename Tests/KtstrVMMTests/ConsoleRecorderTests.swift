import Foundation
import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrFixtures

@Suite struct ConsoleRecorderTests {
    @Test func findsTextSplitAcrossWrites() {
        let r = ConsoleRecorder()
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.05) {
            r.append(Array("[    0.000000] Linux ver".utf8)[...])
            r.append(Array("sion 7.3.4 ...\n".utf8)[...])
        }
        guard case .found = r.waitFor("Linux version 7.3.4", timeout: .seconds(5)) else {
            Issue.record("not found"); return
        }
        #expect(r.tail().contains("Linux version"))
    }

    @Test func timesOutAndCloses() {
        let r = ConsoleRecorder()
        r.append(Array("nothing here".utf8)[...])
        #expect(r.waitFor("Command line:", timeout: .milliseconds(100)) == .timedOut)
        r.close()
        #expect(r.waitFor("Command line:", timeout: .seconds(5)) == .closed)
    }

    @Test func keepsTheNewestBytesAndSearchesFromAPosition() {
        let r = ConsoleRecorder(capacity: 4096)
        r.append(Array("MARK".utf8)[...])
        let pos = r.position
        r.append([UInt8](repeating: 0x2e, count: 5000)[...])
        #expect(!r.text.contains("MARK"))
        r.append(Array("MARK".utf8)[...])
        if case .found = r.waitFor("MARK", from: pos, timeout: .milliseconds(100)) {} else { Issue.record("second MARK not found") }
        #expect(r.waitFor("MARK", from: r.position, timeout: .milliseconds(50)) == .timedOut)
    }
}
