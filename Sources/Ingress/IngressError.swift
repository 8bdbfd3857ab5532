/// A failure of the load balancer: what was wrong and, when nft refused, nft's own text.
public struct IngressError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure this is; extensible, compare with `==`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        /// Two services claim the same VIP.
        public static let duplicateVIP = Code(name: "duplicateVIP")
        /// Two published ports share a protocol and port.
        public static let duplicatePort = Code(name: "duplicatePort")
        /// The table name cannot be used (1 to 64 letters, digits or `_`, not starting with a digit).
        public static let invalidTableName = Code(name: "invalidTableName")
        /// A port number is 0, or another value is outside what a balancer can express.
        public static let invalidArgument = Code(name: "invalidArgument")
        /// nft (or the kernel) refused the ruleset; the message carries nft's text.
        public static let rejected = Code(name: "rejected")
        /// The namespace could not be entered or libnftables could not be used.
        public static let system = Code(name: "system")
        /// The code's name, for messages.
        public var description: String { name }
    }

    /// What kind of failure this is.
    public let code: Code
    /// A sentence for a person: what was wrong and what to do (nft's text when nft refused).
    public let message: String

    /// Makes an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// `code: message`, one line.
    public var description: String { "\(code): \(message)" }
}
