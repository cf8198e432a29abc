import Foundation
import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrFixtures

/// Accesses no device claims are counted per port / address, bounded, on every backend's API.
struct UnhandledAccessesTests {
    @Test func countsReadsAndWritesPerPortAndAddress() {
        var u = UnhandledAccesses()
        #expect(u.isEmpty)
        u.recordPort(0x80, isWrite: true)
        u.recordPort(0x80, isWrite: true, count: 3) // rep outsb of 3
        u.recordPort(0x80, isWrite: false)
        u.recordMMIO(0xfee0_0000, isWrite: false)
        #expect(u.ports == [0x80: .init(reads: 1, writes: 4)])
        #expect(u.mmio == [0xfee0_0000: .init(reads: 1, writes: 0)])
        #expect(u.ports[0x80]?.total == 5)
        #expect(!u.isEmpty)
    }

    @Test func distinctKeysAreCappedAndTheRestCountedAsOverflow() {
        var u = UnhandledAccesses()
        let cap = UnhandledAccesses.maxDistinctKeys
        for p in 0..<(cap + 10) { u.recordPort(UInt16(p), isWrite: p % 2 == 0) }
        for a in 0..<(cap + 5) { u.recordMMIO(UInt64(a) * 4096, isWrite: true) }
        #expect(u.ports.count == cap)
        #expect(u.portOverflow.total == 10)
        #expect(u.mmio.count == cap)
        #expect(u.mmioOverflow == .init(reads: 0, writes: 5))
        // Known keys keep counting after the cap.
        u.recordPort(0, isWrite: true)
        #expect(u.ports[0]?.writes == 2)
    }

    @Test func roundTripsThroughJSON() throws {
        var u = UnhandledAccesses()
        u.recordPort(0x510, isWrite: true, count: 7)
        u.recordMMIO(0x2000_0000, isWrite: true)
        let back = try JSONDecoder().decode(UnhandledAccesses.self, from: JSONEncoder().encode(u))
        #expect(back == u)
    }

    @Test func theDispatchCountsUnmappedPortsAndMMIOWhateverThePolicy() {
        let f = FakeRun()
        for policy in [ExitPolicy.lenient, ExitPolicy(unmappedPorts: .fatal, unmappedMMIO: .fatal)] {
            let d = ExitDispatch(bus: DeviceBus(), policy: policy, log: .silent)
            _ = d.handle(f.io(write: false, port: 0x80, size: 1, count: 4), page: f.page, cpu: 0)
            _ = d.handle(f.mmio(write: true, address: 0xd000_0000, length: 4), page: f.page, cpu: 0)
            #expect(d.unhandled.snapshot.ports == [0x80: .init(reads: 4, writes: 0)], "\(policy)")
            #expect(d.unhandled.snapshot.mmio == [0xd000_0000: .init(reads: 0, writes: 1)], "\(policy)")
        }
    }
}

/// The count on a real guest: N `out` instructions to an empty port read back as N.
@Suite(.enabled(if: kvmUnavailable == nil, Comment(rawValue: kvmUnavailable ?? "")),
       .timeLimit(.minutes(1)))
struct UnhandledAccessesGuestTests {
    @Test func aTinyGuestsWritesToAnEmptyPortAreCountedExactly() throws {
        let n: UInt32 = 37
        let m = try TinyGuestMachine(payload: TinyGuestPayloads.portWrites(n), mode: .long, log: .silent)
        #expect(m.unhandledAccesses.isEmpty)
        try m.start()
        let exit = m.wait(timeout: .seconds(20))
        #expect(exit == .shutdown, "\(m.stopDetail ?? "")")
        let u = m.unhandledAccesses
        #expect(u.ports == [0x510: .init(reads: 0, writes: UInt64(n))])
        #expect(u.mmio.isEmpty)
        // Through the backend-neutral protocol too.
        let machine: any Machine = m
        #expect(machine.unhandledAccesses == u)
    }

    @Test func anUnmappedMMIOWriteIsCountedBeforeTheRunStops() throws {
        let m = try TinyGuestMachine(payload: TinyGuestPayloads.unmappedMMIOWrite, mode: .long, log: .silent)
        try m.start()
        guard case .fatal = m.wait(timeout: .seconds(20)) else { Issue.record("expected fatal"); return }
        #expect(m.unhandledAccesses.mmio == [UInt64(TinyGuestPayloads.unmappedAddress): .init(reads: 0, writes: 1)])
    }
}
