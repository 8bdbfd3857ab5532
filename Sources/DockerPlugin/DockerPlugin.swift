import FoundationEssentials

/// What the plugin needs from the node it runs on: the cluster's addresses and networks, and
/// interfaces for containers. The daemon is one; tests use a fake.
public protocol DockerNetworkBackend: Sendable {
    func requestPool(_ request: RequestPoolRequest) async throws -> RequestPoolResponse
    func releasePool(_ request: ReleasePoolRequest) async throws
    func requestAddress(_ request: RequestAddressRequest) async throws -> RequestAddressResponse
    func releaseAddress(_ request: ReleaseAddressRequest) async throws
    func createNetwork(_ request: CreateNetworkRequest, options: DockerNetworkOptions) async throws
    func deleteNetwork(_ request: NetworkRequest) async throws
    func createEndpoint(_ request: CreateEndpointRequest) async throws -> CreateEndpointResponse
    func deleteEndpoint(_ request: EndpointRequest) async throws
    func join(_ request: DriverJoinRequest) async throws -> DriverJoinResponse
    func leave(_ request: EndpointRequest) async throws
}

/// One answer to dockerd: an HTTP status and a JSON body.
public struct DockerPluginReply: Sendable, Equatable {
    public var status: Int
    public var body: Data

    public init(status: Int, body: Data) {
        self.status = status
        self.body = body
    }

    /// The body as text (for logs and tests).
    public var text: String { String(decoding: body, as: UTF8.self) }
}

/// Docker's remote network driver and remote IPAM driver protocol (libnetwork `remote.md`,
/// `ipam.md`): a call's path and body in, the reply out, without I/O. The calls that need the
/// cluster go to the backend; the rest are answered here.
///
/// Errors follow what dockerd reads: a refusal is HTTP 200 with `{"Err": ...}` for the network
/// driver and `{"Error": ...}` for IPAM (Docker shows `remote: <message>`); a body that is not
/// the call's JSON is a 400 and an unknown call a 404, both with `Err`, which dockerd reads on
/// any status.
public struct DockerPlugin: Sendable {
    /// The name Docker knows the plugin by (`-d swift-overlay --ipam-driver swift-overlay`).
    public static let name = "swift-overlay"
    /// The IPAM address space Docker is told to use.
    public static let addressSpace = "swift-overlay"
    /// The content type plugins answer with.
    public static let contentType = "application/vnd.docker.plugins.v1+json"
    /// The largest request body taken (Docker's are a few hundred bytes).
    public static let maxBody = 1 << 20

    public let backend: any DockerNetworkBackend

    public init(backend: any DockerNetworkBackend) { self.backend = backend }

    /// Answers one call: `path` is `/Interface.Method`.
    public func handle(path: String, body: Data) async -> DockerPluginReply {
        let call = path.hasPrefix("/") ? String(path.dropFirst()) : path
        let ipam = call.hasPrefix("IpamDriver.")
        do {
            switch call {
            case "Plugin.Activate":
                return try Self.ok(ActivateResponse(Implements: ["NetworkDriver", "IpamDriver"]))
            case "NetworkDriver.GetCapabilities":
                return try Self.ok(NetworkCapabilities(Scope: "local", ConnectivityScope: "global"))
            case "IpamDriver.GetCapabilities":
                return try Self.ok(IPAMCapabilities(RequiresMACAddress: false, RequiresRequestReplay: false))
            case "IpamDriver.GetDefaultAddressSpaces":
                return try Self.ok(AddressSpaces(LocalDefaultAddressSpace: Self.addressSpace, GlobalDefaultAddressSpace: Self.addressSpace))
            case "IpamDriver.RequestPool":
                let r = try Self.decode(RequestPoolRequest.self, body, call)
                if r.V6 == true { throw DockerPluginError("swift-overlay's Docker networks are IPv4 only: drop --ipv6") }
                return try Self.ok(try await backend.requestPool(r))
            case "IpamDriver.ReleasePool":
                try await backend.releasePool(try Self.decode(ReleasePoolRequest.self, body, call))
                return Self.empty
            case "IpamDriver.RequestAddress":
                return try Self.ok(try await backend.requestAddress(try Self.decode(RequestAddressRequest.self, body, call)))
            case "IpamDriver.ReleaseAddress":
                try await backend.releaseAddress(try Self.decode(ReleaseAddressRequest.self, body, call))
                return Self.empty
            case "NetworkDriver.CreateNetwork":
                let r = try Self.decode(CreateNetworkRequest.self, body, call)
                try Self.checkID(r.NetworkID, "NetworkID")
                if let v6 = r.IPv6Data, !v6.isEmpty { throw DockerPluginError("swift-overlay's Docker networks are IPv4 only: drop --ipv6") }
                try await backend.createNetwork(r, options: try DockerNetworkOptions.parse(r.Options))
                return Self.empty
            case "NetworkDriver.DeleteNetwork":
                let r = try Self.decode(NetworkRequest.self, body, call)
                try Self.checkID(r.NetworkID, "NetworkID")
                try await backend.deleteNetwork(r)
                return Self.empty
            case "NetworkDriver.CreateEndpoint":
                let r = try Self.decode(CreateEndpointRequest.self, body, call)
                try Self.checkIDs(r.NetworkID, r.EndpointID)
                return try Self.ok(try await backend.createEndpoint(r))
            case "NetworkDriver.DeleteEndpoint":
                let r = try Self.decode(EndpointRequest.self, body, call)
                try Self.checkIDs(r.NetworkID, r.EndpointID)
                try await backend.deleteEndpoint(r)
                return Self.empty
            case "NetworkDriver.Join":
                let r = try Self.decode(DriverJoinRequest.self, body, call)
                try Self.checkIDs(r.NetworkID, r.EndpointID)
                return try Self.ok(try await backend.join(r))
            case "NetworkDriver.Leave":
                let r = try Self.decode(EndpointRequest.self, body, call)
                try Self.checkIDs(r.NetworkID, r.EndpointID)
                try await backend.leave(r)
                return Self.empty
            case "NetworkDriver.EndpointOperInfo":
                _ = try Self.decode(EndpointRequest.self, body, call)
                return DockerPluginReply(status: 200, body: Data(#"{"Value":{}}"#.utf8))
            case "NetworkDriver.ProgramExternalConnectivity", "NetworkDriver.RevokeExternalConnectivity",
                 "NetworkDriver.DiscoverNew", "NetworkDriver.DiscoverDelete":
                // Published ports and egress go through Docker's gateway bridge (Join returns no
                // gateway), and node discovery is our gossip's: nothing to do.
                return Self.empty
            case "NetworkDriver.AllocateNetwork", "NetworkDriver.FreeNetwork":
                // Only Docker's swarm manager calls these, for swarm-scoped networks.
                throw DockerPluginError("swift-overlay networks are not Docker swarm networks: create them on each host with docker network create -d swift-overlay")
            default:
                return Self.failure(404, "swift-overlay has no call \(call.prefix(80))", ipam: false)
            }
        } catch let e as MalformedRequest {
            return Self.failure(400, e.message, ipam: false)
        } catch let e as DockerPluginError {
            return Self.failure(200, e.message, ipam: ipam)
        } catch {
            return Self.failure(200, "\(error)", ipam: ipam)
        }
    }

    struct MalformedRequest: Error {
        var message: String
    }

    static let empty = DockerPluginReply(status: 200, body: Data("{}".utf8))

    static func ok(_ value: some Encodable) throws -> DockerPluginReply {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return DockerPluginReply(status: 200, body: try e.encode(value))
    }

    static func failure(_ status: Int, _ message: String, ipam: Bool) -> DockerPluginReply {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let body = (try? e.encode([ipam ? "Error" : "Err": message])) ?? Data(#"{"Err":"error"}"#.utf8)
        return DockerPluginReply(status: status, body: body)
    }

    static func decode<T: Decodable>(_ type: T.Type, _ body: Data, _ call: String) throws -> T {
        do { return try JSONDecoder().decode(type, from: body.isEmpty ? Data("{}".utf8) : body) } catch {
            throw MalformedRequest(message: "\(call): the request is not the JSON Docker sends: \(describe(error))")
        }
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): "\"\(key.stringValue)\" is missing"
        case DecodingError.typeMismatch(_, let c), DecodingError.valueNotFound(_, let c):
            "\"\(c.codingPath.map(\.stringValue).joined(separator: "."))\" has the wrong type"
        case DecodingError.dataCorrupted: "it is not valid JSON"
        default: "\(error)"
        }
    }

    /// Docker's IDs are 64 hex digits; anything that could not be one is refused before it
    /// reaches a store key or a log line.
    static func checkID(_ id: String, _ what: String) throws(MalformedRequest) {
        let ok = (1...128).contains(id.utf8.count) && id.utf8.allSatisfy {
            (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0)
                || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0)
        }
        guard ok else { throw MalformedRequest(message: "\(what) '\(id.prefix(40))' is not a Docker ID (1 to 128 letters and digits)") }
    }

    /// Whether `id` could be a Docker ID (letters and digits, at most 128).
    public static func isDockerID(_ id: String) -> Bool { (try? checkID(id, "ID")) != nil }

    static func checkIDs(_ network: String, _ endpoint: String) throws(MalformedRequest) {
        try checkID(network, "NetworkID")
        try checkID(endpoint, "EndpointID")
    }
}
