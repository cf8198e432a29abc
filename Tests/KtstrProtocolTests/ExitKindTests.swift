import Testing
import KtstrProtocol

@Suite struct ExitKindTests {
    @Test func tableHasEveryKernelKindOnce() {
        let t = ExitKind.table
        #expect(t.count == 13)
        #expect(Set(t.map(\.value)).count == 13)
        #expect(Set(t.map(\.kind)).count == 13)
        #expect(t.map(\.value) == [0, 1, 64, 65, 66, 67, 68, 69, 1024, 1025, 1026, 1027, 1028])
        #expect(t.allSatisfy { ExitKind.fromEnumerator("SCX_EXIT_" + $0.kind.name.uppercased()) == $0.kind })
        // Only none and done have no scx_exit_reason() string; the strings are unique.
        #expect(t.filter { $0.reason == nil }.map(\.kind) == [.none, .done])
        #expect(Set(t.compactMap(\.reason)).count == 11)
    }

    @Test func lookupsAgreeWithTheTable() {
        for e in ExitKind.table {
            #expect(ExitKind(value: e.value) == e.kind)
            #expect(e.kind.value == e.value)
            #expect(ExitKind.fallbackTable[e.value] == e.kind)
        }
        for (reason, kind) in ExitKind.table.compactMap({ e in e.reason.map { ($0, e.kind) } }) {
            #expect(ExitKind(kernelReason: reason) == kind && ExitKind.kernelReasons[reason] == kind)
        }
        #expect(ExitKind.kernelReasons.count == 11)
        #expect(ExitKind(value: 2000) == nil && ExitKind("newer").value == nil && ExitKind(kernelReason: "<UNKNOWN>") == nil)
        #expect(ExitKind.errorRescue.value == 1028 && ExitKind.kernelReasons["rescue bandwidth overload"] == .errorRescue)
    }

    @Test func findSearchesBothWays() throws {
        let s = "a on CPU 1 on CPU 2"
        let first = try #require(s.find(" on CPU "))
        let last = try #require(s.find(" on CPU ", backwards: true))
        #expect(s[..<first.lowerBound] == "a" && s[last.upperBound...] == "2")
        #expect(s.find("zz") == nil && s.find("") == nil && "".find("a") == nil)
        #expect("ü@ktstr x".find("@ktstr ").map { "ü@ktstr x"[$0.upperBound...] } == "x")
    }
}
