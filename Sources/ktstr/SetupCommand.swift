// Stub: replaced by the issue that owns `ktstr setup`.
struct SetupCommand: CLICommand {
    let name = "setup"
    let summary = "install and build what ktstr needs (idempotent, cached)"
    let help = "USAGE: ktstr setup"
    func run(_ args: inout Arguments) async throws -> Int32 {
        throw CLIError("'setup' is not implemented yet")
    }
}
