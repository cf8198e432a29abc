import Testing
@testable import KtstrHost
@testable import KtstrSchedExt

struct BPFSetSpecTests {
    @Test func parsesMapVariableValueAndTime() throws {
        #expect(try BPFSetSpec(parsing: "ktstr_fa.bss.ktstr_knob_error_now=1@1.5")
                == BPFSetSpec(map: "ktstr_fa.bss", variable: "ktstr_knob_error_now", value: 1, seconds: 1.5))
        #expect(try BPFSetSpec(parsing: ".bss.x=-3") == BPFSetSpec(map: ".bss", variable: "x", value: -3, seconds: 0))
        #expect(try BPFSetSpec(parsing: "m.v=0x10@2").value == 16)
        for bad in ["m.v", "v=1", "m.v=one", "m.v=1@-1", "m.=1", "m.v=1@x"] {
            #expect(throws: LiveBPFError.self, "\(bad)") { try BPFSetSpec(parsing: bad) }
        }
    }

    @Test func integerWritesMustFitTheVariable() {
        #expect(LiveBPFMap.fits(255, size: 1, signed: false))
        #expect(!LiveBPFMap.fits(256, size: 1, signed: false))
        #expect(!LiveBPFMap.fits(-1, size: 4, signed: false))
        #expect(LiveBPFMap.fits(-128, size: 1, signed: true) && !LiveBPFMap.fits(128, size: 1, signed: true))
        #expect(LiveBPFMap.fits(Int64.max, size: 8, signed: false) && !LiveBPFMap.fits(-1, size: 8, signed: false))
        #expect(!LiveBPFMap.fits(1 << 40, size: 4, signed: false))
        #expect(LiveBPFMap.integer([0xff], signed: true) == -1 && LiveBPFMap.integer([0xff], signed: false) == 255)
    }
}
