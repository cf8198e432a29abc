import Foundation
import Glibc
import KtstrMachine

/// Why a snapshot could not be written or restored. A bad snapshot is refused here, never a crash.
public enum VMSnapshotError: Error, CustomStringConvertible, Equatable {
    case io(path: String, errno: Int32)
    /// The state file does not decode (truncated, edited, not a snapshot).
    case corruptState(path: String, why: String)
    case unsupportedVersion(found: Int, supported: Int)
    /// The RAM image is not the size the state file says.
    case ramSizeMismatch(path: String, expected: UInt64, actual: UInt64)
    /// The state decodes but does not fit this machine (wrong kind, a register image of the wrong size...).
    case incompatible(String)

    public var description: String {
        switch self {
        case let .io(path, e): "snapshot: \(path): \(String(cString: strerror(e))) (errno \(e))"
        case let .corruptState(path, why): "snapshot: \(path) is corrupt or truncated (\(why)) — take the snapshot again"
        case let .unsupportedVersion(found, supported): "snapshot: format version \(found), this ktstr reads \(supported) — take the snapshot again with this build"
        case let .ramSizeMismatch(path, expected, actual): "snapshot: \(path) has \(actual) bytes, the state says \(expected) — the RAM image is truncated or from another snapshot"
        case let .incompatible(why): "snapshot: \(why)"
        }
    }
}

/// One MSR's saved value.
public struct SavedMSR: Codable, Sendable, Equatable {
    public var index: UInt32
    public var value: UInt64
}

/// Everything KVM holds for one vCPU, as opaque KVM structure images.
public struct VCPUSavedState: Codable, Sendable, Equatable {
    public var index: Int
    public var id: Int
    public var regs: KVMStateBlob
    public var sregs: KVMStateBlob
    /// XSAVE image where KVM_CAP_XSAVE exists, else the legacy FPU state.
    public var xsave: Data?
    public var fpu: KVMStateBlob?
    public var xcrs: KVMStateBlob?
    public var msrs: [SavedMSR]
    /// With an in-kernel irqchip only.
    public var lapic: KVMStateBlob?
    public var mpState: UInt32?
    public var events: KVMStateBlob
    public var debugRegs: KVMStateBlob?
}

/// VM-wide KVM state: the in-kernel PIC/IOAPIC and PIT (when created) and the KVM clock.
public struct VMSavedState: Codable, Sendable, Equatable {
    public var irqchip: [KVMStateBlob]?
    public var pit: KVMStateBlob?
    public var clock: KVMStateBlob?
}

/// Which bytes of the RAM image back which guest-physical range.
public struct SavedRAMRegion: Codable, Sendable, Equatable {
    public var gpa: UInt64
    public var size: UInt64
    public var fileOffset: UInt64
}

/// The device states of a machine on our VMM (absent devices stay nil).
public struct SavedDevices: Codable, Sendable, Equatable {
    public var com1: Serial16550.State?
    public var i8042Data: I8042.State?
    public var i8042Command: I8042.State?
    public var cmos: CMOSClock.State?
    /// COM2 (KVMMachine's agent channel); absent in tiny-guest snapshots.
    public var com2: Serial16550.State? = nil
}

/// The state file of a snapshot directory (`state.json`): everything but the RAM, which is
/// `ram.img` next to it.
public struct VMSnapshotState: Codable, Sendable, Equatable {
    public static let currentVersion = 1
    public var version: Int
    /// What machine wrote it ("tiny-guest") and its shape, so a restore rebuilds the same one.
    public var machine: String
    public var parameters: [String: String]
    public var ram: [SavedRAMRegion]
    public var ramBytes: UInt64
    public var vm: VMSavedState
    public var vcpus: [VCPUSavedState]
    public var devices: SavedDevices
}

/// Capture and restore of KVM state, and the on-disk format: a directory holding
/// `ram.img` (guest RAM, regions back to back, zero pages left as holes) and `state.json`
/// (`VMSnapshotState`, written last, so a directory without it is no snapshot).
public enum VMSnapshot {
    public static let ramFileName = "ram.img"
    public static let stateFileName = "state.json"

    /// The MSRs a snapshot saves, where KVM lists them (KVM_GET_MSR_INDEX_LIST). KVM does not
    /// list EFER and APIC_BASE (they travel in sregs, which carries them anyway), nor TSC_AUX
    /// without RDTSCP in the guest's CPUID.
    public static let msrIndices: [UInt32] = [
        0x10,        // IA32_TSC
        0x1b,        // IA32_APIC_BASE
        0x174, 0x175, 0x176, // SYSENTER_CS/ESP/EIP
        0x1a0,       // IA32_MISC_ENABLE
        0x277,       // IA32_PAT
        0xc000_0080, // EFER
        0xc000_0081, 0xc000_0082, 0xc000_0083, 0xc000_0084, // STAR, LSTAR, CSTAR, SFMASK
        0xc000_0102, // KERNEL_GS_BASE
        0xc000_0103, // TSC_AUX
        0x4b56_4d00, 0x4b56_4d01, 0x4b56_4d02, 0x4b56_4d03, 0x4b56_4d04, // kvmclock, async PF, steal, EOI
    ]
    /// IA32_TSC_DEADLINE: saved with an irqchip, restored after the LAPIC (in TSC-deadline mode).
    public static let tscDeadlineMSR: UInt32 = 0x6e0

    // MARK: capture

    /// One vCPU's state. The vCPU must be parked (frozen) or never started.
    public static func captureVCPU(_ vcpu: KVMVCPU, index: Int, irqchip: Bool, listedMSRs: Set<UInt32>) throws -> VCPUSavedState {
        let vm = vcpu.vm
        var wanted = msrIndices
        if irqchip { wanted.append(tscDeadlineMSR) }
        var msrs: [SavedMSR] = []
        for idx in wanted where listedMSRs.contains(idx) {
            // One at a time: KVM_GET_MSRS stops at the first it cannot read.
            if let v = try vcpu.getMSRs([idx])[idx] { msrs.append(SavedMSR(index: idx, value: v)) }
        }
        let hasXSAVE = vm.has(.xsave)
        return VCPUSavedState(
            index: index, id: vcpu.id,
            regs: KVMStateBlob(of: try vcpu.getRegs()),
            sregs: KVMStateBlob(of: try vcpu.getSregs()),
            xsave: hasXSAVE ? try vcpu.getXSAVE() : nil,
            fpu: hasXSAVE ? nil : KVMStateBlob(of: try vcpu.getFPU()),
            xcrs: vm.has(.xcrs) ? KVMStateBlob(of: try vcpu.getXCRS()) : nil,
            msrs: msrs,
            lapic: irqchip ? KVMStateBlob(of: try vcpu.getLAPIC()) : nil,
            mpState: irqchip ? try vcpu.getMPState().rawValue : nil,
            events: KVMStateBlob(of: try vcpu.getVCPUEvents()),
            debugRegs: vm.has(.debugRegs) ? KVMStateBlob(of: try vcpu.getDebugRegisters()) : nil)
    }

    public static func captureVM(_ vm: KVMVM, irqchip: Bool, pit: Bool) throws -> VMSavedState {
        VMSavedState(
            irqchip: irqchip ? try KVMIRQChipID.allCases.map { KVMStateBlob(of: try vm.getIRQChip($0)) } : nil,
            pit: pit ? KVMStateBlob(of: try vm.getPIT2()) : nil,
            clock: vm.has(.adjustClock) ? KVMStateBlob(of: try vm.getClock()) : nil)
    }

    /// Writes guest RAM to `path` (regions back to back; all-zero pages stay holes).
    public static func writeRAM(_ memory: GuestMemory, to path: String) throws(VMSnapshotError) -> [SavedRAMRegion] {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .io(path: path, errno: errno) }
        defer { close(fd) }
        let page = 4096
        var out: [SavedRAMRegion] = []
        var offset: UInt64 = 0
        let zero = [UInt8](repeating: 0, count: page)
        for r in memory.regions {
            var i = 0
            let size = Int(r.size)
            while i < size {
                let n = min(page, size - i)
                let p = r.host + i
                if memcmp(p, zero, n) != 0 {
                    var done = 0
                    while done < n {
                        let w = pwrite(fd, p + done, n - done, off_t(offset) + off_t(i + done))
                        if w < 0 { if errno == EINTR { continue }; throw .io(path: path, errno: errno) }
                        done += w
                    }
                }
                i += n
            }
            out.append(SavedRAMRegion(gpa: r.guestPhysical, size: r.size, fileOffset: offset))
            offset += r.size
        }
        guard ftruncate(fd, off_t(offset)) == 0 else { throw .io(path: path, errno: errno) }
        return out
    }

    /// Writes `state` and `memory` as a snapshot directory (created if missing).
    public static func write(_ state: VMSnapshotState, memory: GuestMemory, to directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let statePath = directory + "/" + stateFileName
        unlink(statePath)
        var s = state
        s.ram = try writeRAM(memory, to: directory + "/" + ramFileName)
        s.ramBytes = s.ram.reduce(0) { $0 + $1.size }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(s)
        guard FileManager.default.createFile(atPath: statePath, contents: data) else {
            throw VMSnapshotError.io(path: statePath, errno: errno)
        }
    }

    // MARK: restore

    /// Reads and checks a snapshot directory: the state decodes, has this version, and the
    /// RAM image has exactly the size the state says. Returns the state and the RAM path.
    public static func load(from directory: String) throws(VMSnapshotError) -> (state: VMSnapshotState, ramPath: String) {
        let statePath = directory + "/" + stateFileName
        let ramPath = directory + "/" + ramFileName
        guard let data = FileManager.default.contents(atPath: statePath) else { throw .io(path: statePath, errno: ENOENT) }
        struct Version: Decodable { var version: Int }
        guard let v = try? JSONDecoder().decode(Version.self, from: data) else {
            throw .corruptState(path: statePath, why: "no version field in \(data.count) bytes")
        }
        guard v.version == VMSnapshotState.currentVersion else {
            throw .unsupportedVersion(found: v.version, supported: VMSnapshotState.currentVersion)
        }
        let state: VMSnapshotState
        do { state = try JSONDecoder().decode(VMSnapshotState.self, from: data) } catch {
            throw .corruptState(path: statePath, why: "\(error)")
        }
        var expected: UInt64 = 0
        for r in state.ram {
            guard r.size % 4096 == 0, r.gpa % 4096 == 0, r.fileOffset == expected else {
                throw .corruptState(path: statePath, why: "RAM region at 0x\(String(r.gpa, radix: 16)) is not page aligned or not contiguous in the image")
            }
            expected += r.size
        }
        guard expected == state.ramBytes, !state.vcpus.isEmpty else {
            throw .corruptState(path: statePath, why: "RAM regions sum to \(expected), ramBytes says \(state.ramBytes); \(state.vcpus.count) vCPUs")
        }
        var st = stat()
        guard stat(ramPath, &st) == 0 else { throw .io(path: ramPath, errno: errno) }
        guard UInt64(st.st_size) == expected else {
            throw .ramSizeMismatch(path: ramPath, expected: expected, actual: UInt64(st.st_size))
        }
        return (state, ramPath)
    }

    /// Guest RAM for a restore: a private copy-on-write mapping of the snapshot's image.
    public static func mapRAM(_ state: VMSnapshotState, ramPath: String) throws -> GuestMemory {
        try GuestMemory.privateFile(path: ramPath, layout: state.ram.map { ($0.gpa, $0.size, $0.fileOffset) })
    }

    static func blob<T>(_ b: KVMStateBlob?, _ type: T.Type, _ what: String) throws(VMSnapshotError) -> T? {
        guard let b else { return nil }
        guard let v = b.value(as: T.self) else {
            throw .incompatible("\(what): \(b.bytes.count) bytes, this host's structure has \(MemoryLayout<T>.size)")
        }
        return v
    }

    /// VM state that must be in place before the vCPUs exist: irqchip and PIT (both
    /// created already).
    public static func restoreVMBeforeVCPUs(_ vm: KVMVM, _ saved: VMSavedState) throws {
        for chip in saved.irqchip ?? [] {
            if let c = try blob(chip, KVMIRQChip.self, "irqchip") { try vm.setIRQChip(c) }
        }
        if let p = try blob(saved.pit, KVMPITState.self, "PIT") { try vm.setPIT2(p) }
    }

    /// VM state set after the vCPUs exist: the KVM clock.
    public static func restoreVMAfterVCPUs(_ vm: KVMVM, _ saved: VMSavedState) throws {
        if let c = try blob(saved.clock, KVMClockData.self, "KVM clock") { try vm.setClock(c) }
    }

    /// One vCPU, in KVM's order: sregs, regs, FPU/XSAVE, XCRs, MSRs, LAPIC (after the
    /// irqchip), TSC deadline, mp_state, debug registers, and the pending events last.
    public static func restoreVCPU(_ vcpu: KVMVCPU, _ s: VCPUSavedState) throws {
        guard vcpu.id == s.id else { throw VMSnapshotError.incompatible("vCPU id \(vcpu.id) restored from id \(s.id)") }
        if let sregs = try blob(s.sregs, KVMSpecialRegisters.self, "sregs") { try vcpu.setSregs(sregs) }
        if let regs = try blob(s.regs, KVMRegisters.self, "regs") { try vcpu.setRegs(regs) }
        if let x = s.xsave { try vcpu.setXSAVE(x) }
        if let f = try blob(s.fpu, KVMFPUState.self, "FPU") { try vcpu.setFPU(f) }
        if let x = try blob(s.xcrs, KVMXCRS.self, "XCRs") { try vcpu.setXCRS(x) }
        try vcpu.setMSRs(s.msrs.filter { $0.index != tscDeadlineMSR }.map { ($0.index, $0.value) })
        if let l = try blob(s.lapic, KVMLAPICState.self, "LAPIC") { try vcpu.setLAPIC(l) }
        try vcpu.setMSRs(s.msrs.filter { $0.index == tscDeadlineMSR }.map { ($0.index, $0.value) })
        if let mp = s.mpState { try vcpu.setMPState(KVMMPState(rawValue: mp)) }
        if let d = try blob(s.debugRegs, KVMDebugRegisters.self, "debug registers") { try vcpu.setDebugRegisters(d) }
        if let e = try blob(s.events, KVMVCPUEvents.self, "vCPU events") { try vcpu.setVCPUEvents(e) }
    }
}
