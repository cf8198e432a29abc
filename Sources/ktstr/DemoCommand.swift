// Stub: replaced by the issue that owns `ktstr demo`.
struct DemoCommand: CLICommand {
    let name = "demo"
    let summary = "boot a guest and show what ktstr does"
    let help = "USAGE: ktstr demo"
    func run(_ args: inout Arguments) async throws -> Int32 {
        throw CLIError("'demo' is not implemented yet")
    }
}
