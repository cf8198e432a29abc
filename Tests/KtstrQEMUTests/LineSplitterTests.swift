import Testing
@testable import KtstrMachine

@Suite struct LineSplitterTests {
    @Test func lineSplitterReassemblesAndDropsOverlongLines() {
        var s = LineSplitter(maxLine: 8)
        #expect(s.feed(Array("ab".utf8)) == [])
        #expect(s.feed(Array("c\nde\n".utf8)) == ["abc", "de"])
        #expect(s.feed(Array("0123456789abc".utf8)) == [])
        #expect(s.feed(Array("def\nok\n".utf8)) == ["ok"])
    }
}
