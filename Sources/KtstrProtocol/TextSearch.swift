// Substring search on the standard library alone: the agent (Glibc only) parses loader and
// kernel lines with it, the host finds the channel prefix. Not named `range(of:)`: host files
// also see the system library's `range(of:)`, and two overloads would make calls ambiguous.

extension StringProtocol {
    /// The first (or, `backwards`, the last) occurrence of `needle`; nil when absent or empty.
    public func find(_ needle: String, backwards: Bool = false) -> Range<Index>? {
        let n = Array(needle.utf8)
        guard !n.isEmpty else { return nil }
        let hay = Array(utf8)
        guard hay.count >= n.count else { return nil }
        let starts = 0...(hay.count - n.count)
        let hit: (Int) -> Bool = { s in hay[s] == n[0] && hay[s..<s + n.count].elementsEqual(n) }
        guard let s = backwards ? starts.reversed().first(where: hit) : starts.first(where: hit) else { return nil }
        let lo = utf8.index(startIndex, offsetBy: s)
        return lo..<utf8.index(lo, offsetBy: n.count)
    }
}
