import Foundation
import KtstrHost
import KtstrVMM
import KtstrMachine
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol
import KtstrFixtures

/// `ktstr boot`: boot a kernel on our own VMM (KVMMachine) and stream its console.
struct BootCommand: CLICommand {
    let name = "boot"
    let summary = "boot a kernel with the KVM backend and stream its console"
    let help = """
        USAGE: ktstr boot [--kernel K] [--cpus N] [--llcs L] [--threads T] [--memory MiB] [--initrd F]
                          [--cmdline-extra S] [--until TEXT] [--timeout S] [--cpuid-mask auto|none|pvm]

        Boots K (bzImage or vmlinux; default: the cached default kernel) on /dev/kvm with our own
        VMM and copies the guest console (COM1) to stdout.

        OPTIONS:
          --kernel K          kernel image (default: KTSTR_KERNEL, else the cached default kernel)
          --cpus N            vCPUs (default 1); with --llcs/--threads: cores per LLC = N/(L*T)
          --llcs L            last-level-cache domains (default 1)
          --threads T         threads per core (default 1)
          --memory MiB        guest RAM (default 256)
          --initrd F          initramfs (newc cpio) to pass to the kernel
          --cmdline-extra S   appended to the kernel command line
          --until TEXT        succeed (exit 0) as soon as TEXT appears on the console, then kill the VM
          --timeout S         give up after S seconds (default 60): exit 1 with the console tail
          --cpuid-mask M      auto (default: pvm when the host has no vmx/svm), none, pvm

        EXIT STATUS: 0 when TEXT appeared or the guest shut down; 1 on timeout or a fatal VMM error.
        """

    func run(_ args: inout Arguments) async throws -> Int32 {
        let kernelArg = try args.option("kernel")
        let cpus = try args.intOption("cpus") ?? 1
        let llcs = try args.intOption("llcs") ?? 1
        let threads = try args.intOption("threads") ?? 1
        let memory = try args.intOption("memory") ?? 256
        let initrdPath = try args.option("initrd")
        let extra = try args.option("cmdline-extra") ?? ""
        let until = try args.option("until")
        let timeout = try args.doubleOption("timeout") ?? 60
        let maskArg = try args.option("cpuid-mask") ?? "auto"
        try args.finish()

        guard cpus >= 1, llcs >= 1, threads >= 1, cpus % (llcs * threads) == 0 else {
            throw CLIError("--cpus \(cpus) is not a multiple of --llcs \(llcs) x --threads \(threads)", status: 2)
        }
        guard timeout > 0 else { throw CLIError("--timeout must be positive", status: 2) }
        let mask: CPUIDMaskPolicy = switch maskArg {
        case "auto": .automatic
        case "none": .none
        case "pvm", "emulated", "emulatedKernelCode": .emulatedKernelCode
        default: throw CLIError("--cpuid-mask takes auto, none or pvm, not '\(maskArg)'", status: 2)
        }
        let topology = Topology(llcs: llcs, coresPerLLC: cpus / (llcs * threads), threadsPerCore: threads)

        let artifacts = try Provisioning.kernel(explicit: kernelArg)
        let (kernel, note) = KVMMachine.bootImage(image: artifacts.image, vmlinux: kernelArg == nil ? artifacts.vmlinux : nil)
        if let note { Progress.step(note) }
        var initrd: [UInt8]?
        if let initrdPath {
            guard let d = FileManager.default.contents(atPath: initrdPath) else {
                throw CLIError("--initrd \(initrdPath): cannot be read")
            }
            initrd = [UInt8](d)
        }

        let stdout = FileHandle.standardOutput
        let console = ConsoleRecorder(forward: { stdout.write(Data($0)) })
        let config = KVMMachineConfiguration(kernel: kernel, initrd: initrd, commandLineExtra: extra, topology: topology,
                                             memoryMiB: memory, console: console.sink, cpuidMask: mask)
        let machine: KVMMachine
        do { machine = try KVMMachine(config) } catch let e as KernelImageError { throw CLIError("\(kernel): \(e)") }
        Progress.step("booting \(kernel) on KVM: \(topology.vcpuCount) vCPU (\(topology)), \(memory) MiB, cpuid mask \(machine.cpuidMask.name)")
        try machine.start()
        let outcome = await Self.supervise(machine: machine, console: console, until: until, timeout: .seconds(timeout))
        return Self.report(outcome, console: console, until: until, timeout: timeout)
    }

    enum Outcome: Sendable {
        case found(Duration)
        case ended(MachineExit, String?)
    }

    /// Waits on dedicated threads (never the cooperative pool) for TEXT or the machine's end.
    static func supervise(machine: KVMMachine, console: ConsoleRecorder, until: String?, timeout: Duration) async -> Outcome {
        await withCheckedContinuation { (c: CheckedContinuation<Outcome, Never>) in
            let waiter = Thread {
                let exit = machine.wait(timeout: timeout)
                console.close()
                if until == nil { c.resume(returning: .ended(exit, machine.stopDetail)) }
            }
            waiter.start()
            guard let until else { return }
            Thread {
                let heartbeat = Thread { Self.heartbeat(console: console, until: until, machine: machine) }
                heartbeat.start()
                let r = console.waitFor(until, timeout: timeout + .seconds(15))
                switch r {
                case let .found(elapsed):
                    machine.kill()
                    c.resume(returning: .found(elapsed))
                case .closed, .timedOut:
                    // The machine ended (or will, at its own deadline): report how.
                    let exit = machine.wait(timeout: .seconds(15))
                    c.resume(returning: .ended(exit, machine.stopDetail))
                }
            }.start()
        }
    }

    /// A progress line every 30 s while waiting (steps over a second get one).
    static func heartbeat(console: ConsoleRecorder, until: String, machine: KVMMachine) {
        var n = 0
        while true {
            Thread.sleep(forTimeInterval: 1)
            n += 1
            if console.waitFor(until, timeout: .zero) != .timedOut { return }
            if n % 30 == 0 { Progress.step("\(n) s: waiting for \"\(until)\" (console \(console.position) bytes)") }
        }
    }

    static func report(_ outcome: Outcome, console: ConsoleRecorder, until: String?, timeout: Double) -> Int32 {
        switch outcome {
        case let .found(elapsed):
            Progress.step("found \"\(until ?? "")\" after \(String(format: "%.1f", elapsed.seconds)) s; VM killed")
            return 0
        case let .ended(.shutdown, detail):
            Progress.step("guest shut down (\(detail ?? "shutdown")) after \(String(format: "%.1f", (ContinuousClock.now - console.started).seconds)) s")
            return 0
        case let .ended(exit, detail):
            let why: String = switch exit {
            case .timeout: "timed out after \(timeout) s" + (until.map { " waiting for \"\($0)\"" } ?? "")
            case let .fatal(why) where detail == nil || detail == why: "fatal: \(why)"
            default: "\(exit)" + (detail.map { " (\($0))" } ?? "")
            }
            let tail = console.tail()
            FileHandle.standardError.write(Data("ktstr boot: \(why)\n--- console tail ---\n\(tail.isEmpty ? "(no console output)" : tail)\n---\n".utf8))
            return 1
        }
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
