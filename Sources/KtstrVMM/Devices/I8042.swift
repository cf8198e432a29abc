import KtstrMachine

/// The bare minimum of the PC keyboard controller a direct-booted Linux needs: a reset line.
/// Writing 0xFE (pulse the reset line) to the command port is how `reboot=k` restarts the
/// machine; the VMM treats it as "the guest asked to stop". Everything else reads 0 (no
/// keyboard, output buffer empty, input buffer empty: `kb_wait()` does not spin) and
/// writes are ignored.
///
/// Like the rust-vmm devices it never sees a port number: the bus adapter (`I8042Device`)
/// says which of the two registers was accessed, so the controller could sit anywhere.
public struct I8042: Sendable, Equatable {
    /// Where a PC has it (the bus registration uses these, the device does not).
    public static let dataPort: UInt16 = 0x60
    public static let commandPort: UInt16 = 0x64
    public static let resetCommand: UInt8 = 0xfe

    /// The controller's two registers (on a PC, 0x60 and 0x64: not one contiguous window).
    public enum Register: Sendable, Equatable {
        case data
        /// Status on read, command on write.
        case command
    }

    public enum Action: Sendable, Equatable {
        case none
        /// The guest pulsed the CPU reset line.
        case reset
    }

    public private(set) var resetRequested = false

    public init() {}

    /// The controller's state, for snapshots.
    public struct State: Codable, Sendable, Equatable {
        public var resetRequested: Bool
    }

    public func snapshot() -> State { State(resetRequested: resetRequested) }
    public mutating func restore(_ state: State) { resetRequested = state.resetRequested }

    public mutating func read(_ register: Register) -> UInt8 { 0 }

    public mutating func write(_ register: Register, value: UInt8) -> Action {
        guard register == .command, value == Self.resetCommand else { return .none }
        resetRequested = true
        return .reset
    }
}
