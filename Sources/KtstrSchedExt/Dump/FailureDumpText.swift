import Foundation
import KtstrMachine
import KtstrProtocol

extension FailureDump: CustomStringConvertible {
    public var description: String { text }

    /// Human-readable rendering: what a kernel developer reads first at the top.
    public var text: String {
        var o: [String] = []
        func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
        o.append("=== sched_ext failure dump ===")
        var head = "exit kind: \(kind) (\(kindValue))"
        if let schedulerName { head += "  scheduler: \(schedulerName)" }
        o.append(head)
        if let reason { o.append("reason:    \(reason)") }
        if let message { o.append("message:   \(message)") }
        var line: [String] = []
        if let exitCode { line.append("exit_code \(exitCode)") }
        if let exitCPU { line.append("exit_cpu \(exitCPU)") }
        if let flags {
            let names = (flagNames ?? []).isEmpty ? "" : " (\((flagNames ?? []).joined(separator: "|")))"
            line.append("flags \(hex(flags))\(names)")
        }
        if !line.isEmpty { o.append(line.joined(separator: "  ")) }
        if let t = timing {
            o.append(String(format: "timing (%@): trigger→settled %.2f ms, trigger→frozen %.2f ms, frozen→read %.2f ms, total %.2f ms",
                            t.detectedBy, t.triggerToSettledMillis, t.triggerToFrozenMillis, t.frozenToReadMillis, t.totalMillis))
        }
        if !backtrace.isEmpty {
            o.append("")
            o.append("backtrace (\(backtrace.count) frames\(symbolSource.map { ", symbols from \($0)" } ?? "")):")
            for (i, f) in backtrace.enumerated() {
                o.append("  #\(i) \(f.address)  \(f.symbol ?? "?")")
            }
        }
        if !registers.isEmpty {
            o.append("")
            o.append("vCPU registers at the freeze:")
            for r in registers {
                var s = "  cpu\(r.cpu): rip=\(hex(r.rip)) rsp=\(hex(r.rsp)) cr3=\(hex(r.cr3))"
                if let f = r.rflags { s += " rflags=\(hex(f))" }
                if r.halted == true { s += " (halted)" }
                o.append(s)
            }
        }
        if !cpus.isEmpty {
            o.append("")
            o.append("runqueues:")
            for c in cpus {
                var s = "  cpu\(c.cpu): nr_running=\(c.nrRunning.map(String.init) ?? "?") scx.nr_running=\(c.scxNrRunning.map(String.init) ?? "?")"
                if let d = c.localDSQDepth { s += " local_dsq=\(d)" }
                if let f = c.scxFlags { s += " scx.flags=\(hex(UInt64(f)))" }
                if let pid = c.currentPID { s += " curr=\(c.currentComm ?? "?")[\(pid)]" }
                if let k = c.rqClock { s += " clock=\(k)" }
                o.append(s)
                for t in c.runnable ?? [] {
                    var r = "      runnable \(t.comm)[\(t.pid)]"
                    if let j = jiffies, j >= t.runnableAt { r += " waiting \(j - t.runnableAt) ticks" }
                    if let d = t.dsqID { r += " dsq=\(hex(d))" }
                    o.append(r)
                }
            }
        }
        if !maps.isEmpty {
            o.append("")
            o.append("BPF maps:")
            for m in maps {
                o.append("  [\(m.id)] \(m.name) \(m.type) key=\(m.keySize) value=\(m.valueSize) max_entries=\(m.maxEntries)")
                for v in m.variables ?? [] {
                    let shown = v.value.count > 96 ? v.value.prefix(96) + "… (\(v.size) bytes)" : Substring(v.value)
                    o.append("      \(v.name) = \(shown)")
                }
                if let ints = m.perCPUIntegers {
                    for (cpu, row) in ints.enumerated() { o.append("      cpu\(cpu): " + row.map(String.init).joined(separator: " ")) }
                } else if let rows = m.perCPUHex {
                    for (cpu, row) in rows.enumerated() { o.append("      cpu\(cpu): " + row.prefix(96) + (row.count > 96 ? "…" : "")) }
                }
                if let entries = m.entries {
                    for e in entries.prefix(64) {
                        let k = e.keyInteger.map(String.init) ?? e.keyHex
                        let v = e.valueInteger.map(String.init) ?? String(e.valueHex.prefix(96))
                        o.append("      \(k) => \(v)")
                    }
                    if entries.count > 64 || m.entriesTruncated == true { o.append("      ... (\(entries.count) read\(m.entriesTruncated == true ? ", more not read" : ""))") }
                }
                if m.variables == nil, let bytes = m.contents {
                    for row in stride(from: 0, to: min(bytes.count, 256), by: 16) {
                        let chunk = bytes[row..<min(row + 16, bytes.count)]
                        o.append("      " + String(format: "%04x ", row) + chunk.map { String(format: "%02x", $0) }.joined(separator: " "))
                    }
                    if bytes.count > 256 || m.contentsTruncated == true { o.append("      ...") }
                }
            }
        }
        if let schedulerDump, !schedulerDump.isEmpty {
            o.append("")
            o.append("kernel dump (scx_exit_info.dump\(schedulerDumpAfterThaw == true ? ", read after the thaw" : "")):")
            o.append(schedulerDump)
        }
        if !problems.isEmpty {
            o.append("")
            o.append("not read:")
            for p in problems { o.append("  - \(p)") }
        }
        return o.joined(separator: "\n")
    }
}
