import FoundationEssentials

// The JSON dockerd 20.10 sends to a remote network driver and a remote IPAM driver, and what it
// reads back (libnetwork's `drivers/remote/api` and `ipams/remote/api`). Field names are Docker's.

/// Any JSON value: the driver and endpoint `Options` maps carry strings, booleans, numbers and
/// nested objects side by side.
public enum JSONValue: Codable, Hashable, Sendable {
    case string(String)
    case number(Double)
    case bool(Bool)
    case object([String: JSONValue])
    case array([JSONValue])
    case null

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Double.self) { self = .number(n) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .string(let s): try c.encode(s)
        case .number(let n): try c.encode(n)
        case .bool(let b): try c.encode(b)
        case .object(let o): try c.encode(o)
        case .array(let a): try c.encode(a)
        case .null: try c.encodeNil()
        }
    }

    /// The string, if this is one.
    public var string: String? { if case .string(let s) = self { s } else { nil } }
    /// The boolean, if this is one.
    public var bool: Bool? { if case .bool(let b) = self { b } else { nil } }
    /// The members, if this is an object.
    public var object: [String: JSONValue]? { if case .object(let o) = self { o } else { nil } }
}

/// `Plugin.Activate`'s answer: the interfaces this socket serves.
public struct ActivateResponse: Codable, Sendable, Equatable {
    public var Implements: [String]
}

/// `NetworkDriver.GetCapabilities`'s answer.
public struct NetworkCapabilities: Codable, Sendable, Equatable {
    /// "local": each dockerd keeps its own record of the network (swarm is not needed).
    public var Scope: String
    /// "global": its endpoints reach other hosts.
    public var ConnectivityScope: String
}

/// `IpamDriver.GetCapabilities`'s answer.
public struct IPAMCapabilities: Codable, Sendable, Equatable {
    public var RequiresMACAddress: Bool
    public var RequiresRequestReplay: Bool
}

/// `IpamDriver.GetDefaultAddressSpaces`'s answer.
public struct AddressSpaces: Codable, Sendable, Equatable {
    public var LocalDefaultAddressSpace: String
    public var GlobalDefaultAddressSpace: String
}

/// `IpamDriver.RequestPool`: a pool for a network about to be made (no name or network ID).
public struct RequestPoolRequest: Codable, Sendable, Equatable {
    public var AddressSpace: String?
    /// `--subnet`, or empty for "pick one".
    public var Pool: String?
    /// `--ip-range`, or empty.
    public var SubPool: String?
    /// `--ipam-opt` key/values.
    public var Options: [String: String]?
    public var V6: Bool?

    public init(AddressSpace: String? = nil, Pool: String? = nil, SubPool: String? = nil, Options: [String: String]? = nil, V6: Bool? = nil) {
        self.AddressSpace = AddressSpace
        self.Pool = Pool
        self.SubPool = SubPool
        self.Options = Options
        self.V6 = V6
    }
}

/// `IpamDriver.RequestPool`'s answer.
public struct RequestPoolResponse: Codable, Sendable, Equatable {
    public var PoolID: String
    /// The pool as a CIDR.
    public var Pool: String
    /// `com.docker.network.gateway` (CIDR): given here, Docker asks for no gateway address.
    public var Data: [String: String]?

    public init(PoolID: String, Pool: String, Data: [String: String]? = nil) {
        self.PoolID = PoolID
        self.Pool = Pool
        self.Data = Data
    }
}

/// `IpamDriver.ReleasePool`.
public struct ReleasePoolRequest: Codable, Sendable, Equatable {
    public var PoolID: String
    public init(PoolID: String) { self.PoolID = PoolID }
}

/// `IpamDriver.RequestAddress`: an address in a pool (one asked for, or any).
public struct RequestAddressRequest: Codable, Sendable, Equatable {
    public var PoolID: String
    /// `--ip` (or `--gateway`), or empty.
    public var Address: String?
    /// `RequestAddressType: com.docker.network.gateway` for a network's gateway.
    public var Options: [String: String]?

    public init(PoolID: String, Address: String? = nil, Options: [String: String]? = nil) {
        self.PoolID = PoolID
        self.Address = Address
        self.Options = Options
    }

    /// Whether this asks for the network's gateway.
    public var isGateway: Bool { Options?["RequestAddressType"] == "com.docker.network.gateway" }
}

/// `IpamDriver.RequestAddress`'s answer.
public struct RequestAddressResponse: Codable, Sendable, Equatable {
    /// The address with the pool's prefix length (`10.0.1.5/24`).
    public var Address: String
    public var Data: [String: String]?

    public init(Address: String, Data: [String: String]? = nil) {
        self.Address = Address
        self.Data = Data
    }
}

/// `IpamDriver.ReleaseAddress`.
public struct ReleaseAddressRequest: Codable, Sendable, Equatable {
    public var PoolID: String
    public var Address: String
    public init(PoolID: String, Address: String) {
        self.PoolID = PoolID
        self.Address = Address
    }
}

/// One IP version's pool of a network, as IPAM gave it.
public struct IPAMData: Codable, Sendable, Equatable {
    public var AddressSpace: String?
    public var Pool: String
    public var Gateway: String?
    public var AuxAddresses: [String: String]?

    public init(AddressSpace: String? = nil, Pool: String, Gateway: String? = nil, AuxAddresses: [String: String]? = nil) {
        self.AddressSpace = AddressSpace
        self.Pool = Pool
        self.Gateway = Gateway
        self.AuxAddresses = AuxAddresses
    }
}

/// `NetworkDriver.CreateNetwork` as dockerd sends it.
public struct CreateNetworkRequest: Codable, Sendable, Equatable {
    public var NetworkID: String
    /// `com.docker.network.generic` (the `-o` options), `com.docker.network.enable_ipv6`,
    /// `com.docker.network.internal`.
    public var Options: [String: JSONValue]?
    public var IPv4Data: [IPAMData]?
    public var IPv6Data: [IPAMData]?

    public init(NetworkID: String, Options: [String: JSONValue]? = nil, IPv4Data: [IPAMData]? = nil, IPv6Data: [IPAMData]? = nil) {
        self.NetworkID = NetworkID
        self.Options = Options
        self.IPv4Data = IPv4Data
        self.IPv6Data = IPv6Data
    }
}

/// A request naming only a network (`DeleteNetwork`, `FreeNetwork`).
public struct NetworkRequest: Codable, Sendable, Equatable {
    public var NetworkID: String
    public init(NetworkID: String) { self.NetworkID = NetworkID }
}

/// A request naming an endpoint (`DeleteEndpoint`, `Leave`, `EndpointOperInfo`,
/// `RevokeExternalConnectivity`).
public struct EndpointRequest: Codable, Sendable, Equatable {
    public var NetworkID: String
    public var EndpointID: String
    public init(NetworkID: String, EndpointID: String) {
        self.NetworkID = NetworkID
        self.EndpointID = EndpointID
    }
}

/// An endpoint's interface: what IPAM gave (in a request) or what the driver fills in (answer).
public struct EndpointInterface: Codable, Sendable, Equatable {
    public var Address: String?
    public var AddressIPv6: String?
    public var MacAddress: String?

    public init(Address: String? = nil, AddressIPv6: String? = nil, MacAddress: String? = nil) {
        self.Address = Address
        self.AddressIPv6 = AddressIPv6
        self.MacAddress = MacAddress
    }
}

/// `NetworkDriver.CreateEndpoint`.
public struct CreateEndpointRequest: Codable, Sendable, Equatable {
    public var NetworkID: String
    public var EndpointID: String
    public var Interface: EndpointInterface?
    public var Options: [String: JSONValue]?

    public init(NetworkID: String, EndpointID: String, Interface: EndpointInterface? = nil, Options: [String: JSONValue]? = nil) {
        self.NetworkID = NetworkID
        self.EndpointID = EndpointID
        self.Interface = Interface
        self.Options = Options
    }
}

/// `NetworkDriver.CreateEndpoint`'s answer: only fields the request left empty (the MAC).
public struct CreateEndpointResponse: Codable, Sendable, Equatable {
    public var Interface: EndpointInterface?
    public init(Interface: EndpointInterface? = nil) { self.Interface = Interface }
}

/// `NetworkDriver.Join`.
public struct DriverJoinRequest: Codable, Sendable, Equatable {
    public var NetworkID: String
    public var EndpointID: String
    /// The container's namespace path, in dockerd's mount namespace (it may not exist yet).
    public var SandboxKey: String?
    public var Options: [String: JSONValue]?

    public init(NetworkID: String, EndpointID: String, SandboxKey: String? = nil, Options: [String: JSONValue]? = nil) {
        self.NetworkID = NetworkID
        self.EndpointID = EndpointID
        self.SandboxKey = SandboxKey
        self.Options = Options
    }
}

/// The interface Docker moves into the container: `SrcName` in dockerd's namespace, renamed
/// `DstPrefix` + N there.
public struct InterfaceName: Codable, Sendable, Equatable {
    public var SrcName: String
    public var DstPrefix: String
    public init(SrcName: String, DstPrefix: String = "eth") {
        self.SrcName = SrcName
        self.DstPrefix = DstPrefix
    }
}

/// A route Docker adds in the container: `RouteType` 0 via `NextHop`, 1 on the link.
public struct StaticRoute: Codable, Sendable, Equatable {
    public var Destination: String
    public var RouteType: Int
    public var NextHop: String?
    public init(Destination: String, RouteType: Int, NextHop: String? = nil) {
        self.Destination = Destination
        self.RouteType = RouteType
        self.NextHop = NextHop
    }
}

/// `NetworkDriver.Join`'s answer.
public struct DriverJoinResponse: Codable, Sendable, Equatable {
    public var InterfaceName: InterfaceName
    /// The default gateway (empty: Docker's gateway bridge gives the container its egress).
    public var Gateway: String?
    public var StaticRoutes: [StaticRoute]?
    /// No gateway bridge leg for this container (internal networks).
    public var DisableGatewayService: Bool?

    public init(InterfaceName: InterfaceName, Gateway: String? = nil, StaticRoutes: [StaticRoute]? = nil, DisableGatewayService: Bool? = nil) {
        self.InterfaceName = InterfaceName
        self.Gateway = Gateway
        self.StaticRoutes = StaticRoutes
        self.DisableGatewayService = DisableGatewayService
    }
}

/// What one Docker network asks of the driver, from `CreateNetwork`'s options, checked.
public struct DockerNetworkOptions: Codable, Sendable, Equatable {
    /// `-o encrypted`: traffic between hosts in ESP.
    public var encrypted = false
    /// `--internal`: no way out of the network.
    public var `internal` = false

    public init(encrypted: Bool = false, internal: Bool = false) {
        self.encrypted = encrypted
        self.internal = `internal`
    }

    /// The `-o` options swift-overlay takes.
    public static let known = ["encrypted"]

    /// Reads the options of a `CreateNetwork`; an option swift-overlay does not know (or IPv6) is
    /// an error naming it.
    public static func parse(_ options: [String: JSONValue]?) throws(DockerPluginError) -> DockerNetworkOptions {
        var out = DockerNetworkOptions()
        let o = options ?? [:]
        if o["com.docker.network.enable_ipv6"]?.bool == true {
            throw DockerPluginError("swift-overlay's Docker networks are IPv4 only: drop --ipv6")
        }
        out.internal = o["com.docker.network.internal"]?.bool ?? false
        for (key, value) in (o["com.docker.network.generic"]?.object ?? [:]).sorted(by: { $0.key < $1.key }) {
            switch key {
            case "encrypted":
                let v = value.string ?? ""
                guard ["", "true", "1"].contains(v) else {
                    throw DockerPluginError("-o encrypted takes no value (or true), not '\(v.prefix(40))'")
                }
                out.encrypted = true
            default:
                throw DockerPluginError("unknown driver option '\(key.prefix(80))': swift-overlay takes -o \(known.joined(separator: ", "))")
            }
        }
        return out
    }
}

/// A refusal dockerd shows as `remote: <message>`.
public struct DockerPluginError: Error, Equatable, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
