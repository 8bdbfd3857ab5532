/// An error from OverlayCrypto: a stable code to match on and a message a person can act on.
public struct CryptoError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A stable, extensible identifier of what went wrong.
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        /// The code's text, e.g. `"invalidKeyLength"`.
        public let rawValue: String
        /// Wraps a code's text.
        public init(rawValue: String) { self.rawValue = rawValue }
        /// The code's text.
        public var description: String { rawValue }

        /// The key is not 16, 24 or 32 bytes long.
        public static let invalidKeyLength = Code(rawValue: "invalidKeyLength")
        /// The nonce is not 12 bytes long.
        public static let invalidNonceLength = Code(rawValue: "invalidNonceLength")
        /// The sealed input is shorter than the 16-byte tag.
        public static let truncatedInput = Code(rawValue: "truncatedInput")
        /// The tag did not verify: wrong key, wrong AAD, or tampered bytes.
        public static let authenticationFailed = Code(rawValue: "authenticationFailed")
        /// OpenSSL reported a failure (the message carries its error string).
        public static let openssl = Code(rawValue: "openssl")
        /// A length does not fit the C API (more than 2 GiB).
        public static let tooLarge = Code(rawValue: "tooLarge")
    }

    /// What kind of failure this is.
    public let code: Code
    /// What was wrong and what to do about it.
    public let message: String

    /// Creates an error with a code and an actionable message.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// `code: message`, one line.
    public var description: String { "\(code): \(message)" }
}
