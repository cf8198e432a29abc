import KtstrMachine
import KtstrVMM

/// `ktstr demo --tiny` and `ktstr bench tiny`: one tiny guest that prints on COM1.
public enum TinyGuestDemo {
    public struct Result: Sendable {
        public var console: String
        public var exit: MachineExit
        public var detail: String?
    }

    /// Boots a guest that prints `text` on COM1 and halts; returns what it printed.
    /// Throws `KVMError` (one line with the fix) when KVM is unusable.
    public static func run(text: String = "hello\n", mode: TinyGuestMode = .long,
                           timeout: Duration = .seconds(10), log: Log = .default) throws -> Result {
        let m = try TinyGuestMachine(payload: TinyGuestPayloads.print(text, mode: mode), mode: mode, log: log)
        try m.start()
        let exit = m.wait(timeout: timeout)
        return Result(console: m.console, exit: exit, detail: m.stopDetail)
    }
}
