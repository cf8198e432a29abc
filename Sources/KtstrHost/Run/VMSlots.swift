import Foundation
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

/// Bounds how many VMs one process runs at once, so parallel tests do not oversubscribe the
/// host's CPUs: each VM holds `min(vCPUs, capacity)` units of a pool of host cores. With
/// `KTSTR_MAX_VMS=N` the pool is N and every VM holds one unit. Waiting is cancellable.
public actor VMSlots {
    public static let shared = VMSlots()

    private let capacity: Int
    private let countVMs: Bool
    private var used = 0
    private var nextID = 0
    private var waiters: [(id: Int, units: Int, cont: CheckedContinuation<Void, Error>)] = []

    public init(settings: KtstrSettings = .current) {
        if let n = settings.maxVMs {
            capacity = n; countVMs = true
        } else {
            capacity = max(1, ProcessInfo.processInfo.activeProcessorCount); countVMs = false
        }
    }

    func units(for vcpus: Int) -> Int { countVMs ? 1 : min(max(1, vcpus), capacity) }

    /// Waits for room (throws CancellationError when the task is cancelled meanwhile);
    /// returns the units to give back with `release`.
    public func acquire(vcpus: Int) async throws -> Int {
        let u = units(for: vcpus)
        try Task.checkCancellation()
        if waiters.isEmpty, used + u <= capacity {
            used += u
            return u
        }
        nextID += 1
        let id = nextID
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, Error>) in
                waiters.append((id, u, c))
            }
        } onCancel: {
            Task { await self.cancelWaiter(id) }
        }
        return u
    }

    private func cancelWaiter(_ id: Int) {
        guard let i = waiters.firstIndex(where: { $0.id == id }) else { return }
        waiters.remove(at: i).cont.resume(throwing: CancellationError())
        wake()
    }

    public func release(_ units: Int) {
        used -= units
        wake()
    }

    private func wake() {
        while let first = waiters.first, used + first.units <= capacity {
            waiters.removeFirst()
            used += first.units
            first.cont.resume()
        }
    }
}
