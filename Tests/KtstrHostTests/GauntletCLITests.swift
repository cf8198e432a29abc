import Foundation
import Testing
@testable import KtstrHost
@testable import KtstrProtocol

/// `ktstr gauntlet` end to end (three VMs; a few minutes under TCG).
@Suite(.serialized, .timeLimit(.minutes(10)))
struct GauntletCLITests {
    static let missing: String? = {
        guard FileManager.default.isExecutableFile(atPath: ktstrCLI) else { return "needs a built `ktstr` (swift build)" }
        do {
            _ = try Provisioning.kernel()
            _ = try Provisioning.scheduler("simple")
            _ = try Provisioning.agentBinary()
            return nil
        } catch { return "\(error) (run `swift run ktstr setup`)" }
    }()

    static func ktstr(_ args: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: ktstrCLI)
        p.arguments = args
        let err = Pipe(), out = Pipe()
        p.standardError = err
        p.standardOutput = out
        try p.run()
        // Drain both pipes concurrently (a full stderr pipe would block the CLI).
        let errData = Locked<Data>(Data())
        let t = Thread { errData.value = err.fileHandleForReading.readDataToEndOfFile() }
        t.start()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        while !t.isFinished { usleep(10_000) }
        return (p.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData.value, as: UTF8.self))
    }

    @Test(.enabled(if: missing == nil, Comment(rawValue: missing ?? "")))
    func threeTopologiesThreeHealthyCells() throws {
        let r = try Self.ktstr(["gauntlet", "--scheduler", "simple", "--topologies", "1x2x1,2llc,2numa", "--duration", "2", "--json"])
        let cells = try JSONDecoder().decode([Gauntlet.Cell].self, from: Data(r.stdout.utf8))
        #expect(cells.map(\.topology) == ["1x2x1", "2llc", "2numa"], "\(r.stderr)")
        for c in cells { #expect(c.passed, "\(c.topology): \(c.checks) \(c.problems)") }
        #expect(r.status == 0, "\(r.stderr)")
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: ktstrCLI), "needs a built `ktstr` (swift build)"))
    func unknownTopologyIsAUsageError() throws {
        let r = try Self.ktstr(["gauntlet", "--scheduler", "simple", "--topologies", "1x2x1,bogus"])
        #expect(r.status == 2)
        #expect(r.stderr.contains("'bogus'") && r.stderr.contains("2numa"), "\(r.stderr)")
    }
}

final class Locked<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var v: T
    init(_ v: T) { self.v = v }
    var value: T { get { lock.lock(); defer { lock.unlock() }; return v } set { lock.lock(); v = newValue; lock.unlock() } }
}
