/// A decoded MessagePack value: the subset hashicorp/memberlist and serf put on the wire.
///
/// Integers are canonical: any value that fits `Int64` is `.int`, only larger unsigned values are
/// `.uint`. `str` and `bin` are both byte strings; Go's old `codec.MsgpackHandle` writes every
/// string and `[]byte` as a "raw" (`str` family, no `str8`), so encode bytes as `.str` to match it.
public enum MsgPackValue: Sendable, Hashable {
    /// `nil` (0xc0).
    case null
    /// `true`/`false`.
    case bool(Bool)
    /// Any integer that fits `Int64`.
    case int(Int64)
    /// An unsigned integer above `Int64.max`.
    case uint(UInt64)
    /// A float32 or float64.
    case float(Double)
    /// A raw/str byte string (not necessarily UTF-8).
    case str([UInt8])
    /// A bin byte string.
    case bin([UInt8])
    /// An array.
    case array([MsgPackValue])
    /// A map, in wire order.
    case map([MsgPackPair])

    /// A string value from Swift text.
    public static func string(_ s: String) -> MsgPackValue { .str(Array(s.utf8)) }

    /// The bytes of a `str` or `bin`, else nil.
    public var bytes: [UInt8]? {
        switch self {
        case .str(let b), .bin(let b): return b
        default: return nil
        }
    }

    /// The text of a `str`/`bin` (invalid UTF-8 repaired), else nil.
    public var text: String? { bytes.map { String(decoding: $0, as: UTF8.self) } }

    /// The value as a non-negative integer, else nil.
    public var uint64: UInt64? {
        switch self {
        case .int(let v): return v >= 0 ? UInt64(v) : nil
        case .uint(let v): return v
        default: return nil
        }
    }
}

/// One key/value entry of a MessagePack map.
public struct MsgPackPair: Sendable, Hashable {
    /// The key.
    public var key: MsgPackValue
    /// The value.
    public var value: MsgPackValue
    /// Makes a pair.
    public init(_ key: MsgPackValue, _ value: MsgPackValue) {
        self.key = key
        self.value = value
    }
}

/// A MessagePack or wire-format decoding error: a stable code and an actionable message.
public struct GossipCodecError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Stable identifiers for codec failures.
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        /// The code's text.
        public let rawValue: String
        /// Wraps a code's text.
        public init(rawValue: String) { self.rawValue = rawValue }
        /// The code's text.
        public var description: String { rawValue }
        /// The input ended inside a value; on a stream, wait for more bytes.
        public static let truncated = Code(rawValue: "truncated")
        /// A byte that starts no value we accept (ext types, reserved 0xc1).
        public static let invalidByte = Code(rawValue: "invalidByte")
        /// Containers nested deeper than the limit.
        public static let tooDeep = Code(rawValue: "tooDeep")
        /// A length beyond the configured limit.
        public static let tooLarge = Code(rawValue: "tooLarge")
        /// A field has the wrong MessagePack type for the message.
        public static let typeMismatch = Code(rawValue: "typeMismatch")
        /// A message type byte we do not know.
        public static let unknownMessage = Code(rawValue: "unknownMessage")
        /// Bytes were left over or a frame was inconsistent.
        public static let malformed = Code(rawValue: "malformed")
        /// A feature we refuse (e.g. an unknown compression algorithm).
        public static let unsupported = Code(rawValue: "unsupported")
    }
    /// What went wrong.
    public let code: Code
    /// What was wrong and what to do.
    public let message: String
    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }
    /// `code: message`.
    public var description: String { "\(code): \(message)" }
}

/// MessagePack encoding (spec: github.com/msgpack/msgpack/blob/master/spec.md), writing the same
/// forms as Go's `codec.MsgpackHandle{}` (no `str8`, smallest integer form, unsigned for >= 0).
public enum MsgPack {
    /// Appends the encoding of `value` to `out`.
    public static func encode(_ value: MsgPackValue, into out: inout [UInt8]) {
        switch value {
        case .null: out.append(0xc0)
        case .bool(let b): out.append(b ? 0xc3 : 0xc2)
        case .int(let v):
            if v >= 0 { encodeUInt(UInt64(v), into: &out) } else { encodeNegative(v, into: &out) }
        case .uint(let v): encodeUInt(v, into: &out)
        case .float(let d):
            out.append(0xcb)
            appendBE(d.bitPattern, 8, &out)
        case .str(let b):
            // Go's handle writes fixstr, str16 or str32 (spec "str"; old spec "raw").
            if b.count < 32 { out.append(0xa0 | UInt8(b.count)) }
            else if b.count < 65536 { out.append(0xda); appendBE(UInt64(b.count), 2, &out) }
            else { out.append(0xdb); appendBE(UInt64(b.count), 4, &out) }
            out.append(contentsOf: b)
        case .bin(let b):
            if b.count < 256 { out.append(0xc4); out.append(UInt8(b.count)) }
            else if b.count < 65536 { out.append(0xc5); appendBE(UInt64(b.count), 2, &out) }
            else { out.append(0xc6); appendBE(UInt64(b.count), 4, &out) }
            out.append(contentsOf: b)
        case .array(let items):
            if items.count < 16 { out.append(0x90 | UInt8(items.count)) }
            else if items.count < 65536 { out.append(0xdc); appendBE(UInt64(items.count), 2, &out) }
            else { out.append(0xdd); appendBE(UInt64(items.count), 4, &out) }
            for i in items { encode(i, into: &out) }
        case .map(let pairs):
            if pairs.count < 16 { out.append(0x80 | UInt8(pairs.count)) }
            else if pairs.count < 65536 { out.append(0xde); appendBE(UInt64(pairs.count), 2, &out) }
            else { out.append(0xdf); appendBE(UInt64(pairs.count), 4, &out) }
            for p in pairs {
                encode(p.key, into: &out)
                encode(p.value, into: &out)
            }
        }
    }

    /// The encoding of `value`.
    public static func encode(_ value: MsgPackValue) -> [UInt8] {
        var out: [UInt8] = []
        encode(value, into: &out)
        return out
    }

    /// Decodes exactly one value from `bytes`; trailing bytes are an error.
    public static func decode(_ bytes: [UInt8], limits: MsgPackLimits = .init()) throws -> MsgPackValue {
        var r = MsgPackReader(bytes, limits: limits)
        let v = try r.read()
        guard r.offset == bytes.count else {
            throw GossipCodecError(.malformed, "\(bytes.count - r.offset) bytes after the MessagePack value")
        }
        return v
    }

    private static func encodeUInt(_ v: UInt64, into out: inout [UInt8]) {
        switch v {
        case 0...0x7f: out.append(UInt8(v))
        case 0...0xff: out.append(0xcc); out.append(UInt8(v))
        case 0...0xffff: out.append(0xcd); appendBE(v, 2, &out)
        case 0...0xffff_ffff: out.append(0xce); appendBE(v, 4, &out)
        default: out.append(0xcf); appendBE(v, 8, &out)
        }
    }

    private static func encodeNegative(_ v: Int64, into out: inout [UInt8]) {
        let bits = UInt64(bitPattern: v)
        switch v {
        case -32 ..< 0: out.append(UInt8(truncatingIfNeeded: bits))
        case Int64(Int8.min)...: out.append(0xd0); appendBE(bits, 1, &out)
        case Int64(Int16.min)...: out.append(0xd1); appendBE(bits, 2, &out)
        case Int64(Int32.min)...: out.append(0xd2); appendBE(bits, 4, &out)
        default: out.append(0xd3); appendBE(bits, 8, &out)
        }
    }

    static func appendBE(_ v: UInt64, _ width: Int, _ out: inout [UInt8]) {
        for i in stride(from: width - 1, through: 0, by: -1) { out.append(UInt8(truncatingIfNeeded: v >> (UInt64(i) * 8))) }
    }
}

/// Bounds a MessagePack decoder applies so hostile input cannot exhaust memory or the stack.
public struct MsgPackLimits: Sendable, Equatable {
    /// Deepest nesting of arrays/maps accepted.
    public var maxDepth: Int
    /// Longest string/bin accepted, in bytes.
    public var maxBytesLength: Int
    /// Most elements (array items or map pairs) in one container.
    public var maxContainerCount: Int
    /// Defaults: depth 32, 16 MiB strings, 1 Mi elements.
    public init(maxDepth: Int = 32, maxBytesLength: Int = 16 << 20, maxContainerCount: Int = 1 << 20) {
        self.maxDepth = maxDepth
        self.maxBytesLength = maxBytesLength
        self.maxContainerCount = maxContainerCount
    }
}

/// Reads MessagePack values one after another from a byte array; never reads past the end.
public struct MsgPackReader {
    /// The input.
    public let bytes: [UInt8]
    /// Index of the next unread byte.
    public private(set) var offset: Int
    /// Limits applied while reading.
    public let limits: MsgPackLimits

    /// Starts reading `bytes` at `offset`.
    public init(_ bytes: [UInt8], offset: Int = 0, limits: MsgPackLimits = .init()) {
        self.bytes = bytes
        self.offset = offset
        self.limits = limits
    }

    /// Bytes not yet read.
    public var remaining: Int { bytes.count - offset }

    /// Reads one value; on `.truncated` the offset is unchanged so the caller can retry with more bytes.
    public mutating func read() throws -> MsgPackValue {
        let start = offset
        do {
            return try readValue(depth: 0)
        } catch {
            offset = start
            throw error
        }
    }

    /// Takes `n` raw bytes (for payloads that follow a MessagePack header), or throws `.truncated`.
    public mutating func readRaw(_ n: Int) throws -> [UInt8] {
        guard n >= 0, n <= remaining else { throw GossipCodecError(.truncated, "need \(n) bytes, have \(remaining)") }
        defer { offset += n }
        return Array(bytes[offset ..< offset + n])
    }

    private mutating func byte() throws -> UInt8 {
        guard offset < bytes.count else { throw GossipCodecError(.truncated, "input ended inside a MessagePack value") }
        defer { offset += 1 }
        return bytes[offset]
    }

    private mutating func be(_ width: Int) throws -> UInt64 {
        guard remaining >= width else { throw GossipCodecError(.truncated, "input ended inside a MessagePack value") }
        var v: UInt64 = 0
        for i in 0 ..< width { v = v << 8 | UInt64(bytes[offset + i]) }
        offset += width
        return v
    }

    private mutating func raw(_ n: UInt64) throws -> [UInt8] {
        guard n <= UInt64(limits.maxBytesLength) else {
            throw GossipCodecError(.tooLarge, "string of \(n) bytes exceeds the \(limits.maxBytesLength)-byte limit")
        }
        return try readRaw(Int(n))
    }

    private func checkCount(_ n: UInt64, perItem: Int) throws -> Int {
        guard n <= UInt64(limits.maxContainerCount) else {
            throw GossipCodecError(.tooLarge, "container of \(n) elements exceeds the \(limits.maxContainerCount) limit")
        }
        // Every element takes at least one byte per value; a larger count cannot be satisfied yet.
        guard n * UInt64(perItem) <= UInt64(remaining) else {
            throw GossipCodecError(.truncated, "container of \(n) elements but only \(remaining) bytes left")
        }
        return Int(n)
    }

    private static func signed(_ v: UInt64, _ width: Int) -> Int64 {
        let shift = UInt64(64 - width * 8)
        return Int64(bitPattern: v << shift) >> Int64(shift)
    }

    private static func canonical(_ v: UInt64) -> MsgPackValue { v <= UInt64(Int64.max) ? .int(Int64(v)) : .uint(v) }

    private mutating func readValue(depth: Int) throws -> MsgPackValue {
        let b = try byte()
        switch b {
        case 0x00...0x7f: return .int(Int64(b))
        case 0x80...0x8f: return try readMap(Int(b & 0x0f), depth: depth)
        case 0x90...0x9f: return try readArray(Int(b & 0x0f), depth: depth)
        case 0xa0...0xbf: return .str(try raw(UInt64(b & 0x1f)))
        case 0xc0: return .null
        case 0xc2: return .bool(false)
        case 0xc3: return .bool(true)
        case 0xc4: return .bin(try raw(try be(1)))
        case 0xc5: return .bin(try raw(try be(2)))
        case 0xc6: return .bin(try raw(try be(4)))
        case 0xca: return .float(Double(Float(bitPattern: UInt32(try be(4)))))
        case 0xcb: return .float(Double(bitPattern: try be(8)))
        case 0xcc: return Self.canonical(try be(1))
        case 0xcd: return Self.canonical(try be(2))
        case 0xce: return Self.canonical(try be(4))
        case 0xcf: return Self.canonical(try be(8))
        case 0xd0: return .int(Self.signed(try be(1), 1))
        case 0xd1: return .int(Self.signed(try be(2), 2))
        case 0xd2: return .int(Self.signed(try be(4), 4))
        case 0xd3: return .int(Self.signed(try be(8), 8))
        case 0xd9: return .str(try raw(try be(1)))
        case 0xda: return .str(try raw(try be(2)))
        case 0xdb: return .str(try raw(try be(4)))
        case 0xdc: return try readArray(checkCount(try be(2), perItem: 1), depth: depth)
        case 0xdd: return try readArray(checkCount(try be(4), perItem: 1), depth: depth)
        case 0xde: return try readMap(checkCount(try be(2), perItem: 2), depth: depth)
        case 0xdf: return try readMap(checkCount(try be(4), perItem: 2), depth: depth)
        case 0xe0...0xff: return .int(Int64(Int8(bitPattern: b)))
        default:
            throw GossipCodecError(.invalidByte, "MessagePack type byte 0x\(String(b, radix: 16)) is not supported (ext or reserved)")
        }
    }

    private mutating func readArray(_ n: Int, depth: Int) throws -> MsgPackValue {
        guard depth < limits.maxDepth else { throw GossipCodecError(.tooDeep, "MessagePack nesting deeper than \(limits.maxDepth)") }
        var items: [MsgPackValue] = []
        items.reserveCapacity(min(n, remaining))
        for _ in 0 ..< n { items.append(try readValue(depth: depth + 1)) }
        return .array(items)
    }

    private mutating func readMap(_ n: Int, depth: Int) throws -> MsgPackValue {
        guard depth < limits.maxDepth else { throw GossipCodecError(.tooDeep, "MessagePack nesting deeper than \(limits.maxDepth)") }
        var pairs: [MsgPackPair] = []
        pairs.reserveCapacity(min(n, remaining / 2))
        for _ in 0 ..< n {
            let k = try readValue(depth: depth + 1)
            let v = try readValue(depth: depth + 1)
            pairs.append(MsgPackPair(k, v))
        }
        return .map(pairs)
    }
}
