import Foundation
import KtstrMachine
import KtstrSchedExt
import KtstrProtocol

/// JSON and text forms of outcomes and dumps, for attachments and artifact files.
enum OutcomeFormatter {
    static func json(_ value: some Encodable) throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: try e.encode(value), as: UTF8.self)
    }

    static func text(_ dump: FailureDump) -> String {
        String(describing: dump)
    }

    /// Best effort: artifacts must never fail a test on their own.
    static func write(_ outcome: RunOutcome, to dir: String) {
        let fm = FileManager.default
        try? fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try? outcome.consoleTail.write(toFile: dir + "/console.txt", atomically: true, encoding: .utf8)
        if let j = try? json(outcome) { try? j.write(toFile: dir + "/outcome.json", atomically: true, encoding: .utf8) }
        if let d = outcome.failureDump {
            try? text(d).write(toFile: dir + "/failure-dump.txt", atomically: true, encoding: .utf8)
        }
    }
}
