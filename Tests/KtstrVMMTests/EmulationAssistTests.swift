import Foundation
import Testing
@testable import KtstrMachine
@testable import KtstrVMM

@Suite struct EmulationAssistPlanTests {
    @Test func int3IsATrapOfOneByte() {
        #expect(EmulationAssist.plan(bytes: [0xcc, 0x90]) == .trap(vector: 3, length: 1, name: "int3"))
    }

    @Test func everythingElseIsLeftToTheEmulatorsError() {
        #expect(EmulationAssist.plan(bytes: []) == nil)
        #expect(EmulationAssist.plan(bytes: [0xf3, 0x48, 0x0f, 0xb8, 0xc7]) == nil) // popcnt: hidden by clearcpuid instead
        #expect(EmulationAssist.plan(bytes: [0xcd, 0x03]) == nil) // int 3 (two bytes) is not int3
    }

    /// Seeded random first bytes: only 0xCC is ever planned, and never with another length.
    @Test func randomBytesPlanOnlyInt3() {
        var rng = SplitMix(seed: 0x5eed_15)
        for _ in 0..<10_000 {
            let n = Int(rng.next() % 16)
            let bytes = (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let plan = EmulationAssist.plan(bytes: bytes)
            #expect((plan != nil) == (bytes.first == 0xcc))
        }
    }

    struct SplitMix {
        var state: UInt64
        init(seed: UInt64) { state = seed }
        mutating func next() -> UInt64 {
            state &+= 0x9e37_79b9_7f4a_7c15
            var z = state
            z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
            z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
            return z ^ (z >> 31)
        }
    }
}

/// A 64-bit tiny guest executes `int3` with an IDT whose #BP handler prints the low byte of
/// the pushed return address: the handler must run and see the address after the int3. On a
/// host whose KVM emulates supervisor code (nested PVM) that is the assist's injected #BP; with
/// vmx/svm the CPU does it.
@Suite(.enabled(if: KVMSystem.unavailableReason() == nil, Comment(rawValue: KVMSystem.unavailableReason() ?? "")),
       .timeLimit(.minutes(1)))
struct EmulationAssistGuestTests {
    /// lidt, int3, hlt; handler: COM1 ← '0' + (return rip − load address), hlt. IDT at +0x50.
    static var payload: [UInt8] {
        let load = UInt32(TinyGuestMachine.loadAddress)
        let idtrOffset = 0x40, idtOffset = 0x50, handlerOffset = 9
        func le16(_ v: UInt32) -> [UInt8] { [UInt8(v & 0xff), UInt8(v >> 8 & 0xff)] }
        func le32(_ v: UInt32) -> [UInt8] { le16(v) + le16(v >> 16) }
        var code: [UInt8] = [0x0f, 0x01, 0x1d] + le32(UInt32(idtrOffset - 7))  // 0: lidt [rip + (0x40 - 7)]
        code += [0xcc]                                                        // 7: int3
        code += [0xf4]                                                        // 8: hlt (not reached)
        code += [0x66, 0xba, 0xf8, 0x03]                                      // 9: mov dx, 0x3f8
        code += [0x48, 0x8b, 0x04, 0x24]                                      //    mov rax, [rsp] (pushed rip)
        code += [0x2d] + le32(load)                                           //    sub eax, load
        code += [0x04, 0x30]                                                  //    add al, '0'
        code += [0xee, 0xf4]                                                  //    out dx, al; hlt
        code += Array(repeating: 0x90, count: idtrOffset - code.count)
        code += le16(16 * 4 - 1) + le32(load + UInt32(idtOffset)) + le32(0)   // idtr: 4 gates
        code += Array(repeating: 0, count: idtOffset - code.count)
        for vector in 0..<4 {
            guard vector == 3 else { code += Array(repeating: 0, count: 16); continue }
            let handler = load + UInt32(handlerOffset)
            code += le16(handler) + le16(UInt32(X86InitialState.codeSelector)) + [0, 0x8e] + le16(handler >> 16)
            code += le32(0) + le32(0)                                         // 64-bit interrupt gate, DPL 0
        }
        return code
    }

    @Test func int3ReachesTheGuestsBreakpointHandlerWithTheNextRIP() throws {
        let assist = EmulationAssist()
        let m = try TinyGuestMachine(payload: Self.payload, mode: .long, assist: assist, log: .silent)
        try m.start()
        let exit = m.wait(timeout: .seconds(20))
        #expect(exit == .shutdown, "\(m.stopDetail ?? "")")
        #expect(m.console == "8", "the handler saw a return address of offset \(m.console) (int3 is at 7)")
        FileHandle.standardError.write(Data("EmulationAssistGuestTests: int3 completed by the VMM \(assist.completed["int3", default: 0]) time(s)\n".utf8))
    }
}
