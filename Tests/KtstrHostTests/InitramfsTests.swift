import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrQEMU
@testable import KtstrSchedExt
@testable import KtstrProtocol
@testable import KtstrHost

@Suite struct InitramfsTests {
    @Test func roundTripKeepsNamesModesAndContents() throws {
        var a = Initramfs()
        a.addFile("/bin/init", contents: Array("#!hello".utf8), mode: 0o755)
        a.addSymlink("lib64/ld.so", target: "/lib/ld-linux.so")
        a.addFile("ktstr/plan.json", contents: Array("{}".utf8))
        let recs = try #require(InitramfsReader.records(a.bytes()))
        #expect(recs.map(\.name) == ["bin", "bin/init", "lib64", "lib64/ld.so", "ktstr", "ktstr/plan.json"])
        let initRec = try #require(recs.first { $0.name == "bin/init" })
        #expect(initRec.mode == 0o100755)
        #expect(initRec.data == Array("#!hello".utf8))
        #expect(recs.first { $0.name == "lib64/ld.so" }?.data == Array("/lib/ld-linux.so".utf8))
        #expect(a.bytes().count % 4 == 0)
    }

    @Test func truncatedArchiveIsRejected() {
        var a = Initramfs()
        a.addFile("x", contents: [1, 2, 3])
        let b = a.bytes()
        #expect(InitramfsReader.records(Array(b.prefix(b.count - 20))) == nil)
        #expect(InitramfsReader.records([0x30, 0x37]) == nil)
    }
}
