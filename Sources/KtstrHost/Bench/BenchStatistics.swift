import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

/// Summary of one benchmark variant's samples (milliseconds).
public struct BenchSummary: Codable, Sendable, Equatable {
    public var count: Int
    public var min: Double
    /// The middle sample; the mean of the two middle ones for an even count.
    public var median: Double
    /// Nearest rank: the smallest sample with at least 90% of the samples at or below it.
    public var p90: Double
    public var max: Double

    public init(count: Int, min: Double, median: Double, p90: Double, max: Double) {
        self.count = count; self.min = min; self.median = median; self.p90 = p90; self.max = max
    }

    /// nil for no samples.
    public init?(_ samples: [Double]) {
        guard !samples.isEmpty else { return nil }
        let s = samples.sorted()
        let n = s.count
        count = n
        min = s[0]
        max = s[n - 1]
        median = n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2
        let rank = Int((0.9 * Double(n)).rounded(.up))   // 1-based
        p90 = s[Swift.max(0, Swift.min(n - 1, rank - 1))]
    }

    /// `self.median / baseline.median`; nil when the baseline median is not positive.
    public func ratio(over baseline: BenchSummary) -> Double? {
        baseline.median > 0 ? median / baseline.median : nil
    }
}

/// `[A, B, C, A, B, C, ...]`: the variants interleaved so that drift in the host's load over
/// the run hits each of them alike.
public func interleavedSchedule<V>(_ variants: [V], iterations: Int) -> [(iteration: Int, variant: V)] {
    guard iterations > 0 else { return [] }
    return (1...iterations).flatMap { i in variants.map { (iteration: i, variant: $0) } }
}
