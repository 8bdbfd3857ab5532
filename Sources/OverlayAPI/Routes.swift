import FoundationEssentials
import NIOCore

/// One call of the API, as the daemon's routers and the clients share it: its method, its path
/// (with `:name` segments filled in per call), what its body is and what it answers. A route
/// defined once cannot drift between the server and its callers: the body and the reply are
/// types, checked at both ends by the compiler.
public struct APIRoute<Body: Codable & Sendable, Reply: Codable & Sendable>: Sendable, CustomStringConvertible {
    /// `GET`, `POST` or `DELETE`.
    public let method: String
    /// The path template, e.g. `/v1/networks/:name`.
    public let path: String
    /// The status a success answers with (201 for what creates).
    public let status: Int

    /// A route; `status` is what a success answers with.
    public init(_ method: String, _ path: String, status: Int = 200) {
        self.method = method
        self.path = path
        self.status = status
    }

    /// The names of the path's `:parameters`, in order.
    public var parameterNames: [String] {
        path.split(separator: "/" as Character).filter { $0.hasPrefix(":") }.map { String($0.dropFirst()) }
    }

    /// The request target: the path with `parameters` filled in order (percent-escaped) and the
    /// query items appended (nil values left out).
    public func target(_ parameters: [String] = [], query: [(String, String?)] = []) -> String {
        var values = parameters.makeIterator()
        let filled = path.split(separator: "/" as Character, omittingEmptySubsequences: false).map { segment -> String in
            guard segment.hasPrefix(":") else { return String(segment) }
            return Self.escape(values.next() ?? "")
        }.joined(separator: "/")
        let items = query.compactMap { name, value in value.map { "\(name)=\(Self.escape($0))" } }
        return items.isEmpty ? filled : filled + "?" + items.joined(separator: "&")
    }

    /// `GET /v1/networks/:name`.
    public var description: String { "\(method) \(path)" }

    /// Percent-escapes everything but RFC 3986's unreserved characters (a path segment or a query
    /// value: no `/`, `&`, `=` or `+` left to be misread).
    static func escape(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(b))
            default:
                let hex = Array("0123456789ABCDEF".utf8)
                out += "%" + String(decoding: [hex[Int(b >> 4)], hex[Int(b & 15)]], as: UTF8.self)
            }
        }
        return out
    }
}

/// The body of a call that sends none.
public struct NoBody: Codable, Sendable, Equatable {
    /// Nothing.
    public init() {}
}

/// What a call that removes something answers: `{"removed": NAME}` and the like.
public typealias Acknowledgement = [String: String]

/// The local API (the Unix socket): what `overlayctl` asks its daemon.
public enum LocalAPI {
    public static let info = APIRoute<NoBody, DaemonInfo>("GET", "/v1/info")
    public static let version = APIRoute<NoBody, VersionInfo>("GET", "/v1/version")
    public static let swarmInit = APIRoute<SwarmInitRequest, DaemonInfo>("POST", "/v1/swarm/init")
    public static let swarmJoin = APIRoute<SwarmJoinRequest, DaemonInfo>("POST", "/v1/swarm/join")
    /// Query: `force=1`.
    public static let swarmLeave = APIRoute<NoBody, Acknowledgement>("POST", "/v1/swarm/leave")
    /// Query: `role=worker|manager`, `rotate=1`. Answers `role`, `token`, `manager`.
    public static let joinToken = APIRoute<NoBody, Acknowledgement>("GET", "/v1/swarm/join-token")
    public static let rotateKeys = APIRoute<NoBody, Acknowledgement>("POST", "/v1/swarm/rotate-keys")
    public static let nodes = APIRoute<NoBody, [NodeRecord]>("GET", "/v1/nodes")
    /// Query: `force=1`.
    public static let removeNode = APIRoute<NoBody, Acknowledgement>("DELETE", "/v1/nodes/:node")
    public static let updateNode = APIRoute<NodeUpdateRequest, NodeRecord>("POST", "/v1/nodes/:node/update")
    /// `:node`: an ID, a hostname, `self` or an ID prefix of 3 characters or more.
    public static let inspectNode = APIRoute<NoBody, NodeRecord>("GET", "/v1/nodes/:node")
    public static let networks = APIRoute<NoBody, [NetworkInspect]>("GET", "/v1/networks")
    public static let createNetwork = APIRoute<NetworkCreateRequest, NetworkInspect>("POST", "/v1/networks", status: 201)
    /// Query: `verbose=1`.
    public static let inspectNetwork = APIRoute<NoBody, NetworkInspect>("GET", "/v1/networks/:name")
    public static let removeNetwork = APIRoute<NoBody, Acknowledgement>("DELETE", "/v1/networks/:name")
    public static let containers = APIRoute<NoBody, [ContainerInspect]>("GET", "/v1/containers")
    public static let runContainer = APIRoute<ContainerCreateRequest, ContainerInspect>("POST", "/v1/containers", status: 201)
    public static let attach = APIRoute<AttachRequest, ContainerInspect>("POST", "/v1/attach", status: 201)
    /// Answers `detached`: false when there was nothing to undo.
    public static let detach = APIRoute<DetachRequest, [String: Bool]>("POST", "/v1/detach")
    public static let inspectContainer = APIRoute<NoBody, ContainerInspect>("GET", "/v1/containers/:name")
    /// Query: `force=1`.
    public static let removeContainer = APIRoute<NoBody, Acknowledgement>("DELETE", "/v1/containers/:name")
    /// Query: `tail=N` (the last N lines). Answers `log`: the process's output.
    public static let containerLogs = APIRoute<NoBody, Acknowledgement>("GET", "/v1/containers/:name/logs")
    /// Query: `t=SECONDS` (before SIGKILL, default 10).
    public static let stopContainer = APIRoute<NoBody, ContainerInspect>("POST", "/v1/containers/:name/stop")
    public static let startContainer = APIRoute<NoBody, ContainerInspect>("POST", "/v1/containers/:name/start")
    public static let connectContainer = APIRoute<NetworkConnectRequest, ContainerInspect>("POST", "/v1/containers/:name/connect")
    /// Query: `network=NAME`.
    public static let disconnectContainer = APIRoute<NoBody, ContainerInspect>("POST", "/v1/containers/:name/disconnect")
    public static let services = APIRoute<NoBody, [ServiceListEntry]>("GET", "/v1/services")
    public static let createService = APIRoute<ServiceCreateRequest, ServiceListEntry>("POST", "/v1/services", status: 201)
    public static let inspectService = APIRoute<NoBody, ServiceRecord>("GET", "/v1/services/:name")
    public static let serviceTasks = APIRoute<NoBody, [TaskListEntry]>("GET", "/v1/services/:name/tasks")
    /// Query: `tail=N`. The manager asks each node with a task for its output (at most 10 s).
    public static let serviceLogs = APIRoute<NoBody, ServiceLogs>("GET", "/v1/services/:name/logs")
    public static let updateService = APIRoute<ServiceUpdateRequest, ServiceListEntry>("POST", "/v1/services/:name/update")
    public static let removeService = APIRoute<NoBody, Acknowledgement>("DELETE", "/v1/services/:name")
}

/// The manager API (2377, mutual TLS): what a node asks for itself.
public enum ManagerAPI {
    /// The only call without a client certificate: a join token and a CSR.
    public static let join = APIRoute<JoinRequest, JoinReply>("POST", "/v1/join")
    /// Body: `csr`. Answers `certificate`, `ca`.
    public static let renew = APIRoute<[String: String], [String: String]>("POST", "/v1/renew")
    /// Query: `since=VERSION`, `wait=SECONDS` (at most 30): the long poll. With `logs=ID` (the
    /// newest log request the node has taken) it also answers at once with newer log requests for
    /// the node.
    public static let state = APIRoute<NoBody, ClusterState>("GET", "/v1/state")
    public static let report = APIRoute<NodeReport, NodeReportReply>("POST", "/v1/report")
    public static let allocate = APIRoute<AllocateRequest, AllocateReply>("POST", "/v1/allocate")
    public static let release = APIRoute<ReleaseRequest, [String: Bool]>("POST", "/v1/release")
    public static let leave = APIRoute<NoBody, [String: Bool]>("POST", "/v1/leave")
    /// A node's answer to a log request of its long poll. Answers `accepted` (false: too late, or
    /// not asked of this node).
    public static let logs = APIRoute<LogAnswer, [String: Bool]>("POST", "/v1/logs")
}

extension APIClient {
    /// Calls a route: `parameters` fill its `:names` in order, `query` is appended, `body` is
    /// sent as JSON (none for `NoBody`); the answer is decoded as the route's reply.
    public func call<Body, Reply>(_ route: APIRoute<Body, Reply>, _ parameters: String..., query: [(String, String?)] = [],
                                  body: Body? = nil, group: EventLoopGroup) async throws -> Reply {
        try await call(route, parameters: parameters, query: query, body: body, group: group)
    }

    /// ``call(_:_:query:body:group:)`` with the path parameters as an array.
    public func call<Body, Reply>(_ route: APIRoute<Body, Reply>, parameters: [String], query: [(String, String?)] = [],
                                  body: Body? = nil, group: EventLoopGroup) async throws -> Reply {
        try await json(route.method, route.target(parameters, query: query), body: Body.self == NoBody.self ? nil : body,
                       as: Reply.self, group: group)
    }
}
