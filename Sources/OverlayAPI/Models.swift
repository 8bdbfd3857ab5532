import FoundationEssentials
import IPsecKeys
import OverlayModel

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
    public var role: NodeRole?
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
    /// Endpoint records gossip delivered that the owner check refused (each record once), since
    /// the swarm membership began; nil outside a swarm.
    public var refusedEndpointRecords: Int?
    /// Endpoint records gossip delivered that were dropped because they did not decode (not a
    /// JSON record, or an address that does not parse), since the membership began.
    public var malformedEndpointRecords: Int?
    /// Gossip table messages dropped because their Lamport time was too far ahead of this node's
    /// own clock (or past 2^62), since the membership began.
    public var rejectedClockMessages: Int?
    /// Gossip table messages dropped because they did not decode, since the membership began.
    public var malformedTableMessages: Int?
    /// Gossip deletes and leaves dropped, and bulk syncs taken without their implicit deletes,
    /// because the node they name did not sign them, since the membership began.
    public var unauthenticatedTableMessages: Int?
    /// The swarm membership's loops running now (reconcile, scheduler, renewal, key rotation or
    /// following the manager, boot IDs): 0 outside a swarm, the same number after a rejoin.
    public var membershipLoops: Int?
    /// overlayd's version (`OverlayVersion.version`).
    public var version: String?

    /// Makes a value from all its fields (what a memberwise initialiser would, but public).
    public init(
        nodeID: String,
        hostname: String,
        swarm: String,
        role: NodeRole? = nil,
        clusterID: String? = nil,
        managerAddr: String? = nil,
        advertiseAddr: String? = nil,
        dataPathAddr: String? = nil,
        dataPathPort: UInt16,
        gossipPort: UInt16,
        stateDir: String,
        pid: Int32,
        datapath: String,
        espEncapsulation: String? = nil,
        kernelIPsec: String? = nil,
        refusedEndpointRecords: Int? = nil,
        malformedEndpointRecords: Int? = nil,
        rejectedClockMessages: Int? = nil,
        malformedTableMessages: Int? = nil,
        unauthenticatedTableMessages: Int? = nil,
        membershipLoops: Int? = nil,
        version: String? = nil
    ) {
        self.membershipLoops = membershipLoops
        self.unauthenticatedTableMessages = unauthenticatedTableMessages
        self.rejectedClockMessages = rejectedClockMessages
        self.malformedTableMessages = malformedTableMessages
        self.nodeID = nodeID
        self.hostname = hostname
        self.swarm = swarm
        self.role = role
        self.clusterID = clusterID
        self.managerAddr = managerAddr
        self.advertiseAddr = advertiseAddr
        self.dataPathAddr = dataPathAddr
        self.dataPathPort = dataPathPort
        self.gossipPort = gossipPort
        self.stateDir = stateDir
        self.pid = pid
        self.datapath = datapath
        self.espEncapsulation = espEncapsulation
        self.kernelIPsec = kernelIPsec
        self.refusedEndpointRecords = refusedEndpointRecords
        self.malformedEndpointRecords = malformedEndpointRecords
        self.version = version
    }
}

/// A node as `node ls` shows it.
public struct NodeRecord: Codable, Sendable, Hashable {
    public var id: String
    public var hostname: String
    public var role: NodeRole
    /// From gossip.
    public var status: NodeStatus
    public var advertiseAddr: IPAddress
    public var dataPathAddr: IPAddress
    public var gossipPort: UInt16
    public var joined: Date
    /// When its certificate expires (if known).
    public var certificateNotAfter: Date?
    /// Whether it can encrypt: `ok`, `no keys`, or what failed (reported by the node itself; nil
    /// before it has reported).
    public var encryption: String?
    /// The public key of its certificate (P-256, base64 of the X9.63 form): its endpoint records
    /// in gossip are signed with the private one, and a record under its name that this key does
    /// not verify is not used. Nil for a node that joined before records were signed (until its
    /// next certificate renewal).
    public var signingKey: String?
    /// Whether the scheduler may use it (nil: active).
    public var availability: NodeAvailability?
    /// Managers, as `node ls` shows them: `Leader`, `Reachable` or `Unreachable` (nil for workers).
    public var managerStatus: String?
    /// The port its manager API listens on, or would as a manager (nil: 2377).
    public var managerPort: Int?
    /// Whether its overlayd shares the swarm's cluster store (`--cluster-store` holding this
    /// swarm), as it said when it joined: what promoting it needs.
    public var sharesClusterStore: Bool?

    /// Makes a value from all its fields (what a memberwise initialiser would, but public).
    public init(
        id: String,
        hostname: String,
        role: NodeRole,
        status: NodeStatus,
        advertiseAddr: IPAddress,
        dataPathAddr: IPAddress,
        gossipPort: UInt16,
        joined: Date,
        certificateNotAfter: Date? = nil,
        encryption: String? = nil,
        signingKey: String? = nil,
        availability: NodeAvailability? = nil
    ) {
        self.signingKey = signingKey
        self.availability = availability
        self.id = id
        self.hostname = hostname
        self.role = role
        self.status = status
        self.advertiseAddr = advertiseAddr
        self.dataPathAddr = dataPathAddr
        self.gossipPort = gossipPort
        self.joined = joined
        self.certificateNotAfter = certificateNotAfter
        self.encryption = encryption
    }
}

/// One subnet of a network, as the manager stores and hands it out.
public struct SubnetConfig: Codable, Sendable, Hashable {
    public var subnet: CIDR
    public var gateway: IPAddress
    public var ipRange: CIDR?
    public var auxAddresses: [String: IPAddress]
    public var vni: UInt32

    /// Makes a value from all its fields (what a memberwise initialiser would, but public).
    public init(
        subnet: CIDR,
        gateway: IPAddress,
        ipRange: CIDR? = nil,
        auxAddresses: [String: IPAddress],
        vni: UInt32
    ) {
        self.subnet = subnet
        self.gateway = gateway
        self.ipRange = ipRange
        self.auxAddresses = auxAddresses
        self.vni = vni
    }
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

    /// Makes a value from all its fields (what a memberwise initialiser would, but public).
    public init(
        id: String,
        name: String,
        driver: String,
        created: Date,
        attachable: Bool,
        `internal`: Bool,
        ingress: Bool,
        encrypted: Bool,
        subnets: [SubnetConfig],
        mtu: UInt32,
        options: [String: String],
        labels: [String: String]
    ) {
        self.id = id
        self.name = name
        self.driver = driver
        self.created = created
        self.attachable = attachable
        self.`internal` = `internal`
        self.ingress = ingress
        self.encrypted = encrypted
        self.subnets = subnets
        self.mtu = mtu
        self.options = options
        self.labels = labels
    }
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
    /// The interface to make in the namespace (CNI's `CNI_IFNAME`); nil: the next free `ethN`. With
    /// a name, an attach repeated for the same namespace, network and name answers what the
    /// first one made.
    public var interface: String?
    /// Also a leg on the node's gateway bridge (`ovgw0`, the default route out), and a route from
    /// the host to the container's overlay address through it: how a CNI runtime's published
    /// ports (`portmap`) reach the container.
    public var gateway: Bool?

    public init(name: String, network: String, namespacePath: String?, pid: Int32?, ip: String?, aliases: [String]?,
                interface: String? = nil, gateway: Bool? = nil) {
        self.name = name
        self.network = network
        self.namespacePath = namespacePath
        self.pid = pid
        self.ip = ip
        self.aliases = aliases
        self.interface = interface
        self.gateway = gateway
    }
}

/// Undoes an attach (CNI's DEL): the container `name` leaves `network` (every network when nil),
/// only its endpoint on `interface` when that is given.
public struct DetachRequest: Codable, Sendable {
    public var name: String
    public var network: String?
    public var interface: String?

    /// Makes a value from all its fields.
    public init(name: String, network: String?, interface: String?) {
        self.name = name
        self.network = network
        self.interface = interface
    }
}

/// One network membership of a local container.
public struct ContainerNetwork: Codable, Sendable, Hashable {
    public var networkID: String
    public var networkName: String
    public var endpointID: String
    public var address: IPAddress
    public var prefixLength: Int
    public var gateway: IPAddress
    public var mac: String
    public var aliases: [String]
    /// The interface in the container (nil: `eth<its index among the container's networks>`, as
    /// `run` names them).
    public var interface: String?

    /// Makes a value from all its fields (what a memberwise initialiser would, but public).
    public init(
        networkID: String,
        networkName: String,
        endpointID: String,
        address: IPAddress,
        prefixLength: Int,
        gateway: IPAddress,
        mac: String,
        aliases: [String],
        interface: String? = nil
    ) {
        self.interface = interface
        self.networkID = networkID
        self.networkName = networkName
        self.endpointID = endpointID
        self.address = address
        self.prefixLength = prefixLength
        self.gateway = gateway
        self.mac = mac
        self.aliases = aliases
    }
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
    /// When the daemon started `pid` (clock ticks since boot, field 22 of `/proc/PID/stat`): the
    /// process is the container's only while its PID has this start time (a PID is reused by
    /// another process once it is collected). Absent for another runtime's process and in records
    /// written before it was kept.
    public var startTime: UInt64?
    public var logPath: String?
    public var networks: [ContainerNetwork]
    public var publish: [String]
    public var gatewayAddress: IPv4Address?
    /// The host routes each overlay address to the container through its gateway leg (attached
    /// for a CNI runtime: its published ports are DNATed to the overlay address).
    public var routedFromHost: Bool?
    /// A service task's container: the task ID and service name.
    public var taskID: String?
    public var serviceName: String?

    /// Makes a value from all its fields (what a memberwise initialiser would, but public).
    public init(
        id: String,
        name: String,
        created: Date,
        namespacePath: String,
        ownsNamespace: Bool,
        command: [String],
        detached: Bool,
        pid: Int32? = nil,
        startTime: UInt64? = nil,
        logPath: String? = nil,
        networks: [ContainerNetwork],
        publish: [String],
        gatewayAddress: IPv4Address? = nil,
        taskID: String? = nil,
        serviceName: String? = nil
    ) {
        self.id = id
        self.name = name
        self.created = created
        self.namespacePath = namespacePath
        self.ownsNamespace = ownsNamespace
        self.command = command
        self.detached = detached
        self.pid = pid
        self.startTime = startTime
        self.logPath = logPath
        self.networks = networks
        self.publish = publish
        self.gatewayAddress = gatewayAddress
        self.taskID = taskID
        self.serviceName = serviceName
    }
}

/// `inspect NAME`: Docker's shape, the parts that have a meaning here.
public struct ContainerInspect: Codable, Sendable {
    public struct State: Codable, Sendable {
        public var Status: String
        public var Running: Bool
        public var Pid: Int32

        /// Makes a value from all its fields (what a memberwise initialiser would, but public).
        public init(
            Status: String,
            Running: Bool,
            Pid: Int32
        ) {
            self.Status = Status
            self.Running = Running
            self.Pid = Pid
        }
    }
    public struct Config: Codable, Sendable {
        public var Cmd: [String]

        /// Makes a value from all its fields (what a memberwise initialiser would, but public).
        public init(
            Cmd: [String]
        ) {
            self.Cmd = Cmd
        }
    }
    public struct EndpointSettings: Codable, Sendable {
        public var NetworkID: String
        public var EndpointID: String
        public var Gateway: String
        public var IPAddress: String
        public var IPPrefixLen: Int
        public var MacAddress: String
        public var Aliases: [String]
        /// The interface in the container's namespace (`eth0`, ...).
        public var Interface: String?

        /// Makes a value from all its fields (what a memberwise initialiser would, but public).
        public init(
            NetworkID: String,
            EndpointID: String,
            Gateway: String,
            IPAddress: String,
            IPPrefixLen: Int,
            MacAddress: String,
            Aliases: [String],
            Interface: String? = nil
        ) {
            self.NetworkID = NetworkID
            self.EndpointID = EndpointID
            self.Gateway = Gateway
            self.IPAddress = IPAddress
            self.IPPrefixLen = IPPrefixLen
            self.MacAddress = MacAddress
            self.Aliases = Aliases
            self.Interface = Interface
        }
    }
    /// The container's leg on the host's gateway bridge.
    public struct GatewayLeg: Codable, Sendable {
        public var Interface: String
        public var IPAddress: String
        public var IPPrefixLen: Int
        public var Gateway: String
        public var MacAddress: String

        /// Makes a value from all its fields.
        public init(Interface: String, IPAddress: String, IPPrefixLen: Int, Gateway: String, MacAddress: String) {
            self.Interface = Interface
            self.IPAddress = IPAddress
            self.IPPrefixLen = IPPrefixLen
            self.Gateway = Gateway
            self.MacAddress = MacAddress
        }
    }
    public struct NetworkSettings: Codable, Sendable {
        public var SandboxKey: String
        public var Ports: [String: [[String: String]]]
        public var Networks: [String: EndpointSettings]
        /// The container's address on the host's gateway bridge (egress, published ports), if any.
        public var GatewayBridgeAddress: String?
        /// That leg in full, when the container is another runtime's (attached with a gateway leg).
        public var GatewayBridge: GatewayLeg?

        /// Makes a value from all its fields (what a memberwise initialiser would, but public).
        public init(
            SandboxKey: String,
            Ports: [String: [[String: String]]],
            Networks: [String: EndpointSettings],
            GatewayBridgeAddress: String? = nil,
            GatewayBridge: GatewayLeg? = nil
        ) {
            self.SandboxKey = SandboxKey
            self.Ports = Ports
            self.Networks = Networks
            self.GatewayBridgeAddress = GatewayBridgeAddress
            self.GatewayBridge = GatewayBridge
        }
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

    /// Makes a value from all its fields (what a memberwise initialiser would, but public).
    public init(
        Id: String,
        Name: String,
        Created: Date,
        State: State,
        Config: Config,
        NetworkSettings: NetworkSettings,
        ResolvConfPath: String? = nil,
        DaemonPid: Int32
    ) {
        self.Id = Id
        self.Name = Name
        self.Created = Created
        self.State = State
        self.Config = Config
        self.NetworkSettings = NetworkSettings
        self.ResolvConfPath = ResolvConfPath
        self.DaemonPid = DaemonPid
    }
}

/// `network inspect NAME`: Docker's field names.
public struct NetworkInspect: Codable, Sendable {
    public struct IPAMConfig: Codable, Sendable {
        public var Subnet: String
        public var Gateway: String
        public var IPRange: String?
        public var AuxiliaryAddresses: [String: String]?

        /// Makes a value from all its fields (what a memberwise initialiser would, but public).
        public init(
            Subnet: String,
            Gateway: String,
            IPRange: String? = nil,
            AuxiliaryAddresses: [String: String]? = nil
        ) {
            self.Subnet = Subnet
            self.Gateway = Gateway
            self.IPRange = IPRange
            self.AuxiliaryAddresses = AuxiliaryAddresses
        }
    }
    public struct IPAMInfo: Codable, Sendable {
        public var Driver: String
        public var Config: [IPAMConfig]

        /// Makes a value from all its fields (what a memberwise initialiser would, but public).
        public init(
            Driver: String,
            Config: [IPAMConfig]
        ) {
            self.Driver = Driver
            self.Config = Config
        }
    }
    public struct ContainerEntry: Codable, Sendable {
        public var Name: String
        public var EndpointID: String
        public var MacAddress: String
        public var IPv4Address: String
        public var IPv6Address: String

        /// Makes a value from all its fields (what a memberwise initialiser would, but public).
        public init(
            Name: String,
            EndpointID: String,
            MacAddress: String,
            IPv4Address: String,
            IPv6Address: String
        ) {
            self.Name = Name
            self.EndpointID = EndpointID
            self.MacAddress = MacAddress
            self.IPv4Address = IPv4Address
            self.IPv6Address = IPv6Address
        }
    }
    public struct Peer: Codable, Sendable {
        public var Name: String
        public var IP: String

        /// Makes a value from all its fields (what a memberwise initialiser would, but public).
        public init(
            Name: String,
            IP: String
        ) {
            self.Name = Name
            self.IP = IP
        }
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
    /// Encrypted networks only: ESP this host dropped since its daemon started, by reason
    /// (`espAuthFailed`, `espReplayed`, `espOutsideWindow`, `espUnknownSPI`, ...), for all its
    /// encrypted networks together.
    public var ESPDropped: [String: UInt64]?

    /// Makes a value from all its fields (what a memberwise initialiser would, but public).
    public init(
        Name: String,
        Id: String,
        Created: Date,
        Scope: String,
        Driver: String,
        EnableIPv6: Bool,
        IPAM: IPAMInfo,
        Internal: Bool,
        Attachable: Bool,
        Ingress: Bool,
        Containers: [String: ContainerEntry],
        Options: [String: String],
        Labels: [String: String],
        Peers: [Peer]? = nil,
        Endpoints: [String: ContainerEntry]? = nil,
        Encryption: String? = nil,
        CleartextDropped: UInt64? = nil,
        ESPDropped: [String: UInt64]? = nil
    ) {
        self.Name = Name
        self.Id = Id
        self.Created = Created
        self.Scope = Scope
        self.Driver = Driver
        self.EnableIPv6 = EnableIPv6
        self.IPAM = IPAM
        self.Internal = Internal
        self.Attachable = Attachable
        self.Ingress = Ingress
        self.Containers = Containers
        self.Options = Options
        self.Labels = Labels
        self.Peers = Peers
        self.Endpoints = Endpoints
        self.Encryption = Encryption
        self.CleartextDropped = CleartextDropped
        self.ESPDropped = ESPDropped
    }
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
    /// Whether the joiner's own `--cluster-store` holds this swarm (its CA is the token's): what
    /// joining as a manager needs.
    public var sharesClusterStore: Bool?
    /// The port the joiner's manager API would listen on (what other nodes reach it at, should it
    /// join as a manager).
    public var managerPort: Int?

    /// Makes a value from all its fields (what a memberwise initialiser would, but public).
    public init(
        token: String,
        hostname: String,
        advertiseAddr: String,
        dataPathAddr: String,
        gossipPort: UInt16,
        csr: String? = nil,
        nodeID: String? = nil,
        sharesClusterStore: Bool? = nil,
        managerPort: Int? = nil
    ) {
        self.managerPort = managerPort
        self.sharesClusterStore = sharesClusterStore
        self.token = token
        self.hostname = hostname
        self.advertiseAddr = advertiseAddr
        self.dataPathAddr = dataPathAddr
        self.gossipPort = gossipPort
        self.csr = csr
        self.nodeID = nodeID
    }
}

/// The manager's answer to a join.
public struct JoinReply: Codable, Sendable {
    public var nodeID: String
    public var role: NodeRole
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

    /// Makes a value from all its fields (what a memberwise initialiser would, but public).
    public init(
        nodeID: String,
        role: NodeRole,
        clusterID: String,
        certificate: String? = nil,
        ca: String? = nil,
        gossipKeys: [String],
        gossipSeeds: [String],
        dataPathPort: UInt16,
        espEncapsulation: String? = nil
    ) {
        self.nodeID = nodeID
        self.role = role
        self.clusterID = clusterID
        self.certificate = certificate
        self.ca = ca
        self.gossipKeys = gossipKeys
        self.gossipSeeds = gossipSeeds
        self.dataPathPort = dataPathPort
        self.espEncapsulation = espEncapsulation
    }
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
    /// Every manager's API, `host:port` (a node fails over to another when its manager goes).
    public var managers: [String]?
    /// The node ID of the leading manager, when known.
    public var leader: String?
    /// What the manager asks of the polling node besides the state: the logs of some of its tasks
    /// (`service logs`). Set only in the answer to one node's poll that sent `logs=`; never kept.
    public var logRequests: [LogRequest]?

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

    /// Makes a value from all its fields (what a memberwise initialiser would, but public).
    public init(
        network: String,
        endpointID: String,
        nodeID: String,
        address: String? = nil,
        name: String? = nil
    ) {
        self.network = network
        self.endpointID = endpointID
        self.nodeID = nodeID
        self.address = address
        self.name = name
    }
}

/// The address given.
public struct AllocateReply: Codable, Sendable, Hashable {
    public var address: IPAddress
    public var prefixLength: Int
    public var gateway: IPAddress
    public var networkID: String

    /// Makes a value from all its fields (what a memberwise initialiser would, but public).
    public init(
        address: IPAddress,
        prefixLength: Int,
        gateway: IPAddress,
        networkID: String
    ) {
        self.address = address
        self.prefixLength = prefixLength
        self.gateway = gateway
        self.networkID = networkID
    }
}

/// An address given back.
public struct ReleaseRequest: Codable, Sendable {
    public var network: String
    public var address: String
    public var endpointID: String

    /// Makes a value from all its fields (what a memberwise initialiser would, but public).
    public init(
        network: String,
        address: String,
        endpointID: String
    ) {
        self.network = network
        self.address = address
        self.endpointID = endpointID
    }
}

/// What the manager records per allocated address (so a restart restores exactly these).
public struct AllocationRecord: Codable, Sendable, Hashable {
    public var networkID: String
    public var address: IPAddress
    public var endpointID: String
    public var nodeID: String
    public var name: String?

    /// Makes a value from all its fields (what a memberwise initialiser would, but public).
    public init(
        networkID: String,
        address: IPAddress,
        endpointID: String,
        nodeID: String,
        name: String? = nil
    ) {
        self.networkID = networkID
        self.address = address
        self.endpointID = endpointID
        self.nodeID = nodeID
        self.name = name
    }
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
    public var `protocol`: PortProtocol
    public var targetPort: UInt16
    public var publishedPort: UInt16
    /// `ingress` (every node, through the mesh) or `host` (only nodes with a task, straight to it).
    public var publishMode: PublishMode

    /// Makes a value from all its fields (what a memberwise initialiser would, but public).
    public init(
        `protocol`: PortProtocol,
        targetPort: UInt16,
        publishedPort: UInt16,
        publishMode: PublishMode
    ) {
        self.`protocol` = `protocol`
        self.targetPort = targetPort
        self.publishedPort = publishedPort
        self.publishMode = publishMode
    }
}

/// A service's place on one network.
public struct ServiceNetwork: Codable, Sendable, Hashable {
    public var networkID: String
    public var networkName: String
    /// The virtual IP (vip mode).
    public var vip: IPAddress?

    /// Makes a value from all its fields (what a memberwise initialiser would, but public).
    public init(
        networkID: String,
        networkName: String,
        vip: IPAddress? = nil
    ) {
        self.networkID = networkID
        self.networkName = networkName
        self.vip = vip
    }
}

/// A service as the manager stores it and every node receives it.
public struct ServiceRecord: Codable, Sendable, Hashable {
    public var id: String
    public var name: String
    public var created: Date
    public var updated: Date
    /// `replicated` or `global`.
    public var mode: ServiceMode
    public var replicas: Int
    /// `vip` or `dnsrr`.
    public var endpointMode: EndpointMode
    /// The service's networks, in the order given (the ingress network last, when it publishes through the mesh).
    public var networks: [ServiceNetwork]
    public var ports: [ServicePort]
    /// `keep` (see `ServiceCreateRequest.sourceIP`) or nil.
    public var sourceIP: SourceIPMode?
    public var command: [String]

    /// Makes a value from all its fields (what a memberwise initialiser would, but public).
    public init(
        id: String,
        name: String,
        created: Date,
        updated: Date,
        mode: ServiceMode,
        replicas: Int,
        endpointMode: EndpointMode,
        networks: [ServiceNetwork],
        ports: [ServicePort],
        sourceIP: SourceIPMode? = nil,
        command: [String]
    ) {
        self.id = id
        self.name = name
        self.created = created
        self.updated = updated
        self.mode = mode
        self.replicas = replicas
        self.endpointMode = endpointMode
        self.networks = networks
        self.ports = ports
        self.sourceIP = sourceIP
        self.command = command
    }
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
    public var desiredState: TaskState
    public var created: Date
    /// When the desired state became `shutdown`.
    public var shutdownAt: Date?
    /// The container's name on its node: `<service>.<slot>.<task id>` (global: `<service>.<node id>.<task id>`).
    public var containerName: String {
        "\(serviceName).\(slot == 0 ? String(nodeID.prefix(12)) : String(slot)).\(id.prefix(12))"
    }

    /// Makes a value from all its fields (what a memberwise initialiser would, but public).
    public init(
        id: String,
        serviceID: String,
        serviceName: String,
        slot: Int,
        nodeID: String,
        desiredState: TaskState,
        created: Date,
        shutdownAt: Date? = nil
    ) {
        self.id = id
        self.serviceID = serviceID
        self.serviceName = serviceName
        self.slot = slot
        self.nodeID = nodeID
        self.desiredState = desiredState
        self.created = created
        self.shutdownAt = shutdownAt
    }
}

/// What a node reports about its tasks.
public struct TaskStatusReport: Codable, Sendable {
    public var nodeID: String
    /// Task ID to `running`, `starting`, `failed: why`, ...
    public var states: [String: String]

    /// Makes a value from all its fields (what a memberwise initialiser would, but public).
    public init(
        nodeID: String,
        states: [String: String]
    ) {
        self.nodeID = nodeID
        self.states = states
    }
}

/// Everything a node tells the manager about itself, in one call (`POST /v1/report`): sent when
/// any part changes, when the manager is new, and every 30 s. A part left nil is not reported this
/// time and keeps its last value on the manager.
public struct NodeReport: Codable, Sendable, Equatable {
    /// The reporting node (the one its certificate names; another is refused).
    public var nodeID: String
    /// Its encrypted networks' datapath status, as `node ls` shows it.
    public var encryption: String?
    /// Its gateway bridge's subnet (an IPv4 CIDR, /8 to /30).
    public var gatewaySubnet: String?
    /// Ports its standalone containers publish: `tcp/8080` -> container name.
    public var publishedPorts: [String: String]?
    /// Its tasks' states: task ID -> `running`, `starting`, `failed: why`, ...
    public var taskStates: [String: String]?
    /// The endpoints it holds addresses for, sorted: its containers', its load balancers', and
    /// those asked for and not yet recorded or given back. The manager gives back what two
    /// reports in a row leave out (nil: an older node that does not say; nothing is given back).
    public var endpoints: [String]?

    /// Makes a value from all its fields (what a memberwise initialiser would, but public).
    public init(
        nodeID: String,
        encryption: String? = nil,
        gatewaySubnet: String? = nil,
        publishedPorts: [String: String]? = nil,
        taskStates: [String: String]? = nil,
        endpoints: [String]? = nil
    ) {
        self.nodeID = nodeID
        self.encryption = encryption
        self.gatewaySubnet = gatewaySubnet
        self.publishedPorts = publishedPorts
        self.taskStates = taskStates
        self.endpoints = endpoints
    }
}

/// The manager's answer to a `NodeReport`.
public struct NodeReportReply: Codable, Sendable {
    /// Task states recorded.
    public var recorded: Int
    /// Task states ignored: tasks not assigned to the node.
    public var ignored: Int

    /// Makes a value from all its fields.
    public init(recorded: Int, ignored: Int) {
        self.recorded = recorded
        self.ignored = ignored
    }
}

/// `network connect NETWORK CONTAINER`: an existing container joins another network.
public struct NetworkConnectRequest: Codable, Sendable, Equatable {
    public var network: String
    /// The address to use on it (`--ip`).
    public var ip: String?
    /// More names it answers to there (`--alias`).
    public var aliases: [String]

    /// Makes a request.
    public init(network: String, ip: String? = nil, aliases: [String] = []) {
        self.network = network
        self.ip = ip
        self.aliases = aliases
    }
}

/// `node update`: what changes.
public struct NodeUpdateRequest: Codable, Sendable, Equatable {
    /// `active`, `pause` or `drain`.
    public var availability: NodeAvailability?
    /// `manager` (`node promote`) or `worker` (`node demote`).
    public var role: NodeRole?

    /// Makes a request.
    public init(availability: NodeAvailability? = nil, role: NodeRole? = nil) {
        self.availability = availability
        self.role = role
    }
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

    /// Makes a value from all its fields (what a memberwise initialiser would, but public).
    public init(
        ID: String,
        Name: String,
        Mode: String,
        Replicas: String,
        EndpointMode: String,
        Ports: [String],
        VirtualIPs: [String: String]
    ) {
        self.ID = ID
        self.Name = Name
        self.Mode = Mode
        self.Replicas = Replicas
        self.EndpointMode = EndpointMode
        self.Ports = Ports
        self.VirtualIPs = VirtualIPs
    }
}

/// A manager's request, carried in one node's long poll, for the output of some of that node's
/// tasks (`service logs`). The node answers with ``LogAnswer`` (`POST /v1/logs`).
public struct LogRequest: Codable, Sendable, Equatable {
    /// Grows with every request a manager makes (it starts at the manager's start time in
    /// milliseconds, so a restarted manager's requests are newer than every earlier one).
    public var id: UInt64
    /// The task IDs whose output is wanted.
    public var tasks: [String]
    /// Only the last N lines of each.
    public var tail: Int?

    /// Makes a value from all its fields.
    public init(id: UInt64, tasks: [String], tail: Int?) {
        self.id = id
        self.tasks = tasks
        self.tail = tail
    }
}

/// One task's output, or why it has none.
public struct TaskLog: Codable, Sendable, Equatable {
    public var taskID: String
    public var log: String
    /// Why there is no (or only part of the) output: "no container for this task here", "cut to
    /// its last 1048576 bytes".
    public var note: String?

    /// Makes a value from all its fields.
    public init(taskID: String, log: String, note: String? = nil) {
        self.taskID = taskID
        self.log = log
        self.note = note
    }
}

/// A node's answer to a ``LogRequest``.
public struct LogAnswer: Codable, Sendable, Equatable {
    /// The request's ID.
    public var request: UInt64
    public var logs: [TaskLog]

    /// Makes a value from all its fields.
    public init(request: UInt64, logs: [TaskLog]) {
        self.request = request
        self.logs = logs
    }
}

/// `service logs`: each task's output, by slot, and what could not be had.
public struct ServiceLogs: Codable, Sendable {
    public struct TaskOutput: Codable, Sendable {
        /// `web.1` (global services: `web.<node ID>`), as `service ps` names it.
        public var Name: String
        public var ID: String
        /// The node's hostname.
        public var Node: String
        public var Log: String

        /// Makes a value from all its fields.
        public init(Name: String, ID: String, Node: String, Log: String) {
            self.Name = Name
            self.ID = ID
            self.Node = Node
            self.Log = Log
        }
    }

    public var tasks: [TaskOutput]
    /// One line per node that did not answer, or task whose output could not be had.
    public var errors: [String]
    /// One line per task whose output was cut to fit the answer.
    public var warnings: [String]

    /// Makes a value from all its fields.
    public init(tasks: [TaskOutput], errors: [String], warnings: [String] = []) {
        self.tasks = tasks
        self.errors = errors
        self.warnings = warnings
    }
}

/// `service ps`.
public struct TaskListEntry: Codable, Sendable {
    public var ID: String
    public var Name: String
    public var Node: String
    public var DesiredState: String
    public var CurrentState: String
    public var Addresses: [String: String]

    /// Makes a value from all its fields (what a memberwise initialiser would, but public).
    public init(
        ID: String,
        Name: String,
        Node: String,
        DesiredState: String,
        CurrentState: String,
        Addresses: [String: String]
    ) {
        self.ID = ID
        self.Name = Name
        self.Node = Node
        self.DesiredState = DesiredState
        self.CurrentState = CurrentState
        self.Addresses = Addresses
    }
}
