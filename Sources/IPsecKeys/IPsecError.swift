/// An error from IPsecKeys: a stable code to match on and a message a person can act on.
public struct IPsecError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A stable, extensible identifier of what went wrong.
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        /// The code's text, e.g. `"authFailed"`.
        public let rawValue: String
        /// Wraps a code's text.
        public init(rawValue: String) { self.rawValue = rawValue }
        /// The code's text.
        public var description: String { rawValue }

        /// Key material of the wrong length (AES-GCM in ESP takes 16, 24 or 32 bytes).
        public static let invalidKey = Code(rawValue: "invalidKey")
        /// A keyring that is not 2 or 3 keys with distinct tags, or a rotation to a key that is not newer.
        public static let invalidKeyring = Code(rawValue: "invalidKeyring")
        /// An SPI in the range RFC 4303 reserves (0...255).
        public static let reservedSPI = Code(rawValue: "reservedSPI")
        /// An SA setting out of range (replay window, ICV length, limits).
        public static let invalidParameter = Code(rawValue: "invalidParameter")
        /// Two inbound SAs with one SPI in one opener.
        public static let duplicateSPI = Code(rawValue: "duplicateSPI")
        /// The caller's buffer cannot hold the sealed packet or the payload does not fit it.
        public static let bufferTooSmall = Code(rawValue: "bufferTooSmall")
        /// The outbound SA has sent its last allowed sequence number; rekey (a new SA) is required.
        public static let sequenceExhausted = Code(rawValue: "sequenceExhausted")
        /// No inbound SA has the packet's SPI.
        public static let unknownSPI = Code(rawValue: "unknownSPI")
        /// The packet is shorter than an ESP header, IV, trailer and ICV.
        public static let tooShort = Code(rawValue: "tooShort")
        /// The ICV did not verify: wrong key or salt, or the packet was altered.
        public static let authFailed = Code(rawValue: "authFailed")
        /// The sequence number was already received (RFC 4303 3.4.3).
        public static let replayed = Code(rawValue: "replayed")
        /// The sequence number is older than the anti-replay window (or 0, which is never sent).
        public static let outsideWindow = Code(rawValue: "outsideWindow")
        /// The decrypted trailer's pad length or padding bytes are wrong (RFC 4303 2.4).
        public static let badPadding = Code(rawValue: "badPadding")
        /// OpenSSL reported a failure (the message says which call).
        public static let openssl = Code(rawValue: "openssl")
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
