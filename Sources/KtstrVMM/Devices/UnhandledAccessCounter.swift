import Synchronization
import KtstrMachine

/// The shared, thread-safe tally behind `Machine.unhandledAccesses`: every vCPU thread's
/// exit dispatch records here the port / MMIO accesses no device on the bus claimed.
/// A lock per unhandled access is fine: those exits already cost a trip to userspace.
public final class UnhandledAccessCounter: Sendable {
    private let state = Mutex(UnhandledAccesses())

    public init() {}

    public var snapshot: UnhandledAccesses { state.withLock { $0 } }

    public func recordPort(_ port: UInt16, isWrite: Bool, count: Int) {
        state.withLock { $0.recordPort(port, isWrite: isWrite, count: count) }
    }

    public func recordMMIO(_ address: UInt64, isWrite: Bool) {
        state.withLock { $0.recordMMIO(address, isWrite: isWrite) }
    }
}
