import OverlayModel

/// One container or task endpoint on one network, as gossip's endpoint table carries it.
public struct EndpointName: Hashable, Sendable {
    /// The endpoint's ID (unique within its network).
    public var id: String
    /// The network's name.
    public var network: String
    /// The container (or task) name.
    public var name: String
    /// Network-scoped aliases (`--network-alias`).
    public var aliases: [String]
    /// The endpoint's IPv4 address, if the network has IPv4.
    public var ipv4: IPv4Address?
    /// The endpoint's IPv6 address, if the network has IPv6.
    public var ipv6: IPv6Address?
    /// The service this endpoint is a task of, if any.
    public var service: String?

    /// Makes an endpoint record.
    public init(id: String, network: String, name: String, aliases: [String] = [], ipv4: IPv4Address? = nil,
                ipv6: IPv6Address? = nil, service: String? = nil) {
        self.id = id
        self.network = network
        self.name = name
        self.aliases = aliases
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self.service = service
    }
}

/// How a service's name resolves: to its virtual IP, or to every task's IP (DNS round robin).
public enum EndpointMode: String, Sendable, Codable {
    /// The service name answers the VIP.
    case vip
    /// The service name answers every task IP.
    case dnsrr
}

/// A port a service publishes on its network, for SRV records.
public struct ServicePort: Hashable, Sendable {
    /// The port's name (the SRV `_<name>` label); unnamed ports have no SRV record.
    public var name: String?
    /// "tcp", "udp" or "sctp".
    public var proto: String
    /// The target (container) port.
    public var port: UInt16

    /// Makes a service port.
    public init(name: String?, proto: String, port: UInt16) {
        self.name = name
        self.proto = proto
        self.port = port
    }
}

/// One service on one network.
public struct ServiceName: Hashable, Sendable {
    /// The service's name.
    public var name: String
    /// The network's name.
    public var network: String
    /// The IPv4 VIP (vip mode).
    public var vip4: IPv4Address?
    /// The IPv6 VIP (vip mode).
    public var vip6: IPv6Address?
    /// How the name resolves.
    public var mode: EndpointMode
    /// Named ports, for SRV.
    public var ports: [ServicePort]

    /// Makes a service record.
    public init(name: String, network: String, vip4: IPv4Address? = nil, vip6: IPv6Address? = nil, mode: EndpointMode = .vip,
                ports: [ServicePort] = []) {
        self.name = name
        self.network = network
        self.vip4 = vip4
        self.vip6 = vip6
        self.mode = mode
        self.ports = ports
    }
}

/// A lowercased dotted name used as a dictionary key; hashes its bytes in one call (an `[UInt8]`
/// key would hash byte by byte).
internal struct NameKey: Hashable, Sendable {
    var bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    func hash(into hasher: inout Hasher) {
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }
}

/// Who owns an address in the reverse index.
internal enum PTROwner: Hashable, Sendable {
    case endpoint(String)
    case service([UInt8])
}

/// The names of one network, indexed for lookups.
internal struct NetworkNames: Sendable {
    /// Endpoints by ID.
    var endpoints: [String: EndpointName] = [:]
    /// Lowercased name or alias -> endpoint IDs, in insertion order.
    var byName: [NameKey: [String]] = [:]
    /// Lowercased service name -> service.
    var services: [NameKey: ServiceName] = [:]
    /// Lowercased service name -> IDs of its task endpoints.
    var tasks: [NameKey: [String]] = [:]
    /// Address -> owner and PTR target (`<name>.<network>.`).
    var ptr4: [IPv4Address: (owner: PTROwner, target: DNSName)] = [:]
    var ptr6: [IPv6Address: (owner: PTROwner, target: DNSName)] = [:]

    var isEmpty: Bool { endpoints.isEmpty && services.isEmpty }
}

/// The names the resolver answers from: endpoints and services per network. A value type whose
/// indexes are updated on every change, so every lookup is a dictionary hit.
public struct NameTable: Sendable {
    internal var networks: [String: NetworkNames] = [:]

    /// Makes an empty table.
    public init() {}

    /// How many endpoints the table holds, over all networks.
    public var endpointCount: Int { networks.values.reduce(0) { $0 + $1.endpoints.count } }

    /// How many services the table holds, over all networks.
    public var serviceCount: Int { networks.values.reduce(0) { $0 + $1.services.count } }

    /// Adds an endpoint, or replaces the one with the same ID and network.
    public mutating func upsert(_ e: EndpointName) {
        removeEndpoint(id: e.id, network: e.network)
        var n = networks[e.network] ?? NetworkNames()
        n.endpoints[e.id] = e
        var keys = [lowercasedKey(e.name)]
        for a in e.aliases {
            let k = lowercasedKey(a)
            if !keys.contains(k) { keys.append(k) }
        }
        for k in keys where !k.isEmpty { n.byName[NameKey(k), default: []].append(e.id) }
        if let s = e.service { n.tasks[NameKey(lowercasedKey(s)), default: []].append(e.id) }
        if let target = ptrTarget(e.name, e.network) {
            if let a = e.ipv4 { n.ptr4[a] = (.endpoint(e.id), target) }
            if let a = e.ipv6 { n.ptr6[a] = (.endpoint(e.id), target) }
        }
        networks[e.network] = n
    }

    /// Removes an endpoint (nothing happens if it is not there).
    public mutating func removeEndpoint(id: String, network: String) {
        guard var n = networks[network], let e = n.endpoints.removeValue(forKey: id) else { return }
        for k in [e.name] + e.aliases {
            let key = NameKey(lowercasedKey(k))
            n.byName[key]?.removeAll { $0 == id }
            if n.byName[key]?.isEmpty == true { n.byName[key] = nil }
        }
        if let s = e.service {
            let key = NameKey(lowercasedKey(s))
            n.tasks[key]?.removeAll { $0 == id }
            if n.tasks[key]?.isEmpty == true { n.tasks[key] = nil }
        }
        if let a = e.ipv4, n.ptr4[a]?.owner == .endpoint(id) { n.ptr4[a] = nil }
        if let a = e.ipv6, n.ptr6[a]?.owner == .endpoint(id) { n.ptr6[a] = nil }
        networks[network] = n.isEmpty ? nil : n
    }

    /// Adds a service, or replaces the one with the same name and network.
    public mutating func upsert(_ s: ServiceName) {
        removeService(name: s.name, network: s.network)
        var n = networks[s.network] ?? NetworkNames()
        let key = lowercasedKey(s.name)
        n.services[NameKey(key)] = s
        if let target = ptrTarget(s.name, s.network) {
            if let a = s.vip4 { n.ptr4[a] = (.service(key), target) }
            if let a = s.vip6 { n.ptr6[a] = (.service(key), target) }
        }
        networks[s.network] = n
    }

    /// Removes a service (its task endpoints stay until they are removed themselves).
    public mutating func removeService(name: String, network: String) {
        let key = lowercasedKey(name)
        guard var n = networks[network], let s = n.services.removeValue(forKey: NameKey(key)) else { return }
        if let a = s.vip4, n.ptr4[a]?.owner == .service(key) { n.ptr4[a] = nil }
        if let a = s.vip6, n.ptr6[a]?.owner == .service(key) { n.ptr6[a] = nil }
        networks[network] = n.isEmpty ? nil : n
    }

    /// Every service of every network.
    public var allServices: [ServiceName] { networks.values.flatMap { $0.services.values } }

    /// Removes every endpoint and service of a network.
    public mutating func removeNetwork(_ network: String) {
        networks[network] = nil
    }

    /// Every endpoint on a network (for tests and diagnostics).
    public func endpoints(on network: String) -> [EndpointName] {
        Array(networks[network]?.endpoints.values ?? [:].values)
    }

    private func ptrTarget(_ name: String, _ network: String) -> DNSName? {
        DNSName(name + "." + network + ".")
    }
}
