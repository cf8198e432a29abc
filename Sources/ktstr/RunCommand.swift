// Stub: replaced by the issue that owns `ktstr run`.
struct RunCommand: CLICommand {
    let name = "run"
    let summary = "run a scheduler and a workload in a fresh VM"
    let help = "USAGE: ktstr run"
    func run(_ args: inout Arguments) async throws -> Int32 {
        throw CLIError("'run' is not implemented yet")
    }
}
