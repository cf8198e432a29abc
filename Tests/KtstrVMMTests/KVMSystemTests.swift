import CKVM
import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrFixtures

@Suite(.enabled(if: kvmUnavailable == nil, Comment(rawValue: kvmUnavailable ?? "")))
struct KVMSystemTests {
    @Test func systemAnswersTheBasics() throws {
        let kvm = try KVMSystem()
        #expect(try kvm.vcpuMmapSize() >= MemoryLayout<kvm_run>.size)
        #expect(kvm.has(.userMemory))
        #expect(kvm.has(.immediateExit))
        let cpuid = try kvm.supportedCPUID()
        #expect(cpuid.contains { $0.function == 0 })
        #expect(cpuid.contains { $0.function == 1 })
        #expect(try !kvm.msrIndexList().isEmpty)
        #expect(kvm.capabilities().count == KVMCapability.all.count)
    }

    @Test func vmAndVCPURegistersRoundTrip() throws {
        let kvm = try KVMSystem()
        let mem = try GuestMemory.anonymous(layout: [(gpa: 0, size: 1 << 20)])
        let vm = try kvm.createVM(memory: mem)
        let vcpu = try vm.createVCPU(id: 0)
        var r = try vcpu.getRegs()
        r.rax = 0x1234_5678_9abc_def0
        r.rip = 0x1000
        try vcpu.setRegs(r)
        #expect(try vcpu.getRegs().rax == 0x1234_5678_9abc_def0)
        try vcpu.setCPUID(try kvm.supportedCPUID())
        #expect(try vcpu.getMPState() == .runnable)
        let msrs = try vcpu.getMSRs([0x174]) // IA32_SYSENTER_CS
        #expect(msrs.count == 1)
        try vcpu.setMSRs([(index: 0x174, value: 0x10)])
        #expect(try vcpu.getMSRs([0x174])[0x174] == 0x10)
        _ = try vcpu.getFPU()
        _ = try vcpu.getVCPUEvents()
    }

    @Test func misalignedMemoryAndDuplicateVCPUsAreRefusedWithNames() throws {
        let kvm = try KVMSystem()
        let vm = try kvm.createVM()
        _ = try vm.createVCPU(id: 0)
        #expect(throws: KVMError.ioctl(call: "KVM_CREATE_VCPU", errno: EEXIST)) { try vm.createVCPU(id: 0) }
        let mem = try GuestMemory.anonymous(layout: [(gpa: 0x800, size: 4096)])
        #expect(throws: KVMError.self) { try vm.register(memory: mem) }
    }

    @Test func irqchipAndIRQLines() throws {
        let kvm = try KVMSystem()
        let vm = try kvm.createVM()
        try vm.createIRQChip()
        try vm.createPIT2()
        try vm.setIRQLine(4, high: true)
        try vm.setIRQLine(4, high: false)
        #expect(throws: KVMError.self) { try vm.createIRQChip() }
        let event = try EventFD()
        try vm.registerIRQFD(event, gsi: 5)
        event.signal()
        try vm.unregisterIRQFD(event, gsi: 5)
        let vcpu = try vm.createVCPU(id: 0)
        _ = try vcpu.getLAPIC()
        #expect(try vcpu.tscKHz() > 0)
    }

    @Test func eventFDCountsAndResets() throws {
        let e = try EventFD()
        #expect(e.read() == 0)
        e.signal(); e.signal(2)
        #expect(e.read() == 3)
        #expect(e.read() == 0)
    }
}

@Suite(.enabled(if: kvmUnavailable == nil, Comment(rawValue: kvmUnavailable ?? "")),
       .timeLimit(.minutes(1)))
struct VCPURunnerIDTests {
    /// APIC ids with a hole (0, 1, 4): the runner indexes vCPUs 0...2 and keeps KVM's ids.
    @Test func sparseVCPUIDsAreCreatedAndIndexed() throws {
        let kvm = try KVMSystem()
        let mem = try GuestMemory.anonymous(layout: [(gpa: 0, size: 2 << 20)])
        try mem.write(TinyGuestPayloads.counterLoop, at: 0x1000)
        try X86InitialState.writeLongModeTables(into: mem)
        let vm = try kvm.createVM(memory: mem)
        var seen: [(Int, Int)] = []
        let runner = try VCPURunner(vm: vm, memory: mem, vcpuIDs: [0, 1, 4], bus: DeviceBus(), halt: .tinyGuest, log: .silent) { index, vcpu in
            seen.append((index, vcpu.id))
            try X86InitialState.longMode(vcpu, rip: 0x1000) { $0.rdi = 0x2000 + 64 * UInt64(index) }
        }
        #expect(seen.map(\.0) == [0, 1, 2])
        #expect(seen.map(\.1) == [0, 1, 4])
        #expect(runner.vcpus.map(\.id) == [0, 1, 4])
        try runner.start()
        defer { runner.kill(); _ = runner.wait(timeout: .seconds(5)) }
        let snaps = try runner.freeze(timeout: .seconds(5))
        #expect(snaps.map(\.cpu) == [0, 1, 2])
        runner.thaw()
        #expect(throws: KVMError.self) {
            try VCPURunner(vm: vm, memory: mem, vcpuIDs: [7, 7], bus: DeviceBus(), halt: .tinyGuest) { _, _ in }
        }
    }
}
