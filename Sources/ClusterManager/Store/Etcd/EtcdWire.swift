import Foundation

// The JSON of etcd v3's gRPC gateway (etcd 3.4: `/v3/...`), as measured against etcd 3.4.23.
// Two rules shape every type here:
// - int64 and uint64 fields are JSON strings in answers (`"revision":"2"`); requests may send
//   numbers, which these types do.
// - proto3 JSON omits default values: `false`, 0, empty bytes, empty lists and enum value 0 are
//   absent. A failed txn has no `succeeded`, a PUT watch event has no `type`, a range that found
//   nothing has no `kvs`. Every field therefore decodes as optional with its default.
// bytes fields (keys, values, range ends) are standard base64 with padding, which is how
// `JSONEncoder` writes `Data`.

extension KeyedDecodingContainer {
    /// An int64 field: a string ("12"), a number, or absent (0).
    func etcdInt(_ key: Key) throws -> Int64 {
        if let text = try? decodeIfPresent(String.self, forKey: key) {
            guard let value = Int64(text) else {
                throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "'\(text)' is not an int64")
            }
            return value
        }
        return try decodeIfPresent(Int64.self, forKey: key) ?? 0
    }

    /// A uint64 field kept as its text (member and cluster IDs go past Int64.max), "" if absent.
    func etcdID(_ key: Key) -> String {
        if let text = try? decodeIfPresent(String.self, forKey: key) { return text }
        if let value = try? decodeIfPresent(UInt64.self, forKey: key) { return String(value) }
        return ""
    }

    /// A bytes field (base64), empty if absent.
    func etcdBytes(_ key: Key) throws -> Data {
        guard let text = try decodeIfPresent(String.self, forKey: key) else { return Data() }
        guard let data = Data(base64Encoded: text) else {
            throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "not base64")
        }
        return data
    }

    /// A bool field, false if absent.
    func etcdFlag(_ key: Key) throws -> Bool { try decodeIfPresent(Bool.self, forKey: key) ?? false }
}

/// The header of every answer: the store's revision when it was made, and which member made it.
struct EtcdHeader: Decodable, Sendable, Equatable {
    var revision: Int64 = 0
    var memberID = ""

    init(revision: Int64 = 0, memberID: String = "") {
        self.revision = revision
        self.memberID = memberID
    }

    enum CodingKeys: String, CodingKey { case revision, memberID = "member_id" }
    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        revision = try c.etcdInt(.revision)
        memberID = c.etcdID(.memberID)
    }
}

/// One key and its value as stored (mvccpb.KeyValue). A DELETE event's has only `key` and
/// `modRevision`.
struct EtcdKeyValue: Decodable, Sendable, Equatable {
    var key = Data()
    var value = Data()
    var createRevision: Int64 = 0
    var modRevision: Int64 = 0
    var version: Int64 = 0
    var lease: Int64 = 0

    init(key: Data, value: Data = Data(), createRevision: Int64 = 0, modRevision: Int64 = 0, version: Int64 = 0, lease: Int64 = 0) {
        self.key = key
        self.value = value
        self.createRevision = createRevision
        self.modRevision = modRevision
        self.version = version
        self.lease = lease
    }

    enum CodingKeys: String, CodingKey {
        case key, value, version, lease
        case createRevision = "create_revision", modRevision = "mod_revision"
    }
    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        key = try c.etcdBytes(.key)
        value = try c.etcdBytes(.value)
        createRevision = try c.etcdInt(.createRevision)
        modRevision = try c.etcdInt(.modRevision)
        version = try c.etcdInt(.version)
        lease = try c.etcdInt(.lease)
    }
}

/// `POST /v3/kv/range`: one key, or [key, rangeEnd) (a prefix's end is the prefix with its last
/// byte + 1), at most `limit` keys, at `revision` (0: the latest).
struct EtcdRangeRequest: Encodable, Sendable {
    var key: Data
    var rangeEnd: Data?
    var limit: Int64?
    var revision: Int64?
    var serializable: Bool?
    var countOnly: Bool?

    enum CodingKeys: String, CodingKey {
        case key, limit, revision, serializable
        case rangeEnd = "range_end", countOnly = "count_only"
    }
}

/// The answer of a range: `more` when `limit` cut it short; `count` is the total in range.
struct EtcdRangeResponse: Decodable, Sendable {
    var header = EtcdHeader()
    var kvs: [EtcdKeyValue] = []
    var more = false
    var count: Int64 = 0

    enum CodingKeys: String, CodingKey { case header, kvs, more, count }
    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        header = try c.decodeIfPresent(EtcdHeader.self, forKey: .header) ?? EtcdHeader()
        kvs = try c.decodeIfPresent([EtcdKeyValue].self, forKey: .kvs) ?? []
        more = try c.etcdFlag(.more)
        count = try c.etcdInt(.count)
    }
}

/// One comparison of a txn: `target` of `key` compared (`result`) with the value given.
struct EtcdCompare: Encodable, Sendable, Equatable {
    enum Target: String, Encodable, Sendable { case version = "VERSION", create = "CREATE", mod = "MOD", value = "VALUE", lease = "LEASE" }
    enum Result: String, Encodable, Sendable { case equal = "EQUAL", greater = "GREATER", less = "LESS", notEqual = "NOT_EQUAL" }

    var key: Data
    var target: Target
    var result: Result = .equal
    var createRevision: Int64?
    var modRevision: Int64?

    enum CodingKeys: String, CodingKey {
        case key, target, result
        case createRevision = "create_revision", modRevision = "mod_revision"
    }

    /// The key was created at `revision` (0: it does not exist).
    static func created(_ key: Data, at revision: Int64) -> EtcdCompare {
        EtcdCompare(key: key, target: .create, createRevision: revision)
    }

    /// The key was last changed at `revision` (0: it does not exist).
    static func modified(_ key: Data, at revision: Int64) -> EtcdCompare {
        EtcdCompare(key: key, target: .mod, modRevision: revision)
    }
}

/// `request_put`: sets a key, attached to `lease` when given (deleted when the lease ends).
struct EtcdPutRequest: Encodable, Sendable, Equatable {
    var key: Data
    var value: Data
    var lease: Int64?
}

/// `request_delete_range`: deletes a key, or [key, rangeEnd).
struct EtcdDeleteRangeRequest: Encodable, Sendable, Equatable {
    var key: Data
    var rangeEnd: Data?
    enum CodingKeys: String, CodingKey { case key, rangeEnd = "range_end" }
}

/// One operation of a txn branch.
enum EtcdOperation: Encodable, Sendable, Equatable {
    case put(EtcdPutRequest)
    case delete(EtcdDeleteRangeRequest)

    enum CodingKeys: String, CodingKey { case put = "request_put", delete = "request_delete_range" }
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .put(let p): try c.encode(p, forKey: .put)
        case .delete(let d): try c.encode(d, forKey: .delete)
        }
    }
}

/// `POST /v3/kv/txn`: if every compare holds, the success operations, else the failure ones;
/// all at one revision. etcd allows at most 128 (`--max-txn-ops`) in each of the three lists.
struct EtcdTxnRequest: Encodable, Sendable {
    var compare: [EtcdCompare]
    var success: [EtcdOperation]
    var failure: [EtcdOperation] = []
}

/// The answer of a txn. `succeeded` is absent (false) when a compare failed; `header.revision`
/// is the txn's revision, or the store's when it changed nothing.
struct EtcdTxnResponse: Decodable, Sendable {
    var header = EtcdHeader()
    var succeeded = false

    enum CodingKeys: String, CodingKey { case header, succeeded }
    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        header = try c.decodeIfPresent(EtcdHeader.self, forKey: .header) ?? EtcdHeader()
        succeeded = try c.etcdFlag(.succeeded)
    }
}

/// `POST /v3/kv/compaction`: forgets history before `revision`.
struct EtcdCompactionRequest: Encodable, Sendable {
    var revision: Int64
    var physical: Bool?
}

/// An answer that only has a header (put, compaction, lease revoke).
struct EtcdHeaderResponse: Decodable, Sendable {
    var header = EtcdHeader()
    enum CodingKeys: String, CodingKey { case header }
    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        header = try c.decodeIfPresent(EtcdHeader.self, forKey: .header) ?? EtcdHeader()
    }
}

/// `POST /v3/lease/grant` (`TTL` and `ID` are upper case: a lower-case `ttl` is ignored and the
/// server grants its minimum). `ID` 0 lets the server choose.
struct EtcdLeaseGrantRequest: Encodable, Sendable {
    var ttl: Int64
    var id: Int64 = 0
    enum CodingKeys: String, CodingKey { case ttl = "TTL", id = "ID" }
}

/// A lease's ID and remaining TTL in seconds: the answer of grant and of each keepalive. A
/// keepalive of a lease that is gone has no `TTL` (0).
struct EtcdLeaseResponse: Decodable, Sendable {
    var header = EtcdHeader()
    var id: Int64 = 0
    var ttl: Int64 = 0
    var error = ""

    enum CodingKeys: String, CodingKey { case header, id = "ID", ttl = "TTL", error }
    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        header = try c.decodeIfPresent(EtcdHeader.self, forKey: .header) ?? EtcdHeader()
        id = try c.etcdInt(.id)
        ttl = try c.etcdInt(.ttl)
        error = try c.decodeIfPresent(String.self, forKey: .error) ?? ""
    }
}

/// `POST /v3/lease/keepalive` and `/v3/lease/revoke`: a lease by ID.
struct EtcdLeaseIDRequest: Encodable, Sendable {
    var id: Int64
    enum CodingKeys: String, CodingKey { case id = "ID" }
}

/// `POST /v3/watch` with one `create_request`: changes of [key, rangeEnd) from `startRevision`
/// (0: from now).
struct EtcdWatchCreateRequest: Encodable, Sendable {
    struct Create: Encodable, Sendable {
        var key: Data
        var rangeEnd: Data?
        var startRevision: Int64?
        var progressNotify: Bool?
        enum CodingKeys: String, CodingKey {
            case key
            case rangeEnd = "range_end", startRevision = "start_revision", progressNotify = "progress_notify"
        }
    }
    var createRequest: Create
    enum CodingKeys: String, CodingKey { case createRequest = "create_request" }
}

/// One change a watch reports. PUT is enum value 0, so only DELETE says its `type`.
struct EtcdEvent: Decodable, Sendable, Equatable {
    var isDelete = false
    var kv: EtcdKeyValue

    init(isDelete: Bool, kv: EtcdKeyValue) {
        self.isDelete = isDelete
        self.kv = kv
    }

    enum CodingKeys: String, CodingKey { case type, kv }
    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        isDelete = try c.decodeIfPresent(String.self, forKey: .type) == "DELETE"
        kv = try c.decodeIfPresent(EtcdKeyValue.self, forKey: .kv) ?? EtcdKeyValue(key: Data())
    }
}

/// One message of a watch stream: `created` first; then events (one txn, or a replay of many
/// revisions: use each event's `modRevision`, the header has the store's current revision); a
/// progress message (no events) whose header revision the watch has caught up with; or
/// `canceled`, with `compactRevision` when the start revision was compacted away.
struct EtcdWatchResponse: Decodable, Sendable, Equatable {
    var header = EtcdHeader()
    var created = false
    var canceled = false
    var compactRevision: Int64 = 0
    var cancelReason = ""
    var events: [EtcdEvent] = []

    init(header: EtcdHeader = EtcdHeader(), created: Bool = false, canceled: Bool = false, compactRevision: Int64 = 0, events: [EtcdEvent] = []) {
        self.header = header
        self.created = created
        self.canceled = canceled
        self.compactRevision = compactRevision
        self.events = events
    }

    enum CodingKeys: String, CodingKey {
        case header, created, canceled, events
        case compactRevision = "compact_revision", cancelReason = "cancel_reason"
    }
    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        header = try c.decodeIfPresent(EtcdHeader.self, forKey: .header) ?? EtcdHeader()
        created = try c.etcdFlag(.created)
        canceled = try c.etcdFlag(.canceled)
        compactRevision = try c.etcdInt(.compactRevision)
        cancelReason = try c.decodeIfPresent(String.self, forKey: .cancelReason) ?? ""
        events = try c.decodeIfPresent([EtcdEvent].self, forKey: .events) ?? []
    }
}

/// One line of a streaming answer (watch, keepalive): `{"result":{...}}`, or
/// `{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader",...}}` after which
/// the stream ends.
struct EtcdStreamLine<Result: Decodable & Sendable>: Decodable, Sendable {
    var result: Result?
    var error: EtcdStreamError?
}

/// The error object of a stream (a different shape from a unary call's error body).
struct EtcdStreamError: Decodable, Sendable, Equatable {
    var grpcCode = 0
    var httpCode = 0
    var message = ""

    enum CodingKeys: String, CodingKey { case grpcCode = "grpc_code", httpCode = "http_code", message }
    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        grpcCode = try c.decodeIfPresent(Int.self, forKey: .grpcCode) ?? 0
        httpCode = try c.decodeIfPresent(Int.self, forKey: .httpCode) ?? 0
        message = try c.decodeIfPresent(String.self, forKey: .message) ?? ""
    }
}

/// A unary call's error body: `{"error":"<msg>","message":"<msg>","code":<gRPC code>}`.
struct EtcdErrorBody: Decodable, Sendable {
    var message = ""
    var code = 0

    enum CodingKeys: String, CodingKey { case error, message, code }
    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let error = try? c.decodeIfPresent(String.self, forKey: .error)
        message = (try? c.decodeIfPresent(String.self, forKey: .message)) ?? error ?? ""
        code = (try? c.decodeIfPresent(Int.self, forKey: .code)) ?? 0
    }
}

/// `GET /health`: `{"health":"true"}` (200), or `{"health":"false"}` (503) without a leader.
struct EtcdHealthResponse: Decodable, Sendable {
    var health = ""
}

/// An error answer of etcd itself (not of reaching it): the HTTP status, the gRPC code and the
/// server's message, e.g. 400, 3, "etcdserver: too many operations in txn request".
struct EtcdError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The HTTP status of the answer.
    var status: Int
    /// The gRPC status code (3 invalid argument, 5 not found, 11 out of range, 14 unavailable).
    var code: Int
    /// The server's message.
    var message: String

    init(status: Int, code: Int, message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    var description: String { message }

    /// The revision asked for was compacted away: read again at the current revision.
    var isCompacted: Bool { code == 11 && message.contains("compacted") }
}

extension Data {
    /// The end of the range of keys starting with `self`: the prefix with its last byte + 1
    /// (bytes 0xff are dropped first); "\0" (every key) if nothing is left.
    var etcdPrefixEnd: Data {
        var end = self
        while let last = end.last {
            if last < 0xff {
                end[end.index(before: end.endIndex)] = last + 1
                return end
            }
            end.removeLast()
        }
        return Data([0])
    }
}
