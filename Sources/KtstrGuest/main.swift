// ktstr-guest: PID 1 inside the test VM (docs/PROTOCOLS.md). Glibc only, no Foundation.
// Also the workload's worker processes: the agent re-executes itself with `--ktstr-worker`.
import Glibc

let arguments = CommandLine.arguments
if arguments.count > 1, arguments[1] == "--ktstr-worker" {
    WorkerMain.run(Array(arguments.dropFirst()))
}
if arguments.count > 1, arguments[1] == WorkerConfig.flag {
    ScenarioWorker.run(Array(arguments.dropFirst()))
}
if getpid() != 1 {
    Sys.writeAll(2, Array("ktstr-guest: this is the ktstr guest agent; it runs as /init inside a ktstr VM\n".utf8))
    exit(2)
}
Agent.run()
