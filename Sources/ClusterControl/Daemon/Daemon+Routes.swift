import ClusterManager
import Foundation
import HTTPTypes
import Hummingbird
import Logging

// The daemon's two APIs as Hummingbird routers: the local socket (everything `overlayctl` asks)
// and the manager port 2377 (only what a node may ask for itself).

extension OverlayDaemon {
    /// The local API on the Unix socket: the operator's calls (`LocalAPI`).
    nonisolated func localRouter() -> Router<APIContext> {
        let router = Router(context: APIContext.self)
        if let metrics { router.add(middleware: APIMetricsMiddleware(metrics: metrics, api: "local")) }
        router.add(middleware: APIErrorMiddleware())
        router.route(LocalAPI.info) { _, _, _ in await self.info() }
        router.route(LocalAPI.version) { _, _, _ in VersionInfo.current }
        // Health, as Docker (`/_ping`) and Kubernetes-style probes (`/healthz`, `/readyz`) ask.
        router.get("/_ping") { _, _ in Self.text(.ok, "OK") }
        router.head("/_ping") { _, _ in Self.text(.ok, "") }
        router.get("/healthz") { _, _ in Self.text(.ok, "ok\n") }
        router.get("/readyz") { _, _ in
            let (ready, why) = await self.readiness()
            return Self.text(ready ? .ok : .serviceUnavailable, why + "\n")
        }

        router.route(LocalAPI.swarmInit) { _, _, body in try await self.swarmInit(body) }
        router.route(LocalAPI.swarmJoin) { _, _, body in try await self.swarmJoin(body) }
        router.route(LocalAPI.swarmLeave) { req, _, _ in try await self.swarmLeave(force: req.flag("force")) }
        router.route(LocalAPI.joinToken) { req, _, _ in
            try await self.joinToken(role: req.query("role") ?? "worker", rotate: req.flag("rotate"))
        }
        router.route(LocalAPI.rotateKeys) { _, _, _ in try await self.rotateGossipKeys() }

        router.route(LocalAPI.nodes) { _, _, _ in try await self.nodes() }
        router.route(LocalAPI.inspectNode) { _, ctx, _ in try await self.inspectNode(ctx.parameter("node")) }
        router.route(LocalAPI.updateNode) { _, ctx, body in try await self.updateNode(ctx.parameter("node"), body) }
        router.route(LocalAPI.removeNode) { req, ctx, _ in
            try await self.removeNodeCommand(ctx.parameter("node"), force: req.flag("force"))
        }

        router.route(LocalAPI.networks) { _, _, _ in try await self.networkList() }
        router.route(LocalAPI.createNetwork) { _, _, body in try await self.createNetwork(body) }
        router.route(LocalAPI.inspectNetwork) { req, ctx, _ in
            try await self.inspectNetwork(ctx.parameter("name"), verbose: req.flag("verbose"))
        }
        router.route(LocalAPI.removeNetwork) { _, ctx, _ in
            let name = try ctx.parameter("name")
            try await self.removeNetwork(name)
            return ["removed": name]
        }

        router.route(LocalAPI.containers) { _, _, _ in try await self.containerList() }
        router.route(LocalAPI.runContainer) { _, _, body in try await self.runContainer(body) }
        router.route(LocalAPI.attach) { _, _, body in try await self.attachExisting(body) }
        router.route(LocalAPI.detach) { _, _, body in try await self.detachExisting(body) }
        router.route(LocalAPI.inspectContainer) { _, ctx, _ in try await self.inspectContainer(ctx.parameter("name")) }
        router.route(LocalAPI.containerLogs) { req, ctx, _ in
            try await self.containerLogs(ctx.parameter("name"), tail: try req.count("tail"))
        }
        router.route(LocalAPI.stopContainer) { req, ctx, _ in
            try await self.stopContainer(ctx.parameter("name"), timeout: req.query("t").flatMap(Int.init) ?? 10)
        }
        router.route(LocalAPI.startContainer) { _, ctx, _ in try await self.startContainer(ctx.parameter("name")) }
        router.route(LocalAPI.connectContainer) { _, ctx, body in try await self.connectContainer(ctx.parameter("name"), body) }
        router.route(LocalAPI.disconnectContainer) { req, ctx, _ in
            guard let network = req.query("network") else { throw APIError(400, "disconnect needs ?network=NAME") }
            return try await self.disconnectContainer(ctx.parameter("name"), from: network)
        }
        router.route(LocalAPI.removeContainer) { req, ctx, _ in
            let name = try ctx.parameter("name")
            try await self.removeContainer(name, force: req.flag("force"))
            return ["removed": name]
        }

        router.route(LocalAPI.services) { _, _, _ in try await self.serviceList() }
        router.route(LocalAPI.createService) { _, _, body in try await self.createService(body) }
        router.route(LocalAPI.inspectService) { _, ctx, _ in try await self.inspectService(ctx.parameter("name")) }
        router.route(LocalAPI.serviceTasks) { _, ctx, _ in try await self.serviceTasks(ctx.parameter("name")) }
        router.route(LocalAPI.serviceLogs) { req, ctx, _ in try await self.serviceLogs(ctx.parameter("name"), tail: try req.count("tail")) }
        router.route(LocalAPI.updateService) { _, ctx, body in try await self.updateService(ctx.parameter("name"), body) }
        router.route(LocalAPI.removeService) { _, ctx, _ in
            let name = try ctx.parameter("name")
            try await self.removeService(name)
            return ["removed": name]
        }
        return router
    }

    /// The manager API on 2377 (`ManagerAPI`): joining (with a token, no certificate yet), then
    /// only the calls a node makes for itself, each checked against the node its certificate
    /// names. Any other call, even one the local socket serves, is refused with 403 and a log line.
    nonisolated func managerRouter() -> Router<APIContext> {
        let router = Router(context: APIContext.self)
        if let metrics { router.add(middleware: APIMetricsMiddleware(metrics: metrics, api: "manager")) }
        router.add(middleware: APIErrorMiddleware())
        router.add(middleware: NodeCallGate(daemon: self, logger: log(.manager)))
        router.route(ManagerAPI.join) { _, _, body in try await self.managerJoin(body) }
        router.route(ManagerAPI.renew) { _, ctx, body in try await self.renew(body, for: ctx.node) }
        router.route(ManagerAPI.state) { req, ctx, _ in
            let since = UInt64(req.query("since") ?? "0") ?? 0
            let logs = try req.query("logs").map { (node: try ctx.node.nodeID, taken: UInt64($0) ?? 0) }
            return try await self.clusterState(since: since, waitSeconds: min(Double(req.query("wait") ?? "0") ?? 0, 30), logs: logs)
        }
        router.route(ManagerAPI.logs) { _, ctx, body in ["accepted": await self.receiveLogs(body, from: try ctx.node.nodeID)] }
        router.route(ManagerAPI.report) { _, ctx, body in try await self.recordReport(body, from: ctx.node.nodeID) }
        router.route(ManagerAPI.allocate) { _, ctx, body in try await self.allocate(body, for: ctx.node.nodeID) }
        router.route(ManagerAPI.release) { _, ctx, body in
            try await self.release(body, for: ctx.node.nodeID)
            return ["released": true]
        }
        // A worker leaves for itself only (`node rm` on the manager removes others). A manager
        // leaves with `swarm leave` on itself, which keeps the last one from leaving by mistake.
        router.route(ManagerAPI.leave) { req, ctx, _ in
            let node = try ctx.node.nodeID
            if try ctx.node.role == .manager {
                self.log(.manager, ["node": "\(node)"]).warning("refused manager \(node)'s request to leave by the manager port")
                throw APIError(403, "node \(node) is a manager: a manager leaves with `overlayctl swarm leave` on itself")
            }
            if let other = req.query("node"), other != node {
                self.log(.manager, ["node": "\(node)"]).warning("refused node \(node)'s request to remove node \(other.prefix(64))")
                throw APIError(403, "a node may only leave for itself: use `overlayctl node rm` on a manager to remove another")
            }
            try await self.removeNode(node, rotateKeys: false)
            return ["left": true]
        }
        return router
    }

    /// Whether `node` is in the store: a certificate outlives its node's membership.
    func isMember(_ node: String) throws -> Bool {
        view.entry(.node, node) != nil
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
            logger.with(["node": "\(peer.nodeID)"]).warning("refused \(request.method) \(request.uri.path) from node \(peer.nodeID): it is not a member of the swarm (removed or left)")
            throw APIError(403, "node \(peer.nodeID) is not a member of this swarm (it was removed or left): join again with a token")
        }
        do { return try await next(request, context) } catch let e as HTTPError where e.status == .notFound || e.status == .methodNotAllowed {
            logger.with(["node": "\(peer.nodeID)"]).warning("refused \(request.method) \(request.uri.path) from node \(peer.nodeID) (\(peer.role.rawValue)): not a call nodes may make")
            throw APIError(403, "\(request.method) \(request.uri.path) is not a call a node may make on the manager port: only the manager's local socket may")
        }
    }
}

extension OverlayDaemon {
    /// A plain-text answer (the health routes).
    nonisolated static func text(_ status: HTTPResponse.Status, _ body: String) -> Response {
        Response(status: status, headers: [.contentType: "text/plain; charset=utf-8"],
                 body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
    }

    /// Whether the node is ready, and why not: serving; and in a swarm, a worker has the
    /// manager's state (with its IPsec keys) and every network of it is programmed here.
    func readiness() -> (Bool, String) {
        if isStopped { return (false, "not ready: stopping") }
        guard swarm != nil, let agent else { return (true, "ready (not in a swarm)") }
        if manager == nil && (cluster.version == 0 || cluster.ipsecKeys == nil) {
            return (false, "not ready: no state from the manager yet")
        }
        let programmed = Set(agent.driver.networks().map(\.name))
        let missing = cluster.networks.map(\.name).filter { !programmed.contains($0) }.sorted()
        if !missing.isEmpty { return (false, "not ready: networks not programmed yet: \(missing.joined(separator: ", "))") }
        return (true, "ready")
    }
}
