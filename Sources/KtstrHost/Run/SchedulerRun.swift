// TEMPORARY stub in branch `testing` so KtstrTesting compiles; the qemu branch owns the real one.
public enum SchedulerRun {
    public static func run(vm: VMConfig, scheduler: SchedulerSpec, workload: WorkloadSpec, duration: Duration,
                           artifactsDirectory: String?, log: Log) async throws -> RunOutcome {
        throw ProvisioningError.missing(what: "SchedulerRun", fix: "stub")
    }
}
