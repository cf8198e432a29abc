import Foundation
import KtstrMachine
import KtstrProtocol

/// The capture itself: what happens between noticing the failure and handing over the dump.
extension FailureMonitor {
    /// Freeze → read → thaw, then the work that does not need a frozen guest.
    func capture(machine: any Machine, ctx: KernelContext, reader: ScxReader, sched: UInt64, kind: Int, detectedBy: String) -> FailureDump {
        let clock = ContinuousClock()
        let t0 = clock.now
        var dump = FailureDump(kind: ctx.layout.kindName(kind), kindValue: kind)
        dump.btfSource = ctx.btfSource
        // exit_kind is claimed before msg/bt are written; exit_info->kind and ->reason after.
        let settleDeadline = t0 + options.settleTimeout
        while !reader.exitInfoSettled(sched: sched, kind: kind) {
            if clock.now >= settleDeadline {
                dump.problems.append("exit info was not complete \(options.settleTimeout) after the exit was claimed: message/backtrace may be partial")
                break
            }
            Thread.sleep(forTimeInterval: 0.0005)
        }
        let tSettled = clock.now
        var frozen = false
        do {
            dump.registers = try machine.freeze(timeout: options.freezeTimeout)
            frozen = true
        } catch {
            dump.problems.append("freeze failed (\(error)): memory was read while the guest ran")
            // A backend may have stopped the vCPUs before failing (e.g. QMP stop, then a bad
            // register read): resume it, or the guest stays paused until the run times out.
            do { try machine.thaw() } catch { dump.problems.append("thaw after the failed freeze failed: \(error)") }
        }
        let tFrozen = clock.now
        var space = ctx.space
        if let w = space.walker, let cr4 = dump.registers.first?.cr4, (cr4 & (1 << 12) != 0) != (w.levels == 5) {
            // CR4.LA57 is the authority on the paging depth; the symbol-based guess was wrong.
            space = space.withWalker(PageTableWalker(memory: w.memory, cr3: w.root, fiveLevel: cr4 & (1 << 12) != 0))
        }
        if space.walker == nil, let r = dump.registers.first {
            // No init_top_pgt: the kernel half of any CR3 maps vmalloc (PTI: bit 12 selects the user copy).
            let la57 = (r.cr4 ?? 0) & (1 << 12) != 0
            space = space.withWalker(PageTableWalker(memory: ctx.space.memory, cr3: r.cr3 & ~UInt64(1 << 12), fiveLevel: la57))
        }
        let frozenReader = ScxReader(space: space, layout: ctx.layout, symbols: ctx.symbols)
        let bt = frozenReader.readExitInfo(sched: sched, into: &dump)
        frozenReader.readCPUs(count: machine.vcpuCount, into: &dump)
        if let j = ctx.symbols["jiffies"] { dump.jiffies = try? space.read(UInt64.self, at: j) }
        if let maps = ctx.layout.maps, let idr = ctx.symbols["map_idr"] {
            BPFMapReader(space: space, layout: maps, hash: ctx.layout.hash, perCPUOffsets: ctx.symbols["__per_cpu_offset"], cpuCount: machine.vcpuCount)
                .readAll(idr: idr, into: &dump)
        } else {
            dump.problems.append(ctx.layout.mapsProblem ?? "BPF maps not read: map_idr missing from the agent's symbols")
        }
        let tRead = clock.now
        if frozen {
            do { try machine.thaw() } catch { dump.problems.append("thaw failed: \(error)") }
        }
        // The exit fields are write-once after scx_finish_exit: re-read them now, so a freeze
        // that landed between two of its stores (reason, exit_cpu) still yields them.
        var late = FailureDump(kind: dump.kind, kindValue: dump.kindValue)
        let lateBT = frozenReader.readExitInfo(sched: sched, into: &late)
        if dump.reason == nil { dump.reason = late.reason }
        if late.exitCPU != nil { dump.exitCPU = late.exitCPU }
        if dump.message == nil { dump.message = late.message }
        let trace = bt.isEmpty ? lateBT : bt
        symbolize(trace, ctx: ctx, space: space, into: &dump)
        if let f = dump.flags, f != 0 {
            let known = ctx.btf.enumerators(withPrefix: "SCX_EFLAG_")
            dump.flagNames = known.filter { $0.value > 0 && UInt64($0.value) & f == UInt64($0.value) }
                .map { String($0.name.dropFirst("SCX_EFLAG_".count)) }
        }
        lateDump(reader: frozenReader, sched: sched, into: &dump)
        func ms(_ d: Duration) -> Double { Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15 }
        dump.timing = DumpTiming(detectedBy: detectedBy, triggerToSettledMillis: ms(tSettled - t0),
                                 triggerToFrozenMillis: ms(tFrozen - t0), frozenToReadMillis: ms(tRead - tFrozen),
                                 totalMillis: ms(clock.now - t0))
        log.info("monitor: captured \(dump.kind) (\(dump.kindValue)): trigger→frozen \(dump.timing?.triggerToFrozenMillis ?? 0) ms, read \(dump.timing?.frozenToReadMillis ?? 0) ms")
        return dump
    }

    private func symbolize(_ bt: [UInt64], ctx: KernelContext, space: KernelAddressSpace, into dump: inout FailureDump) {
        guard !bt.isEmpty else { return }
        var symbolizer: (any Symbolizer)?
        if let g = GuestKallsyms(symbols: ctx.symbols, space: space) {
            symbolizer = g
            dump.symbolSource = "guest kallsyms tables"
        } else if let map = options.systemMap {
            symbolizer = KernelSymbols(systemMap: map)
            dump.symbolSource = "System.map"
        } else {
            dump.problems.append("backtrace not symbolized: the kernel's kallsyms tables were not found (symbols \(GuestKallsyms.symbolNames.joined(separator: ", ")))")
        }
        let bpf = BPFKallsyms(head: ctx.symbols["bpf_kallsyms"], btf: ctx.btf, space: space)
        dump.backtrace = bt.map { BacktraceFrame(address: $0, symbol: symbolizer?.symbolize($0) ?? bpf?.symbolize($0)) }
        if let bpf, bt.contains(where: { bpf.symbolize($0) != nil }) {
            dump.symbolSource = (dump.symbolSource.map { $0 + " + " } ?? "") + "bpf_kallsyms (BPF programs)"
        }
    }

    /// The kernel writes `exit_info->dump` from an irq_work right after the exit; when the
    /// freeze came first, wait (bounded) for the text to end with its event counters and settle.
    private func lateDump(reader: ScxReader, sched: UInt64, into dump: inout FailureDump) {
        func complete(_ s: String?) -> Bool { s?.contains("Event counters") == true }
        guard !complete(dump.schedulerDump), let ei = reader.exitInfoPointer(sched: sched) else { return }
        let clock = ContinuousClock()
        let deadline = clock.now + options.lateDumpTimeout
        var scratch = FailureDump(kind: dump.kind, kindValue: dump.kindValue)
        var previous: String?
        while clock.now < deadline {
            let text = reader.readDumpText(exitInfo: ei, into: &scratch)
            if complete(text), text == previous {
                dump.schedulerDump = text
                dump.schedulerDumpAfterThaw = true
                return
            }
            previous = text
            if stopping { break } // the VM is gone: its RAM holds the final text already
            Thread.sleep(forTimeInterval: 0.02)
        }
        if let previous, !previous.isEmpty {
            dump.schedulerDump = previous
            dump.schedulerDumpAfterThaw = true
            dump.problems.append("the kernel's dump text was still incomplete \(options.lateDumpTimeout) after the thaw")
        } else if dump.schedulerDump == nil {
            dump.problems.append("the kernel wrote no dump text (exit_info->dump empty) within \(options.lateDumpTimeout)")
        }
    }
}
