import Foundation
import NIOCore
import OverlayAPI
import NIOSSL
// NIOTLS comes with NIOSSL (it depends on it); only `TLSUserEvent` is used from it.
import NIOTLS
import X509

/// TLS for the manager's port 2377: the manager's server side, a joining node's bootstrap client
/// (no certificate, trusts the manager by the join token's CA digest) and the mutual-TLS client every
/// node uses afterwards. Each adds a `NIOSSLHandler` plus a small handler that runs the cluster's
/// certificate checks and reports who the peer is; read that with ``peerIdentity(of:)``.
///
/// ```swift
/// let server = try ClusterTLS.Server(identity: managerIdentity)
/// ServerBootstrap(group: group).childChannelInitializer { channel in
///     channel.eventLoop.makeCompletedFuture {
///         let peer = try server.addHandlers(to: channel.pipeline.syncOperations)
///         // peer: nil = no client certificate (allow only the join call), else nodeID and role
///     }
/// }
/// ```
public enum ClusterTLS {
    /// Who an authenticated peer is, read from its verified certificate.
    public typealias PeerIdentity = OverlayAPI.PeerIdentity

    /// What a connection error was, in a line, for the TLS layer's and the PKI's own errors
    /// (`APIClient.describeError`); nil for anything else.
    @Sendable public static func describe(_ error: any Error) -> String? {
        if let e = error as? PKIError { return e.message }
        if let e = error as? NIOSSLError { return "TLS: \(e)" }
        if let e = error as? BoringSSLError { return "TLS: \(e)" }
        return nil
    }

    /// The manager's TLS server: presents its node certificate and the CA, accepts clients with no
    /// certificate (so a joining node can reach the join call) or with a certificate issued by the
    /// cluster CA; anything else fails the handshake.
    public struct Server: Sendable {
        /// The NIOSSL configuration (TLS 1.3, optional client certificates, trusts only the cluster CA).
        public let configuration: TLSConfiguration
        let context: NIOSSLContext
        let check: PeerCheck

        /// A server presenting `identity` (normally a manager's) and trusting only its CA.
        public init(identity: NodeIdentity) throws {
            let leaf = try NIOSSLCertificate(bytes: identity.certificate.pkiDER, format: .der)
            let ca = try NIOSSLCertificate(bytes: identity.caCertificate.pkiDER, format: .der)
            var configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: [.certificate(leaf), .certificate(ca)],
                privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(identity.privateKey.derRepresentation), format: .der)))
            configuration.minimumTLSVersion = .tlsv13
            configuration.certificateVerification = .optionalVerification
            configuration.trustRoots = .certificates([ca])
            self.configuration = configuration
            self.context = try NIOSSLContext(configuration: configuration)
            self.check = PeerCheck(trust: .ca(identity.caCertificate), requiredRole: nil)
        }

        /// Adds the TLS handlers to a newly accepted channel; call on its event loop (e.g. in `childChannelInitializer`).
        /// The returned future is the client's identity once the handshake completes: nil if it presented no
        /// certificate (allow only the join call), else who its verified certificate names; it fails with a
        /// ``PKIError`` if the handshake fails (`untrustedCertificate`, `certificateExpired`, ...).
        @discardableResult
        public func addHandlers(to pipeline: ChannelPipeline.SynchronousOperations) throws -> EventLoopFuture<PeerIdentity?> {
            let observer = HandshakeObserver(check: check)
            let tls = NIOSSLServerHandler(context: context) { certificates, promise in
                observer.verify(certificates, promise)
            }
            try pipeline.addHandlers([tls, observer])
            return observer.result
        }
    }

    /// A node's TLS client towards a manager: either the bootstrap client of a joining node or the
    /// mutual-TLS client of a node that has its certificate. Both require the server to be a manager.
    public struct Client: Sendable {
        /// The NIOSSL configuration (TLS 1.3; verification is done by the cluster checks).
        public let configuration: TLSConfiguration
        let context: NIOSSLContext
        let check: PeerCheck

        /// The client a joining node uses: no client certificate; trusts the server only if the chain it
        /// presents holds a CA certificate whose digest equals `token`'s and the leaf is a current manager
        /// certificate signed by that CA. Otherwise the handshake fails with `caDigestMismatch` (or another code).
        public static func bootstrap(token: JoinToken) throws -> Client {
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.minimumTLSVersion = .tlsv13
            configuration.certificateVerification = .noHostnameVerification
            configuration.trustRoots = .certificates([])
            return Client(
                configuration: configuration, context: try NIOSSLContext(configuration: configuration),
                check: PeerCheck(trust: .digest(token.caDigest), requiredRole: .manager))
        }

        /// The client a member node uses: presents `identity`'s certificate and trusts only its CA.
        public static func mutual(identity: NodeIdentity) throws -> Client {
            let leaf = try NIOSSLCertificate(bytes: identity.certificate.pkiDER, format: .der)
            let ca = try NIOSSLCertificate(bytes: identity.caCertificate.pkiDER, format: .der)
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.minimumTLSVersion = .tlsv13
            configuration.certificateVerification = .noHostnameVerification
            configuration.trustRoots = .certificates([ca])
            configuration.certificateChain = [.certificate(leaf)]
            configuration.privateKey = .privateKey(
                try NIOSSLPrivateKey(bytes: Array(identity.privateKey.derRepresentation), format: .der))
            return Client(
                configuration: configuration, context: try NIOSSLContext(configuration: configuration),
                check: PeerCheck(trust: .ca(identity.caCertificate), requiredRole: .manager))
        }

        /// Adds the TLS handlers to a new client channel; call on its event loop (e.g. in `channelInitializer`).
        /// `serverHostname` is sent as SNI only; the server is authenticated by the cluster checks, not by name.
        /// The returned future is the manager's identity once the handshake completes, or fails with a
        /// ``PKIError`` (`caDigestMismatch`, `untrustedCertificate`, `wrongRole`, ...). Wait for it before sending.
        @discardableResult
        public func addHandlers(
            to pipeline: ChannelPipeline.SynchronousOperations, serverHostname: String? = nil
        ) throws -> EventLoopFuture<PeerIdentity?> {
            let observer = HandshakeObserver(check: check)
            let tls = try NIOSSLClientHandler(context: context, serverHostname: serverHostname) { certificates, promise in
                observer.verify(certificates, promise)
            }
            try pipeline.addHandlers([tls, observer])
            return observer.result
        }
    }

    /// Who the peer of `channel` is, once its TLS handshake completes: the identity in its verified
    /// certificate, or nil if it presented none (only possible on the server, for a joining node). Fails
    /// with a ``PKIError`` if the handshake fails (e.g. `caDigestMismatch`, `untrustedCertificate`,
    /// `certificateExpired`) or the channel has no ClusterTLS handlers. A failed connection removes its
    /// handlers when it closes, so call this before that can happen (in the channel initializer or a handler),
    /// or keep the future that `addHandlers` returns, which is always safe.
    public static func peerIdentity(of channel: Channel) -> EventLoopFuture<PeerIdentity?> {
        channel.eventLoop.flatSubmit {
            do {
                return try channel.pipeline.syncOperations.handler(type: HandshakeObserver.self).result
            } catch {
                return channel.eventLoop.makeFailedFuture(
                    PKIError(.handshakeFailed, "the channel has no ClusterTLS handlers; add them with ClusterTLS.Server/Client.addHandlers"))
            }
        }
    }
}

/// The cluster's check of a presented chain: which CA to trust and which role the peer must have.
struct PeerCheck: Sendable {
    enum Trust: Sendable {
        /// The known cluster CA.
        case ca(Certificate)
        /// A CA not known in advance, recognized by its token digest (base 36).
        case digest(String)
    }

    var trust: Trust
    var requiredRole: NodeIdentity.Role?

    func check(_ chain: [NIOSSLCertificate], now: Date) throws(PKIError) -> ClusterTLS.PeerIdentity {
        guard !chain.isEmpty else {
            throw PKIError(.untrustedCertificate, "the peer presented no certificate")
        }
        var certificates: [Certificate] = []
        for presented in chain {
            do {
                certificates.append(try Certificate(derEncoded: presented.toDERBytes()))
            } catch {
                throw PKIError(.invalidCertificate, "the peer presented a certificate that cannot be parsed (\(error))")
            }
        }
        let ca: Certificate
        switch trust {
        case .ca(let known):
            ca = known
        case .digest(let expected):
            let digests = certificates.map { (try? $0.pkiDigest).map { Base36.encode($0, width: JoinToken.digestLength) } ?? "" }
            guard let index = digests.firstIndex(of: expected) else {
                throw PKIError(
                    .caDigestMismatch,
                    "the manager's CA digest does not match the join token (token has \(expected), manager presented \(digests.dropFirst().joined(separator: ", ")));"
                        + " the token is for another cluster, or the CA was rotated (get a new token), or the connection is intercepted")
            }
            ca = certificates[index]
            guard ca.subject == ca.issuer, ca.publicKey.isValidSignature(ca.signature, for: ca),
                case .isCertificateAuthority = try? ca.extensions.basicConstraints
            else {
                throw PKIError(.untrustedCertificate, "the certificate matching the join token's digest is not a self-signed CA certificate")
            }
        }
        let peer = try ClusterCertificateCheck.verify(leaf: certificates[0], ca: ca, now: now)
        if let requiredRole, peer.role != requiredRole {
            throw PKIError(
                .wrongRole,
                "the peer \(peer.nodeID) is a \(peer.role.certificateOU), not a \(requiredRole.certificateOU); connect to a manager's address")
        }
        return peer
    }
}

/// Sits after the NIOSSL handler: runs ``PeerCheck`` from NIOSSL's custom verification callback,
/// remembers why a check failed, and completes ``result`` when the handshake completes or fails,
/// turning NIOSSL's generic handshake error into the cluster's actionable ``PKIError``.
final class HandshakeObserver: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let check: PeerCheck
    private var promise: EventLoopPromise<ClusterTLS.PeerIdentity?>?
    private(set) var result: EventLoopFuture<ClusterTLS.PeerIdentity?>!
    private var verified: ClusterTLS.PeerIdentity?
    private var failure: PKIError?

    init(check: PeerCheck) {
        self.check = check
    }

    func verify(_ chain: [NIOSSLCertificate], _ verdict: EventLoopPromise<NIOSSLVerificationResult>) {
        do {
            verified = try check.check(chain, now: Date())
            verdict.succeed(.certificateVerified)
        } catch {
            failure = error
            verdict.succeed(.failed)
        }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let promise = context.eventLoop.makePromise(of: ClusterTLS.PeerIdentity?.self)
        self.promise = promise
        result = promise.futureResult
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        finish(.failure(PKIError(.handshakeFailed, "the TLS handlers were removed before the handshake completed")))
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSUserEvent, case .handshakeCompleted = event {
            finish(.success(verified))
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if promise != nil {
            let reported: PKIError = failure ?? PKIError(.handshakeFailed, "the TLS handshake failed (\(error)); check that the address is a swift-overlay manager")
            finish(.failure(reported))
            context.fireErrorCaught(reported)
        } else {
            context.fireErrorCaught(error)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(.failure(failure ?? PKIError(.handshakeFailed, "the connection closed before the TLS handshake completed")))
        context.fireChannelInactive()
    }

    private func finish(_ outcome: Result<ClusterTLS.PeerIdentity?, PKIError>) {
        guard let promise else { return }
        self.promise = nil
        switch outcome {
        case .success(let peer): promise.succeed(peer)
        case .failure(let error): promise.fail(error)
        }
    }
}
