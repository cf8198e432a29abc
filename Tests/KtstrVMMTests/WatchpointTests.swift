import CKVM
import Synchronization
import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrFixtures

@Suite struct WatchpointTests {
    @Test func slot0DR7EnablesA4ByteWriteWatch() throws {
        var s = WatchpointSet()
        try s.arm(slot: 0, guestVirtual: 0xffff_ffff_8300_0010)
        // L0 (bit 0) | LE (bit 8) | R/W0 = 01 (bits 16-17) | LEN0 = 11 (bits 18-19)
        #expect(s.dr7 == 0x1 | 0x100 | (0b01 << 16) | (0b11 << 18))
        let d = s.guestDebug
        #expect(d.control == UInt32(KVM_GUESTDBG_ENABLE) | UInt32(KVM_GUESTDBG_USE_HW_BP))
        #expect(d.arch.debugreg.0 == 0xffff_ffff_8300_0010)
        #expect(d.arch.debugreg.7 == s.dr7)
    }

    @Test func slot3UsesItsOwnFields() throws {
        var s = WatchpointSet()
        try s.arm(slot: 3, guestVirtual: 0x4000)
        #expect(s.dr7 == (1 << 6) | 0x100 | (0b01 << 28) | (0b11 << 30))
        #expect(s.guestDebug.arch.debugreg.3 == 0x4000)
        s.disarm(slot: 3)
        #expect(s.isEmpty)
        #expect(s.guestDebug.control == 0)
    }

    @Test func armingChecksSlotAndAlignment() {
        var s = WatchpointSet()
        #expect(throws: WatchpointSet.ArmError.badSlot(4)) { try s.arm(slot: 4, guestVirtual: 0) }
        #expect(throws: WatchpointSet.ArmError.misaligned(0x1002)) { try s.arm(slot: 0, guestVirtual: 0x1002) }
    }

    @Test func dr6BitsNameTheSlots() {
        #expect(WatchpointSet.hitSlots(dr6: 0xffff_0ff0) == [])
        #expect(WatchpointSet.hitSlots(dr6: 0xffff_0ff1) == [0])
        #expect(WatchpointSet.hitSlots(dr6: 0x0a) == [1, 3])
    }

    /// The slot-0 gate: only an error-class exit_kind (>= 1024) latches the trigger.
    @Test(arguments: [(UInt32(1), false), (64, false), (65, false), (1023, false), (1024, true), (1025, true), (1026, true)])
    func exitKindGate(value: UInt32, fires: Bool) {
        let word = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
        defer { word.deallocate() }
        word.pointee = value
        let seen = Mutex<[UInt32]>([])
        let mon = WatchpointMonitor(exitKindHost: UnsafeRawPointer(word), threshold: 1024) { v in seen.withLock { $0.append(v) } }
        #expect(mon.handle(.init(exception: 1, pc: 0xffff_ffff_8100_0000, dr6: 0xffff_0ff1, dr7: 0), cpu: 1))
        #expect(mon.failureTrigger.fired == fires)
        #expect(seen.withLock { $0 } == (fires ? [value] : []))
        if fires {
            #expect(mon.failureTrigger.value == value)
            #expect(mon.failureTrigger.cpu == 1)
        }
    }

    @Test func triggerLatchesOnceAndUserSlotsCount() {
        let word = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
        defer { word.deallocate() }
        word.pointee = 1025
        let calls = Mutex(0)
        let mon = WatchpointMonitor(exitKindHost: UnsafeRawPointer(word), threshold: 1024) { _ in calls.withLock { $0 += 1 } }
        _ = mon.handle(.init(exception: 1, pc: 0, dr6: 1, dr7: 0), cpu: 0)
        word.pointee = 1026
        _ = mon.handle(.init(exception: 1, pc: 0, dr6: 1, dr7: 0), cpu: 0)
        #expect(calls.withLock { $0 } == 1)
        #expect(mon.failureTrigger.value == 1025)
        _ = mon.handle(.init(exception: 1, pc: 0, dr6: 0b0110, dr7: 0), cpu: 0)
        #expect(mon.hitCounts == [2, 1, 1, 0])
        #expect(!mon.handle(.init(exception: 1, pc: 0, dr6: 0x4000, dr7: 0), cpu: 0)) // BS only: not ours
    }

    @Test func debugExitForAWatchpointResumesTheVCPU() throws {
        let word = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
        defer { word.deallocate() }
        word.pointee = 1024
        let mon = WatchpointMonitor(exitKindHost: UnsafeRawPointer(word), threshold: 1024)
        let d = ExitDispatch(bus: DeviceBus(), watchpoints: mon, log: .silent)
        let f = FakeRun()
        ckvm_run_set_exit_reason(f.run, UInt32(KVM_EXIT_DEBUG))
        ckvm_run_set_debug(f.run, 1, 0xffff_ffff_8100_1234, 0xffff_0ff1, 0x400)
        #expect(VCPUExit.decode(f.run) == .debug(.init(exception: 1, pc: 0xffff_ffff_8100_1234, dr6: 0xffff_0ff1, dr7: 0x400)))
        #expect(d.handle(VCPUExit.decode(f.run), page: f.page, cpu: 0) == .resume)
        #expect(mon.failureTrigger.fired)
    }
}
