import Foundation

/// The nameservers, search domains and options of a resolv.conf.
public struct ResolvConf: Sendable, Hashable {
    /// The `nameserver` lines, in order.
    public var nameservers: [String] = []
    /// The search domains (`search` or `domain`, the last line wins).
    public var search: [String] = []
    /// The `options` words.
    public var options: [String] = []

    /// Parses a resolv.conf; lines it does not know are skipped.
    public init(parsing text: String) {
        for raw in text.split(whereSeparator: \.isNewline) {
            let line = raw.split(maxSplits: 1, omittingEmptySubsequences: false, whereSeparator: { $0 == "#" || $0 == ";" }).first ?? ""
            let words = line.split(whereSeparator: { $0.isWhitespace }).map(String.init)
            guard let key = words.first else { continue }
            switch key {
            case "nameserver": if words.count > 1 { nameservers.append(words[1]) }
            case "search", "domain": search = Array(words.dropFirst())
            case "options": options += words.dropFirst()
            default: continue
            }
        }
    }

    /// The file a container gets: our server first and only, the host's search domains, ndots:0.
    public static func forContainer(search: [String], address: String) -> String {
        var out = "# written by overlayd: the embedded DNS server answers here\nnameserver \(address)\n"
        if !search.isEmpty { out += "search \(search.joined(separator: " "))\n" }
        out += "options ndots:0\n"
        return out
    }
}
