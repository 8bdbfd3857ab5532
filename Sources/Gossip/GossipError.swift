/// An error from the Gossip library: a stable code and a message a person can act on.
public struct GossipError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Stable identifiers for gossip failures.
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        /// The code's text.
        public let rawValue: String
        /// Wraps a code's text.
        public init(rawValue: String) { self.rawValue = rawValue }
        /// The code's text.
        public var description: String { rawValue }
        /// A gossip key has the wrong length or is not installed.
        public static let invalidKey = Code(rawValue: "invalidKey")
        /// Data did not decrypt with any installed key, or was plaintext where encryption is required.
        public static let unauthenticated = Code(rawValue: "unauthenticated")
        /// A configuration value is out of range.
        public static let invalidConfiguration = Code(rawValue: "invalidConfiguration")
        /// Could not reach any seed when joining.
        public static let joinFailed = Code(rawValue: "joinFailed")
        /// The node is not running (not started, or shut down).
        public static let notRunning = Code(rawValue: "notRunning")
        /// A socket operation failed.
        public static let io = Code(rawValue: "io")
        /// The remote end reported an error or broke the protocol.
        public static let remote = Code(rawValue: "remote")
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
