/// A swarm-style join token, `SWMTKN-1-<CA digest>-<secret>`: the digest lets a joining node trust
/// the manager's CA without knowing it in advance; the secret proves the node may join, and which
/// secret it is (worker or manager) decides the node's role.
///
/// The secret is never printed: `description` redacts it; use ``encoded`` to show the token to an operator.
public struct JoinToken: Sendable, Equatable, CustomStringConvertible {
    /// The token's prefix.
    public static let prefix = "SWMTKN"
    /// The only token version.
    public static let version = "1"
    /// Characters in the CA digest part (SHA-256 in base 36, zero-padded).
    public static let digestLength = 50
    /// Characters in the secret part (128 random bits in base 36, zero-padded).
    public static let secretLength = 25

    /// The CA digest part: the SHA-256 of the CA certificate's DER, base 36, 50 characters.
    public let caDigest: String
    let secret: String

    init(caDigest: String, secret: String) {
        self.caDigest = caDigest
        self.secret = secret
    }

    /// A new token with a fresh random secret for the CA whose ``ClusterCA/tokenDigest`` is `caDigest`.
    public static func generate(caDigest: String) -> JoinToken {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return JoinToken(caDigest: caDigest, secret: Base36.encode(bytes, width: secretLength))
    }

    /// Parses a token, failing with one error per malformed part (shape, prefix, version, digest, secret).
    public static func parse(_ text: String) throws(PKIError) -> JoinToken {
        let trimmed = text.trimmingWhitespace()
        let parts = trimmed.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 4 else {
            throw PKIError(
                .tokenShape,
                "a join token has four parts, SWMTKN-1-<digest>-<secret>, but this one has \(parts.count); copy the whole token from `overlayctl swarm join-token`")
        }
        guard parts[0] == prefix else {
            throw PKIError(.tokenPrefix, "a join token starts with SWMTKN, not \"\(parts[0])\"; this is not a swarm join token")
        }
        guard parts[1] == version else {
            throw PKIError(.tokenVersion, "join token version \"\(parts[1])\" is not supported (only 1); get a new token from the manager")
        }
        guard parts[2].utf8.count == digestLength else {
            throw PKIError(
                .tokenDigest,
                "the join token's CA digest has \(parts[2].utf8.count) characters, not \(digestLength); the token was truncated or mistyped")
        }
        guard Base36.isBase36(parts[2]) else {
            throw PKIError(.tokenDigest, "the join token's CA digest may contain only 0-9 and a-z; the token was mistyped")
        }
        guard parts[3].utf8.count == secretLength else {
            throw PKIError(
                .tokenSecret,
                "the join token's secret has \(parts[3].utf8.count) characters, not \(secretLength); the token was truncated or mistyped")
        }
        guard Base36.isBase36(parts[3]) else {
            throw PKIError(.tokenSecret, "the join token's secret may contain only 0-9 and a-z; the token was mistyped")
        }
        return JoinToken(caDigest: String(parts[2]), secret: String(parts[3]))
    }

    /// The full token text, `SWMTKN-1-<digest>-<secret>`, to show to an operator or send when joining.
    public var encoded: String { "\(Self.prefix)-\(Self.version)-\(caDigest)-\(secret)" }

    /// The token with its secret redacted, safe to log.
    public var description: String { "\(Self.prefix)-\(Self.version)-\(caDigest)-<secret>" }

    /// Whether this token names `ca` (its digest part equals the CA's).
    public func matches(ca: ClusterCA) -> Bool { caDigest == ca.tokenDigest }

    /// Equal digests and equal secrets; the secrets are compared in constant time.
    public static func == (lhs: JoinToken, rhs: JoinToken) -> Bool {
        lhs.caDigest == rhs.caDigest && constantTimeEqual(lhs.secret, rhs.secret)
    }

    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var difference: UInt8 = 0
        for index in x.indices { difference |= x[index] ^ y[index] }
        return difference == 0
    }

    /// The manager's two current tokens. A joining node's role is the one whose secret its token
    /// carries; rotating a role replaces that token, so the old one stops working.
    public struct Pair: Sendable, Equatable {
        /// The token that makes a node a worker.
        public private(set) var worker: JoinToken
        /// The token that makes a node a manager.
        public private(set) var manager: JoinToken

        /// Fresh worker and manager tokens for `ca`.
        public init(ca: ClusterCA) {
            worker = .generate(caDigest: ca.tokenDigest)
            manager = .generate(caDigest: ca.tokenDigest)
        }

        /// Tokens restored from storage; fails if they name different CAs or share a secret.
        public init(worker: JoinToken, manager: JoinToken) throws(PKIError) {
            guard worker.caDigest == manager.caDigest, !constantTimeEqual(worker.secret, manager.secret) else {
                throw PKIError(.invalidInput, "the worker and manager tokens must name the same CA and have different secrets")
            }
            self.worker = worker
            self.manager = manager
        }

        /// The token for `role`.
        public func token(for role: NodeIdentity.Role) -> JoinToken { role == .manager ? manager : worker }

        /// The role `token` grants, or nil if it matches neither secret (or names another CA).
        public func role(of token: JoinToken) -> NodeIdentity.Role? {
            // Check both, always, so timing does not tell which secret was near.
            let isWorker = token == worker
            let isManager = token == manager
            if isManager { return .manager }
            if isWorker { return .worker }
            return nil
        }

        /// The role `token` grants, or a `tokenRejected` error that says what to do.
        public func authorize(_ token: JoinToken) throws(PKIError) -> NodeIdentity.Role {
            guard let role = role(of: token) else {
                throw PKIError(
                    .tokenRejected,
                    "the join token is not valid for this cluster (wrong cluster, or rotated); get the current one with `overlayctl swarm join-token worker|manager`")
            }
            return role
        }

        /// Replaces the token for `role` with a fresh secret; the old one no longer authorizes joins.
        public mutating func rotate(_ role: NodeIdentity.Role) {
            switch role {
            case .worker: worker = .generate(caDigest: worker.caDigest)
            case .manager: manager = .generate(caDigest: manager.caDigest)
            }
        }

        /// Replaces both tokens for a new CA (after a CA rotation).
        public mutating func rotate(to ca: ClusterCA) {
            self = Pair(ca: ca)
        }
    }
}

extension String {
    fileprivate func trimmingWhitespace() -> Substring {
        var slice = self[...]
        while let first = slice.first, first.isWhitespace { slice = slice.dropFirst() }
        while let last = slice.last, last.isWhitespace { slice = slice.dropLast() }
        return slice
    }
}
