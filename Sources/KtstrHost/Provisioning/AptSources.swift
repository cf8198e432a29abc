import Foundation
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

/// The system's apt sources, read only to learn which Debian mirror this machine uses, and
/// the private deb822 file ktstr writes for trixie-backports (the system's config is never
/// touched). Pure: parsing and generation take and return text.
public struct AptSources: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var types: [String]
        public var uris: [String]
        public var suites: [String]
        public var enabled: Bool
    }

    public var entries: [Entry]

    public init(entries: [Entry]) { self.entries = entries }

    /// Codenames and aliases of Debian suites: an entry with one of these is a Debian mirror
    /// (an Ubuntu or third-party entry is not, even if it is listed first).
    static let debianSuites: Set<String> = [
        "buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
        "oldoldstable", "oldstable", "stable", "testing", "unstable", "experimental",
    ]

    /// Parses deb822 `.sources` text (paragraphs separated by blank lines, `#` comments,
    /// continuation lines starting with a space).
    public static func parseDeb822(_ text: String) -> [Entry] {
        var entries: [Entry] = []
        var fields: [String: String] = [:]
        var lastKey: String?
        func flush() {
            defer { fields = [:]; lastKey = nil }
            guard !fields.isEmpty else { return }
            let words = { (k: String) in (fields[k] ?? "").split(whereSeparator: \.isWhitespace).map(String.init) }
            entries.append(Entry(types: words("types"), uris: words("uris"), suites: words("suites"),
                                 enabled: (fields["enabled"] ?? "yes").lowercased() != "no"))
        }
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = String(raw)
            if line.hasPrefix("#") { continue }
            if line.trimmingCharacters(in: .whitespaces).isEmpty { flush(); continue }
            if line.first == " " || line.first == "\t" {
                if let k = lastKey { fields[k, default: ""] += " " + line.trimmingCharacters(in: .whitespaces) }
                continue
            }
            guard let colon = line.firstIndex(of: ":") else { continue }
            let key = line[..<colon].trimmingCharacters(in: .whitespaces).lowercased()
            fields[key] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            lastKey = key
        }
        flush()
        return entries
    }

    /// Parses one-line-style `sources.list` text: `deb [opts] URI suite [components...]`.
    public static func parseOneLine(_ text: String) -> [Entry] {
        var entries: [Entry] = []
        for raw in text.split(separator: "\n") {
            var line = Substring(raw)
            if let hash = line.firstIndex(of: "#") { line = line[..<hash] }
            // Drop the [ option=value ... ] block, if any.
            if let open = line.firstIndex(of: "["), let close = line.firstIndex(of: "]"), open < close {
                line = Substring(String(line[..<open]) + " " + String(line[line.index(after: close)...]))
            }
            let words = line.split(whereSeparator: \.isWhitespace).map(String.init)
            guard words.count >= 3, words[0] == "deb" || words[0] == "deb-src" else { continue }
            entries.append(Entry(types: [words[0]], uris: [words[1]], suites: [words[2]], enabled: true))
        }
        return entries
    }

    /// Reads `/etc/apt/sources.list`, `sources.list.d/*.list` and `sources.list.d/*.sources`
    /// under `root` (a test passes a fake root).
    public static func system(root: String = "/etc/apt") -> AptSources {
        let fm = FileManager.default
        var entries: [Entry] = []
        if let text = try? String(contentsOfFile: root + "/sources.list", encoding: .utf8) {
            entries += parseOneLine(text)
        }
        let dir = root + "/sources.list.d"
        for name in ((try? fm.contentsOfDirectory(atPath: dir)) ?? []).sorted() {
            guard let text = try? String(contentsOfFile: dir + "/" + name, encoding: .utf8) else { continue }
            if name.hasSuffix(".sources") { entries += parseDeb822(text) }
            else if name.hasSuffix(".list") { entries += parseOneLine(text) }
        }
        return AptSources(entries: entries)
    }

    /// The first enabled binary Debian archive mirror (not the security archive).
    public var debianMirror: String? {
        for e in entries where e.enabled && e.types.contains("deb") {
            let isDebian = e.suites.contains { suite in
                let base = suite.split(separator: "-").first.map(String.init) ?? suite
                return Self.debianSuites.contains(base) && !suite.hasSuffix("-security") && !suite.contains("/updates")
            }
            guard isDebian else { continue }
            if let uri = e.uris.first(where: { !$0.contains("debian-security") }) {
                return uri.hasSuffix("/") ? String(uri.dropLast()) : uri
            }
        }
        return nil
    }

    /// The private deb822 file for the suite ktstr downloads kernels and sources from.
    public static func privateSource(mirror: String, suite: String = "trixie-backports",
                                     keyring: String = "/usr/share/keyrings/debian-archive-keyring.gpg") -> String {
        """
        # Written by ktstr setup: guest kernels and linux-source come from here.
        # Used only through ktstr's private apt options; the system's apt never reads it.
        Types: deb
        URIs: \(mirror)
        Suites: \(suite)
        Components: main
        Signed-By: \(keyring)

        """
    }
}
