import Testing
import KtstrProtocol

@Suite struct JSONTests {
    @Test func roundTripAndRejects() throws {
        let text = #"{"a":[1,2.5,-3e2,true,false,null],"s":"q\"\\\n\u0041\ud83d\ude00","o":{}}"#
        let j = try #require(JSON.parse(text))
        #expect(j["s"]?.string == "q\"\\\nA😀")
        #expect(j["a"]?.array?.count == 6)
        #expect(JSON.parse(j.encoded()) == j)
        for bad in ["", "{", "[1,]", "{\"a\" 1}", "tru", "\"open", "{} x", "\"\\u12\"",
                    String(repeating: "[", count: 100) + String(repeating: "]", count: 100)] {
            #expect(JSON.parse(bad) == nil, "accepted \(bad.prefix(20))")
        }
        #expect(JSON.string("\u{1}").encoded() == "\"\\u0001\"")
    }

    @Test func boundsHold() {
        let deep = String(repeating: "[", count: JSON.maxDepth) + String(repeating: "]", count: JSON.maxDepth)
        #expect(JSON.parse(deep) != nil)
        let tooDeep = "[" + deep + "]"
        #expect(JSON.parse(tooDeep) == nil)
        #expect(JSON.parse("\"" + String(repeating: "x", count: JSON.maxBytes) + "\"") == nil)
        #expect(JSON.parse("1" + String(repeating: "0", count: 70)) == nil, "number literal over 64 bytes")
    }

    @Test func numberAccessorsNeverTrap() throws {
        for (text, int, u64) in [("3.9", 3, UInt64(3)), ("-2", -2, nil), ("1e300", nil, nil), ("-1e300", nil, nil)] as [(String, Int?, UInt64?)] {
            let v = try #require(JSON.parse(text))
            #expect(v.int == int, "\(text)")
            #expect(v.uint64 == u64, "\(text)")
        }
        #expect(JSON.number(.infinity).encoded() == "null")
        #expect(JSON.int(-5).encoded() == "-5")
        #expect(JSON.string("x").int == nil)
    }
}
