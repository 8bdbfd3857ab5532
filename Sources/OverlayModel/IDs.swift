/// What distinguishes one kind of identifier from another: its length, alphabet and name. The
/// kinds below are the only ones; the protocol exists so that ``Identifier`` can be one type that
/// still keeps a network ID from being passed where a node ID is wanted.
public protocol IdentifierKind: Sendable {
    /// How many characters the identifier has.
    static var length: Int { get }
    /// The characters it may use (ASCII).
    static var alphabet: [UInt8] { get }
    /// What it identifies, for messages ("network").
    static var kind: String { get }
    /// Its shape, for messages ("64 lowercase hex digits").
    static var shape: String { get }
}

/// Networks: 64 lowercase hex digits (256 random bits), as Docker's.
public enum NetworkKind: IdentifierKind {
    public static let length = 64
    public static let alphabet = Array("0123456789abcdef".utf8)
    public static let kind = "network"
    public static let shape = "64 lowercase hex digits"
}

/// Endpoints and containers: 64 lowercase hex digits, as Docker's.
public enum EndpointKind: IdentifierKind {
    public static let length = 64
    public static let alphabet = Array("0123456789abcdef".utf8)
    public static let kind = "endpoint"
    public static let shape = "64 lowercase hex digits"
}

/// Nodes: 25 lowercase base-36 characters, as swarm's.
public enum NodeKind: IdentifierKind {
    public static let length = 25
    public static let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyz".utf8)
    public static let kind = "node"
    public static let shape = "25 characters of 0-9 and a-z"
}

/// A network's ID.
public typealias NetworkID = Identifier<NetworkKind>
/// An endpoint's (or container's) ID.
public typealias EndpointID = Identifier<EndpointKind>
/// A node's ID.
public typealias NodeID = Identifier<NodeKind>

/// A Docker- or swarm-style object identifier of one kind, shown in full or by its first 12
/// characters (`short`), as `docker network ls` shows them.
public struct Identifier<Kind: IdentifierKind>: Hashable, Sendable, Comparable {
    /// The full identifier.
    public let text: String

    private init(validated text: String) { self.text = text }

    /// Parses an identifier, with an error that says what shape was expected.
    public init(parsing text: String) throws(ModelError) {
        guard text.utf8.count == Kind.length, text.utf8.allSatisfy(Kind.alphabet.contains) else {
            throw ModelError(.invalidID, "'\(text)' is not a \(Kind.kind) ID (\(Kind.shape))")
        }
        self.text = text
    }

    /// A new random identifier.
    public static func random<G: RandomNumberGenerator>(using g: inout G) -> Self {
        let chars = (0..<Kind.length).map { _ in Kind.alphabet[Int.random(in: 0..<Kind.alphabet.count, using: &g)] }
        return Self(validated: String(decoding: chars, as: UTF8.self))
    }

    /// A new random identifier from the system generator.
    public static func random() -> Self {
        var g = SystemRandomNumberGenerator()
        return random(using: &g)
    }

    /// The first 12 characters.
    public var short: String { String(text.prefix(12)) }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.text < rhs.text }
}

extension Identifier: LosslessStringConvertible, CustomStringConvertible {
    /// Parses an identifier; nil where ``init(parsing:)`` would throw.
    public init?(_ description: String) {
        guard let id = try? Self(parsing: description) else { return nil }
        self = id
    }

    public var description: String { text }
}

extension Identifier: Codable {
    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        let s = try c.decode(String.self)
        do { self = try Self(parsing: s) } catch {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: error.message)
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(text)
    }
}
