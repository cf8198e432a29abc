import Foundation
import Synchronization
import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrFixtures

/// What the guest's CPUID instruction really returns after KVMLinuxBoot set the table: a
/// tiny 64-bit guest (entered with the same state as a kernel) executes CPUID and reports
/// registers on port 0x10, then resets through the i8042.
@Suite(.enabled(if: kvmUnavailable == nil, Comment(rawValue: kvmUnavailable ?? "")), .timeLimit(.minutes(1)))
struct CPUIDGuestTests {
    final class PortLog: PortIODevice {
        let values = Mutex<[UInt32]>([])
        func read(offset: UInt16, into data: UnsafeMutableRawBufferPointer) {}
        func write(offset: UInt16, from data: UnsafeRawBufferPointer) -> DeviceAction {
            if data.count == 4 { values.withLock { $0.append(data.loadUnaligned(as: UInt32.self)) } }
            return .none
        }
    }

    /// cpuid(leaf, subleaf); out 0x10, <reg> for each query; then 0xFE → port 0x64.
    static func program(_ queries: [(leaf: UInt8, subleaf: UInt8, reg: UInt8)]) -> [UInt8] {
        var c: [UInt8] = []
        for q in queries {
            c += [0xb8, q.leaf, 0, 0, 0, 0xb9, q.subleaf, 0, 0, 0, 0x0f, 0xa2] // mov eax; mov ecx; cpuid
            // mov eax, <reg>: ebx 0x89 0xd8, ecx 0x89 0xc8, edx 0x89 0xd0 (eax: nothing)
            switch q.reg { case 1: c += [0x89, 0xd8]; case 2: c += [0x89, 0xc8]; case 3: c += [0x89, 0xd0]; default: break }
            c += [0x66, 0xba, 0x10, 0x00, 0xef] // mov dx, 0x10 (CPUID clobbered edx); out dx, eax
        }
        return c + [0xb0, 0xfe, 0xe6, 0x64, 0xeb, 0xfe] // mov al, 0xfe; out 0x64, al; jmp .
    }

    @Test func topologyLeavesReachTheGuest() throws {
        let topo = Topology(llcs: 1, coresPerLLC: 2, threadsPerCore: 2)
        let queries: [(leaf: UInt8, subleaf: UInt8, reg: UInt8)] = [
            (0xb, 0, 1), (0xb, 1, 1), (0xb, 1, 3), (0x1, 0, 1), (0x4, 3, 0), (0xa, 0, 0), (0x7, 0, 1),
        ]
        let kvm = try KVMSystem()
        let mem = try GuestMemory.anonymous(layout: [(0, 4 << 20)])
        try PageTables(gib: 1).write(into: mem)
        try mem.write(GDT.bytes, at: BootLayout.gdt)
        try mem.write(Self.program(queries), at: 0x10_0000)
        let vm = try kvm.createVM(memory: mem)
        try KVMLinuxBoot.setUpVM(vm)
        let log = PortLog()
        var bus = DeviceBus()
        try bus.add(log, ports: 0x10, count: 4)
        try bus.addI8042()
        let supported = try kvm.supportedCPUID().map(KVMLinuxBoot.cpuid)
        let runner = try VCPURunner(vm: vm, memory: mem, vcpuCount: 1, bus: bus, halt: .irqchip, log: .silent) { vcpu in
            try KVMLinuxBoot.setUpVCPU(vcpu, index: 0, topology: topo, supported: supported, mask: .emulatedKernelCode,
                                       entry: 0x10_0000, log: .silent)
        }
        try runner.start()
        let exit = runner.wait(timeout: .seconds(20))
        #expect(exit == .shutdown, "\(exit): \(runner.stopDetail ?? "")")
        let v = log.values.withLock { $0 }
        try #require(v.count == queries.count, "got \(v)")
        #expect(v[0] == 2)                     // 0xB.0 EBX: threads per core
        #expect(v[1] == 4)                     // 0xB.1 EBX: logical CPUs in the package
        #expect(v[2] == 0)                     // 0xB.1 EDX: x2APIC id of vCPU 0
        #expect((v[3] >> 16) & 0xff == 4)      // leaf 1 EBX: logical count
        #expect(v[3] >> 24 == 0)               // leaf 1 EBX: initial APIC id
        if v[4] & 0x1f != 0 { #expect((v[4] >> 14) & 0xfff == 3) } // L3 shared by the 4 threads
        #expect(v[5] == 0)                     // PMU leaf zeroed
        // Feature masks reach the guest only where KVM owns CPUID; nested PVM reports the host's
        // leaf 1/7/0xD feature bits whatever the table says (hence the kernel parameters).
        if CPUID.hostHasHardwareVirtualization() { #expect(v[6] & (1 << 8) == 0) } // BMI2 hidden
    }
}
