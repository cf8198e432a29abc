// Stub: replaced by the issue that owns `ktstr kernel`.
struct KernelCommand: CLICommand {
    let name = "kernel"
    let summary = "fetch / list cached guest kernels"
    let help = "USAGE: ktstr kernel"
    func run(_ args: inout Arguments) async throws -> Int32 {
        throw CLIError("'kernel' is not implemented yet")
    }
}
