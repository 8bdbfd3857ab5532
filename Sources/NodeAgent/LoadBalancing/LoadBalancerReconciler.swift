import Foundation
import GWBridge
import Ingress
import Logging
import Netlink
import NIOCore
import OverlayAPI
import OverlayDriver
import OverlayModel

/// What the load balancers need from the node that runs them: addresses from the manager, given
/// back when a load balancer goes, and endpoint IDs that outlive a restart (so a restarted node
/// asks for the same addresses again).
public protocol NodeAddressBook: Sendable {
    /// Asks the manager for an address.
    func requestAddress(_ request: AllocateRequest) async throws -> AllocateReply
    /// Gives an address back (retried later by the node when the manager cannot be told now).
    func giveBack(_ request: ReleaseRequest) async
    /// The endpoint ID kept under `key`, made and kept on first use.
    func endpointID(forKey key: String) async throws -> String
}

/// Why a load balancer could not be put in place.
public struct LoadBalancingError: Error, Sendable, CustomStringConvertible {
    /// What went wrong.
    public var description: String
    init(_ description: String) { self.description = description }
}

/// Makes a node's kernel hold what a ``LoadBalancingPlan`` says: per network a load-balancer
/// namespace (the service VIPs are its addresses; nftables there sends each new flow to one task,
/// SNATed to its own address), and the routing mesh (Docker's `ingress_sbox` on the ingress
/// network and the gateway bridge, and the host's table of published ports).
///
/// It runs on the executor it is given (the daemon's own thread): its netlink and nftables calls
/// block, and must not do so on one of Swift's cooperative threads.
public actor LoadBalancerReconciler {
    /// One network's load-balancer namespace.
    struct NetworkBalancer: Sendable {
        var network: String
        var handle: String
        var namespace: NetworkNamespace
        var endpointID: String
        var address: IPv4Address
        var balancer: LoadBalancer
        var vips: Set<IPv4Address>
    }

    /// The routing mesh's namespace (Docker's ingress-sbox).
    struct IngressBox: Sendable {
        var namespace: NetworkNamespace
        var endpointID: String
        var network: String
        var networkID: String
        var address: IPv4Address
        var gatewayAddress: IPv4Address
        var balancer: LoadBalancer
    }

    /// The handle of the routing mesh's namespace.
    public static let ingressBoxHandle = "ingress_sbox"
    /// The host namespace's nftables table of published ports.
    public static let hostIngressTable = "ovl_ingress_ports"

    private let loop: any EventLoop
    private let agent: OverlayAgent
    private let nodeID: String
    private let hostname: String
    private let handleDirectory: String
    private let logger: Logger
    private var networks: [String: NetworkBalancer] = [:]
    private var ingress: IngressBox?
    private var host: LoadBalancer?
    private var lastErrors: [String: String] = [:]

    public nonisolated var unownedExecutor: UnownedSerialExecutor { loop.executor.asUnownedSerialExecutor() }

    /// A reconciler for one swarm membership.
    /// - Parameters:
    ///   - stateDirectory: the daemon's; namespace handles are kept under `lb/netns`.
    ///   - agent: the membership's agent (load-balancer namespaces are its endpoints).
    ///   - nodeID, hostname: this node, for the address requests.
    ///   - executor: the thread the reconciler runs on.
    public init(stateDirectory: String, agent: OverlayAgent, nodeID: String, hostname: String, executor: any EventLoop,
                logger: Logger) {
        handleDirectory = stateDirectory + "/lb/netns"
        self.agent = agent
        self.nodeID = nodeID
        self.hostname = hostname
        loop = executor
        self.logger = logger
    }

    /// Makes the load balancers match `plan`. Failures are logged (once per distinct message) and
    /// tried again at the next call.
    public func apply(_ plan: LoadBalancingPlan, networks records: [NetworkRecord], gateway: GatewayBridge?,
                      addresses: some NodeAddressBook) async {
        for network in Array(networks.keys) where plan.vips[network] == nil {
            await removeNetworkBalancer(network, addresses: addresses)
        }
        for (network, vips) in plan.vips.sorted(by: { $0.key < $1.key }) {
            do {
                var lb: NetworkBalancer
                if let existing = networks[network] {
                    lb = existing
                } else {
                    guard let record = records.first(where: { $0.name == network }) else {
                        throw LoadBalancingError("network \(network) is not in the cluster's state")
                    }
                    lb = try await makeNetworkBalancer(record, addresses: addresses)
                }
                let want = Set(vips.map(\.vip))
                let socket = try NetlinkSocket(namespace: lb.namespace)
                for v in want.subtracting(lb.vips) {
                    try socket.addAddress(InterfaceAddress(.v4(v), prefixLength: 32)!, to: "eth0")
                }
                for v in lb.vips.subtracting(want) {
                    try? socket.deleteAddress(InterfaceAddress(.v4(v), prefixLength: 32)!, from: "eth0")
                }
                lb.vips = want
                try lb.balancer.apply(vips: vips.filter { !$0.backends.isEmpty }, ports: [])
                networks[network] = lb
                lastErrors[network] = nil
            } catch {
                note(network, "the load balancer for network \(network) is not in place: \(error)")
            }
        }
        await applyIngress(plan.ingress, gateway: gateway, addresses: addresses)
    }

    /// Removes every load balancer and gives their addresses back (the node leaves the swarm).
    public func tearDown(gateway: GatewayBridge?, addresses: some NodeAddressBook) async {
        for network in Array(networks.keys) { await removeNetworkBalancer(network, addresses: addresses) }
        await removeIngressBox(gateway: gateway, addresses: addresses)
    }

    /// After a restart: the namespaces of the previous run go (they are rebuilt with the same
    /// addresses, their endpoint IDs being kept), and so does the host's table of published ports.
    public nonisolated static func cleanStale(stateDirectory: String) {
        let dir = stateDirectory + "/lb/netns"
        if let names = try? FileManager.default.contentsOfDirectory(atPath: dir) {
            for name in names { try? NetworkNamespace.delete(named: name, handleDirectory: dir) }
        }
        if let ns = try? NetworkNamespace.current() {
            try? LoadBalancer(namespace: ns, options: LoadBalancerOptions(tableName: hostIngressTable)).remove()
        }
    }

    // MARK: Per network

    private func note(_ key: String, _ message: String) {
        if lastErrors[key] != message { logger.error("\(message)") }
        lastErrors[key] = message
    }

    /// A namespace attached to the network like a container, forwarding, with no ICMP redirects
    /// (it sends flows back out the interface they came in on).
    private func makeNetworkBalancer(_ n: NetworkRecord, addresses: some NodeAddressBook) async throws -> NetworkBalancer {
        let handle = "lb-\(n.id.prefix(12))"
        try? NetworkNamespace.delete(named: handle, handleDirectory: handleDirectory)
        let ns = try NetworkNamespace.create(named: handle, handleDirectory: handleDirectory)
        do {
            try Self.prepareForwarding(ns)
            let (endpointID, v4) = try await attach(ns, handle: handle, network: n, key: "lb/\(n.id)", name: "lb-\(n.name)",
                                                    addresses: addresses)
            let balancer = LoadBalancer(namespace: ns, options: LoadBalancerOptions(tableName: "ovl_lb", portMatch: .localAddresses, snat: v4))
            logger.info("load balancer for network \(n.name) at \(v4)", metadata: ["network": "\(n.name)", "address": "\(v4)"])
            return NetworkBalancer(network: n.name, handle: handle, namespace: ns, endpointID: endpointID, address: v4,
                                   balancer: balancer, vips: [])
        } catch {
            try? NetworkNamespace.delete(named: handle, handleDirectory: handleDirectory)
            throw error
        }
    }

    /// Attaches a load-balancer namespace to a network as `eth0` with an address from the manager
    /// (the same one after a restart: the endpoint ID is kept), published by gossip.
    private func attach(_ ns: NetworkNamespace, handle: String, network n: NetworkRecord, key: String, name: String,
                        addresses: some NodeAddressBook) async throws -> (String, IPv4Address) {
        let endpointID = try await addresses.endpointID(forKey: key)
        let a = try await addresses.requestAddress(AllocateRequest(network: n.name, endpointID: endpointID, nodeID: nodeID,
                                                                   address: nil, name: "\(name) on \(hostname)"))
        guard let v4 = a.address.v4 else {
            await addresses.giveBack(ReleaseRequest(network: n.name, address: a.address.description, endpointID: endpointID))
            throw LoadBalancingError("load balancing needs an IPv4 subnet on \(n.name)")
        }
        do {
            _ = try agent.attach(
                EndpointSpec(id: endpointID, network: n.name, namespace: .path(handleDirectory + "/" + handle),
                             address: .v4(v4), interfaceName: "eth0"),
                name: name)
            try? ns.setSysctl("net.ipv4.conf.eth0.send_redirects", to: "0")
        } catch {
            await addresses.giveBack(ReleaseRequest(network: n.name, address: a.address.description, endpointID: endpointID))
            throw error
        }
        return (endpointID, v4)
    }

    private static func prepareForwarding(_ ns: NetworkNamespace) throws {
        try NetlinkSocket(namespace: ns).setUp("lo")
        try ns.setSysctl("net.ipv4.ip_forward", to: "1")
        try ns.setSysctl("net.ipv4.conf.all.send_redirects", to: "0")
        try ns.setSysctl("net.ipv4.conf.default.send_redirects", to: "0")
    }

    private func removeNetworkBalancer(_ network: String, addresses: some NodeAddressBook) async {
        guard let lb = networks.removeValue(forKey: network) else { return }
        try? lb.balancer.remove()
        try? agent.detach(endpoint: lb.endpointID)
        await addresses.giveBack(ReleaseRequest(network: network, address: lb.address.description, endpointID: lb.endpointID))
        try? NetworkNamespace.delete(named: lb.handle, handleDirectory: handleDirectory)
    }

    // MARK: The routing mesh

    /// The ingress namespace (ports to tasks on the ingress network, anywhere) and the host's
    /// table (published ports on every local address to the ingress namespace, or to local tasks
    /// for `--source-ip keep`).
    private func applyIngress(_ plan: IngressPlan?, gateway: GatewayBridge?, addresses: some NodeAddressBook) async {
        guard let plan else {
            await removeIngressBox(gateway: gateway, addresses: addresses)
            return
        }
        if let box = ingress, box.networkID != plan.network.id { await removeIngressBox(gateway: gateway, addresses: addresses) }
        do {
            let box: IngressBox
            if let existing = ingress { box = existing } else { box = try await makeIngressBox(plan.network, gateway: gateway, addresses: addresses) }
            ingress = box
            try box.balancer.apply(vips: [], ports: plan.boxPorts)
            if host == nil {
                host = LoadBalancer(namespace: try NetworkNamespace.current(),
                                    options: LoadBalancerOptions(tableName: Self.hostIngressTable, portMatch: .localAddresses, snat: nil))
            }
            try host?.apply(vips: [], ports: plan.hostPorts(box: box.gatewayAddress))
            lastErrors["ingress"] = nil
        } catch {
            note("ingress", "the routing mesh is not in place on this node: \(error)")
        }
    }

    private func makeIngressBox(_ n: NetworkRecord, gateway: GatewayBridge?, addresses: some NodeAddressBook) async throws -> IngressBox {
        guard let gateway else { throw LoadBalancingError("the gateway bridge is not set up on this node") }
        let handle = Self.ingressBoxHandle
        try? NetworkNamespace.delete(named: handle, handleDirectory: handleDirectory)
        let ns = try NetworkNamespace.create(named: handle, handleDirectory: handleDirectory)
        var attached: GatewayAttachment?
        do {
            try Self.prepareForwarding(ns)
            let onGateway = try gateway.attach(container: ns, interfaceName: "eth1", defaultRoute: true)
            attached = onGateway
            let (endpointID, v4) = try await attach(ns, handle: handle, network: n, key: "lb/ingress/\(n.id)", name: "ingress-sbox",
                                                    addresses: addresses)
            let balancer = LoadBalancer(
                namespace: ns, options: LoadBalancerOptions(tableName: "ovl_ingress", portMatch: .address(onGateway.address), snat: v4))
            logger.info("routing mesh: ingress namespace at \(v4) on \(n.name), \(onGateway.address) on the gateway bridge",
                        metadata: ["network": "\(n.name)", "address": "\(v4)"])
            return IngressBox(namespace: ns, endpointID: endpointID, network: n.name, networkID: n.id, address: v4,
                              gatewayAddress: onGateway.address, balancer: balancer)
        } catch {
            if let attached { try? gateway.detach(attached) }
            try? NetworkNamespace.delete(named: handle, handleDirectory: handleDirectory)
            throw error
        }
    }

    private func removeIngressBox(gateway: GatewayBridge?, addresses: some NodeAddressBook) async {
        if let host {
            try? host.remove()
            self.host = nil
        }
        guard let box = ingress else { return }
        ingress = nil
        try? box.balancer.remove()
        try? agent.detach(endpoint: box.endpointID)
        try? gateway?.detach(address: box.gatewayAddress)
        await addresses.giveBack(ReleaseRequest(network: box.network, address: box.address.description, endpointID: box.endpointID))
        try? NetworkNamespace.delete(named: Self.ingressBoxHandle, handleDirectory: handleDirectory)
    }
}
