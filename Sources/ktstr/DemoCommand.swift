import KtstrVMM

/// `ktstr demo`: for now, boots a tiny hand-assembled guest on our own KVM VMM that prints
/// "hello" on COM1, and shows what it printed. (The scheduler demo will replace the body;
/// `TinyGuestDemo.run()` stays available in KtstrVMM.)
struct DemoCommand: CLICommand {
    let name = "demo"
    let summary = "boot a tiny guest on the KVM backend and show its console"
    let help = """
        USAGE: ktstr demo [--real-mode]

        Boots a hand-assembled guest (no kernel) that prints "hello" on COM1 and halts.
        Needs a usable /dev/kvm; otherwise exits 1 with the reason and the fix.

        OPTIONS:
          --real-mode   run the payload in 16-bit real mode instead of 64-bit long mode
        """

    func run(_ args: inout Arguments) async throws -> Int32 {
        let mode: TinyGuestMode = args.flag("real-mode") ? .real : .long
        try args.finish()
        let result: TinyGuestDemo.Result
        do {
            result = try TinyGuestDemo.run(mode: mode)
        } catch {
            throw CLIError("\(error)")
        }
        print(result.console, terminator: "")
        guard result.exit == .shutdown else {
            throw CLIError("tiny guest ended with \(result.exit)\(result.detail.map { " (\($0))" } ?? "")")
        }
        return 0
    }
}
