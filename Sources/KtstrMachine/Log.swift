import Foundation

/// Where library code sends diagnostics. Quiet by default; `KTSTR_LOG=debug|info` prints
/// to stderr. Libraries never `print`: they take a `Log` (or use `Log.default`).
public struct Log: Sendable {
    public enum Level: Int, Sendable, Comparable {
        case debug = 0, info, warning, error, off
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
    }

    public let level: Level
    private let sink: @Sendable (Level, String) -> Void

    public init(level: Level, sink: @escaping @Sendable (Level, String) -> Void) {
        self.level = level
        self.sink = sink
    }

    /// Level from `KTSTR_LOG` (debug, info, warning, error, off; `KtstrSettings`); default
    /// `.warning`, to stderr.
    public static let `default`: Log = {
        Log(level: KtstrSettings.current.logLevel) { lvl, msg in
            FileHandle.standardError.write(Data("ktstr[\(lvl)]: \(msg)\n".utf8))
        }
    }()

    public static let silent = Log(level: .off) { _, _ in }

    public func callAsFunction(_ lvl: Level, _ message: @autoclosure () -> String) {
        guard lvl >= level, level != .off else { return }
        sink(lvl, message())
    }
    public func debug(_ m: @autoclosure () -> String) { self(.debug, m()) }
    public func info(_ m: @autoclosure () -> String) { self(.info, m()) }
    public func warning(_ m: @autoclosure () -> String) { self(.warning, m()) }
    public func error(_ m: @autoclosure () -> String) { self(.error, m()) }
}

/// A consumer of bytes a device or machine produced (console output, agent channel).
public typealias ByteSink = @Sendable (ArraySlice<UInt8>) -> Void
