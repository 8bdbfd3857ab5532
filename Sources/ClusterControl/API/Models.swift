import Foundation
import IPsecKeys

// The JSON the local API (Unix socket) and the manager API (2377) exchange. Field names of what
// users see (`network inspect`, `inspect`) follow Docker's where the meaning is the same.

/// `swarm init`'s options.
public struct SwarmInitRequest: Codable, Sendable {
    /// The address other nodes reach this manager at (default: the host's first non-loopback IPv4).
    public var advertiseAddr: String?
    /// Where the manager API listens, `A:2377` (default 0.0.0.0:2377).
    public var listenAddr: String?
    /// The VXLAN source address (default: the advertise address).
    public var dataPathAddr: String?
    /// The VXLAN UDP port, 1024-49151 (default 4789).
    public var dataPathPort: UInt16?
    /// Global address pools (default 10.0.0.0/8).
    public var defaultAddrPool: [String]?
    /// The subnet size taken from the pools (default 24).
    public var defaultAddrPoolMaskLength: Int?
    /// Gossip key rotation period in seconds (default 12 h).
    public var keyRotationSeconds: Int?
    /// How encrypted networks' ESP travels in this swarm: `udp[:PORT]` (ESP in UDP, RFC 3948, port
    /// 4500; the default) or `esp` (bare IP protocol 50, Docker's wire format, slower).
    public var espEncapsulation: String?
    public init() {}
}

/// `swarm join`'s options.
public struct SwarmJoinRequest: Codable, Sendable {
    /// The join token (`SWMTKN-1-...`).
    public var token: String
    /// The manager, `HOST:2377`.
    public var remoteAddr: String
    public var advertiseAddr: String?
    public var listenAddr: String?
    public var dataPathAddr: String?
    public init(token: String, remoteAddr: String) {
        self.token = token
        self.remoteAddr = remoteAddr
    }
}

/// What `overlayctl info` and the CLI's checks read.
public struct DaemonInfo: Codable, Sendable {
    public var nodeID: String
    public var hostname: String
    /// "inactive" or "active".
    public var swarm: String
    public var role: String?
    public var clusterID: String?
    public var managerAddr: String?
    public var advertiseAddr: String?
    public var dataPathAddr: String?
    public var dataPathPort: UInt16
    public var gossipPort: UInt16
    public var stateDir: String
    public var pid: Int32
    /// The plain overlay networks' datapath (`kernel`: kernel VXLAN devices), or `none` outside a
    /// swarm. Encrypted networks always use the userspace ESP datapath.
    public var datapath: String
    /// How encrypted networks' ESP travels (`esp` or `esp-in-udp:PORT`), once in a swarm.
    public var espEncapsulation: String?
    /// Whether the kernel can do ESP with AES-GCM (xfrm), probed at start: `available`, or
    /// `unavailable (<the kernel's reason>)`. Encrypted networks use the userspace datapath.
    public var kernelIPsec: String?
}

/// A node as `node ls` shows it.
public struct NodeRecord: Codable, Sendable, Hashable {
    public var id: String
    public var hostname: String
    /// "manager" or "worker".
    public var role: String
    /// "ready" or "down" (from gossip).
    public var status: String
    public var advertiseAddr: String
    public var dataPathAddr: String
    public var gossipPort: UInt16
    public var joined: Date
    /// When its certificate expires (if known).
    public var certificateNotAfter: Date?
    /// Whether it can encrypt: `ok`, `no keys`, or what failed (reported by the node itself; nil
    /// before it has reported).
    public var encryption: String?
}

/// One subnet of a network, as the manager stores and hands it out.
public struct SubnetConfig: Codable, Sendable, Hashable {
    public var subnet: String
    public var gateway: String
    public var ipRange: String?
    public var auxAddresses: [String: String]
    public var vni: UInt32
}

/// An overlay network as the manager stores it and every node receives it.
public struct NetworkRecord: Codable, Sendable, Hashable {
    public var id: String
    public var name: String
    public var driver: String
    public var created: Date
    public var attachable: Bool
    public var `internal`: Bool
    public var ingress: Bool
    public var encrypted: Bool
    public var subnets: [SubnetConfig]
    public var mtu: UInt32
    public var options: [String: String]
    public var labels: [String: String]
}

/// `network create`'s options (Docker's flags).
public struct NetworkCreateRequest: Codable, Sendable {
    public var name: String
    public var driver: String
    public var attachable: Bool
    public var ingress: Bool
    public var `internal`: Bool
    public var subnets: [String]
    public var gateways: [String]
    public var ipRanges: [String]
    /// `name=address`.
    public var auxAddresses: [String]
    /// `key=value` (`encrypted`, `com.docker.network.driver.mtu=N`, `...overlay.vxlanid_list=V[,V]`, bridge options).
    public var options: [String]
    /// `key=value`.
    public var labels: [String]
    public init(name: String, driver: String = "overlay") {
        self.name = name
        self.driver = driver
        attachable = false
        ingress = false
        self.internal = false
        subnets = []
        gateways = []
        ipRanges = []
        auxAddresses = []
        options = []
        labels = []
    }
}

/// `run`'s options.
public struct ContainerCreateRequest: Codable, Sendable {
    public var name: String?
    public var networks: [String]
    public var aliases: [String]
    public var ip: String?
    /// `-p` specs as typed.
    public var publish: [String]
    public var command: [String]
    /// Start the command in the background (daemon-owned) instead of by the CLI.
    public var detach: Bool
    public init(name: String? = nil, networks: [String] = [], command: [String] = [], detach: Bool = true) {
        self.name = name
        self.networks = networks
        aliases = []
        publish = []
        self.command = command
        self.detach = detach
    }
}

/// An existing namespace (another runtime's container) to attach: by path or PID.
public struct AttachRequest: Codable, Sendable {
    public var name: String
    public var network: String
    public var namespacePath: String?
    public var pid: Int32?
    public var ip: String?
    public var aliases: [String]?
    public init(name: String, network: String, namespacePath: String?, pid: Int32?, ip: String?, aliases: [String]?) {
        self.name = name
        self.network = network
        self.namespacePath = namespacePath
        self.pid = pid
        self.ip = ip
        self.aliases = aliases
    }
}

/// One network membership of a local container.
public struct ContainerNetwork: Codable, Sendable, Hashable {
    public var networkID: String
    public var networkName: String
    public var endpointID: String
    public var address: String
    public var prefixLength: Int
    public var gateway: String
    public var mac: String
    public var aliases: [String]
}

/// A local container (a network namespace the daemon made or was given, and maybe a process).
public struct ContainerRecord: Codable, Sendable, Hashable {
    public var id: String
    public var name: String
    public var created: Date
    /// The namespace handle the daemon keeps (a bind mount under the state dir) or the given path.
    public var namespacePath: String
    /// True when the daemon made the namespace (and so deletes it on rm).
    public var ownsNamespace: Bool
    public var command: [String]
    public var detached: Bool
    public var pid: Int32?
    public var logPath: String?
    public var networks: [ContainerNetwork]
    public var publish: [String]
    public var gatewayAddress: String?
    /// A service task's container: the task ID and service name.
    public var taskID: String?
    public var serviceName: String?
}

/// `inspect NAME`: Docker's shape, the parts that have a meaning here.
public struct ContainerInspect: Codable, Sendable {
    public struct State: Codable, Sendable {
        public var Status: String
        public var Running: Bool
        public var Pid: Int32
    }
    public struct Config: Codable, Sendable {
        public var Cmd: [String]
    }
    public struct EndpointSettings: Codable, Sendable {
        public var NetworkID: String
        public var EndpointID: String
        public var Gateway: String
        public var IPAddress: String
        public var IPPrefixLen: Int
        public var MacAddress: String
        public var Aliases: [String]
    }
    public struct NetworkSettings: Codable, Sendable {
        public var SandboxKey: String
        public var Ports: [String: [[String: String]]]
        public var Networks: [String: EndpointSettings]
        /// The container's address on the host's gateway bridge (egress, published ports), if any.
        public var GatewayBridgeAddress: String?
    }
    public var Id: String
    public var Name: String
    public var Created: Date
    public var State: State
    public var Config: Config
    public var NetworkSettings: NetworkSettings
    /// The resolv.conf the container's processes see (nameserver 127.0.0.11), if it has one.
    public var ResolvConfPath: String?
    /// The daemon's PID: the namespace handle is reachable as /proc/<pid>/root<SandboxKey> even
    /// when the daemon runs in a mount namespace of its own (`ip netns exec`).
    public var DaemonPid: Int32
}

/// `network inspect NAME`: Docker's field names.
public struct NetworkInspect: Codable, Sendable {
    public struct IPAMConfig: Codable, Sendable {
        public var Subnet: String
        public var Gateway: String
        public var IPRange: String?
        public var AuxiliaryAddresses: [String: String]?
    }
    public struct IPAMInfo: Codable, Sendable {
        public var Driver: String
        public var Config: [IPAMConfig]
    }
    public struct ContainerEntry: Codable, Sendable {
        public var Name: String
        public var EndpointID: String
        public var MacAddress: String
        public var IPv4Address: String
        public var IPv6Address: String
    }
    public struct Peer: Codable, Sendable {
        public var Name: String
        public var IP: String
    }
    public var Name: String
    public var Id: String
    public var Created: Date
    public var Scope: String
    public var Driver: String
    public var EnableIPv6: Bool
    public var IPAM: IPAMInfo
    public var Internal: Bool
    public var Attachable: Bool
    public var Ingress: Bool
    public var Containers: [String: ContainerEntry]
    public var Options: [String: String]
    public var Labels: [String: String]
    public var Peers: [Peer]?
    /// Verbose (`-v`) only: every endpoint known on the network, local or learned by gossip.
    public var Endpoints: [String: ContainerEntry]?
    /// Encrypted networks only: whether this node can send on it (`ok`, or why it sends nothing).
    public var Encryption: String?
    /// Encrypted networks only: cleartext VXLAN for its VNIs that arrived here and was dropped.
    public var CleartextDropped: UInt64?
}

// Manager API (2377).

/// A joining node's request.
public struct JoinRequest: Codable, Sendable {
    public var token: String
    public var hostname: String
    public var advertiseAddr: String
    public var dataPathAddr: String
    public var gossipPort: UInt16
    /// PEM certificate signing request (when the manager runs TLS).
    public var csr: String?
    /// Ignored: the manager names every joining node (a joiner could otherwise take the
    /// manager's or another node's identity). Kept so older joiners still decode.
    public var nodeID: String?
}

/// The manager's answer to a join.
public struct JoinReply: Codable, Sendable {
    public var nodeID: String
    public var role: String
    public var clusterID: String
    public var certificate: String?
    public var ca: String?
    /// Gossip keys, base64, primary first.
    public var gossipKeys: [String]
    /// Gossip addresses to join (`ip:port`).
    public var gossipSeeds: [String]
    public var dataPathPort: UInt16
    /// The swarm's ESP encapsulation (`esp`, `udp`, `udp:PORT`); nil means `esp`.
    public var espEncapsulation: String?
}

/// What every node follows: the cluster's networks, nodes and gossip keys at a version.
public struct ClusterState: Codable, Sendable {
    public var version: UInt64
    public var networks: [NetworkRecord]
    public var nodes: [NodeRecord]
    public var gossipKeys: [String]
    /// The encrypted networks' keyring. It travels only over mutual TLS on 2377 and is never
    /// written to disk: a node keeps it in memory (the copy of this state it saves has it removed).
    public var ipsecKeys: IPsecKeyring?
    /// The services and their tasks (nil from a daemon before services existed).
    public var services: [ServiceRecord]?
    public var tasks: [TaskRecord]?
    /// Changes when the manager restarts (nodes then report their tasks again: it keeps their
    /// states in memory only).
    public var managerEpoch: String?

    /// Makes a state.
    public init(version: UInt64, networks: [NetworkRecord], nodes: [NodeRecord], gossipKeys: [String], ipsecKeys: IPsecKeyring? = nil) {
        self.version = version
        self.networks = networks
        self.nodes = nodes
        self.gossipKeys = gossipKeys
        self.ipsecKeys = ipsecKeys
    }
}

/// An address request for an endpoint.
public struct AllocateRequest: Codable, Sendable {
    public var network: String
    public var endpointID: String
    /// The node the address is for. On the manager port the manager uses the caller's
    /// certificate instead: a node allocates only for itself.
    public var nodeID: String
    public var address: String?
    /// The container's name, for messages such as "network has active endpoints (c1 on h2)".
    public var name: String?
}

/// The address given.
public struct AllocateReply: Codable, Sendable {
    public var address: String
    public var prefixLength: Int
    public var gateway: String
    public var networkID: String
}

/// An address given back.
public struct ReleaseRequest: Codable, Sendable {
    public var network: String
    public var address: String
    public var endpointID: String
}

/// What the manager records per allocated address (so a restart restores exactly these).
public struct AllocationRecord: Codable, Sendable, Hashable {
    public var networkID: String
    public var address: String
    public var endpointID: String
    public var nodeID: String
    public var name: String?
}

// Services.

/// `service create`'s options (Docker's flags).
public struct ServiceCreateRequest: Codable, Sendable {
    public var name: String
    public var networks: [String]
    /// Replicated services: how many tasks (default 1). Ignored for global services.
    public var replicas: Int?
    /// `replicated` (default) or `global` (one task on every ready node).
    public var mode: String?
    /// `vip` (default) or `dnsrr`.
    public var endpointMode: String?
    /// `-p` specs as typed (short or long syntax).
    public var publish: [String]
    /// Beyond Docker: `keep` makes a node with a local task forward its ingress ports to it without
    /// SNAT (the task sees the client's address); nodes without one still go through the mesh.
    public var sourceIP: String?
    public var command: [String]
    public init(name: String, networks: [String] = [], command: [String] = []) {
        self.name = name
        self.networks = networks
        publish = []
        self.command = command
    }
}

/// `service update`'s changes (each optional).
public struct ServiceUpdateRequest: Codable, Sendable {
    public var replicas: Int?
    /// `-p` specs to publish in addition.
    public var publishAdd: [String]?
    /// Published ports to remove: `PORT` or `PORT/PROTO`.
    public var publishRemove: [String]?
    public init() {}
}

/// One published port of a service.
public struct ServicePort: Codable, Sendable, Hashable {
    public var `protocol`: String
    public var targetPort: UInt16
    public var publishedPort: UInt16
    /// `ingress` (every node, through the mesh) or `host` (only nodes with a task, straight to it).
    public var publishMode: String
}

/// A service's place on one network.
public struct ServiceNetwork: Codable, Sendable, Hashable {
    public var networkID: String
    public var networkName: String
    /// The virtual IP (vip mode).
    public var vip: String?
}

/// A service as the manager stores it and every node receives it.
public struct ServiceRecord: Codable, Sendable, Hashable {
    public var id: String
    public var name: String
    public var created: Date
    public var updated: Date
    /// `replicated` or `global`.
    public var mode: String
    public var replicas: Int
    /// `vip` or `dnsrr`.
    public var endpointMode: String
    /// The service's networks, in the order given (the ingress network last, when it publishes through the mesh).
    public var networks: [ServiceNetwork]
    public var ports: [ServicePort]
    /// `keep` (see `ServiceCreateRequest.sourceIP`) or nil.
    public var sourceIP: String?
    public var command: [String]
}

/// One task: a container the manager asks one node to run.
public struct TaskRecord: Codable, Sendable, Hashable {
    public var id: String
    public var serviceID: String
    public var serviceName: String
    /// Replicated services: 1...replicas; global ones: 0.
    public var slot: Int
    public var nodeID: String
    /// `running` or `shutdown`.
    public var desiredState: String
    public var created: Date
    /// When the desired state became `shutdown`.
    public var shutdownAt: Date?
    /// The container's name on its node: `<service>.<slot>.<task id>` (global: `<service>.<node id>.<task id>`).
    public var containerName: String {
        "\(serviceName).\(slot == 0 ? String(nodeID.prefix(12)) : String(slot)).\(id.prefix(12))"
    }
}

/// What a node reports about its tasks.
public struct TaskStatusReport: Codable, Sendable {
    public var nodeID: String
    /// Task ID to `running`, `starting`, `failed: why`, ...
    public var states: [String: String]
}

/// `service ls`.
public struct ServiceListEntry: Codable, Sendable {
    public var ID: String
    public var Name: String
    public var Mode: String
    /// `running/desired`.
    public var Replicas: String
    public var EndpointMode: String
    public var Ports: [String]
    public var VirtualIPs: [String: String]
}

/// `service ps`.
public struct TaskListEntry: Codable, Sendable {
    public var ID: String
    public var Name: String
    public var Node: String
    public var DesiredState: String
    public var CurrentState: String
    public var Addresses: [String: String]
}
