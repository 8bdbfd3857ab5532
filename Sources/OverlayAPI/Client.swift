import FoundationEssentials
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// Who an authenticated peer is, read from its verified certificate.
public struct PeerIdentity: Sendable, Hashable, CustomStringConvertible {
    /// The node ID (certificate CN).
    public var nodeID: String
    /// The node's role (certificate OU).
    public var role: NodeRole
    /// The cluster ID (certificate O, equal to the CA's).
    public var clusterID: String

    /// Makes an identity from its parts.
    public init(nodeID: String, role: NodeRole, clusterID: String) {
        self.nodeID = nodeID
        self.role = role
        self.clusterID = clusterID
    }

    /// `"<nodeID> (<role>)"`.
    public var description: String { "\(nodeID) (\(role.certificateOU))" }
}

/// Adds TLS handlers to a new connection's pipeline and returns the future of the peer's
/// verified identity (nil: no certificate). `ClusterTLS.Server/Client.addHandlers` have this shape.
public typealias TLSSetup = @Sendable (ChannelPipeline.SynchronousOperations) throws -> EventLoopFuture<PeerIdentity?>

/// An error an API call answers with: an HTTP status and one line a person can act on.
public struct APIError: Error, Sendable, CustomStringConvertible, Equatable {
    /// The HTTP status (400 bad input, 403 not allowed, 404 unknown name, 409 conflict, 503 not ready, 500 bug).
    public var status: Int
    /// The line shown to the user.
    public var message: String

    /// Makes an error.
    public init(_ status: Int, _ message: String) {
        self.status = status
        self.message = message
    }

    public var description: String { message }

    /// A short description of a JSON decoding error (which key, what was expected).
    package static func describe(_ error: Error) -> String {
        guard let e = error as? DecodingError else { return "\(error)" }
        func path(_ c: DecodingError.Context) -> String {
            let p = c.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
            return p.isEmpty ? "" : " at \(p)"
        }
        switch e {
        case .typeMismatch(let t, let c): return "expected \(t)\(path(c))"
        case .valueNotFound(let t, let c): return "missing \(t)\(path(c))"
        case .keyNotFound(let k, let c): return "missing key '\(k.stringValue)'\(path(c))"
        case .dataCorrupted(let c): return "\(c.debugDescription)\(path(c))"
        @unknown default: return "\(error)"
        }
    }
}

/// Where an API server listens or a client connects.
public enum APIEndpoint: Sendable, CustomStringConvertible {
    /// A Unix domain socket at this path (the local API).
    case unix(String)
    /// TCP host and port (the manager's 2377).
    case tcp(host: String, port: Int)

    public var description: String {
        switch self {
        case .unix(let p): return "unix://\(p)"
        case .tcp(let h, let p): return h.contains(":") ? "[\(h)]:\(p)" : "\(h):\(p)"
        }
    }
}

/// Connections an `APIClient` keeps open between calls, for a client that calls the same server
/// often (an agent and its manager): no connect and no TLS handshake per call. A connection is
/// taken for one call at a time; an idle one older than `maxIdle` is closed rather than reused,
/// before the server's own idle timeout could close it under a new request.
public final class APIConnectionPool: Sendable {
    struct Entry {
        let connection: APIConnection
        let since: NIODeadline
    }
    private let idle = Mutex<[Entry]>([])
    /// At most this many idle connections are kept.
    public let capacity: Int
    /// An idle connection is reused only this long.
    public let maxIdle: TimeAmount

    /// Makes an empty pool.
    public init(capacity: Int = 4, maxIdle: TimeAmount = .seconds(60)) {
        self.capacity = capacity
        self.maxIdle = maxIdle
    }

    /// An open idle connection, if there is one.
    func take() -> APIConnection? {
        let now = NIODeadline.now()
        var stale: [APIConnection] = []
        defer { for c in stale { c.channel.close(promise: nil) } }
        return idle.withLock { list in
            while let e = list.popLast() {
                if e.connection.channel.isActive && now - e.since < maxIdle { return e.connection }
                stale.append(e.connection)
            }
            return nil
        }
    }

    /// Gives a connection back after a whole answer; closed instead when the pool is full.
    func put(_ connection: APIConnection) {
        let kept = idle.withLock { list in
            guard list.count < capacity else { return false }
            list.append(Entry(connection: connection, since: .now()))
            return true
        }
        if !kept { connection.channel.close(promise: nil) }
    }

    /// Connections idle in the pool now.
    public var idleCount: Int { idle.withLock { $0.count } }

    /// Closes every idle connection (the client's identity changed, or it is done).
    public func closeAll() {
        let all = idle.withLock { list in
            defer { list.removeAll() }
            return list
        }
        for e in all { e.connection.channel.close(promise: nil) }
    }
}

/// One open connection of an `APIClient`: its channel, the handler that collects answers, and
/// the TLS handshake's outcome (for a clear message when it fails).
struct APIConnection: Sendable {
    let channel: any Channel
    let answers: ResponseHandler
    let handshake: EventLoopFuture<PeerIdentity?>?
}

/// A small HTTP/1.1 client for the daemon's APIs, JSON bodies. Without a pool each call opens a
/// connection and closes it; with one (`pool`), connections stay open for the next call.
public struct APIClient: Sendable {
    /// Where the server is.
    public var endpoint: APIEndpoint
    /// TLS to use (nil for the Unix socket): e.g. `ClusterTLS.Client.addHandlers`.
    public var tls: TLSSetup?
    /// How long a call may take before it fails.
    public var timeout: TimeAmount
    /// Says what a connection error was, for the TLS layer's own errors (nil: the default).
    public var describeError: (@Sendable (any Error) -> String?)?
    /// Kept-open connections to reuse (nil: one connection per call).
    public var pool: APIConnectionPool?

    /// Makes a client.
    public init(endpoint: APIEndpoint, tls: TLSSetup? = nil, timeout: TimeAmount = .seconds(60),
                describeError: (@Sendable (any Error) -> String?)? = nil, pool: APIConnectionPool? = nil) {
        self.endpoint = endpoint
        self.tls = tls
        self.timeout = timeout
        self.describeError = describeError
        self.pool = pool
    }

    /// Sends a request and returns the status and body. Throws `APIError` (status 0) when the
    /// server can't be reached, with a line that says where it tried.
    public func call(_ method: String, _ path: String, body: Data? = nil, group: EventLoopGroup) async throws -> (Int, Data) {
        try Task.checkCancellation()
        if let pool, let kept = pool.take() {
            do { return try await send(method, path, body: body, on: kept) } catch let e as ConnectionLost {
                // Unanswered, the server closed the kept connection as the request went out (its
                // idle timeout, a restart): the request goes again on a new connection.
                if e.answered { throw await failure(e, on: kept) }
            }
        }
        try Task.checkCancellation()
        let connection = try await connect(group: group)
        do { return try await send(method, path, body: body, on: connection) } catch let e as ConnectionLost {
            throw await failure(e, on: connection)
        }
    }

    private func connect(group: EventLoopGroup) async throws -> APIConnection {
        let tls = self.tls
        let setup = Mutex<(ResponseHandler, EventLoopFuture<PeerIdentity?>?)?>(nil)
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(.seconds(5))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handshake = try tls.map { try $0(channel.pipeline.syncOperations) }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    let answers = ResponseHandler()
                    try channel.pipeline.syncOperations.addHandler(answers)
                    setup.withLock { $0 = (answers, handshake) }
                }
            }
        let channel: Channel
        do {
            switch endpoint {
            case .unix(let path): channel = try await bootstrap.connect(unixDomainSocketPath: path).get()
            case .tcp(let host, let port): channel = try await bootstrap.connect(host: host, port: port).get()
            }
        } catch {
            throw APIError(0, "cannot reach \(endpoint): \(describe(error))")
        }
        guard let (answers, handshake) = setup.withLock({ $0 }) else {
            channel.close(promise: nil)
            throw APIError(0, "cannot reach \(endpoint): the connection was not set up")
        }
        return APIConnection(channel: channel, answers: answers, handshake: handshake)
    }

    /// One request on `connection`; the connection goes back to the pool after a whole answer
    /// the server will keep open, and is closed otherwise.
    private func send(_ method: String, _ path: String, body: Data?, on connection: APIConnection) async throws -> (Int, Data) {
        let channel = connection.channel
        let promise = channel.eventLoop.makePromise(of: ResponseHandler.Answer.self)
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "overlayd")
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: "\(body?.count ?? 0)")
        if pool == nil { headers.add(name: "Connection", value: "close") }
        let head = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: method), uri: path, headers: headers)
        let answers = connection.answers
        channel.eventLoop.execute {
            // A kept connection can have closed since it was taken: then nothing would ever answer.
            guard channel.isActive else { return promise.fail(ConnectionLost(answered: false)) }
            answers.expect(promise)
            channel.write(HTTPClientRequestPart.head(head), promise: nil)
            if let body, !body.isEmpty { channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil) }
            channel.writeAndFlush(HTTPClientRequestPart.end(nil)).whenFailure { _ in answers.fail(ConnectionLost(answered: false)) }
        }
        let endpoint = self.endpoint
        let timeout = channel.eventLoop.scheduleTask(in: self.timeout) {
            answers.fail(APIError(0, "\(endpoint) did not answer \(method) \(path) in time"))
            channel.close(promise: nil)
        }
        defer { timeout.cancel() }
        let answer: ResponseHandler.Answer
        do {
            // A cancelled caller (a loop that is ending) cuts the request off: the connection
            // closes, so a long poll does not hold its caller for the rest of its wait.
            answer = try await withTaskCancellationHandler {
                try await promise.futureResult.get()
            } onCancel: {
                channel.eventLoop.execute {
                    answers.fail(CancellationError())
                    channel.close(promise: nil)
                }
            }
        } catch let e as ConnectionLost {
            throw e
        } catch {
            channel.close(promise: nil)
            throw await failure(error, on: connection)
        }
        if let pool, answer.keepAlive { pool.put(connection) } else { channel.close(promise: nil) }
        return (answer.status, answer.body)
    }

    /// The error to show for a failed call: a refused TLS handshake says more than the connection's end.
    private func failure(_ error: any Error, on connection: APIConnection) async -> APIError {
        if let f = connection.handshake {
            do { _ = try await f.get() } catch { return APIError(0, "\(endpoint): \(describe(error))") }
        }
        if let e = error as? APIError { return e }
        return APIError(0, "\(endpoint): \(describe(error))")
    }

    /// Calls and decodes a JSON answer; a non-2xx answer throws its `{"message"}` as an `APIError`.
    public func json<T: Decodable>(_ method: String, _ path: String, body: (some Encodable)? = Optional<Data>.none,
                                   as type: T.Type, group: EventLoopGroup) async throws -> T {
        let data = try body.map { try JSONEncoder().encode($0) }
        let (status, reply) = try await call(method, path, body: data, group: group)
        guard (200..<300).contains(status) else { throw Self.error(status: status, body: reply) }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do { return try decoder.decode(T.self, from: reply) } catch {
            throw APIError(0, "\(endpoint) answered \(method) \(path) with a body that is not what was expected: \(APIError.describe(error))")
        }
    }

    /// The `APIError` a non-2xx answer carries.
    public static func error(status: Int, body: Data) -> APIError {
        struct Message: Decodable { var message: String }
        if let m = try? JSONDecoder().decode(Message.self, from: body) { return APIError(status, m.message) }
        return APIError(status, "HTTP \(status): \(String(decoding: body.prefix(200), as: UTF8.self))")
    }

    func describe(_ error: any Error) -> String {
        if let d = describeError?(error) { return d }
        if let e = error as? IOError { return e.description }
        return "\(error)"
    }
}

/// The connection ended while a call waited on it; `answered`: the answer's head had come.
struct ConnectionLost: Error, CustomStringConvertible {
    var answered: Bool
    var description: String { "the connection closed before an answer came" }
}

/// Collects each answer on one connection, for the call waiting on it.
final class ResponseHandler: ChannelInboundHandler, @unchecked Sendable {
    // @unchecked: every field is touched only on the channel's event loop (NIO handler rules).
    typealias InboundIn = HTTPClientResponsePart

    struct Answer {
        var status: Int
        var body: Data
        var keepAlive: Bool
    }

    var pending: EventLoopPromise<Answer>?
    var head: HTTPResponseHead?
    var body = ByteBuffer()

    /// The next answer goes to `promise`.
    func expect(_ promise: EventLoopPromise<Answer>) {
        pending = promise
        head = nil
        body.clear()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body(var b): body.writeBuffer(&b)
        case .end:
            guard let promise = pending, let head else { return }
            pending = nil
            promise.succeed(Answer(status: Int(head.status.code), body: Data(body.readableBytesView), keepAlive: head.isKeepAlive))
        }
    }

    /// Fails the waiting call, if any (its time ran out).
    func fail(_ error: any Error) {
        pending?.fail(error)
        pending = nil
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        pending?.fail(ConnectionLost(answered: head != nil))
        pending = nil
    }
}
