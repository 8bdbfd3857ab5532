/// A node's membership of one network, with the Lamport time it was decided at.
struct NetworkRecord: Sendable, Hashable {
    var node: String
    var network: String
    var ltime: UInt64
    var leaving: Bool
    /// The node's signature of a leave (``TableAuthenticator``); empty otherwise.
    var signature: [UInt8] = []
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
    /// The owner's signature of a delete (``TableAuthenticator``); empty otherwise.
    var signature: [UInt8] = []
}

/// A node's full own state of one network; `reply` asks the receiver to answer with its own.
struct BulkRecord: Sendable, Hashable {
    var node: String
    var network: String
    var ltime: UInt64
    var reply: Bool
    var entries: [EntryRecord]
    /// The node's signature of the sync (``TableAuthenticator``): what it names is all it has.
    var signature: [UInt8] = []
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
            var fields: [MsgPackValue] = [.uint(4), .string(b.node), .string(b.network), .uint(b.ltime), .bool(b.reply), .array(b.entries.map(entry))]
            if !b.signature.isEmpty { fields.append(.bin(b.signature)) }
            v = .array(fields)
        }
        MsgPack.encode(v, into: &out)
        return out
    }

    private static func net(_ r: NetworkRecord) -> MsgPackValue {
        let fields: [MsgPackValue] = [.string(r.node), .string(r.network), .uint(r.ltime), .bool(r.leaving)]
        return .array(r.signature.isEmpty ? fields : fields + [.bin(r.signature)])
    }

    private static func entry(_ r: EntryRecord) -> MsgPackValue {
        let fields: [MsgPackValue] = [.string(r.owner), .string(r.network), .string(r.table), .string(r.key), .bin(r.value), .uint(r.ltime), .bool(r.deleted)]
        return .array(r.signature.isEmpty ? fields : fields + [.bin(r.signature)])
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
        case (4, 6), (4, 7):
            guard let node = name(a[1]), let network = name(a[2]), let ltime = a[3].uint64, case .bool(let reply) = a[4],
                  case .array(let items) = a[5] else { return nil }
            let es = items.compactMap(entry)
            guard es.count == items.count else { return nil }
            var signature: [UInt8] = []
            if a.count == 7 {
                guard let s = a[6].bytes, s.count <= 512 else { return nil }
                signature = s
            }
            return .bulk(BulkRecord(node: node, network: network, ltime: ltime, reply: reply, entries: es, signature: signature))
        default: return nil
        }
    }

    /// A non-empty name of at most 255 bytes.
    private static func name(_ v: MsgPackValue) -> String? {
        guard let b = v.bytes, !b.isEmpty, b.count <= 255 else { return nil }
        return String(decoding: b, as: UTF8.self)
    }

    private static func net(_ v: MsgPackValue) -> NetworkRecord? {
        guard case .array(let a) = v, a.count == 4 || a.count == 5, let node = name(a[0]), let network = name(a[1]), let ltime = a[2].uint64,
              case .bool(let leaving) = a[3] else { return nil }
        var signature: [UInt8] = []
        if a.count == 5 {
            guard let s = a[4].bytes, s.count <= 512 else { return nil }
            signature = s
        }
        return NetworkRecord(node: node, network: network, ltime: ltime, leaving: leaving, signature: signature)
    }

    private static func entry(_ v: MsgPackValue) -> EntryRecord? {
        guard case .array(let a) = v, a.count == 7 || a.count == 8, let owner = name(a[0]), let network = name(a[1]), let table = name(a[2]),
              let key = name(a[3]), let value = a[4].bytes, let ltime = a[5].uint64, case .bool(let deleted) = a[6]
        else { return nil }
        var signature: [UInt8] = []
        if a.count == 8 {
            guard let s = a[7].bytes, s.count <= 512 else { return nil }
            signature = s
        }
        return EntryRecord(owner: owner, network: network, table: table, key: key, value: value, ltime: ltime, deleted: deleted,
                           signature: signature)
    }
}

/// Proves who wrote the table records that take something away: a delete (tombstone), a node
/// leaving a network (its entries go), and a bulk sync (the entries of its node it does not name
/// go). With one set, a node signs its own and drops others' that do not verify, so a holder of
/// the gossip key cannot withdraw another node's entries. (Entry values are checked by the layer
/// above, which knows what they mean.)
public struct TableAuthenticator: Sendable {
    /// Signs a message with this node's key; nil when it cannot (the record goes unsigned).
    public var sign: @Sendable (_ message: [UInt8]) -> [UInt8]?
    /// Whether `signature` is `node`'s over `message`.
    public var verify: @Sendable (_ node: String, _ message: [UInt8], _ signature: [UInt8]) -> Bool

    /// Makes an authenticator.
    public init(sign: @escaping @Sendable (_ message: [UInt8]) -> [UInt8]?,
                verify: @escaping @Sendable (_ node: String, _ message: [UInt8], _ signature: [UInt8]) -> Bool) {
        self.sign = sign
        self.verify = verify
    }

    static func message(_ parts: [String]) -> [UInt8] { Array(("swift-overlay table 1\n" + parts.joined(separator: "\n")).utf8) }

    static func tombstone(_ r: EntryRecord) -> [UInt8] {
        message(["tombstone", r.owner, r.network, r.table, r.key, "\(r.ltime)"])
    }

    static func leave(_ r: NetworkRecord) -> [UInt8] {
        message(["leave", r.node, r.network, "\(r.ltime)"])
    }

    static func bulk(_ b: BulkRecord) -> [UInt8] {
        let names = b.entries.map { "\($0.owner)\u{1}\($0.network)\u{1}\($0.table)\u{1}\($0.key)\u{1}\($0.ltime)\u{1}\($0.deleted)" }.sorted()
        return message(["bulk", b.node, b.network, "\(b.ltime)"] + names)
    }
}
