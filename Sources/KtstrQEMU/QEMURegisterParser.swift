import KtstrMachine

/// Parses qemu's `info registers -a` text (x86-64 target) into one snapshot per CPU.
///
/// Blocks start with `CPU#<n>`; registers are `NAME=hex` tokens (`R8 =` has a space before the
/// `=`). A block without RIP/RSP/CR3 is skipped, never guessed.
public enum QEMURegisterParser {
    static let gprNames = ["RAX", "RBX", "RCX", "RDX", "RSI", "RDI", "RBP", "RSP",
                           "R8", "R9", "R10", "R11", "R12", "R13", "R14", "R15"]

    public static func parse(_ text: String) -> [VCPURegisterSnapshot] {
        var out: [VCPURegisterSnapshot] = []
        var cpu: Int?
        var regs: [String: UInt64] = [:]
        func flush() {
            defer { regs = [:] }
            guard let c = cpu, let rip = regs["RIP"], let rsp = regs["RSP"], let cr3 = regs["CR3"] else { return }
            var gprs: [String: UInt64] = [:]
            for n in gprNames { if let v = regs[n] { gprs[n.lowercased()] = v } }
            out.append(VCPURegisterSnapshot(cpu: c, rip: rip, rsp: rsp, cr3: cr3, rflags: regs["RFL"], cr0: regs["CR0"],
                                            cr4: regs["CR4"], efer: regs["EFER"], gprs: gprs,
                                            halted: regs["HLT"].map { $0 != 0 }))
        }
        for raw in text.split(whereSeparator: \.isNewline) { // "\r\n" is one Character
            let line = Substring(raw)
            if line.hasPrefix("CPU#") {
                flush()
                cpu = Int(line.dropFirst(4).prefix { $0.isNumber })
                continue
            }
            guard cpu != nil else { continue }
            for (name, value) in tokens(line) where regs[name] == nil { regs[name] = value }
        }
        flush()
        return out.sorted { $0.cpu < $1.cpu }
    }

    /// `NAME=hex` pairs of one line; a name may be followed by spaces before the `=`.
    static func tokens(_ line: Substring) -> [(String, UInt64)] {
        var out: [(String, UInt64)] = []
        let chars = Array(line.utf8)
        var i = 0
        while i < chars.count {
            guard chars[i] == UInt8(ascii: "=") else { i += 1; continue }
            var e = i
            while e > 0, chars[e - 1] == 0x20 { e -= 1 }
            var s = e
            while s > 0, isName(chars[s - 1]) { s -= 1 }
            var v = i + 1
            while v < chars.count, isHex(chars[v]) { v += 1 }
            if s < e, v > i + 1, v - (i + 1) <= 16,
               let value = UInt64(String(decoding: chars[(i + 1)..<v], as: UTF8.self), radix: 16) {
                out.append((String(decoding: chars[s..<e], as: UTF8.self), value))
            }
            i = v
        }
        return out
    }

    private static func isName(_ c: UInt8) -> Bool { (c >= 0x41 && c <= 0x5A) || (c >= 0x30 && c <= 0x39) }
    private static func isHex(_ c: UInt8) -> Bool { (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66) || (c >= 0x41 && c <= 0x46) }
}
