/// `MachineExit` in JSON as `{"kind": "shutdown"}` or `{"kind": "fatal", "reason": "..."}`:
/// readers switch on `kind`, never on text.
extension MachineExit: Codable {
    public enum Kind: String, Codable, Sendable { case shutdown, fatal, timeout, killed }

    public var kind: Kind {
        switch self {
        case .shutdown: .shutdown
        case .fatal: .fatal
        case .timeout: .timeout
        case .killed: .killed
        }
    }

    private enum CodingKeys: String, CodingKey { case kind, reason }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        switch try c.decode(Kind.self, forKey: .kind) {
        case .shutdown: self = .shutdown
        case .fatal: self = .fatal(try c.decodeIfPresent(String.self, forKey: .reason) ?? "")
        case .timeout: self = .timeout
        case .killed: self = .killed
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(kind, forKey: .kind)
        if case let .fatal(reason) = self { try c.encode(reason, forKey: .reason) }
    }
}
