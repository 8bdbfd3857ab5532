import Logging
import OverlayModel

/// How one driver instance (one per host) is set up: who it is, where it keeps its namespace
/// handles, and which underlay address and port its VXLAN tunnels use.
public struct OverlayDriverConfiguration: Sendable {
    /// The node ID; its first six letters or digits (lowercased) prefix every kernel object the
    /// driver makes in the host namespace, so several drivers can share one machine.
    public var nodeID: String
    /// The driver's own directory; sandbox namespace handles live in `<stateDirectory>/netns`.
    public var stateDirectory: String
    /// The host namespace to work in (a namespace handle path); nil for the caller's namespace.
    public var hostNamespacePath: String?
    /// The local VTEP address on the underlay (`--data-path-addr`).
    public var dataPathAddress: IPAddress
    /// The VXLAN UDP port (`--data-path-port`), 4789 by default.
    public var dataPathPort: UInt16
    /// The underlay MTU the container MTU is derived from (default 1500).
    public var underlayMTU: UInt32
    /// Where the driver logs sandbox and endpoint changes.
    public var logger: Logger
    /// How endpoints are linked to their subnet's tunnel device (``EndpointLink/auto`` by default:
    /// MACVLAN when the kernel has it, else veth + bridge).
    public var endpointLink: EndpointLink
    /// How encrypted networks' ESP travels: ESP in UDP (RFC 3948, port 4500, with UDP GSO/GRO; the
    /// default) or bare ESP (IP protocol 50, Docker's wire format, about a third of the
    /// throughput); every host of a cluster must use the same. `OVERLAY_ESP_ENCAP` overrides the
    /// default when this is nil.
    public var espEncapsulation: ESPEncapsulation?
    /// This host's boot ID (random, new at each start): when set, encrypted networks bind each
    /// direction's keys to its sender's boot, and peers' inbound SAs wait for their boot IDs
    /// (`UserspaceDatapath.setPeerBootID`). nil: Docker's keys as they are.
    public var bootID: [UInt8]?

    /// Makes a configuration with Docker's defaults (port 4789, underlay MTU 1500).
    public init(
        nodeID: String, stateDirectory: String, hostNamespacePath: String? = nil, dataPathAddress: IPAddress,
        dataPathPort: UInt16 = 4789, underlayMTU: UInt32 = 1500, logger: Logger = Logger(label: "overlay-driver"),
        endpointLink: EndpointLink = .auto
    ) {
        self.nodeID = nodeID
        self.stateDirectory = stateDirectory
        self.hostNamespacePath = hostNamespacePath
        self.dataPathAddress = dataPathAddress
        self.dataPathPort = dataPathPort
        self.underlayMTU = underlayMTU
        self.logger = logger
        self.endpointLink = endpointLink
    }

    /// Bytes VXLAN adds on the underlay: outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14.
    public static let vxlanOverhead: UInt32 = 50

    /// The largest container MTU of an encrypted network on `underlayMTU`: VXLAN's 50 plus ESP in
    /// transport mode, 8 (SPI, sequence number) + 8 (IV) + 2 (pad length, next header) + 8 (ICV)
    /// = 26, plus padding of the encrypted part (UDP + VXLAN + frame + trailer) to a multiple of 4.
    /// 1424 on 1500, Docker's value.
    public static func encryptedMTU(underlayMTU: UInt32) -> UInt32 {
        // outer IP 20 + ESP header 16 + ICV 8 around a ciphertext of UDP 8 + VXLAN 8 + Ethernet 14
        // + MTU + trailer 2, which must be a multiple of 4.
        guard underlayMTU >= 44 + 32 + 68 else { return 0 }
        return ((underlayMTU - 44) & ~3) - 32
    }
}

/// How a container's interface is joined to its subnet's tunnel device inside the network sandbox.
public enum EndpointLink: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// MACVLAN when a start-up probe can create one, otherwise ``vethBridge`` (the reason is logged).
    case auto
    /// A MACVLAN in bridge mode on the tunnel device, created in the container's namespace: one
    /// hop less than veth + bridge, and no bridge port limit (the subnet's size is the limit). The
    /// gateway address sits on a MACVLAN `gw-<vni>` in the sandbox.
    case macvlan
    /// Docker's topology: a veth pair from the container into a bridge `br-<vni>` that holds the
    /// gateway address and has the tunnel device as a port (at most
    /// ``OverlayDriver/maxEndpointsPerBridge`` endpoints per subnet and host).
    case vethBridge

    public var description: String { rawValue }
}

/// What `network create -d overlay` asked for: a name, one or more subnets each with its VXLAN ID,
/// and optionally the container MTU. Given as text so the driver validates it and reports
/// mistakes as ``OverlayDriverError``s.
public struct OverlayNetworkSpec: Hashable, Sendable {
    /// One subnet of a network and the VXLAN ID that carries it (Docker's `vxlanid_list` order).
    public struct Subnet: Hashable, Sendable {
        /// The subnet in CIDR notation, host bits zero (`10.0.1.0/24`).
        public var subnet: String
        /// The gateway (the bridge's address in the sandbox); nil for the first address.
        public var gateway: String?
        /// The VXLAN network identifier, 1...16777215.
        public var vni: UInt32

        /// Makes a subnet spec.
        public init(_ subnet: String, gateway: String? = nil, vni: UInt32) {
            self.subnet = subnet
            self.gateway = gateway
            self.vni = vni
        }
    }

    /// The network's name, unique on the driver: 1-64 of `A-Z a-z 0-9 _ . -`.
    public var name: String
    /// The subnets, at least one.
    public var subnets: [Subnet]
    /// The container MTU; nil for the underlay MTU minus ``OverlayDriverConfiguration/vxlanOverhead``.
    public var mtu: UInt32?
    /// Docker's `--opt encrypted`: the network's frames travel as ESP (AES-GCM) between hosts,
    /// through the driver's ``UserspaceDatapath``; its MTU default is
    /// ``OverlayDriverConfiguration/encryptedMTU(underlayMTU:)``.
    public var encrypted: Bool = false

    /// Makes a network spec with several subnets.
    public init(name: String, subnets: [Subnet], mtu: UInt32? = nil, encrypted: Bool = false) {
        self.name = name
        self.subnets = subnets
        self.mtu = mtu
        self.encrypted = encrypted
    }

    /// Makes a network spec with one subnet.
    public init(name: String, subnet: String, gateway: String? = nil, vni: UInt32, mtu: UInt32? = nil, encrypted: Bool = false) {
        self.init(name: name, subnets: [Subnet(subnet, gateway: gateway, vni: vni)], mtu: mtu, encrypted: encrypted)
    }
}

/// A network the driver knows, as validated: what its sandbox is built from.
public struct OverlayNetwork: Hashable, Sendable {
    /// One validated subnet with its gateway and VXLAN ID.
    public struct Subnet: Hashable, Sendable {
        /// The subnet.
        public let cidr: CIDR
        /// The gateway address (on the subnet's bridge, or its gateway MACVLAN, in the sandbox).
        public let gateway: IPAddress
        /// The VXLAN ID.
        public let vni: VNI
        /// The bridge's name inside the sandbox (`br-<vni>`, veth + bridge mode).
        public var bridgeName: String { "br-\(vni.value)" }
        /// The gateway MACVLAN's name inside the sandbox (`gw-<vni>`, MACVLAN mode).
        public var gatewayLinkName: String { "gw-\(vni.value)" }
        /// The VXLAN device's name inside the sandbox (`vx-<vni>`).
        public var tunnelName: String { "vx-\(vni.value)" }
    }

    /// The network's name.
    public let name: String
    /// The subnets, in the order given.
    public let subnets: [Subnet]
    /// The container MTU (the endpoint links, bridge or gateway MACVLAN, and tunnel device all use it).
    public let mtu: UInt32
    /// Whether the network is encrypted (carried by the userspace ESP datapath).
    public internal(set) var encrypted: Bool = false
    /// The name of the sandbox namespace handle (`sb-<first vni>`) in the driver's handle directory.
    public var sandboxName: String { "sb-\(subnets[0].vni.value)" }

    /// The index of the subnet containing `address`, if any.
    func subnetIndex(of address: IPAddress) -> Int? {
        subnets.firstIndex { $0.cidr.contains(address) }
    }
}

/// Which network namespace to attach: a handle path (`/run/netns/c1`, `/proc/123/ns/net`) or a process.
public enum NamespaceReference: Hashable, Sendable, CustomStringConvertible {
    /// A namespace handle file.
    case path(String)
    /// The namespace process `pid` is in.
    case pid(Int32)

    public var description: String {
        switch self {
        case .path(let p): p
        case .pid(let pid): "/proc/\(pid)/ns/net"
        }
    }
}

/// What an attach asks for: put a container's namespace on a network with this address.
public struct EndpointSpec: Hashable, Sendable {
    /// The endpoint's ID, unique on the driver (1-64 of `A-Z a-z 0-9 _ . -`).
    public var id: String
    /// The network's name.
    public var network: String
    /// The container's namespace.
    public var namespace: NamespaceReference
    /// The endpoint's address (from IPAM); must be in one of the network's subnets.
    public var address: IPAddress
    /// The MAC address; nil for Docker's 02:42 + IPv4 address (random for IPv6).
    public var mac: MACAddress?
    /// The interface's name inside the container (`eth0`).
    public var interfaceName: String
    /// Whether the attach addresses the interface, brings it up and routes the network's other
    /// subnets; false leaves that to a runtime that moves the interface into its container itself
    /// (Docker's remote drivers hand over an interface by name), so only its MAC and MTU are set.
    public var configuresInterface: Bool

    /// Makes an endpoint spec.
    public init(
        id: String, network: String, namespace: NamespaceReference, address: IPAddress, mac: MACAddress? = nil,
        interfaceName: String = "eth0", configuresInterface: Bool = true
    ) {
        self.id = id
        self.network = network
        self.namespace = namespace
        self.address = address
        self.mac = mac
        self.interfaceName = interfaceName
        self.configuresInterface = configuresInterface
    }
}

/// An attached endpoint: what the container got, and the peer entry other hosts need to reach it.
public struct OverlayEndpoint: Hashable, Sendable {
    /// The endpoint's ID.
    public let id: String
    /// The network's name.
    public let network: String
    /// The container's namespace.
    public let namespace: NamespaceReference
    /// The address and its subnet's prefix length.
    public let address: IPAddress
    /// The prefix length of the subnet the address is in.
    public let prefixLength: Int
    /// The MAC address of the container's interface.
    public let mac: MACAddress
    /// The container's interface name.
    public let interfaceName: String
    /// The container MTU.
    public let mtu: UInt32
    /// The subnet's gateway.
    public let gateway: IPAddress
    /// How the endpoint is linked (``EndpointLink/macvlan`` or ``EndpointLink/vethBridge``).
    public let link: EndpointLink
    /// The veth end inside the sandbox (`ve<n>`), a port of the subnet's bridge; nil for a MACVLAN
    /// endpoint, which has no sandbox end (it hangs off the tunnel device).
    public let sandboxInterface: String?
    /// This host's VTEP address.
    public let vtep: IPAddress

    /// What other hosts add with ``OverlayDriver/addPeer(_:network:)`` to reach this endpoint.
    public var peer: PeerEntry { PeerEntry(address: address, mac: mac, vtep: vtep) }
}

/// A remote endpoint: its overlay address and MAC, and the VTEP (underlay address) of its host.
public struct PeerEntry: Hashable, Sendable, CustomStringConvertible {
    /// The endpoint's overlay address.
    public var address: IPAddress
    /// The endpoint's MAC address.
    public var mac: MACAddress
    /// The underlay address of the host it lives on.
    public var vtep: IPAddress

    /// Makes a peer entry.
    public init(address: IPAddress, mac: MACAddress, vtep: IPAddress) {
        self.address = address
        self.mac = mac
        self.vtep = vtep
    }

    public var description: String { "\(address) \(mac) via \(vtep)" }
}
