import KtstrMachine

/// The bare minimum of the PC keyboard controller a direct-booted Linux needs: a reset line.
/// Writing 0xFE (pulse the reset line) to the command port is how `reboot=k` restarts the
/// machine; the VMM treats it as "the guest asked to stop". Everything else reads 0 (no
/// keyboard, output buffer empty, input buffer empty: `kb_wait()` does not spin) and
/// writes are ignored.
public struct I8042: Sendable, Equatable {
    public static let dataPort: UInt16 = 0x60
    public static let commandPort: UInt16 = 0x64
    public static let resetCommand: UInt8 = 0xfe

    public enum Action: Sendable, Equatable {
        case none
        /// The guest pulsed the CPU reset line.
        case reset
    }

    public private(set) var resetRequested = false

    public init() {}

    public mutating func read(port: UInt16) -> UInt8 { 0 }

    public mutating func write(port: UInt16, value: UInt8) -> Action {
        guard port == Self.commandPort, value == Self.resetCommand else { return .none }
        resetRequested = true
        return .reset
    }
}
