// Stub: replaced by the issue that owns `ktstr doctor`.
struct DoctorCommand: CLICommand {
    let name = "doctor"
    let summary = "say which backend will be used and why"
    let help = "USAGE: ktstr doctor"
    func run(_ args: inout Arguments) async throws -> Int32 {
        throw CLIError("'doctor' is not implemented yet")
    }
}
