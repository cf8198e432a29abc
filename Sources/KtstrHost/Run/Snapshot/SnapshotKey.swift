import Foundation
import KtstrMachine
import KtstrQEMU

/// What a boot snapshot depends on, and the hash that names it in the cache
/// (`<cache>/snapshots/<key>/`). Any change of an input makes a new key, so a stale snapshot
/// is never restored: the kernel image and qemu binary by content, the snapshot's initramfs
/// (agent, its libraries, the boot plan) by guest path and content, the full kernel command
/// line, vCPU topology, memory size, accelerator and TCG threading.
struct SnapshotKey: Sendable, Equatable {
    /// Bump when the snapshot's layout or the way it is made changes.
    static let formatVersion = "ktstr-snapshot v1"

    var kernelImage: String
    var qemuPath: String
    var commandLine: String
    var topology: Topology
    var memoryMiB: Int
    var accelerator: QEMUMachine.Accelerator
    var tcgThreads: QEMUMachine.TCGThreads
    /// The snapshot's initramfs: (guest path, host file) of every program and library.
    var files: [(guestPath: String, hostPath: String)]
    var bootPlan: [UInt8]

    static func == (a: SnapshotKey, b: SnapshotKey) -> Bool { a.text == b.text }

    /// The inputs, one per line (written to the snapshot's meta.json for people).
    var lines: [String] {
        [Self.formatVersion,
         "kernel \(ContentHash.of(kernelImage))",
         "qemu \(qemuPath) \(ContentHash.of(qemuPath))",
         "cmdline \(commandLine)",
         "topology \(topology.llcs)x\(topology.coresPerLLC)x\(topology.threadsPerCore) nodes \(topology.numaNodes)",
         "memory \(memoryMiB)",
         "accel \(accelerator.rawValue) tcg \(tcgThreads.rawValue)",
         "plan \(ContentHash.of(bytes: bootPlan))"]
            + files.sorted { $0.guestPath < $1.guestPath }.map { "file \($0.guestPath) \(ContentHash.of($0.hostPath))" }
    }

    private var text: String { lines.joined(separator: "\n") }

    /// 16 hex digits.
    var hash: String { ContentHash.of(bytes: Array(text.utf8)) }
}

/// A FNV-1a-style 64-bit hash over bytes, and over files by content, remembered per file identity
/// (device, inode, size, mtime) for the process: the kernel, qemu and the agent are tens of
/// MiB and every run asks. Not a security hash: it notices changes (like the provisioning
/// stamps' fingerprint).
enum ContentHash {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var memo: [String: String] = [:]

    static func of(bytes: [UInt8]) -> String {
        bytes.withUnsafeBytes { String(format: "%016llx", fnv($0, seed: 0xcbf2_9ce4_8422_2325)) }
    }

    /// "missing" when the file cannot be read (that too is part of a key).
    static func of(_ path: String) -> String {
        var st = stat()
        guard stat(path, &st) == 0 else { return "missing" }
        let identity = "\(path)|\(st.st_dev)|\(st.st_ino)|\(st.st_size)|\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)"
        lock.lock()
        if let h = memo[identity] { lock.unlock(); return h }
        lock.unlock()
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return "missing" }
        defer { close(fd) }
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        var buf = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            h = buf.withUnsafeBytes { fnv(UnsafeRawBufferPointer(rebasing: $0[0..<n]), seed: h) }
        }
        let text = String(format: "%016llx", h)
        lock.lock(); memo[identity] = text; lock.unlock()
        return text
    }

    /// FNV-1a over 8-byte little-endian words (then the tail bytes), each step followed by
    /// a xor-shift so that high bits reach the low ones: an eighth of byte-wise FNV's steps
    /// (debug builds hash tens of MiB). Every step is a bijection of the state, so inputs
    /// that differ in one word always hash apart.
    static func fnv(_ b: UnsafeRawBufferPointer, seed: UInt64) -> UInt64 {
        var h = seed
        func step(_ w: UInt64) {
            h = (h ^ w) &* 0x0000_0100_0000_01b3
            h ^= h >> 32
        }
        let words = b.count / 8
        for i in 0..<words { step(b.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self)) }
        for i in (words * 8)..<b.count { step(UInt64(b[i])) }
        return h
    }
}
