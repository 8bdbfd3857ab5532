import ClusterManager
import DockerPlugin
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import Synchronization

/// Who is asking and how much they may send: the request context of the daemon's API routes.
public struct APIContext: RequestContext {
    public typealias Source = APIContextSource
    public var coreContext: CoreRequestContextStorage
    /// The authenticated client of a TLS connection (nil on the Unix socket, or a TLS client that
    /// showed no certificate).
    public let peer: PeerIdentity?
    /// The largest body this request may have: smaller before the sender is known.
    public let maxUploadSize: Int

    public init(source: APIContextSource) {
        coreContext = CoreRequestContextStorage(source: source)
        peer = source.peer
        maxUploadSize = source.bodyLimit
    }
}

/// What an `APIContext` is made from: one per request, by `APIServer`.
public struct APIContextSource: RequestContextSource {
    public let logger: Logger
    let peer: PeerIdentity?
    let bodyLimit: Int
}

/// An HTTP response: a status and a JSON (or text) body.
public struct APIResponse: Sendable, ResponseGenerator {
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

    public func response(from request: Request, context: some RequestContext) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[.contentLength] = "\(body.count)"
        return Response(status: .init(code: status), headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }
}

extension Request {
    /// A query parameter (`?force=1`), percent-decoded.
    func query(_ name: String) -> String? {
        uri.queryParameters[Substring(name)].map { String($0).removingPercentEncoding ?? String($0) }
    }

    /// Whether a flag parameter is set (`?force=1`).
    func flag(_ name: String) -> Bool { query(name) == "1" }

    /// A count parameter (`?tail=10`): nil when absent, 400 when not a whole number from 0.
    func count(_ name: String) throws -> Int? {
        guard let v = query(name) else { return nil }
        guard let n = Int(v), n >= 0 else { throw APIError(400, "\(name)=\(v.prefix(40)): use a whole number from 0") }
        return n
    }

    /// The body decoded as JSON, or an `APIError` that says what is wrong with it: 413 over the
    /// context's limit, 400 when empty or malformed.
    mutating func json<T: Decodable>(_ type: T.Type, context: APIContext) async throws -> T {
        let limit = context.maxUploadSize
        if let length = headers[.contentLength].flatMap(Int.init), length > limit {
            throw APIError(413, "the request body is larger than \(limit) bytes")
        }
        let bytes: ByteBuffer
        do { bytes = try await collectBody(upTo: limit) } catch is NIOTooManyBytesError {
            throw APIError(413, "the request body is larger than \(limit) bytes")
        } catch {
            throw APIError(400, "the request body did not arrive whole: \(error)")
        }
        guard bytes.readableBytes > 0 else { throw APIError(400, "the request needs a JSON body") }
        do { return try JSONDecoder().decode(T.self, from: Data(bytes.readableBytesView)) } catch {
            throw APIError(400, "malformed JSON in the request: \(APIError.describe(error))")
        }
    }
}

extension Router where Context == APIContext {
    /// Adds one of the API's shared routes (`LocalAPI`, `ManagerAPI`): the body is decoded as the
    /// route's (nothing is read for `NoBody`), and what the handler returns is answered as JSON
    /// with the route's status.
    @discardableResult
    func route<Body, Reply>(_ route: APIRoute<Body, Reply>,
                            _ handle: @escaping @Sendable (Request, APIContext, Body) async throws -> Reply) -> Self {
        let method = HTTPRequest.Method(route.method) ?? .get
        return on(RouterPath(route.path), method: method) { request, context in
            var request = request
            let body: Body
            if let none = NoBody() as? Body { body = none } else { body = try await request.json(Body.self, context: context) }
            return APIResponse.json(try await handle(request, context, body), status: route.status)
        }
    }
}

extension APIContext {
    /// A path parameter (`:name`) the route declared.
    func parameter(_ name: String) throws -> String {
        guard let value = parameters.get(name) else { throw APIError(400, "the path has no \(name)") }
        return value.removingPercentEncoding ?? value
    }
}

/// Turns whatever a route throws into the API's error shape (`{"message": ...}`): an `APIError`
/// as it is, an unknown path or method as 404 naming the call, anything else as 500.
struct APIErrorMiddleware: RouterMiddleware {
    typealias Context = APIContext

    func handle(_ request: Request, context: APIContext, next: (Request, APIContext) async throws -> Response) async throws -> Response {
        do { return try await next(request, context) } catch {
            return Self.response(for: Self.apiError(error, request), request: request, context: context)
        }
    }

    static func apiError(_ error: any Error, _ request: Request) -> APIError {
        switch error {
        case let e as APIError: return e
        case let e as HTTPError where e.status == .notFound || e.status == .methodNotAllowed:
            if request.uri.path.split(separator: "/").first != "v1" {
                return APIError(404, "unknown API path \(request.uri.path); this daemon speaks /v1")
            }
            return APIError(404, "no such API call: \(request.method) \(request.uri.path)")
        case let e as HTTPError: return APIError(e.status.code, e.body ?? e.status.reasonPhrase)
        default: return APIError(500, "\(error)")
        }
    }

    static func response(for error: APIError, request: Request, context: APIContext) -> Response {
        APIResponse.error(error).response(from: request, context: context)
    }
}

/// What one API listener allows, so that no one (least of all someone without a certificate)
/// can hold it: connections at once, in all and per source address, how long a request may take
/// to arrive, how long a kept-open connection may sit idle, and how large a request's head and
/// body may be.
public struct APIServerLimits: Sendable {
    /// Connections open at once; one more is closed as soon as it is accepted.
    public var maxConnections: Int
    /// Connections open at once from one source address (TCP); one more is closed at accept.
    public var maxConnectionsPerSource: Int
    /// From accept (or the first byte of a later request on a kept-open connection) to the end of
    /// the request: TLS handshake, head and body. A slow or idle client is cut off then. Answering
    /// may take longer (a long poll).
    public var requestTimeout: TimeAmount
    /// How long a kept-open connection may wait for its next request.
    public var idleTimeout: TimeAmount
    /// The largest body of a request whose sender is known (a client certificate, or the local socket).
    public var maxBody: Int
    /// The largest body before the sender is known (no client certificate on a TLS listener: the join call).
    public var maxUnauthenticatedBody: Int
    /// The largest request head: the request line and every header's name and value together
    /// (and so also the largest one header). More closes the connection unanswered.
    public var maxHeaderBytes: Int
    /// The most header fields in one request; more closes the connection unanswered.
    public var maxHeaderFields: Int

    /// Makes limits; the defaults suit the manager port of a cluster of a thousand nodes.
    public init(maxConnections: Int = 2048, maxConnectionsPerSource: Int = 64, requestTimeout: TimeAmount = .seconds(10),
                idleTimeout: TimeAmount = .seconds(90), maxBody: Int = 4 << 20, maxUnauthenticatedBody: Int = 64 << 10,
                maxHeaderBytes: Int = 16 << 10, maxHeaderFields: Int = 100) {
        self.maxConnections = maxConnections
        self.maxConnectionsPerSource = maxConnectionsPerSource
        self.requestTimeout = requestTimeout
        self.idleTimeout = idleTimeout
        self.maxBody = maxBody
        self.maxUnauthenticatedBody = maxUnauthenticatedBody
        self.maxHeaderBytes = maxHeaderBytes
        self.maxHeaderFields = maxHeaderFields
    }
}

/// Counts a listener's open connections, in all and per source, and what it turned away.
final class ConnectionGate: Sendable {
    private struct State {
        var open = 0
        var perSource: [String: Int] = [:]
        var refused = 0
        var timedOut = 0
        var malformed = 0
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
    func countMalformed() { state.withLock { $0.malformed += 1 } }

    var open: Int { state.withLock { $0.open } }
    var refused: Int { state.withLock { $0.refused } }
    var timedOut: Int { state.withLock { $0.timedOut } }
    var malformed: Int { state.withLock { $0.malformed } }
}

/// The daemon's HTTP/1.1 API on Hummingbird: a router of typed routes, kept-open connections,
/// optionally TLS whose client identity reaches each route, and the listener's limits.
public final class APIServer: Sendable {
    private let server: Server<GatedHTTPChannel>
    private let running: Task<Void, Never>
    private let gate: ConnectionGate
    /// The Unix socket this server put in place (device and inode), so that closing removes it
    /// only if it is still this server's: another daemon may have replaced it since.
    private let boundSocket: SocketIdentity?
    /// Where it listens.
    public let endpoint: APIEndpoint
    /// The bound port (TCP) or 0.
    public let port: Int
    /// Connections open now.
    public var openConnections: Int { gate.open }
    /// Connections closed at accept for being over a limit, since the start.
    public var refusedConnections: Int { gate.refused }
    /// Connections cut off because their request did not arrive in time, since the start.
    public var timedOutRequests: Int { gate.timedOut }
    /// Connections closed unanswered because the request's head was over its limits or not HTTP.
    public var malformedRequests: Int { gate.malformed }

    private init(
        server: Server<GatedHTTPChannel>, running: Task<Void, Never>, endpoint: APIEndpoint, port: Int, gate: ConnectionGate,
        boundSocket: SocketIdentity?
    ) {
        self.server = server
        self.boundSocket = boundSocket
        self.running = running
        self.endpoint = endpoint
        self.port = port
        self.gate = gate
    }

    /// Binds and starts serving `router`. `tls` adds TLS and reads the client's identity from it.
    /// A Unix socket is mode 0660 and, with `socketGroup`, that group's before it takes its path:
    /// the group can connect from the first moment the socket is there.
    public static func start(
        _ endpoint: APIEndpoint, tls: TLSSetup? = nil, limits: APIServerLimits = APIServerLimits(), socketGroup: gid_t? = nil,
        group: any EventLoopGroup, logger: Logger, router: Router<APIContext>
    ) async throws -> APIServer {
        let gate = ConnectionGate(limits: limits)
        let peers = PeerRegistry()
        let responder = router.buildResponder()
        let http = HTTP1Channel(
            responder: { request, writer, channel in
                let peer = try await peers.peer(of: channel)
                let known = tls == nil || peer != nil
                let context = APIContext(source: APIContextSource(
                    logger: logger, peer: peer, bodyLimit: known ? limits.maxBody : limits.maxUnauthenticatedBody))
                let response: Response
                do { response = try await responder.respond(to: request, context: context) } catch {
                    response = APIErrorMiddleware.response(for: APIErrorMiddleware.apiError(error, request), request: request, context: context)
                }
                try await writer.write(response: response.head, body: response.body)
            },
            configuration: HTTP1Channel.Configuration(
                additionalChannelHandlers: [RequestDeadline(gate: gate)],
                httpDecoderConfiguration: .init(
                    maxHeaderFieldSize: limits.maxHeaderBytes, maxHeaderListSize: limits.maxHeaderBytes,
                    maxHeaderFieldCount: limits.maxHeaderFields)))
        let child = GatedHTTPChannel(http: http, gate: gate, tls: tls, peers: peers, perSource: endpoint.isTCP)
        let address: BindAddress
        // A Unix socket is bound beside its path and renamed into place (see `SocketFile`).
        var staging: String?
        if case .unix(let path) = endpoint { staging = SocketFile.staging(for: path) }
        switch endpoint {
        case .unix(let path): address = .unixDomainSocket(path: staging ?? path)
        case .tcp(let host, let port): address = .hostname(host, port: port)
        }
        let bound = AsyncStream<Int>.makeStream()
        // Hummingbird says "listening" at info for every listener; the daemon says it once itself.
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .notice)
        let server = Server(
            childChannelSetup: child, configuration: ServerConfiguration(address: address, backlog: 256, reuseAddress: true),
            onServerRunning: { channel in
                bound.continuation.yield(channel.localAddress?.port ?? 0)
                bound.continuation.finish()
            },
            eventLoopGroup: group, logger: quiet)
        let running = Task {
            do { try await server.run() } catch {
                bound.continuation.finish()
                logger.error("the API server on \(endpoint) stopped: \(error)")
            }
        }
        var ports = bound.stream.makeAsyncIterator()
        guard let port = await ports.next() else {
            running.cancel()
            throw APIError(500, "cannot listen on \(endpoint)")
        }
        var boundSocket: SocketIdentity?
        if case .unix(let path) = endpoint {
            chmod(staging ?? path, 0o660)
            if let socketGroup, chown(staging ?? path, uid_t.max, socketGroup) != 0 {
                logger.error("cannot give the socket \(path) to group \(socketGroup): \(String(cString: strerror(errno)))")
            }
            boundSocket = SocketIdentity(path: path)
            if let staging {
                do { boundSocket = try SocketFile.publish(staging, at: path) } catch {
                    try? await server.shutdownGracefully()
                    running.cancel()
                    throw APIError(500, "\(error)")
                }
            }
        }
        return APIServer(server: server, running: running, endpoint: endpoint, port: port, gate: gate, boundSocket: boundSocket)
    }

    /// Stops listening; requests in flight finish, idle connections close. A Unix socket is
    /// removed if it is still the one this server bound.
    public func close() async {
        try? await server.shutdownGracefully()
        running.cancel()
        await running.value
        if case .unix(let path) = endpoint { SocketFile.remove(path, ifStill: boundSocket) }
    }
}


extension APIEndpoint {
    var isTCP: Bool {
        if case .tcp = self { return true }
        return false
    }
}

/// The TLS identity of each open connection, so that a request's context can name its sender.
final class PeerRegistry: Sendable {
    private let futures = Mutex<[ObjectIdentifier: EventLoopFuture<PeerIdentity?>]>([:])

    func set(_ future: EventLoopFuture<PeerIdentity?>, for channel: any Channel) {
        futures.withLock { $0[ObjectIdentifier(channel)] = future }
        channel.closeFuture.whenComplete { [self] _ in _ = futures.withLock { $0.removeValue(forKey: ObjectIdentifier(channel)) } }
    }

    /// The client of `channel` once its handshake is done (nil without TLS or without a certificate);
    /// throws when the handshake failed.
    func peer(of channel: any Channel) async throws -> PeerIdentity? {
        guard let future = futures.withLock({ $0[ObjectIdentifier(channel)] }) else { return nil }
        do { return try await future.get() } catch { throw APIError(403, "the client certificate was refused: \(error)") }
    }
}

/// Hummingbird's HTTP/1 child channel behind the listener's gate: over a limit, a connection is
/// closed at accept before any TLS work is spent on it; TLS (when set) goes first in the pipeline.
struct GatedHTTPChannel: ServerChildChannel {
    typealias Value = HTTP1Channel.Value

    let http: HTTP1Channel
    let gate: ConnectionGate
    let tls: TLSSetup?
    let peers: PeerRegistry
    let perSource: Bool

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let source = perSource ? (channel.remoteAddress?.ipAddress ?? "?") : nil
        guard gate.admit(source) else {
            channel.close(promise: nil)
            return channel.eventLoop.makeFailedFuture(ChannelError.inputClosed)
        }
        let gate = self.gate
        channel.closeFuture.whenComplete { _ in gate.release(source) }
        if let tls {
            // Hummingbird allows half-closed connections; NIOSSL then leaves a shutdown this side
            // began waiting for its 5 s timeout even after the peer's close_notify came, and every
            // kept-open connection would hold up a stop by that much.
            do {
                try channel.syncOptions?.setOption(ChannelOptions.allowRemoteHalfClosure, value: false)
                peers.set(try tls(channel.pipeline.syncOperations), for: channel)
            } catch {
                return channel.eventLoop.makeFailedFuture(error)
            }
        }
        return http.setup(channel: channel, logger: logger)
    }

    func handle(value: Value, logger: Logger) async {
        await http.handle(value: value, logger: logger)
    }
}

/// Cuts off a connection whose request does not arrive whole in time (a slowloris, a client that
/// connects and says nothing, a stalled handshake), and one kept open but idle too long.
final class RequestDeadline: ChannelDuplexHandler, RemovableChannelHandler, @unchecked Sendable {
    // @unchecked: every field is touched only on the channel's event loop (NIO handler rules).
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    let gate: ConnectionGate
    var deadline: Scheduled<Void>?
    /// Whether the running timer is the idle wait between requests (not counted as a timeout).
    var idle = false
    /// Between a request's head and its end.
    var reading = false

    init(gate: ConnectionGate) { self.gate = gate }

    func handlerAdded(context: ChannelHandlerContext) {
        arm(context, idle: false)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            reading = true
            if idle { arm(context, idle: false) }
        case .body: break
        case .end:
            reading = false
            deadline?.cancel()
            deadline = nil
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .end = unwrapOutboundIn(data) else { return context.write(data, promise: promise) }
        if reading {
            // Answered before the request was whole (a body over the limit): nothing more is read.
            context.writeAndFlush(data, promise: promise)
            context.close(promise: nil)
            return
        }
        arm(context, idle: true)
        context.write(data, promise: promise)
    }

    /// A request the HTTP decoder refused (a head over the limits, bytes that are not HTTP):
    /// the decoder would only discard what follows until the deadline, so the connection is
    /// closed now, unanswered.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? HTTPParserError {
            // A client hanging up mid-head is not a malformed request.
            if error != .invalidEOFState { gate.countMalformed() }
            context.close(promise: nil)
            return
        }
        context.fireErrorCaught(error)
    }

    private func arm(_ context: ChannelHandlerContext, idle: Bool) {
        deadline?.cancel()
        self.idle = idle
        let channel = context.channel
        let gate = self.gate
        deadline = context.eventLoop.scheduleTask(in: idle ? gate.limits.idleTimeout : gate.limits.requestTimeout) {
            if !idle { gate.countTimeout() }
            channel.close(promise: nil)
        }
    }
}
