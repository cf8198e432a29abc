import Foundation
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

extension Provisioning {
    /// Shared libraries the guest agent may need: the C runtime family. Anything from the
    /// Swift runtime here would mean --static-swift-stdlib did not take.
    static let agentAllowedLibraries = [
        "linux-vdso.so", "ld-linux", "libc.so", "libm.so", "libpthread.so", "libdl.so", "librt.so",
        "libutil.so", "libstdc++.so", "libgcc_s.so",
    ]

    /// Shared libraries named by `ldd` output, by file name.
    static func lddLibraries(_ output: String) -> [String] {
        output.split(separator: "\n").compactMap { line in
            let first = line.split(whereSeparator: \.isWhitespace).first.map(String.init)
            return first.map { ($0 as NSString).lastPathComponent }
        }
    }

    /// Builds the `ktstr-guest` product (static Swift stdlib, release) into
    /// `<cache>/agent/build` and copies it to `<cache>/agent/ktstr-guest`. Rebuilt when the
    /// agent's sources or Package.swift change.
    static func buildAgent(shell: ProvisioningShell, progress: ProvisioningProgress) throws -> (StepOutcome, String) {
        let root = packageRoot
        let dir = cacheDirectory + "/agent"
        let binary = dir + "/ktstr-guest"
        guard let swift = ProvisioningShell.which("swift") else {
            throw ProvisioningError.missing(what: "swift not found on PATH (builds the guest agent)",
                                            fix: "put the Swift toolchain's usr/bin on PATH")
        }
        let sources = ProvisioningFiles.files(under: root + "/Sources/KtstrGuest", suffixes: [".swift", ".c", ".h"])
            + [root + "/Package.swift"]
        let key = "agent v1 swift=\(swift) src=\(ProvisioningFiles.fingerprint(files: sources, root: root))"
        let stamp = ProvisioningStamp(path: dir + "/.stamp")
        if stamp.isValid(key: key, outputs: [binary]) { return (.cached, binary) }
        stamp.remove()
        try ProvisioningFiles.makeDirectory(dir)
        progress("building the guest agent (swift build -c release --product ktstr-guest --static-swift-stdlib)")
        let scratch = dir + "/build"
        try shell.check([swift, "build", "-c", "release", "--product", "ktstr-guest", "--static-swift-stdlib",
                         "--scratch-path", scratch, "--package-path", root],
                        logFile: dir + "/build.log", timeout: 1800,
                        fix: "see the compiler errors in the log")
        let built = scratch + "/release/ktstr-guest"
        guard access(built, X_OK) == 0 else {
            throw ProvisioningError.failed(step: "build the guest agent", detail: "\(built) was not produced — see \(dir)/build.log")
        }
        let ldd = try shell.run(["ldd", built], timeout: 60, tailLines: 200)
        let libs = lddLibraries(ldd.tail)
        let unexpected = libs.filter { lib in !agentAllowedLibraries.contains { lib.hasPrefix($0) } }
        if ldd.status == 0, !unexpected.isEmpty {
            throw ProvisioningError.failed(step: "check the guest agent's libraries",
                                           detail: "\(built) needs \(unexpected.joined(separator: ", ")) — the agent must link the Swift runtime statically (Glibc only, --static-swift-stdlib)")
        }
        try ProvisioningFiles.copyAtomically(built, to: binary)
        try stamp.write(key: key)
        return (.done, "\(binary) (needs \(libs.joined(separator: " ")))")
    }
}
