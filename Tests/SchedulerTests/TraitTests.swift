import KtstrTesting

/// The trait plumbing itself: suite and test traits fold, the innermost one scopes the body.
@Suite(.ktstr(cpus: 2, memoryMiB: 768, timeout: .seconds(90)))
struct TraitTests {
    @Test(.ktstr(cpus: 4))
    func testTraitRefinesSuiteTrait() throws {
        let ctx = try #require(Ktstr.current, "the .ktstr trait must provide a context")
        #expect(ctx.vm.cpus == 4)          // the test's own value wins
        #expect(ctx.vm.memoryMiB == 768)   // inherited from the suite
        #expect(ctx.vm.timeoutSeconds == 90)
        #expect(ctx.artifactsDirectory.hasSuffix(ctx.testName))
    }

    @Test func suiteTraitAloneApplies() throws {
        let ctx = try #require(Ktstr.current)
        #expect(ctx.vm.cpus == 2)
        #expect(ctx.vm.memoryMiB == 768)
    }

    @Test(.ktstr(topology: Topology(llcs: 2, coresPerLLC: 2, threadsPerCore: 1)))
    func topologySetsTheVCPUCount() throws {
        #expect(try #require(Ktstr.current).vm.cpus == 4)
    }
}

@Test func noContextOutsideTheTrait() {
    #expect(Ktstr.current == nil)
}
