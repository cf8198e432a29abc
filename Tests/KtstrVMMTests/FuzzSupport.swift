// Shared by KtstrVMMTests, KtstrSchedExtTests and KtstrProtocolTests (symbolic links to this
// file): a seeded, reproducible mutator for the parser fuzz tests.

/// SplitMix64: tiny, fast, and the same sequence for the same seed on every machine.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

enum Fuzz {
    /// Default iteration count per parser (the issue asks for ≥ 10,000).
    static let iterations = 10_000

    /// Values that break size and offset arithmetic, written little-endian over 1, 2, 4 or 8 bytes.
    static let boundaries: [UInt64] = [
        0, 1, 0xFF, 0x7F, 0x80, 0xFFFF, 0x7FFF, 0x8000, 0xFFFF_FFFF, 0x7FFF_FFFF, 0x8000_0000,
        0xFFFF_FFFF_FFFF_FFFF, 0x7FFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000, 0xFFFF_FFFF_FFFF_FFF0,
    ]

    /// One input derived from `seed`: iteration `i` picks a strategy (truncation, bit flips,
    /// boundary-value overwrites, random bytes, or a mix), deterministically from (seed, i).
    /// `hotOffsets` are header fields worth hitting more often than chance would.
    static func mutate(_ seed: [UInt8], iteration i: Int, baseSeed: UInt64, hotOffsets: [Int] = []) -> [UInt8] {
        var rng = SplitMix64(seed: baseSeed ^ (UInt64(i) &* 0xD6E8_FEB8_6659_FD93))
        var b = seed
        func offset() -> Int {
            if !hotOffsets.isEmpty, Bool.random(using: &rng) { return hotOffsets.randomElement(using: &rng)! }
            return b.isEmpty ? 0 : Int.random(in: 0..<b.count, using: &rng)
        }
        func boundary(at o: Int) {
            let v = boundaries.randomElement(using: &rng)!
            let width = [1, 2, 4, 8].randomElement(using: &rng)!
            for k in 0..<width where o + k < b.count { b[o + k] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(k))) }
        }
        switch i % 8 {
        case 0: // truncation
            b = Array(b.prefix(b.isEmpty ? 0 : Int.random(in: 0..<b.count, using: &rng)))
        case 1, 2: // bit flips
            for _ in 0..<Int.random(in: 1...8, using: &rng) where !b.isEmpty {
                let o = offset()
                if o < b.count { b[o] ^= 1 << UInt8.random(in: 0..<8, using: &rng) }
            }
        case 3, 4: // boundary values
            for _ in 0..<Int.random(in: 1...4, using: &rng) where !b.isEmpty { boundary(at: offset()) }
        case 5: // random byte overwrites
            for _ in 0..<Int.random(in: 1...32, using: &rng) where !b.isEmpty {
                let o = offset()
                if o < b.count { b[o] = UInt8.random(in: 0...255, using: &rng) }
            }
        case 6: // fully random bytes, sometimes keeping the seed's first bytes (its magic)
            let n = Int.random(in: 0...max(1, min(seed.count, 4096)), using: &rng)
            b = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if Bool.random(using: &rng) { for k in 0..<min(8, seed.count, b.count) { b[k] = seed[k] } }
        default: // everything at once
            for _ in 0..<Int.random(in: 1...4, using: &rng) where !b.isEmpty { boundary(at: offset()) }
            for _ in 0..<Int.random(in: 0...4, using: &rng) where !b.isEmpty {
                let o = offset()
                if o < b.count { b[o] ^= 1 << UInt8.random(in: 0..<8, using: &rng) }
            }
            if Bool.random(using: &rng) { b = Array(b.prefix(Int.random(in: 0...b.count, using: &rng))) }
        }
        return b
    }

    /// Runs `body` on `iterations` mutants of `seed`; `body` returns a problem to report
    /// (nil when the parser behaved). Reports name the seed and the iteration.
    static func run(_ name: String, seed: [UInt8], baseSeed: UInt64, iterations: Int = Fuzz.iterations,
                    hotOffsets: [Int] = [], _ body: ([UInt8]) -> String?) -> [String] {
        var problems: [String] = []
        for i in 0..<iterations {
            let input = mutate(seed, iteration: i, baseSeed: baseSeed, hotOffsets: hotOffsets)
            if let p = body(input) {
                problems.append("\(name): seed 0x\(String(baseSeed, radix: 16)) iteration \(i) (\(input.count) bytes): \(p)")
                if problems.count >= 10 { break }
            }
        }
        return problems
    }

    /// Little-endian bytes of `v`.
    static func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }
}
