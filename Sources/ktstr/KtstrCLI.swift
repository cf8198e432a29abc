import Foundation
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol
import KtstrFixtures

@main
struct KtstrCLI {
    static let commands: [CLICommand] = [
        DemoCommand(), RunCommand(), ShellCommand(), BootCommand(), KernelCommand(), SetupCommand(), DoctorCommand(), BenchCommand(),
        SchedulersCommand(), GauntletCommand(),
    ]

    static func usage() -> String {
        var s = "ktstr — test Linux sched_ext schedulers in throwaway VMs\n\nUSAGE: ktstr <command> [options]\n\nCOMMANDS:\n"
        for c in commands { s += "  " + c.name.padding(toLength: 10, withPad: " ", startingAt: 0) + c.summary + "\n" }
        s += "\nRun 'ktstr <command> --help' for a command's options. KTSTR_LOG=debug shows VMM diagnostics.\n"
        return s
    }

    static func main() async {
        let argv = Array(CommandLine.arguments.dropFirst())
        guard let name = argv.first, !["-h", "--help", "help"].contains(name) else {
            print(usage(), terminator: "")
            exit(argv.isEmpty ? 2 : 0)
        }
        guard let command = commands.first(where: { $0.name == name }) else {
            FileHandle.standardError.write(Data("ktstr: unknown command '\(name)'\n\n\(usage())".utf8))
            exit(2)
        }
        var args = Arguments(Array(argv.dropFirst()))
        if args.flag("help") || args.flag("h") {
            print(command.help)
            exit(0)
        }
        do {
            let status = try await command.run(&args)
            exit(status)
        } catch let e as CLIError {
            FileHandle.standardError.write(Data("ktstr \(name): \(e.message)\n".utf8))
            exit(e.status)
        } catch {
            FileHandle.standardError.write(Data("ktstr \(name): \(error)\n".utf8))
            exit(1)
        }
    }
}
