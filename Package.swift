// swift-tools-version:6.1
// swift-ktstr: test Linux sched_ext schedulers from Swift Testing, each test in a fresh VM.
// No package dependencies: only the toolchain (Swift Testing, Foundation, Synchronization, Dispatch).
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
        // The VMM core: KVM wrappers, guest memory, boot, devices, vCPU loop, machines,
        // monitor, failure dump. Never imports Testing.
        .target(name: "KtstrVMM", dependencies: ["CKVM"]),
        // Host-side orchestration: provisioning (kernel, schedulers, qemu, agent) and
        // one scheduler run (plan -> initramfs -> machine -> agent channel -> RunOutcome).
        .target(name: "KtstrHost", dependencies: ["KtstrVMM"]),
        // Swift Testing traits and assertion helpers.
        .target(name: "KtstrTesting", dependencies: ["KtstrHost", "KtstrVMM"]),
        .executableTarget(name: "ktstr", dependencies: ["KtstrHost", "KtstrVMM"]),
        // PID 1 inside the guest. Glibc only (no Foundation) so it is small and starts fast.
        .executableTarget(name: "KtstrGuest"),
        .testTarget(name: "KtstrVMMTests", dependencies: ["KtstrVMM", "KtstrHost"]),
        .testTarget(name: "SchedulerTests", dependencies: ["KtstrTesting"]),
        // The agent's parsers (plan JSON, exit lines, kallsyms), tested on the host.
        .testTarget(name: "KtstrGuestTests", dependencies: ["KtstrGuest"]),
    ]
)
