import Testing
@testable import KtstrProtocol

@Suite struct GuestTopologyTests {
    @Test func cpuListsParseAndFormat() {
        #expect(GuestTopology.cpus("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11])
        #expect(GuestTopology.cpus("") == [])
        #expect(GuestTopology.cpus("3-1") == nil)
        #expect(GuestTopology.cpus("0-99999999") == nil)
        #expect(GuestTopology.cpus("a") == nil)
        #expect(GuestTopology.list([3, 0, 1, 2, 8, 10, 11]) == "0-3,8,10-11")
        #expect(GuestTopology.list([5]) == "5")
    }

    @Test func helloCarriesTheTopologyAndOldHellosHaveNone() throws {
        let topo = GuestTopology(l3Groups: ["0-1", "2-3"], numaNodes: ["0-1", "2-3"])
        let hello = AgentMessage.hello(release: "7.3.4", cpus: 4, kallsyms: ["jiffies": 0xffff_ffff_8200_0000], topology: topo)
        let line = hello.line(extra: [("millis", .int(12))])
        #expect(line.contains(#""l3Groups":["0-1","2-3"],"numaNodes":["0-1","2-3"]"#))
        #expect(AgentMessage.parse(Substring(line)) == hello)
        // An older agent's hello: no topology, still a hello.
        let old = AgentMessage.parse(#"@ktstr {"type":"hello","release":"7.3.4","cpus":2,"kallsyms":{}}"#)
        #expect(old == .hello(release: "7.3.4", cpus: 2, kallsyms: [:], topology: nil))
        // Mistyped entries are dropped, not fatal.
        let odd = AgentMessage.parse(#"@ktstr {"type":"hello","release":"r","cpus":1,"kallsyms":{},"l3Groups":[1,"0"]}"#)
        #expect(odd == .hello(release: "r", cpus: 1, kallsyms: [:], topology: GuestTopology(l3Groups: ["0"], numaNodes: [])))
    }
}
