import CKVM
import Glibc
import Synchronization
import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrFixtures

/// A fake kvm_run mapping (two pages, like KVM's: kvm_run + the PIO data page).
final class FakeRun {
    static let size = 8192
    let raw: UnsafeMutableRawPointer
    var run: UnsafeMutablePointer<kvm_run> { raw.assumingMemoryBound(to: kvm_run.self) }
    var page: KVMRunPage { KVMRunPage(base: raw, size: Self.size) }

    init() {
        raw = UnsafeMutableRawPointer.allocate(byteCount: Self.size, alignment: 4096)
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: Self.size)
    }
    deinit { raw.deallocate() }

    func io(write: Bool, port: UInt16, size: UInt8, count: UInt32, offset: UInt64 = 4096) -> VCPUExit {
        ckvm_run_set_exit_reason(run, UInt32(KVM_EXIT_IO))
        ckvm_run_set_io(run, write ? UInt8(KVM_EXIT_IO_OUT) : UInt8(KVM_EXIT_IO_IN), size, port, count, offset)
        return VCPUExit.decode(run)
    }

    func mmio(write: Bool, address: UInt64, length: UInt32) -> VCPUExit {
        ckvm_run_set_exit_reason(run, UInt32(KVM_EXIT_MMIO))
        ckvm_run_set_mmio(run, address, length, write ? 1 : 0)
        return VCPUExit.decode(run)
    }

    var mmioData: UnsafeMutablePointer<UInt8> { ckvm_run_mmio_data(run) }
}

/// Records port and MMIO accesses.
final class RecordingDevice: PortIODevice, MMIODevice {
    let log = Mutex<[String]>([])
    let readValue: UInt8
    let action: DeviceAction
    init(readValue: UInt8 = 0x42, action: DeviceAction = .none) { self.readValue = readValue; self.action = action }

    func read(offset: UInt16, into data: UnsafeMutableRawBufferPointer) {
        log.withLock { $0.append("r\(offset)x\(data.count)") }
        for i in data.indices { data[i] = readValue }
    }
    func write(offset: UInt16, from data: UnsafeRawBufferPointer) -> DeviceAction {
        log.withLock { $0.append("w\(offset)=\(Array(data))") }
        return action
    }
    func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
        log.withLock { $0.append("mr\(offset)x\(data.count)") }
        for i in data.indices { data[i] = readValue }
    }
    func write(offset: UInt64, from data: UnsafeRawBufferPointer) -> DeviceAction {
        log.withLock { $0.append("mw\(offset)=\(Array(data))") }
        return action
    }
    var entries: [String] { log.withLock { $0 } }
}

@Suite struct ExitDispatchTests {
    func dispatch(_ dev: RecordingDevice, policy: ExitPolicy = .lenient, watch: WatchpointMonitor? = nil) throws -> ExitDispatch {
        var bus = DeviceBus()
        try bus.add(dev as any PortIODevice, ports: 0x3f8, count: 8)
        try bus.add(dev as any MMIODevice, mmio: 0xd000_0000, size: 0x1000)
        return ExitDispatch(bus: bus, policy: policy, watchpoints: watch, log: .silent)
    }

    func handle(_ d: ExitDispatch, _ f: FakeRun, _ e: VCPUExit) -> ExitAction {
        d.handle(e, page: f.page, cpu: 0)
    }

    @Test func portWriteReachesDeviceAtItsOffset() throws {
        let dev = RecordingDevice(), f = FakeRun(), d = try dispatch(dev)
        f.raw.storeBytes(of: UInt8(0x68), toByteOffset: 4096, as: UInt8.self)
        #expect(handle(d, f, f.io(write: true, port: 0x3f9, size: 1, count: 1)) == .resume)
        #expect(dev.entries == ["w1=[104]"])
    }

    @Test func repStringIOVisitsEveryElement() throws {
        let dev = RecordingDevice(), f = FakeRun(), d = try dispatch(dev)
        #expect(handle(d, f, f.io(write: false, port: 0x3f8, size: 2, count: 3)) == .resume)
        #expect(dev.entries == ["r0x2", "r0x2", "r0x2"])
        #expect(Array(UnsafeRawBufferPointer(start: f.raw + 4096, count: 6)) == [UInt8](repeating: 0x42, count: 6))
    }

    @Test func readFromEmptyPortFloatsHighAndWriteIsIgnored() throws {
        let dev = RecordingDevice(), f = FakeRun(), d = try dispatch(dev)
        #expect(handle(d, f, f.io(write: false, port: 0x80, size: 4, count: 1)) == .resume)
        #expect(f.raw.load(fromByteOffset: 4096, as: UInt32.self) == 0xffff_ffff)
        #expect(handle(d, f, f.io(write: true, port: 0x80, size: 1, count: 1)) == .resume)
        #expect(dev.entries.isEmpty)
    }

    @Test func strictPortsMakeEmptyPortsFatal() throws {
        let f = FakeRun(), d = try dispatch(RecordingDevice(), policy: ExitPolicy(unmappedPorts: .fatal))
        guard case let .fatal(why) = handle(d, f, f.io(write: true, port: 0x80, size: 1, count: 1)) else {
            Issue.record("expected fatal"); return
        }
        #expect(why.contains("port 0x80"))
    }

    @Test(arguments: [(UInt8(3), UInt32(1), UInt64(4096)), (1, 1, 8192), (4, 1025, 4096), (4, 0x4000_0000, 4096), (1, 1, UInt64.max)])
    func malformedPortIOIsFatalNotACrash(size: UInt8, count: UInt32, offset: UInt64) throws {
        let dev = RecordingDevice(), f = FakeRun(), d = try dispatch(dev)
        let a = handle(d, f, f.io(write: false, port: 0x3f8, size: size, count: count, offset: offset))
        guard case .fatal = a else { Issue.record("expected fatal, got \(a)"); return }
        #expect(dev.entries.isEmpty)
    }

    @Test func portIOFillingTheMappingExactlyIsAccepted() throws {
        let dev = RecordingDevice(), f = FakeRun(), d = try dispatch(dev)
        #expect(handle(d, f, f.io(write: true, port: 0x3f8, size: 4, count: 1024, offset: 4096)) == .resume)
        #expect(dev.entries.count == 1024)
    }

    @Test func deviceShutdownBecomesShutdown() throws {
        let dev = RecordingDevice(action: .shutdown("bye")), f = FakeRun(), d = try dispatch(dev)
        #expect(handle(d, f, f.io(write: true, port: 0x3f8, size: 1, count: 1)) == .shutdown("bye"))
    }

    @Test func mmioToDeviceAndUnmappedReadsAllOnes() throws {
        let dev = RecordingDevice(), f = FakeRun(), d = try dispatch(dev)
        #expect(handle(d, f, f.mmio(write: false, address: 0xd000_0010, length: 4)) == .resume)
        #expect(f.mmioData[0] == 0x42 && f.mmioData[3] == 0x42)
        f.mmioData[0] = 9
        #expect(handle(d, f, f.mmio(write: true, address: 0xd000_0ffc, length: 4)) == .resume)
        #expect(dev.entries == ["mr16x4", "mw4092=[9, 66, 66, 66]"])
        #expect(handle(d, f, f.mmio(write: false, address: 0xe000_0000, length: 8)) == .resume)
        #expect((0..<8).allSatisfy { f.mmioData[$0] == 0xff })
        // Straddling the device's end is not the device's.
        #expect(handle(d, f, f.mmio(write: false, address: 0xd000_0ffe, length: 4)) == .resume)
        #expect(dev.entries.count == 2)
    }

    @Test func strictMMIOAndBadLengthsAreFatal() throws {
        let f = FakeRun(), d = try dispatch(RecordingDevice(), policy: ExitPolicy(unmappedMMIO: .fatal))
        guard case let .fatal(why) = handle(d, f, f.mmio(write: true, address: 0x2000_0000, length: 4)) else {
            Issue.record("expected fatal"); return
        }
        #expect(why.contains("0x20000000"))
        guard case .fatal = handle(d, f, f.mmio(write: false, address: 0xd000_0000, length: 9)) else {
            Issue.record("expected fatal for length 9"); return
        }
    }

    @Test func lifecycleExitsAreClassified() throws {
        let f = FakeRun(), d = try dispatch(RecordingDevice())
        func exit(_ reason: Int32) -> VCPUExit { ckvm_run_set_exit_reason(f.run, UInt32(reason)); return VCPUExit.decode(f.run) }
        #expect(handle(d, f, exit(KVM_EXIT_HLT)) == .halted)
        #expect(handle(d, f, exit(KVM_EXIT_INTR)) == .resume)
        guard case .shutdown = handle(d, f, exit(KVM_EXIT_SHUTDOWN)) else { Issue.record("triple fault"); return }

        ckvm_run_set_system_event(f.run, UInt32(KVM_SYSTEM_EVENT_SHUTDOWN), 0)
        guard case .shutdown = handle(d, f, exit(KVM_EXIT_SYSTEM_EVENT)) else { Issue.record("sysevent shutdown"); return }
        ckvm_run_set_system_event(f.run, UInt32(KVM_SYSTEM_EVENT_RESET), 0)
        guard case .shutdown = handle(d, f, exit(KVM_EXIT_SYSTEM_EVENT)) else { Issue.record("sysevent reset"); return }
        ckvm_run_set_system_event(f.run, UInt32(KVM_SYSTEM_EVENT_CRASH), 1000) // ndata clamped to 16
        guard case .fatal = handle(d, f, exit(KVM_EXIT_SYSTEM_EVENT)) else { Issue.record("sysevent crash"); return }
    }

    @Test func errorsNameWhatHappened() throws {
        let f = FakeRun(), d = try dispatch(RecordingDevice())
        func fatal(_ reason: Int32) -> String {
            ckvm_run_set_exit_reason(f.run, UInt32(reason))
            if case let .fatal(why) = handle(d, f, VCPUExit.decode(f.run)) { return why }
            return "not fatal"
        }
        #expect(fatal(KVM_EXIT_FAIL_ENTRY).contains("KVM_EXIT_FAIL_ENTRY"))
        ckvm_run_set_internal(f.run, UInt32(KVM_INTERNAL_ERROR_EMULATION), 99)
        #expect(fatal(KVM_EXIT_INTERNAL_ERROR).contains("emulation failed"))
        #expect(fatal(KVM_EXIT_HYPERCALL).contains("KVM_EXIT_HYPERCALL"))
        #expect(fatal(77).contains("exit reason 77"))
        ckvm_run_set_debug(f.run, 1, 0x1000, 0, 0)
        #expect(fatal(KVM_EXIT_DEBUG).contains("KVM_EXIT_DEBUG"))
    }

    @Test func emulationFailureNamesTheInstructionBytes() {
        // What this host's KVM reported for an INT3 it could not emulate.
        let data: [UInt64] = [0x1, 0xfeeb_cc0f, 0x0, 0x1000]
        let bytes = VCPUExit.emulationFailureBytes(suberror: UInt32(KVM_INTERNAL_ERROR_EMULATION), data: data)
        #expect(bytes?.prefix(3) == [0xcc, 0xeb, 0xfe])
        #expect(bytes?.count == 15)
        #expect(VCPUExit.emulationFailureBytes(suberror: UInt32(KVM_INTERNAL_ERROR_EMULATION), data: [0, 0xff, 0]) == nil)
        #expect(VCPUExit.emulationFailureBytes(suberror: UInt32(KVM_INTERNAL_ERROR_EMULATION), data: [1]) == nil)
        // A size byte above 15 is clamped, never trusted.
        #expect(VCPUExit.emulationFailureBytes(suberror: 1, data: [1, 0xff, 0])?.count == 15)
    }

    @Test func busRejectsOverlapsAndWraps() throws {
        var bus = DeviceBus()
        let dev = RecordingDevice()
        try bus.add(dev as any PortIODevice, ports: 0x3f8, count: 8)
        #expect(throws: KVMError.self) { try bus.add(dev as any PortIODevice, ports: 0x3ff, count: 1) }
        #expect(throws: KVMError.self) { try bus.add(dev as any PortIODevice, ports: 0xfff0, count: 0x20) }
        try bus.add(dev as any PortIODevice, ports: 0x400, count: 1)
        try bus.add(dev as any MMIODevice, mmio: 0x1000, size: 0x1000)
        #expect(throws: KVMError.self) { try bus.add(dev as any MMIODevice, mmio: 0x1fff, size: 1) }
        #expect(throws: KVMError.self) { try bus.add(dev as any MMIODevice, mmio: UInt64.max, size: 2) }
        #expect(bus.portDevice(at: 0x3ff)?.offset == 7)
        #expect(bus.portDevice(at: 0x401) == nil)
    }

    @Test func kvmErrorsSayTheFix() {
        #expect(KVMError.unavailable(path: "/dev/kvm", errno: ENOENT).description.contains("install/enable KVM"))
        #expect(KVMError.unavailable(path: "/dev/kvm", errno: EACCES).description.contains("add yourself to group kvm"))
        #expect(KVMError.ioctl(call: "KVM_CREATE_VM", errno: ENOMEM).description.contains("KVM_CREATE_VM"))
        #expect(KVMError.ioctl(call: "KVM_CREATE_VM", errno: ENOMEM).description.contains("out of memory"))
    }
}
