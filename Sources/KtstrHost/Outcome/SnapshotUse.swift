/// How a run used its boot snapshot (`RunOutcome.snapshot`; docs/DESIGN-NOTES.md "Boot
/// snapshots").
public struct SnapshotUse: Codable, Sendable, Equatable {
    /// The configuration's key: the directory under `<cache>/snapshots/`.
    public var key: String?
    /// The VM was restored from the snapshot (false: it booted cold, see `problem`).
    public var restored: Bool
    /// This run built the snapshot first (a cold boot and a save before its restore).
    public var built: Bool
    /// Host ms from the machine's start to the agent's `restored` (RAM copy, state load,
    /// plan request, unpack, reseed).
    public var restoreMillis: Int?
    /// Hex of 16 bytes the agent drew from getrandom() after reseeding: differs between
    /// two restores of one snapshot.
    public var guestRandom: String?
    /// Why the run booted cold (kind `snapshotFallback`). Not in `RunOutcome.problems`: a
    /// fallback never fails a test by itself.
    public var problem: RunProblem?

    public init(key: String?, restored: Bool, built: Bool, restoreMillis: Int? = nil, guestRandom: String? = nil,
                problem: RunProblem? = nil) {
        self.key = key; self.restored = restored; self.built = built; self.restoreMillis = restoreMillis
        self.guestRandom = guestRandom; self.problem = problem
    }
}
