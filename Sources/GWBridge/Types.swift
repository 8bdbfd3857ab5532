import IPAM
import OverlayModel

/// How the gateway bridge is made: Docker's `docker_gwbridge` options.
public struct GatewayBridgeOptions: Hashable, Sendable {
    /// The bridge's name in the host namespace (`ovl_gwbridge`).
    public var bridgeName: String
    /// The subnet to use (`--subnet`); nil picks the first free /16 (then /20) of Docker's local
    /// pools that overlaps no address or route in the host namespace. Ignored-if-equal, refused
    /// if different, when the bridge already exists.
    public var subnet: CIDR?
    /// The gateway address (`--gateway`); nil for the first usable address of the subnet.
    public var gateway: IPv4Address?
    /// Inter-container communication: whether containers on the bridge may talk to each other
    /// (`com.docker.network.bridge.enable_icc`, default false for the gateway bridge).
    public var icc: Bool
    /// Whether traffic from the bridge's subnet leaving through another interface is masqueraded
    /// (`com.docker.network.bridge.enable_ip_masquerade`, default true).
    public var ipMasquerade: Bool
    /// The MTU of a bridge made here and of the veth pairs attached (nil: the kernel's 1500, or
    /// an existing bridge's MTU).
    public var mtu: UInt32?
    /// The pools a subnet is picked from when `subnet` is nil.
    public var pools: [AddressPool]
    /// The name of the nftables tables this bridge owns (`ip` and `bridge` families); nil derives
    /// it from the bridge name (`-` and `.` become `_`).
    public var tableName: String?

    /// Docker's defaults for the gateway bridge: `ovl_gwbridge`, ICC off, masquerade on.
    public init(
        bridgeName: String = GatewayBridge.defaultBridgeName, subnet: CIDR? = nil, gateway: IPv4Address? = nil,
        icc: Bool = false, ipMasquerade: Bool = true, mtu: UInt32? = nil,
        pools: [AddressPool] = AddressPool.localDefaults, tableName: String? = nil
    ) {
        self.bridgeName = bridgeName
        self.subnet = subnet
        self.gateway = gateway
        self.icc = icc
        self.ipMasquerade = ipMasquerade
        self.mtu = mtu
        self.pools = pools
        self.tableName = tableName
    }

    /// The nftables table name in use: `tableName`, or the bridge name with `-` and `.` as `_`.
    public var effectiveTableName: String {
        tableName ?? String(bridgeName.map { $0 == "-" || $0 == "." ? "_" : $0 })
    }
}

/// What `ensure` set up (or found): the bridge, its subnet and gateway, and the options in force.
public struct GatewayBridgeInfo: Hashable, Sendable, Codable {
    /// The bridge's name.
    public let bridgeName: String
    /// The bridge's subnet.
    public let subnet: CIDR
    /// The bridge's own address, the containers' default gateway.
    public let gateway: IPv4Address
    /// The MTU of the bridge (and of the veth pairs made for it).
    public let mtu: UInt32
    /// Whether this object made the bridge (false: it existed and was reused as it is).
    public let createdBridge: Bool
    /// Whether containers on the bridge may talk to each other.
    public let icc: Bool
    /// Whether egress from the subnet is masqueraded.
    public let ipMasquerade: Bool
    /// The name of the owned nftables tables (`ip` and `bridge` families).
    public let tableName: String
}

/// One container's interface on the gateway bridge.
public struct GatewayAttachment: Hashable, Sendable, Codable {
    /// The interface name inside the container (`eth1`).
    public let interfaceName: String
    /// The veth end on the bridge, in the host namespace (`ovgw` + the address in hex).
    public let hostInterfaceName: String
    /// The container's address on the bridge.
    public let address: IPv4Address
    /// The bridge's subnet prefix length (the address is `address/prefixLength`).
    public let prefixLength: Int
    /// The default gateway given to the container (the bridge's address).
    public let gateway: IPv4Address
    /// The container interface's MAC (`02:42` + the address, as Docker makes them).
    public let mac: MACAddress
}

/// A published port (`-p [hostAddress:]hostPort:containerPort/protocol`): traffic to the host's
/// `hostPort` is sent to `containerAddress:containerPort`.
public struct PortMapping: Hashable, Sendable, Codable, CustomStringConvertible {
    /// The port on the host.
    public var hostPort: UInt16
    /// The transport protocol.
    public var `protocol`: PortProtocol
    /// The container's address on the gateway bridge.
    public var containerAddress: IPv4Address
    /// The port in the container.
    public var containerPort: UInt16
    /// Only traffic to this host address is forwarded (nil: any of the host's own addresses,
    /// except loopback).
    public var hostAddress: IPv4Address?

    /// Makes a mapping.
    public init(
        hostPort: UInt16, protocol: PortProtocol = .tcp, containerAddress: IPv4Address, containerPort: UInt16,
        hostAddress: IPv4Address? = nil
    ) {
        self.hostPort = hostPort
        self.protocol = `protocol`
        self.containerAddress = containerAddress
        self.containerPort = containerPort
        self.hostAddress = hostAddress
    }

    /// Docker's words: `0.0.0.0:8080->172.18.0.2:80/tcp`.
    public var description: String {
        "\(hostAddress.map(\.description) ?? "0.0.0.0"):\(hostPort)->\(containerAddress):\(containerPort)/\(`protocol`.rawValue)"
    }

    /// Whether `self` and `other` claim the same host port (same protocol and port, and host
    /// addresses that are equal or where either is "any").
    public func clashes(with other: PortMapping) -> Bool {
        guard self.protocol == other.protocol, hostPort == other.hostPort else { return false }
        guard let a = hostAddress, let b = other.hostAddress else { return true }
        return a == b
    }
}
