/// Docker-style object identifiers: 64 lowercase hex digits (256 random bits) for networks,
/// endpoints and containers, shown by their first 12; swarm-style 25-character base-36 IDs for
/// nodes, services and tasks.
enum IdentifierText {
    static let hexDigits = Array("0123456789abcdef".utf8)
    static let base36Digits = Array("0123456789abcdefghijklmnopqrstuvwxyz".utf8)

    static func random<G: RandomNumberGenerator>(length: Int, alphabet: [UInt8], using g: inout G) -> String {
        String(decoding: (0..<length).map { _ in alphabet[Int.random(in: 0..<alphabet.count, using: &g)] }, as: UTF8.self)
    }

    static func validate(_ text: String, length: Int, alphabet: [UInt8], kind: String, shape: String) throws(ModelError) {
        guard text.utf8.count == length, text.utf8.allSatisfy(alphabet.contains) else {
            throw ModelError(.invalidID, "'\(text)' is not a \(kind) ID (\(shape))")
        }
    }
}

/// Declares the shared behaviour of the ID types below. Kept internal: each ID is its own
/// concrete type so a network ID can never be passed where an endpoint ID is wanted.
protocol TextIdentifier: Hashable, Sendable, Comparable, Codable, LosslessStringConvertible {
    static var length: Int { get }
    static var alphabet: [UInt8] { get }
    static var kind: String { get }
    static var shape: String { get }
    var text: String { get }
    init(validated text: String)
}

extension TextIdentifier {
    public var description: String { text }
    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.text < rhs.text }

    public init?(_ description: String) {
        guard (try? IdentifierText.validate(description, length: Self.length, alphabet: Self.alphabet,
                                            kind: Self.kind, shape: Self.shape)) != nil else { return nil }
        self.init(validated: description)
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        let s = try c.decode(String.self)
        do {
            try IdentifierText.validate(s, length: Self.length, alphabet: Self.alphabet, kind: Self.kind, shape: Self.shape)
        } catch {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: error.message)
        }
        self.init(validated: s)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(text)
    }
}

/// A network's ID: 64 lowercase hex digits.
public struct NetworkID: TextIdentifier {
    static let length = 64
    static let alphabet = IdentifierText.hexDigits
    static let kind = "network"
    static let shape = "64 lowercase hex digits"
    /// The full ID.
    public let text: String
    init(validated text: String) { self.text = text }

    /// Parses an ID, with an error that says what shape was expected.
    public init(parsing text: String) throws(ModelError) {
        try IdentifierText.validate(text, length: Self.length, alphabet: Self.alphabet, kind: Self.kind, shape: Self.shape)
        self.text = text
    }
    /// A new random ID.
    public static func random<G: RandomNumberGenerator>(using g: inout G) -> Self {
        Self(validated: IdentifierText.random(length: length, alphabet: alphabet, using: &g))
    }
    /// A new random ID from the system generator.
    public static func random() -> Self { var g = SystemRandomNumberGenerator(); return random(using: &g) }
    /// The first 12 digits, as `docker network ls` shows them.
    public var short: String { String(text.prefix(12)) }
}

/// An endpoint's (or container's) ID: 64 lowercase hex digits.
public struct EndpointID: TextIdentifier {
    static let length = 64
    static let alphabet = IdentifierText.hexDigits
    static let kind = "endpoint"
    static let shape = "64 lowercase hex digits"
    /// The full ID.
    public let text: String
    init(validated text: String) { self.text = text }

    /// Parses an ID, with an error that says what shape was expected.
    public init(parsing text: String) throws(ModelError) {
        try IdentifierText.validate(text, length: Self.length, alphabet: Self.alphabet, kind: Self.kind, shape: Self.shape)
        self.text = text
    }
    /// A new random ID.
    public static func random<G: RandomNumberGenerator>(using g: inout G) -> Self {
        Self(validated: IdentifierText.random(length: length, alphabet: alphabet, using: &g))
    }
    /// A new random ID from the system generator.
    public static func random() -> Self { var g = SystemRandomNumberGenerator(); return random(using: &g) }
    /// The first 12 digits.
    public var short: String { String(text.prefix(12)) }
}

/// A node's ID, swarm-style: 25 lowercase base-36 characters.
public struct NodeID: TextIdentifier {
    static let length = 25
    static let alphabet = IdentifierText.base36Digits
    static let kind = "node"
    static let shape = "25 characters of 0-9 and a-z"
    /// The full ID.
    public let text: String
    init(validated text: String) { self.text = text }

    /// Parses an ID, with an error that says what shape was expected.
    public init(parsing text: String) throws(ModelError) {
        try IdentifierText.validate(text, length: Self.length, alphabet: Self.alphabet, kind: Self.kind, shape: Self.shape)
        self.text = text
    }
    /// A new random ID.
    public static func random<G: RandomNumberGenerator>(using g: inout G) -> Self {
        Self(validated: IdentifierText.random(length: length, alphabet: alphabet, using: &g))
    }
    /// A new random ID from the system generator.
    public static func random() -> Self { var g = SystemRandomNumberGenerator(); return random(using: &g) }
    /// The first 12 characters.
    public var short: String { String(text.prefix(12)) }
}
