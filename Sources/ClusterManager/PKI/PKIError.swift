/// A failure of the cluster PKI: a malformed join token, a bad CSR, a certificate that is not trusted,
/// a TLS peer whose CA does not match the join token, or a key file that cannot be read or written.
///
/// `message` says what was wrong and what to do; `code` lets a caller branch without parsing text.
public struct PKIError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure this is; extensible, compare against the static members.
    public struct Code: Hashable, Sendable, RawRepresentable, CustomStringConvertible {
        /// The code's stable name, e.g. `"ca-digest-mismatch"`.
        public var rawValue: String
        /// Makes a code from its stable name.
        public init(rawValue: String) { self.rawValue = rawValue }
        /// The stable name.
        public var description: String { rawValue }

        /// The join token does not have four `-`-separated parts.
        public static let tokenShape = Code(rawValue: "token-shape")
        /// The join token does not start with `SWMTKN`.
        public static let tokenPrefix = Code(rawValue: "token-prefix")
        /// The join token's version is not `1`.
        public static let tokenVersion = Code(rawValue: "token-version")
        /// The join token's CA digest is not 50 lowercase base-36 characters.
        public static let tokenDigest = Code(rawValue: "token-digest")
        /// The join token's secret is not 25 lowercase base-36 characters.
        public static let tokenSecret = Code(rawValue: "token-secret")
        /// The join token matches neither the worker nor the manager secret.
        public static let tokenRejected = Code(rawValue: "token-rejected")
        /// The certificate signing request is malformed, badly signed or uses an unsupported key.
        public static let invalidCSR = Code(rawValue: "invalid-csr")
        /// A node ID, DNS name or other input to certificate issuance is not acceptable.
        public static let invalidInput = Code(rawValue: "invalid-input")
        /// A certificate or key could not be parsed, or does not have the fields the cluster needs.
        public static let invalidCertificate = Code(rawValue: "invalid-certificate")
        /// The private key does not belong to the certificate.
        public static let keyMismatch = Code(rawValue: "key-mismatch")
        /// The TLS peer's chain is not rooted in a CA whose digest equals the join token's.
        public static let caDigestMismatch = Code(rawValue: "ca-digest-mismatch")
        /// The certificate was not issued by the cluster CA (or not for this cluster).
        public static let untrustedCertificate = Code(rawValue: "untrusted-certificate")
        /// The certificate's validity period has ended.
        public static let certificateExpired = Code(rawValue: "certificate-expired")
        /// The certificate's validity period has not started yet.
        public static let certificateNotYetValid = Code(rawValue: "certificate-not-yet-valid")
        /// The peer's certificate has the wrong role (e.g. a worker where a manager was expected).
        public static let wrongRole = Code(rawValue: "wrong-role")
        /// The TLS handshake failed for a reason other than the checks above.
        public static let handshakeFailed = Code(rawValue: "handshake-failed")
        /// A PEM file could not be read or written.
        public static let storage = Code(rawValue: "storage")
    }

    /// What kind of failure this is.
    public var code: Code
    /// What was wrong and what to do, for a person.
    public var message: String

    /// Makes an error from a code and a message.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// `"<code>: <message>"`.
    public var description: String { "\(code): \(message)" }
}
