// Stub: replaced by the issue that owns `ktstr boot`.
struct BootCommand: CLICommand {
    let name = "boot"
    let summary = "boot a kernel with the KVM backend and stream its console"
    let help = "USAGE: ktstr boot"
    func run(_ args: inout Arguments) async throws -> Int32 {
        throw CLIError("'boot' is not implemented yet")
    }
}
