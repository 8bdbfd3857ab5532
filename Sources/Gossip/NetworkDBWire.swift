/// A node's membership of one network, with the Lamport time it was decided at.
struct NetworkRecord: Sendable, Hashable {
    var node: String
    var network: String
    var ltime: UInt64
    var leaving: Bool
}

/// One table entry write (create/update, or a delete when `deleted`).
struct EntryRecord: Sendable, Hashable {
    var owner: String
    var network: String
    var table: String
    var key: String
    var value: [UInt8]
    var ltime: UInt64
    var deleted: Bool
}

/// A node's full own state of one network; `reply` asks the receiver to answer with its own.
struct BulkRecord: Sendable, Hashable {
    var node: String
    var network: String
    var ltime: UInt64
    var reply: Bool
    var entries: [EntryRecord]
}

/// The table messages carried in memberlist user messages and push-pull user state.
enum TableMessage: Sendable, Hashable {
    case network(NetworkRecord)
    case networks([NetworkRecord])
    case entry(EntryRecord)
    case bulk(BulkRecord)
}

/// Encoding of table messages: a 3-byte prefix (`0xf7 'N' 1`, so other user messages pass
/// through untouched) and a MessagePack array `[type, fields...]`.
public enum TableWire {
    /// The bytes every table message starts with.
    public static let prefix: [UInt8] = [0xf7, 0x4e, 0x01]

    /// Whether `bytes` claim to be a table message (start with `prefix`).
    public static func isTableMessage(_ bytes: [UInt8]) -> Bool {
        bytes.count >= prefix.count && Array(bytes[0 ..< prefix.count]) == prefix
    }

    static func encode(_ m: TableMessage) -> [UInt8] {
        var out = prefix
        let v: MsgPackValue
        switch m {
        case .network(let r): v = .array([.uint(1), net(r)])
        case .networks(let rs): v = .array([.uint(2), .array(rs.map(net))])
        case .entry(let r): v = .array([.uint(3), entry(r)])
        case .bulk(let b):
            v = .array([.uint(4), .string(b.node), .string(b.network), .uint(b.ltime), .bool(b.reply), .array(b.entries.map(entry))])
        }
        MsgPack.encode(v, into: &out)
        return out
    }

    private static func net(_ r: NetworkRecord) -> MsgPackValue {
        .array([.string(r.node), .string(r.network), .uint(r.ltime), .bool(r.leaving)])
    }

    private static func entry(_ r: EntryRecord) -> MsgPackValue {
        .array([.string(r.owner), .string(r.network), .string(r.table), .string(r.key), .bin(r.value), .uint(r.ltime), .bool(r.deleted)])
    }

    static func decode(_ bytes: [UInt8]) -> TableMessage? {
        guard isTableMessage(bytes),
              let v = try? MsgPack.decode(Array(bytes[prefix.count...]), limits: MsgPackLimits(maxDepth: 8)),
              case .array(let a) = v, let type = a.first?.uint64
        else { return nil }
        switch (type, a.count) {
        case (1, 2): return net(a[1]).map { .network($0) }
        case (2, 2):
            guard case .array(let items) = a[1] else { return nil }
            let rs = items.compactMap(net)
            return rs.count == items.count ? .networks(rs) : nil
        case (3, 2): return entry(a[1]).map { .entry($0) }
        case (4, 6):
            guard let node = name(a[1]), let network = name(a[2]), let ltime = a[3].uint64, case .bool(let reply) = a[4],
                  case .array(let items) = a[5] else { return nil }
            let es = items.compactMap(entry)
            guard es.count == items.count else { return nil }
            return .bulk(BulkRecord(node: node, network: network, ltime: ltime, reply: reply, entries: es))
        default: return nil
        }
    }

    /// A non-empty name of at most 255 bytes.
    private static func name(_ v: MsgPackValue) -> String? {
        guard let b = v.bytes, !b.isEmpty, b.count <= 255 else { return nil }
        return String(decoding: b, as: UTF8.self)
    }

    private static func net(_ v: MsgPackValue) -> NetworkRecord? {
        guard case .array(let a) = v, a.count == 4, let node = name(a[0]), let network = name(a[1]), let ltime = a[2].uint64,
              case .bool(let leaving) = a[3] else { return nil }
        return NetworkRecord(node: node, network: network, ltime: ltime, leaving: leaving)
    }

    private static func entry(_ v: MsgPackValue) -> EntryRecord? {
        guard case .array(let a) = v, a.count == 7, let owner = name(a[0]), let network = name(a[1]), let table = name(a[2]),
              let key = name(a[3]), let value = a[4].bytes, let ltime = a[5].uint64, case .bool(let deleted) = a[6]
        else { return nil }
        return EntryRecord(owner: owner, network: network, table: table, key: key, value: value, ltime: ltime, deleted: deleted)
    }
}
