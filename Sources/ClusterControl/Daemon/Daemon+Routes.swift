import ClusterManager
import Foundation
import HTTPTypes
import Hummingbird
import Logging

// The daemon's two APIs as Hummingbird routers: the local socket (everything `overlayctl` asks)
// and the manager port 2377 (only what a node may ask for itself).

extension OverlayDaemon {
    /// The local API on the Unix socket: the operator's calls.
    nonisolated func localRouter() -> Router<APIContext> {
        let router = Router(context: APIContext.self)
        router.add(middleware: APIErrorMiddleware())
        router.route(.get, "/v1/info") { _, _ in .json(await self.info()) }

        router.route(.post, "/v1/swarm/init") { req, ctx in
            var req = req
            return .json(try await self.swarmInit(req.json(SwarmInitRequest.self, context: ctx)))
        }
        router.route(.post, "/v1/swarm/join") { req, ctx in
            var req = req
            return .json(try await self.swarmJoin(req.json(SwarmJoinRequest.self, context: ctx)))
        }
        router.route(.post, "/v1/swarm/leave") { req, _ in .json(try await self.swarmLeave(force: req.flag("force"))) }
        router.route(.get, "/v1/swarm/join-token") { req, _ in
            .json(try await self.joinToken(role: req.query("role") ?? "worker", rotate: req.flag("rotate")))
        }
        router.route(.post, "/v1/swarm/rotate-keys") { _, _ in .json(try await self.rotateGossipKeys()) }

        router.route(.get, "/v1/nodes") { _, _ in .json(try await self.nodes()) }
        router.route(.delete, "/v1/nodes/:node") { req, ctx in
            .json(try await self.removeNodeCommand(ctx.parameter("node"), force: req.flag("force")))
        }

        router.route(.get, "/v1/networks") { _, _ in .json(try await self.networkList()) }
        router.route(.post, "/v1/networks") { req, ctx in
            var req = req
            return .json(try await self.createNetwork(req.json(NetworkCreateRequest.self, context: ctx)), status: 201)
        }
        router.route(.get, "/v1/networks/:name") { req, ctx in
            .json(try await self.inspectNetwork(ctx.parameter("name"), verbose: req.flag("verbose")))
        }
        router.route(.delete, "/v1/networks/:name") { _, ctx in
            let name = try ctx.parameter("name")
            try await self.removeNetwork(name)
            return .json(["removed": name])
        }

        router.route(.get, "/v1/containers") { _, _ in .json(try await self.containerList()) }
        router.route(.post, "/v1/containers") { req, ctx in
            var req = req
            return .json(try await self.runContainer(req.json(ContainerCreateRequest.self, context: ctx)), status: 201)
        }
        router.route(.post, "/v1/attach") { req, ctx in
            var req = req
            return .json(try await self.attachExisting(req.json(AttachRequest.self, context: ctx)), status: 201)
        }
        router.route(.get, "/v1/containers/:name") { _, ctx in .json(try await self.inspectContainer(ctx.parameter("name"))) }
        router.route(.delete, "/v1/containers/:name") { req, ctx in
            let name = try ctx.parameter("name")
            try await self.removeContainer(name, force: req.flag("force"))
            return .json(["removed": name])
        }

        router.route(.get, "/v1/services") { _, _ in .json(try await self.serviceList()) }
        router.route(.post, "/v1/services") { req, ctx in
            var req = req
            return .json(try await self.createService(req.json(ServiceCreateRequest.self, context: ctx)), status: 201)
        }
        router.route(.get, "/v1/services/:name") { _, ctx in .json(try await self.inspectService(ctx.parameter("name"))) }
        router.route(.get, "/v1/services/:name/tasks") { _, ctx in .json(try await self.serviceTasks(ctx.parameter("name"))) }
        router.route(.post, "/v1/services/:name/update") { req, ctx in
            var req = req
            return .json(try await self.updateService(ctx.parameter("name"), req.json(ServiceUpdateRequest.self, context: ctx)))
        }
        router.route(.delete, "/v1/services/:name") { _, ctx in
            let name = try ctx.parameter("name")
            try await self.removeService(name)
            return .json(["removed": name])
        }
        return router
    }

    /// The manager API on 2377: joining (with a token, no certificate yet), then only the calls a
    /// node makes for itself, each checked against the node its certificate names. Any other
    /// call, even one the local socket serves, is refused with 403 and a log line.
    nonisolated func managerRouter() -> Router<APIContext> {
        let router = Router(context: APIContext.self)
        router.add(middleware: APIErrorMiddleware())
        router.add(middleware: NodeCallGate(daemon: self, logger: configuration.logger))
        router.route(.post, "/v1/join") { req, ctx in
            var req = req
            return .json(try await self.managerJoin(req.json(JoinRequest.self, context: ctx)))
        }
        router.route(.post, "/v1/renew") { req, ctx in
            var req = req
            return .json(try await self.renew(req.json([String: String].self, context: ctx), for: ctx.node))
        }
        router.route(.get, "/v1/state") { req, _ in
            let since = UInt64(req.query("since") ?? "0") ?? 0
            return .json(try await self.clusterState(since: since, waitSeconds: min(Double(req.query("wait") ?? "0") ?? 0, 30)))
        }
        router.route(.post, "/v1/report") { req, ctx in
            var req = req
            return .json(try await self.recordReport(req.json(NodeReport.self, context: ctx), from: ctx.node.nodeID))
        }
        router.route(.post, "/v1/allocate") { req, ctx in
            var req = req
            return .json(try await self.allocate(req.json(AllocateRequest.self, context: ctx), for: ctx.node.nodeID))
        }
        router.route(.post, "/v1/release") { req, ctx in
            var req = req
            try await self.release(req.json(ReleaseRequest.self, context: ctx), for: ctx.node.nodeID)
            return .json(["released": true])
        }
        // A node leaves for itself only (`node rm` on the manager removes others).
        router.route(.post, "/v1/leave") { req, ctx in
            let node = try ctx.node.nodeID
            if let other = req.query("node"), other != node {
                ctx.logger.warning("refused node \(node)'s request to remove node \(other.prefix(64))")
                throw APIError(403, "a node may only leave for itself: use `overlayctl node rm` on a manager to remove another")
            }
            try await self.removeNode(node, rotateKeys: false)
            return .json(["left": true])
        }
        return router
    }

    /// Whether `node` is in the store: a certificate outlives its node's membership.
    func isMember(_ node: String) throws -> Bool {
        try store.get(.node, node, as: NodeRecord.self) != nil
    }
}

extension APIContext {
    /// The node whose certificate made this call (the manager port's gate has checked it).
    var node: PeerIdentity {
        get throws {
            guard let peer else { throw APIError(403, "a client certificate is required on the manager port: join the swarm with a token first") }
            return peer
        }
    }
}

/// The manager port's gate: a certificate for everything but joining, a member's certificate,
/// and only the routes a node may call.
struct NodeCallGate: RouterMiddleware {
    typealias Context = APIContext
    let daemon: OverlayDaemon
    let logger: Logger

    func handle(_ request: Request, context: APIContext, next: (Request, APIContext) async throws -> Response) async throws -> Response {
        if request.method == .post && request.uri.path == "/v1/join" { return try await next(request, context) }
        let peer = try context.node
        guard try await daemon.isMember(peer.nodeID) else {
            logger.warning("refused \(request.method) \(request.uri.path) from node \(peer.nodeID): it is not a member of the swarm (removed or left)")
            throw APIError(403, "node \(peer.nodeID) is not a member of this swarm (it was removed or left): join again with a token")
        }
        do { return try await next(request, context) } catch let e as HTTPError where e.status == .notFound || e.status == .methodNotAllowed {
            logger.warning("refused \(request.method) \(request.uri.path) from node \(peer.nodeID) (\(peer.role.rawValue)): not a call nodes may make")
            throw APIError(403, "\(request.method) \(request.uri.path) is not a call a node may make on the manager port: only the manager's local socket may")
        }
    }
}
