import KtstrMachine

/// A `Machine` whose lifecycle is exactly its `VCPURunner`'s (our own VMM: tiny guests and
/// Linux). The runner does the work; this only forwards, once, for every such machine.
public protocol RunnerBackedMachine: Machine {
    var runner: VCPURunner { get }
}

extension RunnerBackedMachine {
    public var vcpuCount: Int { runner.vcpuCount }
    public func start() throws { try runner.start() }
    public func freeze(timeout: Duration) throws -> [VCPURegisterSnapshot] { try runner.freeze(timeout: timeout) }
    public func thaw() throws { runner.thaw() }
    public func wait(timeout: Duration) -> MachineExit { runner.wait(timeout: timeout) }
    public func kill() { runner.kill() }
    public var unhandledAccesses: UnhandledAccesses { runner.unhandledAccesses }
    /// How the run ended, in words (shutdown reason or fatal diagnostic), once it has.
    public var stopDetail: String? { runner.stopDetail }
}
