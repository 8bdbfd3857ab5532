/// serf's node metadata format: tag magic byte 0xff followed by a MessagePack map of strings
/// (serf `encodeTags`/`decodeTags`). Meta without the magic byte is read by serf as the "role" tag.
public enum SerfTags {
    /// Encodes `tags` (sorted by key) the way serf puts them in memberlist `Meta`.
    public static func encode(_ tags: [String: String]) -> [UInt8] {
        [0xff] + MsgPack.encode(.map(tags.keys.sorted().map { MsgPackPair(.string($0), .string(tags[$0]!)) }))
    }

    /// Decodes serf meta; nil if it is not a tag map (serf would treat it as a plain role string).
    public static func decode(_ meta: [UInt8]) -> [String: String]? {
        guard meta.first == 0xff, case .map(let pairs)? = try? MsgPack.decode(Array(meta.dropFirst())) else { return nil }
        var out: [String: String] = [:]
        for p in pairs {
            guard let k = p.key.text, let v = p.value.text else { return nil }
            out[k] = v
        }
        return out
    }
}
