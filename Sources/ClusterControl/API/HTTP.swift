import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// One HTTP request as the daemon's API handlers see it: method, path split from its query,
/// the body, and who is asking when the connection was mutual TLS.
public struct APIRequest: Sendable {
    /// `GET`, `POST`, `DELETE`, ...
    public var method: String
    /// The path without the query, e.g. `/v1/networks/web`.
    public var path: String
    /// Query parameters (`?a=1&b=2`), percent-decoded; the last value of a repeated name wins.
    public var query: [String: String]
    /// The request body (empty when there is none).
    public var body: Data
    /// The authenticated client of a TLS connection (nil on the Unix socket or without a client cert).
    public var peer: ClusterTLS.PeerIdentity?

    /// Matches the path against a pattern such as `v1/networks/*` and returns what the `*`s matched.
    public func match(_ method: String, _ pattern: String) -> [String]? {
        guard method == self.method else { return nil }
        let p = pattern.split(separator: "/").map(String.init)
        let c = components
        guard p.count == c.count else { return nil }
        var captured: [String] = []
        for (a, b) in zip(p, c) {
            if a == "*" { captured.append(b) } else if a != b { return nil }
        }
        return captured
    }

    /// The path's components after the leading slash (`/v1/networks/web` -> ["v1", "networks", "web"]).
    public var components: [String] { path.split(separator: "/").map { String($0).removingPercentEncoding ?? String($0) } }

    /// Decodes the body as JSON, or throws an `APIError` (400) that says what is wrong with it.
    public func decode<T: Decodable>(_ type: T.Type) throws -> T {
        guard !body.isEmpty else { throw APIError(400, "the request needs a JSON body") }
        do { return try JSONDecoder().decode(T.self, from: body) } catch {
            throw APIError(400, "malformed JSON in the request: \(APIError.describe(error))")
        }
    }
}

/// An HTTP response: a status and a JSON (or text) body.
public struct APIResponse: Sendable {
    /// The HTTP status code.
    public var status: Int
    /// The body bytes.
    public var body: Data

    /// A response with a raw body.
    public init(status: Int, body: Data) {
        self.status = status
        self.body = body
    }

    /// A 200 (or given status) response with `value` encoded as JSON.
    public static func json<T: Encodable>(_ value: T, status: Int = 200) -> APIResponse {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        do { return APIResponse(status: status, body: try encoder.encode(value)) } catch {
            return .error(APIError(500, "cannot encode the response: \(error)"))
        }
    }

    /// An error response: `{"message": "..."}` with the error's status.
    public static func error(_ error: APIError) -> APIResponse {
        json(["message": error.message], status: error.status)
    }
}

/// The handler an `APIServer` calls for each request.
public typealias APIHandler = @Sendable (APIRequest) async -> APIResponse

/// What one API listener allows, so that no one (least of all someone without a certificate)
/// can hold it: connections at once, in all and per source address, how long a request may take
/// to arrive, and how large a body may be.
public struct APIServerLimits: Sendable {
    /// Connections open at once; one more is closed as soon as it is accepted.
    public var maxConnections: Int
    /// Connections open at once from one source address (TCP); one more is closed at accept.
    public var maxConnectionsPerSource: Int
    /// From accept to the end of the request (TLS handshake, head and body): a slow or idle
    /// client is cut off then. Answering may take longer (a long poll).
    public var requestTimeout: TimeAmount
    /// The largest body of a request whose sender is known (a client certificate, or the local socket).
    public var maxBody: Int
    /// The largest body before the sender is known (no client certificate on a TLS listener: the join call).
    public var maxUnauthenticatedBody: Int

    /// Makes limits; the defaults suit the manager port of a cluster of a thousand nodes.
    public init(maxConnections: Int = 2048, maxConnectionsPerSource: Int = 64, requestTimeout: TimeAmount = .seconds(10),
                maxBody: Int = 4 << 20, maxUnauthenticatedBody: Int = 64 << 10) {
        self.maxConnections = maxConnections
        self.maxConnectionsPerSource = maxConnectionsPerSource
        self.requestTimeout = requestTimeout
        self.maxBody = maxBody
        self.maxUnauthenticatedBody = maxUnauthenticatedBody
    }
}

/// Counts a listener's open connections, in all and per source, and what it turned away.
final class ConnectionGate: Sendable {
    private struct State {
        var open = 0
        var perSource: [String: Int] = [:]
        var refused = 0
        var timedOut = 0
    }
    private let state = Mutex(State())
    let limits: APIServerLimits

    init(limits: APIServerLimits) { self.limits = limits }

    /// Takes a connection from `source` (nil: the local socket, no per-source limit); false when
    /// it is one too many.
    func admit(_ source: String?) -> Bool {
        state.withLock { s in
            let fromSource = source.map { s.perSource[$0, default: 0] } ?? 0
            guard s.open < limits.maxConnections, source == nil || fromSource < limits.maxConnectionsPerSource else {
                s.refused += 1
                return false
            }
            s.open += 1
            if let source { s.perSource[source] = fromSource + 1 }
            return true
        }
    }

    func release(_ source: String?) {
        state.withLock { s in
            s.open -= 1
            if let source {
                let n = (s.perSource[source] ?? 1) - 1
                s.perSource[source] = n > 0 ? n : nil
            }
        }
    }

    func countTimeout() { state.withLock { $0.timedOut += 1 } }

    var open: Int { state.withLock { $0.open } }
    var refused: Int { state.withLock { $0.refused } }
    var timedOut: Int { state.withLock { $0.timedOut } }
}

/// A small HTTP/1.1 server over SwiftNIO: one request per connection, handled by an async
/// handler; optionally TLS, where the peer's certificate identity is passed to the handler.
public final class APIServer: Sendable {

    private let channel: Channel
    private let gate: ConnectionGate
    /// Where it listens.
    public let endpoint: APIEndpoint
    /// The bound port (TCP) or 0.
    public var port: Int { channel.localAddress?.port ?? 0 }
    /// Connections open now.
    public var openConnections: Int { gate.open }
    /// Connections closed at accept for being over a limit, since the start.
    public var refusedConnections: Int { gate.refused }
    /// Connections cut off because their request did not arrive in time, since the start.
    public var timedOutRequests: Int { gate.timedOut }

    private init(channel: Channel, endpoint: APIEndpoint, gate: ConnectionGate) {
        self.channel = channel
        self.endpoint = endpoint
        self.gate = gate
    }

    /// Binds and starts serving. `tls` adds TLS and reads the client's identity from it.
    public static func start(
        _ endpoint: APIEndpoint, tls: TLSSetup? = nil, limits: APIServerLimits = APIServerLimits(), group: EventLoopGroup,
        handler: @escaping APIHandler
    ) async throws -> APIServer {
        let gate = ConnectionGate(limits: limits)
        let initializer: @Sendable (Channel) -> EventLoopFuture<Void> = { child in
            // Over a limit: closed before any TLS work is spent on it.
            let source: String?
            if case .tcp = endpoint { source = child.remoteAddress?.ipAddress ?? "?" } else { source = nil }
            guard gate.admit(source) else { return child.eventLoop.makeFailedFuture(ChannelError.inputClosed) }
            child.closeFuture.whenComplete { _ in gate.release(source) }
            return child.eventLoop.makeCompletedFuture {
                let identity = try tls?(child.pipeline.syncOperations)
                try child.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                try child.pipeline.syncOperations.addHandler(RequestHandler(handler: handler, identity: identity, gate: gate))
            }
        }
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer(initializer)
        let channel: Channel
        switch endpoint {
        case .unix(let path):
            channel = try await bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
            chmod(path, 0o660)
        case .tcp(let host, let port):
            channel = try await bootstrap.bind(host: host, port: port).get()
        }
        return APIServer(channel: channel, endpoint: endpoint, gate: gate)
    }

    /// Stops listening (requests in flight finish).
    public func close() async {
        try? await channel.close()
    }
}

private final class RequestHandler: ChannelInboundHandler, @unchecked Sendable {
    // @unchecked: every field is touched only on the channel's event loop (NIO handler rules).
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let handler: APIHandler
    let identity: EventLoopFuture<ClusterTLS.PeerIdentity?>?
    let gate: ConnectionGate
    var head: HTTPRequestHead?
    var body = ByteBuffer()
    /// Whether the sender is known: the local socket, or a TLS client that showed a certificate.
    var authenticated: Bool
    var deadline: Scheduled<Void>?
    var answered = false

    init(handler: @escaping APIHandler, identity: EventLoopFuture<ClusterTLS.PeerIdentity?>?, gate: ConnectionGate) {
        self.handler = handler
        self.identity = identity
        self.gate = gate
        self.authenticated = identity == nil
    }

    var bodyLimit: Int { authenticated ? gate.limits.maxBody : gate.limits.maxUnauthenticatedBody }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        let gate = self.gate
        deadline = context.eventLoop.scheduleTask(in: gate.limits.requestTimeout) {
            gate.countTimeout()
            channel.close(promise: nil)
        }
        // The handshake ends before any request byte is decoded, so the body limit below knows
        // whether the sender showed a certificate.
        identity?.whenSuccess { [self] peer in if peer != nil { authenticated = true } }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !answered else { return }
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body.clear()
            if let length = h.headers.first(name: "Content-Length").flatMap(Int.init), length > bodyLimit {
                refuse(context, head: h, APIError(413, "the request body is larger than \(bodyLimit) bytes"))
            }
        case .body(var b):
            guard let head else { return }
            guard body.readableBytes + b.readableBytes <= bodyLimit else {
                refuse(context, head: head, APIError(413, "the request body is larger than \(bodyLimit) bytes"))
                return
            }
            body.writeBuffer(&b)
        case .end:
            guard let head else { return }
            self.head = nil
            deadline?.cancel()
            deadline = nil
            answered = true
            let channel = context.channel
            let loop = context.eventLoop
            let (path, query) = Self.split(head.uri)
            let bodyData = Data(body.readableBytesView)
            let handler = self.handler
            let identity = self.identity ?? loop.makeSucceededFuture(nil)
            identity.whenComplete { result in Task {
                let response: APIResponse
                switch result {
                case .failure(let e):
                    response = .error(APIError(403, "the client certificate was refused: \(e)"))
                case .success(let peer):
                    let request = APIRequest(method: head.method.rawValue, path: path, query: query, body: bodyData, peer: peer)
                    response = await handler(request)
                }
                loop.execute { Self.write(response, version: head.version, to: channel) }
            } }
        }
    }

    /// Answers at once and closes, reading nothing more (a body over the limit).
    func refuse(_ context: ChannelHandlerContext, head: HTTPRequestHead, _ error: APIError) {
        answered = true
        deadline?.cancel()
        Self.write(.error(error), version: head.version, to: context.channel)
    }

    static func write(_ response: APIResponse, version: HTTPVersion, to channel: Channel) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: "\(response.body.count)")
        headers.add(name: "Connection", value: "close")
        let status = HTTPResponseStatus(statusCode: response.status)
        channel.write(HTTPServerResponsePart.head(HTTPResponseHead(version: version, status: status, headers: headers)), promise: nil)
        channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(bytes: response.body))), promise: nil)
        channel.writeAndFlush(HTTPServerResponsePart.end(nil)).whenComplete { _ in channel.close(promise: nil) }
    }

    static func split(_ uri: String) -> (String, [String: String]) {
        guard let q = uri.firstIndex(of: "?") else { return (uri, [:]) }
        var query: [String: String] = [:]
        for pair in uri[uri.index(after: q)...].split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1).map { String($0).removingPercentEncoding ?? String($0) }
            if let k = kv.first { query[k] = kv.count > 1 ? kv[1] : "" }
        }
        return (String(uri[..<q]), query)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
