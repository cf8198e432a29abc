import Foundation
import KtstrHost
import KtstrVMM

/// One `ktstr` subcommand. Each lives in its own file; `KtstrCLI.swift` lists them.
protocol CLICommand: Sendable {
    var name: String { get }
    /// One line for `ktstr --help`.
    var summary: String { get }
    /// Full help: usage line and options.
    var help: String { get }
    func run(_ args: inout Arguments) async throws -> Int32
}

/// A user-facing failure: printed as one line `ktstr: <message>` with exit status `status`.
struct CLIError: Error, CustomStringConvertible {
    var message: String
    var status: Int32 = 1
    init(_ message: String, status: Int32 = 1) { self.message = message; self.status = status }
    var description: String { message }
}

/// Minimal option parsing (no package dependencies allowed): `--name value`, `--name=value`,
/// boolean `--flag`, positionals. Unknown options are an error naming them.
struct Arguments {
    private(set) var items: [String]

    init(_ items: [String]) { self.items = items }

    /// Removes `--name V` / `--name=V` and returns V (last one wins).
    mutating func option(_ name: String) throws -> String? {
        var value: String?
        var i = 0
        while i < items.count {
            let a = items[i]
            if a == "--\(name)" {
                guard i + 1 < items.count else { throw CLIError("--\(name) needs a value", status: 2) }
                value = items[i + 1]
                items.removeSubrange(i...i + 1)
            } else if a.hasPrefix("--\(name)=") {
                value = String(a.dropFirst(name.count + 3))
                items.remove(at: i)
            } else { i += 1 }
        }
        return value
    }

    /// Removes every `--name V` / `--name=V` and returns the values in order (repeatable options).
    mutating func options(_ name: String) throws -> [String] {
        var values: [String] = []
        var i = 0
        while i < items.count {
            let a = items[i]
            if a == "--\(name)" {
                guard i + 1 < items.count else { throw CLIError("--\(name) needs a value", status: 2) }
                values.append(items[i + 1])
                items.removeSubrange(i...i + 1)
            } else if a.hasPrefix("--\(name)=") {
                values.append(String(a.dropFirst(name.count + 3)))
                items.remove(at: i)
            } else { i += 1 }
        }
        return values
    }

    /// Removes `-<letter> V` and returns V (last one wins): `ktstr shell -c CMD`.
    mutating func shortOption(_ letter: Character) throws -> String? {
        var value: String?
        while let i = items.firstIndex(of: "-\(letter)") {
            guard i + 1 < items.count else { throw CLIError("-\(letter) needs a value", status: 2) }
            value = items[i + 1]
            items.removeSubrange(i...i + 1)
        }
        return value
    }

    mutating func intOption(_ name: String) throws -> Int? {
        guard let v = try option(name) else { return nil }
        guard let n = Int(v) else { throw CLIError("--\(name) takes a whole number, not '\(v)'", status: 2) }
        return n
    }

    mutating func doubleOption(_ name: String) throws -> Double? {
        guard let v = try option(name) else { return nil }
        // nan, inf and 1e400 parse as Double but are no duration: refuse them here.
        guard let n = Double(v), n.isFinite else { throw CLIError("--\(name) takes a finite number, not '\(v)'", status: 2) }
        return n
    }

    /// Removes `--name` and says whether it was there.
    mutating func flag(_ name: String) -> Bool {
        let had = items.contains("--\(name)")
        items.removeAll { $0 == "--\(name)" }
        return had
    }

    /// Takes the next positional argument, if any.
    mutating func positional() -> String? {
        guard let i = items.firstIndex(where: { !$0.hasPrefix("--") }) else { return nil }
        return items.remove(at: i)
    }

    /// Call after taking every known option: anything left is a usage error.
    func finish() throws {
        if let extra = items.first {
            throw CLIError("unknown argument '\(extra)' (see --help)", status: 2)
        }
    }
}

/// Progress lines for steps that take over a second; stderr, so `--json` stdout stays clean.
enum Progress {
    static func step(_ message: String) {
        FileHandle.standardError.write(Data("==> \(message)\n".utf8))
    }
}

/// The checks and conversions `run`, `shell` and `gauntlet` share, one copy each.
enum RunArguments {
    /// `simple`, `fault`, `none`, or the path of a scheduler binary.
    static func scheduler(_ name: String, args: [String]) -> SchedulerSpec {
        switch name {
        case "none": .none
        case "simple": .simple(args: args)
        case "fault": .fault(args: args)
        default: .binary(path: name, args: args)
        }
    }

    static func checkTimeout(_ timeout: Double) throws {
        guard timeout > 0, timeout <= VMConfig.maxTimeoutSeconds else {
            throw CLIError("--timeout must be more than 0 and at most \(Int(VMConfig.maxTimeoutSeconds)) s", status: 2)
        }
    }

    static func checkMemory(_ memory: Int) throws {
        guard (128...65536).contains(memory) else { throw CLIError("--memory must be 128...65536 MiB", status: 2) }
    }

    /// A `--kernel` value (a tree, a bzImage/vmlinux, a registered name or a cached version):
    /// checked before anything boots, so a bad one is one line and exit status 1.
    static func checkKernel(_ kernel: String) throws {
        try KernelImage.validate(path: try Provisioning.kernel(named: kernel).image)
    }
}
