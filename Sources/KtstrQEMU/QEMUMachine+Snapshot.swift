import Foundation
import Glibc
import KtstrMachine

/// Saving and restoring a QEMU machine (docs/DESIGN-NOTES.md "Boot snapshots"). Guest RAM
/// stays in the shared file backend, and migration runs with the capability
/// `x-ignore-shared` on both sides, so the migration stream holds device state only (a few
/// hundred KiB, written in milliseconds). RAM travels as a separate image file: written from
/// our fd of the RAM file once the machine is stopped, copied into each restore's fresh RAM
/// file before qemu starts. The failure monitor keeps mapping that file, as on a cold boot.
extension QEMUMachine {
    /// The virtserialport's name; the agent looks it up in /sys/class/virtio-ports.
    public static let planPortName = "org.ktstr.plan"

    static var ignoreShared: [String: Any] { ["capabilities": [["capability": "x-ignore-shared", "state": true]]] }

    /// Restore side, right after the QMP greeting of a machine started with `restore`: set
    /// the capability, read the state from fd 6, wait until qemu left `inmigrate`, and make
    /// sure the guest runs. A stream qemu cannot load makes it exit (QMP then fails).
    func loadIncoming(_ q: QMPClient) throws {
        try q.execute("migrate-set-capabilities", arguments: Self.ignoreShared)
        try q.execute("migrate-incoming", arguments: ["uri": "fd:\(Self.incomingFD)"])
        let deadline = ContinuousClock.now + .seconds(60)
        while true {
            let st = try q.execute("query-status") as? [String: Any]
            let status = st?["status"] as? String ?? ""
            switch status {
            case "inmigrate":
                guard ContinuousClock.now < deadline else { throw QEMUError.setup("restore: still loading the state after 60 s") }
                usleep(2000)
            case "running":
                return
            case "paused", "postmigrate", "prelaunch":
                try q.execute("cont")
                return
            default:
                throw QEMUError.setup("restore: qemu is '\(status)' after loading the state")
            }
        }
    }

    /// Save side: stops the guest, writes the device state to `statePath` and each NUMA
    /// node's RAM (all of it without NUMA) to `ramImagePaths` (new files, 0600). The machine
    /// stays stopped; kill it afterwards.
    public func saveSnapshot(statePath: String, ramImagePaths: [String], timeout: Duration = .seconds(60)) throws {
        guard ramImagePaths.count == config.topology.numaNodes else {
            throw QEMUError.setup("snapshot: \(ramImagePaths.count) RAM images for \(config.topology.numaNodes) nodes")
        }
        let fd = Glibc.open(statePath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw QEMUError.setup("create \(statePath): \(String(cString: strerror(errno)))") }
        close(fd)
        let q = try requireQMP()
        try q.execute("stop")
        try q.execute("migrate-set-capabilities", arguments: Self.ignoreShared)
        // `exec:` runs through sh: the path is quoted; the file exists (0600), cat keeps its mode.
        let quoted = "'" + statePath.replacingOccurrences(of: "'", with: "'\\''") + "'"
        try q.execute("migrate", arguments: ["uri": "exec:cat > \(quoted)"])
        let deadline = ContinuousClock.now + timeout
        while true {
            let m = try q.execute("query-migrate") as? [String: Any]
            let status = m?["status"] as? String ?? ""
            if status == "completed" { break }
            if status == "failed" || status == "cancelled" {
                throw QEMUError.setup("snapshot: migration \(status): \(m?["error-desc"] as? String ?? "no reason given")")
            }
            guard ContinuousClock.now < deadline else { throw QEMUError.setup("snapshot: migration not done after \(timeout)") }
            usleep(5000)
        }
        state.lock()
        let fds = memFDs
        state.unlock()
        let sizes = config.topology.nodeMemoryMiB(config.memoryMiB)
        guard fds.count == ramImagePaths.count, sizes.count == fds.count else { throw QEMUError.setup("snapshot: no RAM file") }
        do {
            for (k, path) in ramImagePaths.enumerated() { try QEMURAMImage.save(ram: fds[k], size: UInt64(sizes[k]) << 20, to: path) }
        } catch {
            throw QEMUError.setup("snapshot: \(error)")
        }
    }
}
