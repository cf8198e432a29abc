import Foundation
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

/// Builds the initramfs of one run (docs/PROTOCOLS.md "Initramfs the host builds"): the agent
/// as /init, the scheduler at /ktstr/bin/scheduler, every shared library both load (at the
/// paths the guest's loader opens), /ktstr/plan.json and the /ktstr/ok sentinel.
public struct InitramfsAssembler: Sendable {
    public static let schedulerGuestPath = "/ktstr/bin/scheduler"

    public var agentPath: String
    public var schedulerPath: String?
    public var planJSON: [UInt8]
    public var closure: SharedLibraryClosure

    public init(agentPath: String, schedulerPath: String?, planJSON: [UInt8], closure: SharedLibraryClosure = SharedLibraryClosure()) {
        self.agentPath = agentPath; self.schedulerPath = schedulerPath; self.planJSON = planJSON; self.closure = closure
    }

    /// The archive and the list of (guest path ← host path) it carries.
    public func assemble() throws -> (bytes: [UInt8], files: [SharedLibraryClosure.Placement]) {
        var roots = [(hostPath: agentPath, guestPath: "/init")]
        if let schedulerPath { roots.append((schedulerPath, Self.schedulerGuestPath)) }
        let files = try closure.resolve(roots)
        var archive = Initramfs()
        for f in files {
            guard let data = FileManager.default.contents(atPath: f.hostPath) else {
                throw SharedLibraryClosure.ResolveError.unreadable(f.hostPath)
            }
            archive.addFile(f.guestPath, contents: [UInt8](data), mode: 0o755)
        }
        archive.addFile("/ktstr/plan.json", contents: planJSON)
        archive.addFile("/ktstr/ok", contents: Array("ok\n".utf8))
        return (archive.bytes(), files)
    }
}
