import CKVM
import Glibc
import KtstrMachine

/// The open `/dev/kvm`: API version, capabilities, supported CPUID, and VM creation.
/// Closes the fd on deinit.
public final class KVMSystem: @unchecked Sendable {
    public static let defaultPath = "/dev/kvm"
    /// KVM_GET_API_VERSION has been 12 since Linux 2.6.22 and is never expected to change.
    public static let expectedAPIVersion: Int32 = 12

    public let fd: Int32
    public let path: String

    public init(path: String = KVMSystem.defaultPath) throws(KVMError) {
        let fd = open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw KVMError.unavailable(path: path, errno: errno) }
        self.fd = fd
        self.path = path
        let v = ckvm_get_api_version(fd)
        guard v == Self.expectedAPIVersion else { throw KVMError.apiVersion(v) }
    }

    deinit { close(fd) }

    /// Why KVM cannot be used here (one line with the fix), or nil when it can.
    /// Cheap enough for a test's condition trait.
    public static func unavailableReason(path: String = KVMSystem.defaultPath) -> String? {
        do {
            let kvm = try KVMSystem(path: path)
            try kvm.requireBasics()
            return nil
        } catch {
            return error.description
        }
    }

    /// KVM_CHECK_EXTENSION: 0 when absent, otherwise a capability-specific positive value.
    public func check(_ cap: KVMCapability) -> Int {
        Int(max(0, ckvm_check_extension(fd, Int(cap.rawValue))))
    }

    public func has(_ cap: KVMCapability) -> Bool { check(cap) > 0 }

    /// KVM_CHECK_EXTENSION for each of `caps` (0 = absent).
    public func capabilities(_ caps: [KVMCapability] = KVMCapability.all) -> [(capability: KVMCapability, value: Int)] {
        caps.map { ($0, check($0)) }
    }

    /// Throws naming the first capability in `KVMCapability.required` that is missing.
    public func requireBasics() throws(KVMError) {
        for cap in KVMCapability.required where !has(cap) {
            throw KVMError.missingCapability(cap.name)
        }
    }

    /// Bytes to mmap from each vCPU fd (kvm_run plus the PIO data page and friends).
    public func vcpuMmapSize() throws(KVMError) -> Int {
        Int(try kvmCall("KVM_GET_VCPU_MMAP_SIZE") { ckvm_get_vcpu_mmap_size(fd) })
    }

    /// KVM_GET_SUPPORTED_CPUID: every leaf KVM can virtualise on this host.
    public func supportedCPUID(maxEntries: Int = 256) throws(KVMError) -> [kvm_cpuid_entry2] {
        var capacity = maxEntries
        while true {
            guard let c = ckvm_cpuid2_alloc(UInt32(capacity)) else { throw KVMError.system(.lastError("calloc(kvm_cpuid2)")) }
            defer { free(c) }
            if ckvm_get_supported_cpuid(fd, c) == 0 {
                let n = Int(c.pointee.nent)
                return Array(UnsafeBufferPointer(start: ckvm_cpuid2_entries(c), count: min(n, capacity)))
            }
            let e = errno
            // E2BIG: the buffer is too small; retry bigger (bounded).
            guard e == E2BIG, capacity < 4096 else { throw KVMError.ioctl(call: "KVM_GET_SUPPORTED_CPUID", errno: e) }
            capacity *= 2
        }
    }

    /// KVM_GET_MSR_INDEX_LIST: MSRs that KVM_GET/SET_MSRS can save and restore.
    public func msrIndexList() throws(KVMError) -> [UInt32] {
        var capacity = 256
        while true {
            guard let l = ckvm_msr_list_alloc(UInt32(capacity)) else { throw KVMError.system(.lastError("calloc(kvm_msr_list)")) }
            defer { free(l) }
            if ckvm_get_msr_index_list(fd, l) == 0 {
                return Array(UnsafeBufferPointer(start: ckvm_msr_list_indices(l), count: min(Int(l.pointee.nmsrs), capacity)))
            }
            let e = errno
            guard e == E2BIG, capacity < 8192 else { throw KVMError.ioctl(call: "KVM_GET_MSR_INDEX_LIST", errno: e) }
            capacity = max(capacity * 2, Int(l.pointee.nmsrs))
        }
    }

    /// KVM_CREATE_VM (type 0: the default x86 VM).
    public func createVM() throws(KVMError) -> KVMVM {
        let vmfd = try kvmCall("KVM_CREATE_VM") { ckvm_create_vm(fd, 0) }
        do {
            return try KVMVM(fd: vmfd, system: self)
        } catch {
            close(vmfd)
            throw error
        }
    }
}

extension KVMSystem {
    /// KVM_CREATE_VM, then every region of `memory` as a memslot.
    public func createVM(memory: GuestMemory) throws(KVMError) -> KVMVM {
        let vm = try createVM()
        try vm.register(memory: memory)
        return vm
    }
}
