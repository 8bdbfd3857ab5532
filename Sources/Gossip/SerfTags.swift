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

/// serf's own intent messages, sent as memberlist user messages, for nodes that want serf agents
/// to report them as "left" (serf needs a leave intent before memberlist's leave) or to see a
/// join intent. Encodings follow serf messages.go: one type byte, then a MessagePack struct.
public enum SerfIntent {
    /// `messageLeave{LTime, Node, Prune}` with serf type 0.
    public static func leave(node: String, lamportTime: UInt64, prune: Bool = false) -> [UInt8] {
        [0] + MsgPack.encode(.map([MsgPackPair(.string("LTime"), .int(Int64(clamping: lamportTime))),
                                   MsgPackPair(.string("Node"), .string(node)),
                                   MsgPackPair(.string("Prune"), .bool(prune))]))
    }

    /// `messageJoin{LTime, Node}` with serf type 1.
    public static func join(node: String, lamportTime: UInt64) -> [UInt8] {
        [1] + MsgPack.encode(.map([MsgPackPair(.string("LTime"), .int(Int64(clamping: lamportTime))),
                                   MsgPackPair(.string("Node"), .string(node))]))
    }
}
