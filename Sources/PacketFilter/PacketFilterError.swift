/// A failure from ``PacketFilter``: what was being done and, when nft refused, nft's own error text.
public struct PacketFilterError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure this is; extensible, compare with `==`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        /// The input was refused before nft saw it (a bad table name, an empty body).
        public static let invalidArgument = Code(name: "invalidArgument")
        /// nft refused the ruleset: a syntax error, or the kernel rejected the transaction.
        public static let rejected = Code(name: "rejected")
        /// The table (or other object) named does not exist.
        public static let notFound = Code(name: "notFound")
        /// libnftables itself failed (no context could be made).
        public static let system = Code(name: "system")
        /// The code's name, for messages.
        public var description: String { name }
    }

    /// What kind of failure this is.
    public let code: Code
    /// What was being done, e.g. `replace table ip ovl_gwbridge`.
    public let operation: String
    /// nft's error text (trimmed), or our reason when nft was not asked.
    public let reason: String

    /// Makes an error.
    public init(_ code: Code, operation: String, reason: String) {
        self.code = code
        self.operation = operation
        self.reason = reason
    }

    /// One line (nft's multi-line text joined) for a person: operation, then reason.
    public var message: String { "\(operation): \(reason)" }
    /// Same as ``message``.
    public var description: String { message }
}
