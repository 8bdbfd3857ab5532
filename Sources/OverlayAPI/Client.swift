import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A node's role, as written in its certificate's OU.
public enum NodeRole: String, Sendable, Hashable, Codable, CaseIterable {
    /// A manager: runs the store and API and may issue certificates.
    case manager = "swarm-manager"
    /// A worker: runs tasks and follows the managers.
    case worker = "swarm-worker"
}

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
    public var description: String { "\(nodeID) (\(role.rawValue))" }
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

/// A small HTTP/1.1 client for the daemon's APIs: one request per connection, JSON bodies.
public struct APIClient: Sendable {
    /// Where the server is.
    public var endpoint: APIEndpoint
    /// TLS to use (nil for the Unix socket): e.g. `ClusterTLS.Client.addHandlers`.
    public var tls: TLSSetup?
    /// How long a call may take before it fails.
    public var timeout: TimeAmount
    /// Says what a connection error was, for the TLS layer's own errors (nil: the default).
    public var describeError: (@Sendable (any Error) -> String?)?

    /// Makes a client.
    public init(endpoint: APIEndpoint, tls: TLSSetup? = nil, timeout: TimeAmount = .seconds(60),
                describeError: (@Sendable (any Error) -> String?)? = nil) {
        self.endpoint = endpoint
        self.tls = tls
        self.timeout = timeout
        self.describeError = describeError
    }

    /// Sends a request and returns the status and body. Throws `APIError` (status 0) when the
    /// server can't be reached, with a line that says where it tried.
    public func call(_ method: String, _ path: String, body: Data? = nil, group: EventLoopGroup) async throws -> (Int, Data) {
        let promise = group.next().makePromise(of: (Int, Data).self)
        let tls = self.tls
        let handshake = Mutex<EventLoopFuture<PeerIdentity?>?>(nil)
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(.seconds(5))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        let f = try tls(channel.pipeline.syncOperations)
                        handshake.withLock { $0 = f }
                    }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(ResponseHandler(promise: promise))
                }
            }
        let channel: Channel
        do {
            switch endpoint {
            case .unix(let path): channel = try await bootstrap.connect(unixDomainSocketPath: path).get()
            case .tcp(let host, let port): channel = try await bootstrap.connect(host: host, port: port).get()
            }
        } catch {
            promise.fail(error)
            throw APIError(0, "cannot reach \(endpoint): \(describe(error))")
        }
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "overlayd")
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: "\(body?.count ?? 0)")
        headers.add(name: "Connection", value: "close")
        let head = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: method), uri: path, headers: headers)
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if let body, !body.isEmpty { channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil) }
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        let timeout = channel.eventLoop.scheduleTask(in: self.timeout) {
            promise.fail(APIError(0, "\(endpoint) did not answer \(method) \(path) in time"))
            channel.close(promise: nil)
        }
        defer { timeout.cancel() }
        do { return try await promise.futureResult.get() } catch {
            // A refused handshake: the TLS layer's own reason says more than the connection's.
            if let f = handshake.withLock({ $0 }) {
                do { _ = try await f.get() } catch { throw APIError(0, "\(endpoint): \(describe(error))") }
            }
            if let e = error as? APIError { throw e }
            throw APIError(0, "\(endpoint): \(describe(error))")
        }
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
        if let obj = try? JSONSerialization.jsonObject(with: body) as? [String: Any], let m = obj["message"] as? String {
            return APIError(status, m)
        }
        return APIError(status, "HTTP \(status): \(String(decoding: body.prefix(200), as: UTF8.self))")
    }

    func describe(_ error: any Error) -> String {
        if let d = describeError?(error) { return d }
        if let e = error as? IOError { return e.description }
        return "\(error)"
    }
}

private final class ResponseHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    let promise: EventLoopPromise<(Int, Data)>
    var status = 0
    var body = ByteBuffer()

    init(promise: EventLoopPromise<(Int, Data)>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): status = Int(h.status.code)
        case .body(var b): body.writeBuffer(&b)
        case .end:
            promise.succeed((status, Data(body.readableBytesView)))
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        promise.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(APIError(0, "the connection closed before an answer came"))
    }
}
