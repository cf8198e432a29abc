// swift-tools-version:6.1
// swift-ktstr: test Linux sched_ext schedulers from Swift Testing, each test in a fresh VM.
// No package dependencies: only the toolchain (Swift Testing, Foundation, Synchronization, Dispatch).
// docs/ARCHITECTURE.md draws this graph and says what each target is for.
import PackageDescription

let package = Package(
    name: "swift-ktstr",
    products: [
        .library(name: "KtstrTesting", targets: ["KtstrTesting"]),
        .library(name: "KtstrVMM", targets: ["KtstrVMM"]),
        .library(name: "KtstrHost", targets: ["KtstrHost"]),
        .executable(name: "ktstr", targets: ["ktstr"]),
        .executable(name: "ktstr-guest", targets: ["KtstrGuest"]),
    ],
    targets: [
        // <linux/kvm.h> ioctls and struct accessors as static inline C. No logic.
        .target(name: "CKVM"),
        // Volatile loads from guest RAM (Swift has none). Header only.
        .target(name: "CVolatile"),
        // Host <-> guest protocol: run plan, agent messages, workload kinds, exit kinds, JSON.
        // Foundation-free: the guest agent links it too.
        .target(name: "KtstrProtocol"),
        // What every backend is: the Machine protocol, guest RAM view, register snapshots,
        // MachineExit, topology, logging.
        .target(name: "KtstrMachine", dependencies: ["CVolatile"]),
        // The VMM core over /dev/kvm: KVM wrappers, devices, x86 boot, vCPU loop, freeze
        // rendezvous, watchpoints, KVMMachine. The only target that sees CKVM.
        .target(name: "KtstrVMM", dependencies: ["CKVM", "KtstrMachine"]),
        // The qemu backend: QEMUMachine, QMP, register parsing.
        .target(name: "KtstrQEMU", dependencies: ["KtstrMachine"]),
        // sched_ext introspection from guest RAM: BTF, kernel symbols, page tables, scx /
        // runqueue / BPF map readers, failure monitor and dump. Backend-agnostic.
        .target(name: "KtstrSchedExt", dependencies: ["KtstrMachine", "KtstrProtocol"]),
        // Host-side orchestration: provisioning, one scheduler run (plan -> initramfs ->
        // machine -> agent channel -> RunOutcome), backend selection, benchmarks.
        .target(name: "KtstrHost", dependencies: ["KtstrVMM", "KtstrQEMU", "KtstrSchedExt", "KtstrProtocol"]),
        // Swift Testing traits and assertion helpers.
        .target(name: "KtstrTesting", dependencies: ["KtstrHost"]),
        // Hand-assembled tiny guests (not part of any product): tests, `ktstr demo --tiny`, benches.
        .target(name: "KtstrFixtures", dependencies: ["KtstrVMM"]),
        .executableTarget(name: "ktstr", dependencies: ["KtstrHost", "KtstrFixtures"]),
        // PID 1 inside the guest. Glibc + KtstrProtocol only (no Foundation): small, starts fast.
        .executableTarget(name: "KtstrGuest", dependencies: ["KtstrProtocol"]),
        .testTarget(name: "KtstrVMMTests", dependencies: ["KtstrVMM", "KtstrFixtures"]),
        .testTarget(name: "KtstrQEMUTests", dependencies: ["KtstrQEMU", "KtstrHost"]),
        .testTarget(name: "KtstrSchedExtTests", dependencies: ["KtstrSchedExt", "KtstrFixtures", "KtstrVMM", "KtstrHost"]),
        .testTarget(name: "KtstrHostTests", dependencies: ["KtstrHost"]),
        .testTarget(name: "KtstrProtocolTests", dependencies: ["KtstrProtocol"]),
        // Fixtures/: test schedulers (BPF C + loader), built at test time by Provisioning.buildScheduler.
        .testTarget(name: "SchedulerTests", dependencies: ["KtstrTesting"], exclude: ["Fixtures"]),
        // The agent's parsers (exit lines, kallsyms), tested on the host.
        .testTarget(name: "KtstrGuestTests", dependencies: ["KtstrGuest"]),
    ]
)
