import KtstrSchedExt
import KtstrProtocol

/// The live sampler's results on the outcome (issue 13).
///
/// Design: `RunOutcome.timeline` (encoded: `outcome.json`, `ktstr run --json`) is bounded to
/// `maxOutcomeSamples` evenly spread samples; the full timeline rides along in memory as
/// `fullTimeline` (`@NotEncoded`: left out of the JSON, nil after decoding) so that
/// `RunArtifacts.files(of:)` — the run directory and the test attachments alike — writes it
/// whole as `timeline.json`.
extension RunOutcome {
    public static let maxOutcomeSamples = 600

    /// Sampler cost: time spent reading samples over the run's wall time (host start of the
    /// VM → VM gone); nil without a timeline.
    public var samplerCostFraction: Double? {
        guard let t = timeline, wallMillis > 0 else { return nil }
        return t.samplingMillis / Double(wallMillis)
    }

    /// Stores `full` (and its bounded copy) and turns each host stall into a problem that says
    /// when it was seen against the first scheduler-exit marker.
    mutating func addTimeline(_ full: Timeline, stalls: [HostStall]) {
        fullTimeline = full
        timeline = full.bounded(to: Self.maxOutcomeSamples)
        let exitAt = full.markers.first { $0.kind == .schedulerExit }?.millis
        for s in stalls {
            var d = s.summary + "; seen at +\(s.detectedAtMillis) ms"
            if let exitAt {
                d += exitAt >= s.detectedAtMillis ? ", \(exitAt - s.detectedAtMillis) ms before the scheduler's exit was seen"
                                                  : ", \(s.detectedAtMillis - exitAt) ms after the scheduler's exit was seen"
            }
            d += " — last samples: " + s.excerpt.joined(separator: "; ")
            problems.append(RunProblem(.hostStallDetected, d))
        }
    }
}

/// A stored property that stays in memory and out of the JSON: the container overloads below
/// (more specific than the generic ones synthesized Codable calls) encode nothing and decode nil.
@propertyWrapper
public struct NotEncoded<Value: Sendable>: Sendable, Codable {
    public var wrappedValue: Value?
    public init(wrappedValue: Value? = nil) { self.wrappedValue = wrappedValue }
    public init(from decoder: Decoder) throws { wrappedValue = nil }
    public func encode(to encoder: Encoder) throws {}
}

extension KeyedEncodingContainer {
    public mutating func encode<V>(_ value: NotEncoded<V>, forKey key: Key) throws {}
}

extension KeyedDecodingContainer {
    public func decode<V>(_ type: NotEncoded<V>.Type, forKey key: Key) throws -> NotEncoded<V> { NotEncoded() }
}

extension TimelineSampler {
    /// Markers from the agent's messages: the scheduler enabled, its exit (when the sampler
    /// has not seen the exit in memory first).
    func mark(for message: AgentMessage) {
        switch message {
        case .schedulerEnabled: mark(.schedulerEnabled, "scheduler enabled")
        case let .schedulerExit(e): mark(.schedulerExit, e.kind.name, onlyFirst: true)
        default: break
        }
    }
}
