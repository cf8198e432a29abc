import Foundation

/// Bounds how many VMs one process runs at once, so parallel tests do not oversubscribe the
/// host's CPUs: each VM holds `min(vCPUs, capacity)` units of a pool of host cores. With
/// `KTSTR_MAX_VMS=N` the pool is N and every VM holds one unit.
public actor VMSlots {
    public static let shared = VMSlots()

    private let capacity: Int
    private let countVMs: Bool
    private var used = 0
    private var waiters: [(units: Int, cont: CheckedContinuation<Void, Never>)] = []

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        if let s = environment["KTSTR_MAX_VMS"], let n = Int(s), n > 0 {
            capacity = n; countVMs = true
        } else {
            capacity = max(1, ProcessInfo.processInfo.activeProcessorCount); countVMs = false
        }
    }

    func units(for vcpus: Int) -> Int { countVMs ? 1 : min(max(1, vcpus), capacity) }

    /// Waits for room; returns the units to give back.
    public func acquire(vcpus: Int) async -> Int {
        let u = units(for: vcpus)
        if waiters.isEmpty, used + u <= capacity {
            used += u
            return u
        }
        await withCheckedContinuation { waiters.append((u, $0)) }
        return u
    }

    public func release(_ units: Int) {
        used -= units
        while let first = waiters.first, used + first.units <= capacity {
            waiters.removeFirst()
            used += first.units
            first.cont.resume()
        }
    }
}
