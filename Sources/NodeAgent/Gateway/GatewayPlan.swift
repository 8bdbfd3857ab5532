import GWBridge
import OverlayAPI
import OverlayModel

/// The gateway bridge's settings as `network create -d bridge ... ovl_gwbridge` gives them before
/// init/join (Docker's custom `docker_gwbridge`), or Docker's defaults: what the node makes or
/// adopts at init/join/start.
public struct GatewaySettings: Codable, Sendable, Equatable {
    /// The bridge's name (only `GatewayBridge.defaultBridgeName`, `ovl_gwbridge`, is accepted).
    public var name: String = GatewayBridge.defaultBridgeName
    /// Its subnet (an IPv4 CIDR), or nil for the first free one.
    public var subnet: String?
    /// Its gateway address, or nil for the subnet's first.
    public var gateway: String?
    /// Whether containers on it may talk to each other (Docker: no).
    public var icc = false
    /// Whether traffic leaving through it is masqueraded (Docker: yes).
    public var ipMasquerade = true

    /// Docker's option names.
    public static let optBridgeName = "com.docker.network.bridge.name"
    public static let optICC = "com.docker.network.bridge.enable_icc"
    public static let optMasquerade = "com.docker.network.bridge.enable_ip_masquerade"

    /// Docker's defaults.
    public init() {}

    /// The settings a `network create -d bridge` asks for. The bridge driver makes only the
    /// gateway bridge: any other name, an unknown option, a bad flag value or more than one
    /// subnet is a 400 with what to write instead.
    public init(bridgeRequest req: NetworkCreateRequest) throws {
        for o in req.options {
            let kv = o.split(separator: "=", maxSplits: 1).map(String.init)
            let key = kv.first ?? ""
            let value = kv.count > 1 ? kv[1] : ""
            func flag() throws -> Bool {
                guard let b = Bool(value) else { throw APIError(400, "--opt \(key)=\(value): use true or false") }
                return b
            }
            switch key {
            case Self.optBridgeName: name = value
            case Self.optICC: icc = try flag()
            case Self.optMasquerade: ipMasquerade = try flag()
            default:
                throw APIError(400, "unknown --opt '\(key)' for the bridge driver (known: \(Self.optBridgeName), \(Self.optICC), \(Self.optMasquerade))")
            }
        }
        let only = GatewayBridge.defaultBridgeName
        guard req.name == name, name == only else {
            throw APIError(400, "the bridge driver makes only the gateway bridge: name it \(only) (and --opt \(Self.optBridgeName)=\(only))")
        }
        guard req.subnets.count <= 1, req.gateways.count <= 1 else { throw APIError(400, "the gateway bridge has one --subnet") }
        if let sub = req.subnets.first {
            guard let c = CIDR(sub), c.family == .v4 else { throw APIError(400, "invalid --subnet '\(sub)': use an IPv4 CIDR") }
            subnet = c.description
        }
        if let g = req.gateways.first {
            guard IPv4Address(g) != nil else { throw APIError(400, "invalid --gateway '\(g)'") }
            gateway = g
        }
    }

    /// The options the gateway bridge library takes.
    public var options: GatewayBridgeOptions {
        var o = GatewayBridgeOptions(bridgeName: name, icc: icc, ipMasquerade: ipMasquerade)
        o.subnet = subnet.flatMap { CIDR($0) }
        o.gateway = gateway.flatMap { IPv4Address($0) }
        return o
    }
}

/// A container's `-p` specs as the gateway bridge's port mappings.
public enum PublishedPorts {
    /// Each spec's ports mapped to `address` (the container's gateway-bridge address). A spec
    /// that does not parse, has no host port or an IPv6 host address is a 400 saying so.
    public static func mappings(_ specs: [String], to address: IPv4Address) throws -> [PortMapping] {
        var out: [PortMapping] = []
        for text in specs {
            let parsed: [PortSpec]
            do { parsed = try PortSpec.parse(text) } catch { throw APIError(400, "invalid -p '\(text)': \(error.message)") }
            for p in parsed {
                guard let published = p.published else {
                    throw APIError(400, "-p \(text): give the host port too (HOST:CONTAINER), e.g. -p 8080:\(p.target)")
                }
                if let ip = p.hostIP, ip.v4 == nil { throw APIError(400, "-p \(text): only IPv4 host addresses are supported") }
                out.append(PortMapping(hostPort: published, protocol: p.protocol, containerAddress: address, containerPort: p.target,
                                       hostAddress: p.hostIP?.v4))
            }
        }
        return out
    }
}
