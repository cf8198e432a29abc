/// What the host read out of the frozen guest when the scheduler failed.
/// Placeholder shape: the monitor/dump work (issue 5) owns this file and fills it out.
public struct FailureDump: Codable, Sendable {
    public var kind: ExitKind
    public var kindValue: Int
    public var registers: [VCPURegisterSnapshot]
    /// What could not be read and why (a corrupt pointer is an entry here, never a crash).
    public var problems: [String]

    public init(kind: ExitKind, kindValue: Int, registers: [VCPURegisterSnapshot] = [], problems: [String] = []) {
        self.kind = kind; self.kindValue = kindValue; self.registers = registers; self.problems = problems
    }
}
