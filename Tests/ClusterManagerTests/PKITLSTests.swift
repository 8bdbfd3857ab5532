import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import OverlayModel
import Testing

@testable import ClusterManager
import OverlayAPI

/// Collects the first line the server sends; fails if the connection errors or closes first.
private final class FirstReply: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let promise: EventLoopPromise<String>

    init(promise: EventLoopPromise<String>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        promise.succeed(String(buffer: unwrapInboundIn(data)))
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        promise.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(ChannelError.eof)
        context.fireChannelInactive()
    }
}

/// What one loopback connection showed on each side.
private struct Exchange {
    /// The server's view of the client: nil = no client certificate.
    var serverSaw: Result<ClusterTLS.PeerIdentity?, Error>
    /// The client's view of the server.
    var clientSaw: Result<ClusterTLS.PeerIdentity?, Error>
    /// The greeting the server sends after a successful handshake.
    var reply: Result<String, Error>
}

private func outcome<T: Sendable>(_ future: EventLoopFuture<T>) async -> Result<T, Error> {
    do { return .success(try await future.get()) } catch { return .failure(error) }
}

/// Runs a real TLS server and client over 127.0.0.1 (ephemeral port) and reports both sides.
private func exchange(server: ClusterTLS.Server, client: ClusterTLS.Client) async throws -> Exchange {
    try await exchange(server: server) { try client.addHandlers(to: $0, serverHostname: nil) }
}

/// Same, with any client-side TLS handlers (e.g. a raw NIOSSL client playing an attacker); `addClientHandlers`
/// returns the client's view of the server if it has one.
private func exchange(
    server: ClusterTLS.Server,
    addClientHandlers: @escaping @Sendable (ChannelPipeline.SynchronousOperations) throws -> EventLoopFuture<ClusterTLS.PeerIdentity?>?
) async throws -> Exchange {
    let group = MultiThreadedEventLoopGroup.singleton
    let serverSaw = group.next().makePromise(of: ClusterTLS.PeerIdentity?.self)
    let serverLookup = group.next().makePromise(of: ClusterTLS.PeerIdentity?.self)
    let clientView = group.next().makePromise(of: ClusterTLS.PeerIdentity?.self)
    let listener = try await ServerBootstrap(group: group)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                let peer = try server.addHandlers(to: channel.pipeline.syncOperations)
                // The lookup by channel must agree with the returned future.
                ClusterTLS.peerIdentity(of: channel).cascade(to: serverLookup)
                peer.cascade(to: serverSaw)
                peer.whenSuccess { identity in
                    channel.writeAndFlush(ByteBuffer(string: "hello \(identity?.description ?? "anonymous")"), promise: nil)
                }
            }
        }
        .bind(host: "127.0.0.1", port: 0).get()
    let port = try #require(listener.localAddress?.port)

    let reply = group.next().makePromise(of: String.self)
    let connection = try await ClientBootstrap(group: group)
        .connectTimeout(.seconds(5))
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                if let view = try addClientHandlers(channel.pipeline.syncOperations) {
                    view.cascade(to: clientView)
                } else {
                    clientView.fail(PKIError(.handshakeFailed, "this client has no ClusterTLS handlers"))
                }
                try channel.pipeline.syncOperations.addHandler(FirstReply(promise: reply))
            }
        }
        .connect(host: "127.0.0.1", port: port).get()
    let clientSaw = await outcome(clientView.futureResult)
    let replied = await outcome(reply.futureResult)
    let serverResult = await outcome(serverSaw.futureResult)
    let lookedUp = await outcome(serverLookup.futureResult)
    #expect("\(lookedUp)" == "\(serverResult)")
    try? await connection.close()
    try await listener.close()
    return Exchange(serverSaw: serverResult, clientSaw: clientSaw, reply: replied)
}

private func pkiCode(_ result: Result<some Any, Error>) -> PKIError.Code? {
    if case .failure(let error as PKIError) = result { return error.code }
    return nil
}

@Suite struct PKITLSTests {
    let ca: ClusterCA
    let manager: NodeIdentity
    let server: ClusterTLS.Server

    init() throws {
        ca = try ClusterCA.create()
        manager = try pkiMakeIdentity(ca: ca, role: .manager, nodeID: "mgr1", ipAddresses: [IPAddress("127.0.0.1")!])
        server = try ClusterTLS.Server(identity: manager)
    }

    @Test func bootstrapClientWithTheRightDigestConnectsWithoutCertificate() async throws {
        let token = JoinToken.generate(caDigest: ca.tokenDigest)
        let result = try await exchange(server: server, client: .bootstrap(token: token))
        #expect(try result.clientSaw.get() == ClusterTLS.PeerIdentity(nodeID: "mgr1", role: .manager, clusterID: ca.clusterID))
        #expect(try result.serverSaw.get() == nil)
        #expect(try result.reply.get() == "hello anonymous")
    }

    @Test func bootstrapClientWithTheWrongDigestIsRefused() async throws {
        let otherCA = try ClusterCA.create()
        let token = JoinToken.generate(caDigest: otherCA.tokenDigest)
        let result = try await exchange(server: server, client: .bootstrap(token: token))
        #expect(pkiCode(result.clientSaw) == .caDigestMismatch)
        if case .failure(let error as PKIError) = result.clientSaw {
            #expect(error.message.contains("CA digest does not match the join token"))
            #expect(error.message.contains(otherCA.tokenDigest))
        }
        #expect(throws: (any Error).self) { try result.reply.get() }
        #expect(throws: (any Error).self) { try result.serverSaw.get() }
    }

    @Test func bootstrapClientRefusesAWorkerPosingAsManager() async throws {
        let worker = try pkiMakeIdentity(ca: ca, role: .worker, nodeID: "w9")
        let token = JoinToken.generate(caDigest: ca.tokenDigest)
        let result = try await exchange(server: ClusterTLS.Server(identity: worker), client: .bootstrap(token: token))
        #expect(pkiCode(result.clientSaw) == .wrongRole)
        #expect(throws: (any Error).self) { try result.reply.get() }
    }

    @Test func mutualTLSClientIsIdentifiedByTheServer() async throws {
        let worker = try pkiMakeIdentity(ca: ca, role: .worker, nodeID: "worker7")
        let result = try await exchange(server: server, client: .mutual(identity: worker))
        #expect(try result.serverSaw.get() == ClusterTLS.PeerIdentity(nodeID: "worker7", role: .worker, clusterID: ca.clusterID))
        #expect(try result.clientSaw.get()?.nodeID == "mgr1")
        #expect(try result.reply.get() == "hello worker7 (swarm-worker)")
    }

    @Test func nodeCertificateFromAnotherCAIsRefused() async throws {
        let otherCA = try ClusterCA.create(clusterID: ca.clusterID)
        let intruder = try pkiMakeIdentity(ca: otherCA, role: .manager, nodeID: "mgr1")
        // An attacker's raw client: accepts any server, presents a certificate from its own CA
        // (same cluster ID, same node ID, only the CA differs).
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = .none
        configuration.certificateChain = [.certificate(try NIOSSLCertificate(bytes: intruder.certificate.pkiDER, format: .der))]
        configuration.privateKey = .privateKey(
            try NIOSSLPrivateKey(bytes: Array(intruder.privateKey.derRepresentation), format: .der))
        let context = try NIOSSLContext(configuration: configuration)
        let result = try await exchange(server: server) { pipeline in
            try pipeline.addHandler(NIOSSLClientHandler(context: context, serverHostname: nil))
            return nil
        }
        #expect(pkiCode(result.serverSaw) == .untrustedCertificate)
        if case .failure(let error as PKIError) = result.serverSaw {
            #expect(error.message.contains("not issued by this cluster's CA"))
        }
        #expect(throws: (any Error).self) { try result.reply.get() }

        // The intruder's own mTLS client refuses our manager before even sending its certificate.
        let own = try await exchange(server: server, client: .mutual(identity: intruder))
        #expect(pkiCode(own.clientSaw) == .untrustedCertificate)
        #expect(throws: (any Error).self) { try own.reply.get() }
    }

    @Test func expiredNodeCertificateIsRefused() async throws {
        let stale = try pkiMakeIdentity(
            ca: ca, role: .worker, nodeID: "old1", validity: 86_400, now: Date().addingTimeInterval(-100 * 86_400))
        #expect(stale.notAfter < Date())
        let result = try await exchange(server: server, client: .mutual(identity: stale))
        #expect(pkiCode(result.serverSaw) == .certificateExpired)
        if case .failure(let error as PKIError) = result.serverSaw {
            #expect(error.message.contains("expired"))
        }
        #expect(throws: (any Error).self) { try result.reply.get() }
    }

    @Test func peerIdentityWithoutClusterTLSHandlersFails() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let listener = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(listener.localAddress?.port)
        let plain = try await ClientBootstrap(group: group).connect(host: "127.0.0.1", port: port).get()
        let result = await outcome(ClusterTLS.peerIdentity(of: plain))
        try? await plain.close()
        try await listener.close()
        #expect(pkiCode(result) == .handshakeFailed)
    }
}
