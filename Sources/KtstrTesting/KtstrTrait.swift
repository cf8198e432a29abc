import Foundation
import Synchronization
import KtstrMachine
import KtstrSchedExt
import KtstrProtocol

/// `.ktstr(...)`: run this test (or every test of this suite) against a fresh guest VM.
///
/// The trait is a value: the VM shape it describes is handed to the body through
/// `Ktstr.current`, and each `Ktstr.run(...)` inside the body boots its own VM with it.
/// On a suite it is recursive; a test's own `.ktstr(...)` refines the suite's (fields it sets
/// win), and only the innermost trait provides a scope, so nesting never boots twice.
public struct KtstrTrait: TestTrait, SuiteTrait, TestScoping {
    public var cpus: Int?
    public var memoryMiB: Int?
    public var topology: Topology?
    /// A kernel tree, a bzImage/vmlinux, a name registered with `ktstr kernel add`, or a fetched
    /// Debian version (`ktstr kernel fetch VERSION`); nil: `KTSTR_KERNEL`, else the default.
    public var kernel: String?
    public var backend: BackendChoice?
    public var timeout: Duration?
    /// Overrides the kernel's sched_ext watchdog timeout in each run, once the scheduler
    /// enabled (written in guest memory: `WatchdogOverride`).
    public var watchdogTimeout: Duration?
    /// Identity of this trait value (copies keep it): tells the innermost trait apart.
    let id: UUID
    public let sourceLocation: SourceLocation

    public var isRecursive: Bool { true }

    public var comments: [Comment] {
        ["ktstr VM: \(resolvedConfig().topology) vCPUs, \(resolvedConfig().memoryMiB) MiB"]
    }

    /// This trait's fields over a base configuration.
    func applied(to base: VMConfig) -> VMConfig {
        var c = base
        if let topology { c.topology = topology } else if let cpus { c.topology = .flat(cpus) }
        if let memoryMiB { c.memoryMiB = memoryMiB }
        if let kernel { c.kernel = kernel }
        if let backend { c.backend = backend }
        if let timeout { c.timeoutSeconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18 }
        return c
    }

    func resolvedConfig() -> VMConfig { applied(to: VMConfig()) }

    /// Capability check before the test runs: a missing backend, kernel or setup step is a
    /// skip with the reason and the fix, never a failure and never a silent pass.
    public func prepare(for test: Test) async throws {
        guard !test.isSuite, isInnermost(in: test) else { return }
        let config = Self.effectiveConfig(for: test)
        if let reason = KtstrAvailability.unavailableReason(for: config) {
            try Test.cancel(Comment(rawValue: reason))
        }
    }

    public func scopeProvider(for test: Test, testCase: Test.Case?) -> KtstrTrait? {
        (!test.isSuite && isInnermost(in: test)) ? self : nil
    }

    public func provideScope(for test: Test, testCase: Test.Case?,
                             performing body: @Sendable () async throws -> Void) async throws {
        let config = Self.effectiveConfig(for: test)
        let context = KtstrContext(vm: config, testName: Self.artifactName(test: test, testCase: testCase),
                                   watchdogTimeout: test.traits.compactMap { ($0 as? KtstrTrait)?.watchdogTimeout }.last)
        let failed = Atomic<Bool>(false)
        // Notice #expect/#require failures so artifacts are attached only when the test fails.
        let watcher = IssueHandlingTrait.compactMapIssues { issue in
            if issue.severity >= .error { failed.store(true, ordering: .relaxed) }
            return issue
        }
        do {
            try await Ktstr.$current.withValue(context) {
                try await watcher.provideScope(for: test, testCase: testCase, performing: body)
            }
        } catch {
            context.attachArtifacts(reason: "threw \(error)")
            throw error
        }
        if failed.load(ordering: .relaxed) { context.attachArtifacts(reason: "an expectation failed") }
    }

    private func isInnermost(in test: Test) -> Bool {
        (test.traits.last { $0 is KtstrTrait } as? KtstrTrait)?.id == id
    }

    /// Suite traits come first in `test.traits`, the test's own last: fold in that order.
    static func effectiveConfig(for test: Test) -> VMConfig {
        test.traits.compactMap { $0 as? KtstrTrait }.reduce(VMConfig()) { $1.applied(to: $0) }
    }

    /// `<Suite>.<function>` (e.g. `DepthSchedulerTests.schedulesEveryWorker`), file-system safe.
    static func artifactName(test: Test, testCase: Test.Case?) -> String {
        // The id reads "Module.Suite/function()/File.swift:12:3": keep the suite's type name.
        let suite = test.id.description.split(separator: "/").first.flatMap { $0.split(separator: ".").last } ?? ""
        var name = test.name.hasSuffix("()") ? String(test.name.dropLast(2)) : test.name
        if let paren = name.firstIndex(of: "(") { name = String(name[..<paren]) }
        if !suite.isEmpty, suite != Substring(name) { name = "\(suite).\(name)" }
        // Test.Case has no public identity: number the cases of a parameterized test.
        if let testCase, testCase.isParameterized { name += "-case\(caseCounter.add(1, ordering: .relaxed).newValue)" }
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        return String(name.map { allowed.contains($0) ? $0 : "_" }.prefix(120))
    }
}

private let caseCounter = Atomic<Int>(0)

extension Trait where Self == KtstrTrait {
    /// Boot each `Ktstr.run` of this test in a fresh VM of this shape. Unset fields inherit
    /// from an enclosing suite's `.ktstr(...)`, then from the defaults (2 vCPUs, 512 MiB,
    /// `KTSTR_KERNEL` or the cached default kernel, automatic backend, 120 s).
    /// `watchdogTimeout`: the sched_ext watchdog timeout each run's scheduler gets once enabled
    /// (the kernel's own variables, written in guest memory), whatever its `ops.timeout_ms`.
    public static func ktstr(cpus: Int? = nil, memoryMiB: Int? = nil, topology: Topology? = nil,
                             kernel: String? = nil, backend: BackendChoice? = nil, timeout: Duration? = nil,
                             watchdogTimeout: Duration? = nil,
                             sourceLocation: SourceLocation = #_sourceLocation) -> Self {
        KtstrTrait(cpus: cpus, memoryMiB: memoryMiB, topology: topology, kernel: kernel, backend: backend,
                   timeout: timeout, watchdogTimeout: watchdogTimeout, id: UUID(), sourceLocation: sourceLocation)
    }
}
