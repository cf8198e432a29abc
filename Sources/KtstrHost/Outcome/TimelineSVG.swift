import KtstrSchedExt
import KtstrProtocol

/// The picture of a `Timeline`: one lane per CPU with the task that was running as coloured
/// segments (workers by index, other tasks neutral, idle light grey), nr_running and the local
/// DSQ depth as a step band under each lane, a time axis in seconds, the markers as labelled
/// vertical lines, and a legend. A self-contained SVG (no fonts, no scripts, no links).
///
/// Guest text (comm names, marker labels) is XML-escaped, stripped of control characters and
/// truncated. The size is bounded: consecutive samples with the same task are one rect, and
/// when there are more segments than pixels each pixel column shows the task that ran longest
/// in it, so 10,000 samples on 8 CPUs stay well under a megabyte.
public enum TimelineSVG {
    /// Width of the picture in px; the height follows from the number of CPUs.
    public static let width = 1000.0

    public static func render(_ timeline: Timeline, workers: [WorkerStats] = [], title: String) -> String {
        var r = Renderer(timeline: timeline, workers: workers, title: title)
        return r.render()
    }

    // MARK: - Colours

    /// Workers, by index (no red: red is for stalls and error exits).
    static let workerPalette = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#edc948", "#76b7b2",
                                "#9c755f", "#ff9da7", "#1b4f72", "#a0cb6b", "#8e6cc4", "#d4a017"]
    static let otherTask = "#b9b3ab"
    static let idle = "#e4e4e4"
    static let nrFill = "#c6dbef", nrStroke = "#3b6fa0", dsqStroke = "#e07b00"
    static let red = "#d62728"

    static func workerColour(_ index: Int) -> String { workerPalette[((index % workerPalette.count) + workerPalette.count) % workerPalette.count] }

    /// A stable colour for a pid (when no workers are known): hue from the pid, fixed
    /// saturation and lightness so the comm text on it stays readable.
    static func pidColour(_ pid: Int32) -> String {
        let golden = 0.618033988749895
        var h = (Double(UInt32(bitPattern: pid)) * golden).truncatingRemainder(dividingBy: 1)
        if h > 0.95 || h < 0.03 { h = 0.5 + h / 4 } // keep clear of marker red
        return hsl(h, 0.5, 0.62)
    }

    static func hsl(_ h: Double, _ s: Double, _ l: Double) -> String {
        let c = (1 - abs(2 * l - 1)) * s
        let hp = h * 6
        let x = c * (1 - abs(hp.truncatingRemainder(dividingBy: 2) - 1))
        let (r1, g1, b1): (Double, Double, Double) = switch Int(hp) {
        case 0: (c, x, 0)
        case 1: (x, c, 0)
        case 2: (0, c, x)
        case 3: (0, x, c)
        case 4: (x, 0, c)
        default: (c, 0, x)
        }
        let m = l - c / 2
        return "#" + [r1, g1, b1].map { hex2(Int((($0 + m) * 255).rounded())) }.joined()
    }

    static func hex2(_ v: Int) -> String {
        let d = Array("0123456789abcdef")
        let c = max(0, min(255, v))
        return String([d[c / 16], d[c % 16]])
    }

    /// Dark text on light fills, white on dark ones.
    static func textColour(on fill: String) -> String {
        let u = Array(fill.utf8.dropFirst())
        guard u.count == 6 else { return "#222" }
        func v(_ i: Int) -> Double {
            func n(_ b: UInt8) -> Int { b >= 97 ? Int(b) - 87 : b >= 65 ? Int(b) - 55 : Int(b) - 48 }
            return Double(n(u[i]) * 16 + n(u[i + 1])) / 255
        }
        let lum = 0.299 * v(0) + 0.587 * v(2) + 0.114 * v(4)
        return lum < 0.5 ? "#fff" : "#222"
    }

    static func markerStyle(_ m: TimelineMarker) -> (colour: String, width: Double, dash: String?) {
        switch m.kind {
        case .schedulerEnabled: ("#2e7d32", 1.5, nil)
        case .phase: ("#555555", 1, "4 3")
        case .hostStall: (red, 1.5, nil)
        case .bpfWrite: ("#7b3fa0", 1, "2 2")
        case .schedulerExit: isErrorExit(m.label) ? (red, 2, nil) : ("#333333", 1.5, nil)
        }
    }

    /// The label of an exit marker starts with the kind's name ("error_stall", "unreg_bpf: …").
    static func isErrorExit(_ label: String) -> Bool {
        let name = String(label.prefix { $0.isLetter || $0.isNumber || $0 == "_" })
        if let v = ExitKind(name).value { return v >= ExitKind.errorThreshold }
        return name.hasPrefix("error")
    }

    static func kindName(_ k: TimelineMarker.Kind) -> String {
        switch k {
        case .schedulerEnabled: "scheduler enabled"
        case .phase: "phase"
        case .hostStall: "host stall"
        case .bpfWrite: "BPF write"
        case .schedulerExit: "scheduler exit"
        }
    }

    // MARK: - Text

    /// XML-escaped, control characters replaced, at most `limit` characters (the last one an
    /// ellipsis when cut). Safe in text content and in double- or single-quoted attributes.
    static func escape(_ s: String, limit: Int = 64) -> String {
        let chars = Array(s.prefix(limit + 1))
        let cut = chars.count > limit
        var out = ""
        out.reserveCapacity(chars.count + 8)
        for ch in cut ? Array(chars.prefix(max(0, limit - 1))) : chars {
            for u in ch.unicodeScalars {
                switch u {
                case "&": out += "&amp;"
                case "<": out += "&lt;"
                case ">": out += "&gt;"
                case "\"": out += "&quot;"
                case "'": out += "&apos;"
                default:
                    let v = u.value
                    if v < 0x20 || (0x7f...0x9f).contains(v) || v == 0xfffe || v == 0xffff { out += "?" } else { out.unicodeScalars.append(u) }
                }
            }
        }
        if cut { out += "…" }
        return out
    }

    /// One decimal, no trailing ".0": short coordinates keep the file small.
    static func num(_ x: Double) -> String {
        guard x.isFinite else { return "0" }
        let i = Int((x * 10).rounded())
        let a = abs(i)
        return (i < 0 ? "-" : "") + String(a / 10) + (a % 10 == 0 ? "" : "." + String(a % 10))
    }

    /// Seconds with `decimals` decimals.
    static func seconds(_ ms: Double, decimals: Int) -> String {
        var p = 1
        for _ in 0..<decimals { p *= 10 }
        let v = Int((ms / 1000 * Double(p)).rounded())
        let a = abs(v)
        var s = (v < 0 ? "-" : "") + String(a / p)
        if decimals > 0 {
            var frac = String(a % p)
            while frac.count < decimals { frac = "0" + frac }
            s += "." + frac
        }
        return s
    }

    /// Tick step in ms for a span: 1, 2 or 5 × 10^k, about 10 ticks.
    static func tickStep(spanMillis: Double) -> (step: Double, decimals: Int) {
        let raw = max(spanMillis / 10, 1)
        var p = 1.0
        while p * 10 <= raw { p *= 10 }
        let step = [1.0, 2, 5, 10].map { $0 * p }.first { $0 >= raw } ?? p * 10
        let decimals = step >= 1000 ? 0 : step >= 100 ? 1 : step >= 10 ? 2 : 3
        return (step, decimals)
    }

    // MARK: - Data

    struct Segment {
        var start: Double, end: Double
        var pid: Int32
        var comm: String?
        /// True when a pixel column summarises several tasks (dense timelines).
        var mostly = false
    }

    /// Sample spacing: the median gap between samples (the outcome's copy may keep every n-th).
    static func spacing(_ t: Timeline) -> Double {
        var deltas: [Int] = []
        deltas.reserveCapacity(t.samples.count)
        for i in t.samples.indices.dropFirst() {
            let d = t.samples[i].millis - t.samples[i - 1].millis
            if d > 0 { deltas.append(d) }
        }
        guard !deltas.isEmpty else { return Double(max(t.intervalMillis, 1)) }
        deltas.sort()
        return Double(deltas[deltas.count / 2])
    }

    /// The running task on one CPU as merged segments. A sample holds until the next one,
    /// unless that is more than 2.5 spacings away (a gap stays empty). Unread pids are gaps.
    static func segments(_ t: Timeline, cpu: Int, spacing: Double) -> [Segment] {
        var out: [Segment] = []
        let s = t.samples
        for i in s.indices {
            guard cpu < s[i].cpus.count, let pid = s[i].cpus[cpu].currentPID else { continue }
            let start = Double(s[i].millis)
            let end = i + 1 < s.count ? min(Double(s[i + 1].millis), start + 2.5 * spacing) : start + spacing
            guard end > start else { continue }
            let comm = s[i].cpus[cpu].currentComm
            if var last = out.last, last.pid == pid, last.comm == comm, abs(last.end - start) < 0.001 {
                last.end = end
                out[out.count - 1] = last
            } else {
                out.append(Segment(start: start, end: end, pid: pid, comm: comm))
            }
        }
        return out
    }

    /// More segments than columns: per column, the task that ran longest in it; equal
    /// neighbours merged again.
    static func bucket(_ segs: [Segment], t0: Double, msPerColumn: Double, columns: Int) -> [Segment] {
        var best = [(pid: Int32, comm: String?, ms: Double, mixed: Bool)?](repeating: nil, count: columns)
        var acc: [Int: [Int32: (String?, Double)]] = [:]
        for s in segs {
            let c0 = max(0, Int((s.start - t0) / msPerColumn)), c1 = min(columns - 1, Int((s.end - t0) / msPerColumn))
            guard c0 <= c1 else { continue }
            for c in c0...c1 {
                let lo = max(s.start, t0 + Double(c) * msPerColumn), hi = min(s.end, t0 + Double(c + 1) * msPerColumn)
                guard hi > lo else { continue }
                acc[c, default: [:]][s.pid, default: (s.comm, 0)].1 += hi - lo
            }
        }
        for (c, tasks) in acc {
            if let top = tasks.max(by: { $0.value.1 < $1.value.1 || ($0.value.1 == $1.value.1 && $0.key > $1.key) }) {
                best[c] = (top.key, top.value.0, top.value.1, tasks.count > 1)
            }
        }
        var out: [Segment] = []
        for c in 0..<columns {
            guard let b = best[c] else { continue }
            let start = t0 + Double(c) * msPerColumn, end = start + msPerColumn
            if var last = out.last, last.pid == b.pid, last.comm == b.comm, abs(last.end - start) < 0.001 {
                last.end = end
                last.mostly = last.mostly || b.mixed
                out[out.count - 1] = last
            } else {
                out.append(Segment(start: start, end: end, pid: b.pid, comm: b.comm, mostly: b.mixed))
            }
        }
        return out
    }

    /// (ms, value) as steps, at most one point per column (the column's maximum).
    static func steps(_ points: [(Double, Double)], t0: Double, msPerColumn: Double, columns: Int) -> [(Double, Double)] {
        guard points.count > columns else { return points }
        var out: [(Double, Double)] = []
        var col = -1
        for (ms, v) in points {
            let c = min(columns - 1, max(0, Int((ms - t0) / msPerColumn)))
            if c == col, let last = out.last { out[out.count - 1].1 = max(last.1, v) } else {
                out.append((t0 + Double(c) * msPerColumn, v)); col = c
            }
        }
        return out
    }
}

/// One render: layout numbers and the growing text.
private struct Renderer {
    let t: Timeline
    let workers: [WorkerStats]
    let title: String
    var out = ""

    // Layout (px).
    let left = 74.0, right = 16.0
    let cpus: Int
    let laneH: Double, bandH: Double, laneGap: Double
    let t0: Double, t1: Double
    let spacing: Double
    var plotW: Double { TimelineSVG.width - left - right }
    let workerByPID: [Int32: WorkerStats]
    static let maxMarkers = 400

    init(timeline: Timeline, workers: [WorkerStats], title: String) {
        t = timeline; self.workers = workers.sorted { $0.index < $1.index }; self.title = title
        cpus = timeline.samples.map(\.cpus.count).max() ?? 0
        laneH = cpus <= 4 ? 32 : cpus <= 8 ? 26 : max(8, 26 * 8 / Double(cpus))
        bandH = cpus <= 4 ? 20 : cpus <= 8 ? 16 : max(5, 16 * 8 / Double(cpus))
        laneGap = cpus <= 8 ? 12 : 4
        let spacing = TimelineSVG.spacing(timeline)
        self.spacing = spacing
        let first = Double(min(0, timeline.samples.first?.millis ?? 0))
        let lastSample = timeline.samples.last.map { Double($0.millis) + spacing } ?? 0
        let lastMarker = Double(timeline.markers.map(\.millis).max() ?? 0)
        t0 = first
        t1 = max(lastSample, lastMarker + spacing / 2, first + 1000)
        var byPID: [Int32: WorkerStats] = [:]
        for w in workers { if let p = Int32(exactly: w.pid) { byPID[p] = w } }
        workerByPID = byPID
    }

    func x(_ ms: Double) -> Double { left + (ms - t0) / (t1 - t0) * plotW }
    func n(_ v: Double) -> String { TimelineSVG.num(v) }

    func colour(_ pid: Int32) -> String {
        if pid == 0 { return TimelineSVG.idle }
        if let w = workerByPID[pid] { return TimelineSVG.workerColour(w.index) }
        return workers.isEmpty ? TimelineSVG.pidColour(pid) : TimelineSVG.otherTask
    }

    mutating func render() -> String {
        let markers = t.markers.sorted { $0.millis < $1.millis }
        let drawn = Array(markers.prefix(Self.maxMarkers))

        // Marker labels: greedy rows, left to right, so close markers do not overprint.
        let charW = 5.9, labelRowH = 13.0, maxRows = 4
        var rowEnd = [Double](repeating: -1e9, count: maxRows)
        var placed: [(m: TimelineMarker, x: Double, row: Int, anchorEnd: Bool, text: String)] = []
        for m in drawn {
            let mx = x(Double(m.millis))
            let text = TimelineSVG.escape(m.label.isEmpty ? TimelineSVG.kindName(m.kind) : m.label, limit: 48)
            let w = Double(min(48, max(1, m.label.isEmpty ? TimelineSVG.kindName(m.kind).count : m.label.count))) * charW + 6
            let anchorEnd = mx + w > TimelineSVG.width - 2
            let (lo, hi) = anchorEnd ? (mx - w, mx) : (mx, mx + w)
            let row = rowEnd.firstIndex { $0 < lo } ?? rowEnd.indices.min { rowEnd[$0] < rowEnd[$1] }!
            rowEnd[row] = max(rowEnd[row], hi)
            placed.append((m, mx, row, anchorEnd, text))
        }
        let rowsUsed = (placed.map(\.row).max() ?? -1) + 1

        let headerH = 46.0
        let labelsTop = headerH
        let lanesTop = labelsTop + Double(rowsUsed) * labelRowH + (rowsUsed > 0 ? 6 : 0)
        let laneStep = laneH + bandH + laneGap
        let lanesBottom = lanesTop + Double(max(cpus, 1)) * laneStep - laneGap
        let axisY = lanesBottom + 4
        let legendTop = axisY + 34

        // Legend items (laid out before the height is known).
        var legend: [(swatch: String, label: String)] = []
        let maxWorkers = 24
        for w in workers.prefix(maxWorkers) {
            legend.append((rectSwatch(TimelineSVG.workerColour(w.index)), "worker \(w.index) (pid \(w.pid))"))
        }
        if workers.count > maxWorkers { legend.append(("", "+\(workers.count - maxWorkers) more workers")) }
        if workers.isEmpty {
            legend.append((rectSwatch(TimelineSVG.pidColour(1234), w: 8) + rectSwatch(TimelineSVG.pidColour(77), dx: 8, w: 8), "a colour per pid"))
        } else {
            legend.append((rectSwatch(TimelineSVG.otherTask), "other task"))
        }
        legend.append((rectSwatch(TimelineSVG.idle), "idle (pid 0)"))
        legend.append((rectSwatch(TimelineSVG.nrFill, stroke: TimelineSVG.nrStroke), "nr_running"))
        let showDSQ = t.samples.contains { $0.cpus.contains { $0.localDSQDepth > 0 } }
        if showDSQ { legend.append((lineSwatch(TimelineSVG.dsqStroke, nil, 1.5), "local DSQ depth")) }
        var seenKinds: [String] = []
        for m in drawn {
            let st = TimelineSVG.markerStyle(m)
            let name = TimelineSVG.kindName(m.kind) + (m.kind == .schedulerExit && st.colour == TimelineSVG.red ? " (error)" : "")
            if !seenKinds.contains(name) {
                seenKinds.append(name)
                legend.append((lineSwatch(st.colour, st.dash, st.width), name))
            }
        }
        var legendPos: [(x: Double, y: Double)] = []
        var lx = left, ly = legendTop
        for item in legend {
            let w = 22 + Double(item.label.count) * 6.2 + 16
            if lx + w > TimelineSVG.width - right, lx > left { lx = left; ly += 18 }
            legendPos.append((lx, ly))
            lx += w
        }
        let height = (ly + 22).rounded()

        out.reserveCapacity(4096 + t.samples.count * max(cpus, 1) * 8)
        out += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        out += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(n(TimelineSVG.width))\" height=\"\(n(height))\" viewBox=\"0 0 \(n(TimelineSVG.width)) \(n(height))\" font-family=\"sans-serif\" font-size=\"11\">\n"
        out += "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n"

        // Header.
        out += "<text x=\"\(n(left))\" y=\"18\" font-size=\"14\" font-weight=\"bold\" fill=\"#222\">\(TimelineSVG.escape(title, limit: 140))</text>\n"
        var sub = "\(t.samples.count) samples every \(n(spacing)) ms"
        if t.intervalMillis > 0, Double(t.intervalMillis) != spacing { sub += " (asked \(t.intervalMillis) ms)" }
        if t.droppedSamples > 0 { sub += ", \(t.droppedSamples) left out" }
        sub += ", \(cpus) CPU\(cpus == 1 ? "" : "s"), host sampling cost \(n(t.samplingMillis)) ms"
        if markers.count > drawn.count { sub += ", \(markers.count - drawn.count) markers not drawn" }
        out += "<text x=\"\(n(left))\" y=\"34\" fill=\"#666\">\(TimelineSVG.escape(sub, limit: 200))</text>\n"

        // Grid and axis.
        let (step, decimals) = TimelineSVG.tickStep(spanMillis: t1 - t0)
        var tick = (t0 / step).rounded(.up) * step
        out += "<g stroke=\"#ececec\" stroke-width=\"1\">"
        var ticks: [Double] = []
        while tick <= t1 + 0.001, ticks.count < 200 { ticks.append(tick); tick += step }
        for tk in ticks { out += "<line x1=\"\(n(x(tk)))\" y1=\"\(n(lanesTop - 2))\" x2=\"\(n(x(tk)))\" y2=\"\(n(axisY))\"/>" }
        out += "</g>\n"
        out += "<line x1=\"\(n(left))\" y1=\"\(n(axisY))\" x2=\"\(n(left + plotW))\" y2=\"\(n(axisY))\" stroke=\"#888\"/>\n"
        out += "<g fill=\"#444\" text-anchor=\"middle\">"
        for tk in ticks {
            out += "<line x1=\"\(n(x(tk)))\" y1=\"\(n(axisY))\" x2=\"\(n(x(tk)))\" y2=\"\(n(axisY + 4))\" stroke=\"#888\"/>"
            out += "<text x=\"\(n(x(tk)))\" y=\"\(n(axisY + 15))\">\(TimelineSVG.seconds(tk, decimals: decimals))</text>"
        }
        out += "</g>\n"
        out += "<text x=\"\(n(left + plotW))\" y=\"\(n(axisY + 28))\" text-anchor=\"end\" fill=\"#444\">time (s)</text>\n"

        // Lanes.
        let columns = max(1, Int(plotW))
        let msPerColumn = (t1 - t0) / Double(columns)
        var nrMax = 2.0
        for s in t.samples { for c in s.cpus { nrMax = max(nrMax, Double(c.nrRunning), Double(c.localDSQDepth)) } }
        if t.samples.isEmpty {
            out += "<text x=\"\(n(left + plotW / 2))\" y=\"\(n(lanesTop + 20))\" text-anchor=\"middle\" fill=\"#888\">no samples</text>\n"
        }
        for cpu in 0..<cpus {
            let y = lanesTop + Double(cpu) * laneStep
            let bandTop = y + laneH + 1, bandBottom = y + laneH + bandH
            out += "<g>"
            out += "<text x=\"\(n(left - 8))\" y=\"\(n(y + laneH / 2 + 4))\" text-anchor=\"end\" font-weight=\"bold\" fill=\"#333\">cpu \(cpu)</text>"
            out += "<text x=\"\(n(left - 8))\" y=\"\(n(bandBottom - 1))\" text-anchor=\"end\" font-size=\"9\" fill=\"#777\">nr 0–\(Int(nrMax))</text>"
            out += "<rect x=\"\(n(left))\" y=\"\(n(y))\" width=\"\(n(plotW))\" height=\"\(n(laneH))\" fill=\"#fafafa\" stroke=\"#d0d0d0\" stroke-width=\"0.5\"/>"
            out += "</g>\n"

            var segs = TimelineSVG.segments(t, cpu: cpu, spacing: spacing)
            if segs.count > columns / 2 { segs = TimelineSVG.bucket(segs, t0: t0, msPerColumn: msPerColumn, columns: columns) }
            // White edges between tasks only where segments are wide enough for them to show.
            out += segs.isEmpty || plotW / Double(segs.count) < 6 ? "<g>" : "<g stroke=\"#ffffff\" stroke-width=\"0.5\">"
            for s in segs {
                let x0 = x(s.start), x1 = x(s.end)
                let fill = colour(s.pid)
                let what = s.pid == 0 ? "idle" : "pid \(s.pid) \(TimelineSVG.escape(s.comm ?? "?", limit: 16))"
                let tip = "cpu \(cpu): \(s.mostly ? "mostly " : "")\(what), \(TimelineSVG.seconds(s.start, decimals: 2))–\(TimelineSVG.seconds(s.end, decimals: 2)) s"
                out += "<rect x=\"\(n(x0))\" y=\"\(n(y + 1))\" width=\"\(n(max(0.3, x1 - x0)))\" height=\"\(n(laneH - 2))\" fill=\"\(fill)\"><title>\(tip)</title></rect>"
            }
            out += "</g>\n"
            // Comm names inside segments wide enough to hold a few characters.
            if laneH >= 14 {
                out += "<g font-size=\"10\">"
                for s in segs where s.pid != 0 {
                    let x0 = x(s.start), w = x(s.end) - x0
                    let fit = Int((w - 6) / 5.6)
                    guard fit >= 3 else { continue }
                    let label = (workerByPID[s.pid].map { "w\($0.index) " } ?? "") + (s.comm ?? "pid \(s.pid)")
                    out += "<text x=\"\(n(x0 + 3))\" y=\"\(n(y + laneH / 2 + 3.5))\" fill=\"\(TimelineSVG.textColour(on: colour(s.pid)))\">\(TimelineSVG.escape(label, limit: min(fit, 24)))</text>"
                }
                out += "</g>\n"
            }

            // nr_running (filled steps) and the local DSQ depth (line).
            func yv(_ v: Double) -> Double { bandBottom - min(v, nrMax) / nrMax * (bandBottom - bandTop) }
            let end = t.samples.last.map { Double($0.millis) + spacing } ?? t1
            let nr = TimelineSVG.steps(t.samples.compactMap { cpu < $0.cpus.count ? (Double($0.millis), Double($0.cpus[cpu].nrRunning)) : nil },
                                       t0: t0, msPerColumn: msPerColumn, columns: columns)
            out += "<line x1=\"\(n(left))\" y1=\"\(n(bandBottom))\" x2=\"\(n(left + plotW))\" y2=\"\(n(bandBottom))\" stroke=\"#d0d0d0\" stroke-width=\"0.5\"/>"
            if let first = nr.first {
                var d = "M\(n(x(first.0))) \(n(bandBottom))"
                for (i, p) in nr.enumerated() {
                    d += "V\(n(yv(p.1)))H\(n(x(i + 1 < nr.count ? nr[i + 1].0 : end)))"
                }
                d += "V\(n(bandBottom))Z"
                out += "<path d=\"\(d)\" fill=\"\(TimelineSVG.nrFill)\" stroke=\"\(TimelineSVG.nrStroke)\" stroke-width=\"0.8\"/>"
            }
            if showDSQ {
                let dq = TimelineSVG.steps(t.samples.compactMap { cpu < $0.cpus.count ? (Double($0.millis), Double($0.cpus[cpu].localDSQDepth)) : nil },
                                           t0: t0, msPerColumn: msPerColumn, columns: columns)
                if let first = dq.first {
                    var d = "M\(n(x(first.0))) \(n(yv(first.1)))"
                    for (i, p) in dq.enumerated() {
                        d += "V\(n(yv(p.1)))H\(n(x(i + 1 < dq.count ? dq[i + 1].0 : end)))"
                    }
                    out += "<path d=\"\(d)\" fill=\"none\" stroke=\"\(TimelineSVG.dsqStroke)\" stroke-width=\"1.2\"/>"
                }
            }
            out += "\n"
        }

        // Markers: a line through every lane, the label in its row above, a tab on the CPU's lane.
        for p in placed {
            let st = TimelineSVG.markerStyle(p.m)
            let labelY = labelsTop + Double(p.row) * labelRowH + 10
            let dash = st.dash.map { " stroke-dasharray=\"\($0)\"" } ?? ""
            out += "<g><title>\(TimelineSVG.kindName(p.m.kind)) at \(TimelineSVG.seconds(Double(p.m.millis), decimals: 2)) s: \(TimelineSVG.escape(p.m.label, limit: 120))</title>"
            out += "<line x1=\"\(n(p.x))\" y1=\"\(n(labelY - 9))\" x2=\"\(n(p.x))\" y2=\"\(n(lanesBottom))\" stroke=\"\(st.colour)\" stroke-width=\"\(n(st.width))\"\(dash)/>"
            if let c = p.m.cpu, c >= 0, c < cpus {
                let y = lanesTop + Double(c) * laneStep
                out += "<rect x=\"\(n(p.x - 2.5))\" y=\"\(n(y))\" width=\"5\" height=\"\(n(laneH))\" fill=\"\(st.colour)\"/>"
            }
            let tx = p.anchorEnd ? p.x - 3 : p.x + 3
            out += "<text x=\"\(n(tx))\" y=\"\(n(labelY))\"\(p.anchorEnd ? " text-anchor=\"end\"" : "") font-size=\"10\" fill=\"\(st.colour)\" font-weight=\"bold\">\(p.text)</text></g>\n"
        }

        // Legend.
        for (item, pos) in zip(legend, legendPos) {
            out += "<g transform=\"translate(\(n(pos.x)),\(n(pos.y)))\">\(item.swatch)<text x=\"22\" y=\"10\" fill=\"#333\">\(TimelineSVG.escape(item.label, limit: 60))</text></g>\n"
        }
        out += "</svg>\n"
        return out
    }

    func rectSwatch(_ fill: String, stroke: String? = nil, dx: Double = 0, w: Double = 16) -> String {
        "<rect x=\"\(n(dx))\" y=\"1\" width=\"\(n(w))\" height=\"11\" fill=\"\(fill)\"" + (stroke.map { " stroke=\"\($0)\"" } ?? "") + "/>"
    }

    func lineSwatch(_ colour: String, _ dash: String?, _ width: Double) -> String {
        "<line x1=\"8\" y1=\"0\" x2=\"8\" y2=\"13\" stroke=\"\(colour)\" stroke-width=\"\(n(width))\"" + (dash.map { " stroke-dasharray=\"\($0)\"" } ?? "") + "/>"
    }
}
