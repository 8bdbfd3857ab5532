import ClusterManager
import Discovery
import Foundation
import GWBridge
import Ingress
import Netlink
import NodeAgent
import OverlayDriver
import OverlayModel
import Synchronization

/// One network's load-balancer namespace on this node: the service VIPs are its addresses, and
/// nftables there sends each new flow to one of the service's tasks, SNATed to its own address.
struct LBNamespaceState: Sendable {
    var network: String
    var handle: String
    var namespace: NetworkNamespace
    var endpointID: String
    var address: IPv4Address
    var balancer: LoadBalancer
    var vips: Set<IPv4Address>
}

/// The routing mesh's namespace on this node (Docker's ingress-sbox): on the ingress network and
/// on the gateway bridge; published ports arriving from the host go on to tasks anywhere.
struct IngressBoxState: Sendable {
    var namespace: NetworkNamespace
    var endpointID: String
    var ingressNetwork: String
    var ingressNetworkID: String
    var ingressAddress: IPv4Address
    var gatewayAddress: IPv4Address
    var balancer: LoadBalancer
}

/// The load balancing a node runs.
struct LoadBalancingRuntime: Sendable {
    var namespaces: [String: LBNamespaceState] = [:]
    var ingress: IngressBoxState?
    var host: LoadBalancer?
    var lastErrors: [String: String] = [:]
}

extension OverlayDaemon {
    var lbHandleDirectory: String { configuration.stateDirectory + "/lb/netns" }
    static let ingressBoxHandle = "ingress_sbox"
    static let hostIngressTable = "ovl_ingress_ports"

    /// The container names of tasks that should get new connections (desired running).
    func liveTaskNames() -> Set<String> {
        Set(allTasks().filter { $0.desiredState == .running }.map(\.containerName))
    }

    /// Makes the load balancers match the services, the tasks and the endpoint records.
    func reconcileLoadBalancing() async {
        guard let s = swarm, agent != nil, !isStopped else { return }
        let live = liveTaskNames()
        let containers = ((try? store.all(.container, as: ContainerRecord.self)) ?? [])
        let localNetworks = Set(containers.flatMap { $0.networks.map(\.networkName) })
        let vipServices = allServices().filter { $0.endpointMode == .vip }
        // 1. Per network: a load-balancer namespace where local containers may ask a VIP.
        var wanted: [String: [VIPEntry]] = [:]
        for svc in vipServices {
            for sn in svc.networks {
                guard let vip = sn.vip.flatMap(IPv4Address.init), localNetworks.contains(sn.networkName) else { continue }
                let backends = endpointIndex.endpoints(network: sn.networkName)
                    .filter { $0.service == svc.name && live.contains($0.name) }
                    .compactMap(\.ipv4).sorted()
                wanted[sn.networkName, default: []].append(VIPEntry(service: svc.name, vip: vip, backends: backends))
            }
        }
        for (network, _) in loadBalancing.namespaces where wanted[network] == nil {
            await removeLBNamespace(network)
        }
        for (network, vips) in wanted.sorted(by: { $0.key < $1.key }) {
            do {
                var lb: LBNamespaceState
                if let existing = loadBalancing.namespaces[network] { lb = existing } else { lb = try await makeLBNamespace(network, nodeID: s.nodeID) }
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
                loadBalancing.namespaces[network] = lb
                loadBalancing.lastErrors[network] = nil
            } catch {
                noteLBError(network, "the load balancer for network \(network) is not in place: \(error)")
            }
        }
        // 2. The routing mesh.
        await reconcileIngress(live: live, containers: containers, nodeID: s.nodeID)
        // 3. The embedded DNS: service names.
        updateServiceNames()
    }

    func noteLBError(_ key: String, _ message: String) {
        if loadBalancing.lastErrors[key] != message { logger.error("\(message)") }
        loadBalancing.lastErrors[key] = message
    }

    /// A namespace attached to `network` like a container, forwarding, with no ICMP redirects
    /// (it sends flows back out the interface they came in on).
    func makeLBNamespace(_ networkName: String, nodeID: String) async throws -> LBNamespaceState {
        guard let agent else { throw APIError(503, "not in a swarm") }
        let n = try network(named: networkName)
        let handle = "lb-\(n.id.prefix(12))"
        try? NetworkNamespace.delete(named: handle, handleDirectory: lbHandleDirectory)
        let ns = try NetworkNamespace.create(named: handle, handleDirectory: lbHandleDirectory)
        do {
            try prepareForwarding(ns)
            let (endpointID, v4) = try await attachLBEndpoint(ns, handle: handle, network: n, key: "lb/\(n.id)", name: "lb-\(n.name)",
                                                              nodeID: nodeID, agent: agent)
            let balancer = LoadBalancer(namespace: ns, options: LoadBalancerOptions(tableName: "ovl_lb", portMatch: .localAddresses, snat: v4))
            logger.info("load balancer for network \(n.name) at \(v4)")
            return LBNamespaceState(network: n.name, handle: handle, namespace: ns, endpointID: endpointID, address: v4,
                                    balancer: balancer, vips: [])
        } catch {
            try? NetworkNamespace.delete(named: handle, handleDirectory: lbHandleDirectory)
            throw error
        }
    }

    /// Attaches a load-balancer namespace to a network as `eth0` with an address from the manager
    /// (the same one after a restart: the endpoint ID is kept in the store), published by gossip.
    func attachLBEndpoint(_ ns: NetworkNamespace, handle: String, network n: NetworkRecord, key: String, name: String, nodeID: String,
                          agent: OverlayAgent) async throws -> (String, IPv4Address) {
        let endpointID = try lbEndpointID(key)
        let a = try await requestAddress(AllocateRequest(network: n.name, endpointID: endpointID, nodeID: nodeID,
                                                         address: nil, name: "\(name) on \(configuration.hostname)"))
        guard let v4 = IPv4Address(a.address) else { throw APIError(400, "load balancing needs an IPv4 subnet on \(n.name)") }
        do {
            _ = try agent.attach(
                EndpointSpec(id: endpointID, network: n.name, namespace: .path(lbHandleDirectory + "/" + handle),
                             address: .v4(v4), interfaceName: "eth0"),
                name: name)
            try? ns.setSysctl("net.ipv4.conf.eth0.send_redirects", to: "0")
        } catch {
            await giveBack(ReleaseRequest(network: n.name, address: a.address, endpointID: endpointID))
            throw error
        }
        return (endpointID, v4)
    }

    func prepareForwarding(_ ns: NetworkNamespace) throws {
        try NetlinkSocket(namespace: ns).setUp("lo")
        try ns.setSysctl("net.ipv4.ip_forward", to: "1")
        try ns.setSysctl("net.ipv4.conf.all.send_redirects", to: "0")
        try ns.setSysctl("net.ipv4.conf.default.send_redirects", to: "0")
    }

    /// The endpoint ID this node uses for a load balancer: kept in the store, so a restart asks
    /// the manager for the same address again.
    func lbEndpointID(_ key: String) throws -> String {
        if let id = try store.get(.setting, key, as: String.self) { return id }
        let id = EndpointID.random().text
        try store.put(.setting, key, id)
        return id
    }

    func removeLBNamespace(_ network: String) async {
        guard let lb = loadBalancing.namespaces.removeValue(forKey: network) else { return }
        try? lb.balancer.remove()
        try? agent?.detach(endpoint: lb.endpointID)
        await giveBack(ReleaseRequest(network: network, address: lb.address.description, endpointID: lb.endpointID))
        try? NetworkNamespace.delete(named: lb.handle, handleDirectory: lbHandleDirectory)
    }

    /// The routing mesh: the ingress namespace (ports to tasks on the ingress network, anywhere)
    /// and the host's table (published ports on every local address to the ingress namespace, or
    /// to local tasks for `--source-ip keep`).
    func reconcileIngress(live: Set<String>, containers: [ContainerRecord], nodeID: String) async {
        let ingressNet = cluster.networks.first { $0.ingress }
        let publishing = allServices().filter { $0.ports.contains { $0.publishMode == .ingress } }
        guard let ingressNet, !publishing.isEmpty else {
            await removeIngressBox()
            return
        }
        if let box = loadBalancing.ingress, box.ingressNetworkID != ingressNet.id { await removeIngressBox() }
        do {
            let box: IngressBoxState
            if let existing = loadBalancing.ingress { box = existing } else { box = try await makeIngressBox(ingressNet, nodeID: nodeID) }
            loadBalancing.ingress = box
            let endpoints = endpointIndex.endpoints(network: ingressNet.name)
            var boxPorts: [PortEntry] = []
            var hostPorts: [PortEntry] = []
            for svc in publishing {
                let tasks = endpoints.filter { $0.service == svc.name && live.contains($0.name) }.compactMap(\.ipv4).sorted()
                let local = containers.filter { $0.serviceName == svc.name && live.contains($0.name) }
                    .compactMap { $0.gatewayAddress.flatMap(IPv4Address.init) }.sorted()
                for p in svc.ports where p.publishMode == .ingress {
                    let proto = p.protocol
                    if !tasks.isEmpty {
                        boxPorts.append(PortEntry(service: svc.name, protocol: proto, port: p.publishedPort,
                                                  targets: tasks.map { LBTarget($0, port: p.targetPort) }))
                    }
                    let targets = svc.sourceIP == .keep && !local.isEmpty
                        ? local.map { LBTarget($0, port: p.targetPort) } : [LBTarget(box.gatewayAddress, port: p.publishedPort)]
                    hostPorts.append(PortEntry(service: svc.name, protocol: proto, port: p.publishedPort, targets: targets))
                }
            }
            try box.balancer.apply(vips: [], ports: boxPorts)
            if loadBalancing.host == nil {
                loadBalancing.host = LoadBalancer(
                    namespace: try NetworkNamespace.current(),
                    options: LoadBalancerOptions(tableName: Self.hostIngressTable, portMatch: .localAddresses, snat: nil))
            }
            try loadBalancing.host?.apply(vips: [], ports: hostPorts)
            loadBalancing.lastErrors["ingress"] = nil
        } catch {
            noteLBError("ingress", "the routing mesh is not in place on this node: \(error)")
        }
    }

    func makeIngressBox(_ n: NetworkRecord, nodeID: String) async throws -> IngressBoxState {
        guard let agent, let gateway else { throw APIError(503, "the gateway bridge is not set up on this node") }
        let handle = Self.ingressBoxHandle
        try? NetworkNamespace.delete(named: handle, handleDirectory: lbHandleDirectory)
        let ns = try NetworkNamespace.create(named: handle, handleDirectory: lbHandleDirectory)
        var attached: GatewayAttachment?
        do {
            try prepareForwarding(ns)
            attached = try gateway.attach(container: ns, interfaceName: "eth1", defaultRoute: true)
            let (endpointID, v4) = try await attachLBEndpoint(ns, handle: handle, network: n, key: "lb/ingress/\(n.id)",
                                                              name: "ingress-sbox", nodeID: nodeID, agent: agent)
            let balancer = LoadBalancer(
                namespace: ns, options: LoadBalancerOptions(tableName: "ovl_ingress", portMatch: .address(attached!.address), snat: v4))
            logger.info("routing mesh: ingress namespace at \(v4) on \(n.name), \(attached!.address) on the gateway bridge")
            return IngressBoxState(namespace: ns, endpointID: endpointID, ingressNetwork: n.name, ingressNetworkID: n.id, ingressAddress: v4,
                                   gatewayAddress: attached!.address, balancer: balancer)
        } catch {
            if let attached { try? gateway.detach(attached) }
            try? NetworkNamespace.delete(named: handle, handleDirectory: lbHandleDirectory)
            throw error
        }
    }

    func removeIngressBox() async {
        if let host = loadBalancing.host {
            try? host.remove()
            loadBalancing.host = nil
        }
        guard let box = loadBalancing.ingress else { return }
        loadBalancing.ingress = nil
        try? box.balancer.remove()
        try? agent?.detach(endpoint: box.endpointID)
        try? gateway?.detach(address: box.gatewayAddress)
        await giveBack(ReleaseRequest(network: box.ingressNetwork, address: box.ingressAddress.description, endpointID: box.endpointID))
        try? NetworkNamespace.delete(named: Self.ingressBoxHandle, handleDirectory: lbHandleDirectory)
    }

    /// Removes every load balancer (leave), or only forgets them (stop: a restart rebuilds them).
    func tearDownLoadBalancing() async {
        for network in Array(loadBalancing.namespaces.keys) { await removeLBNamespace(network) }
        await removeIngressBox()
    }

    /// After a restart: namespaces of the previous run are removed (they are rebuilt with the same
    /// addresses, their endpoint IDs being in the store) and the host's mesh table goes.
    func cleanStaleLoadBalancing() {
        if let names = try? FileManager.default.contentsOfDirectory(atPath: lbHandleDirectory) {
            for name in names { try? NetworkNamespace.delete(named: name, handleDirectory: lbHandleDirectory) }
        }
        if let ns = try? NetworkNamespace.current() {
            try? LoadBalancer(namespace: ns, options: LoadBalancerOptions(tableName: Self.hostIngressTable)).remove()
        }
    }

    /// Service names in the embedded DNS: `S` (the VIP, or the tasks for dnsrr) on each network.
    func updateServiceNames() {
        guard let dns else { return }
        let list = allServices()
        dns.updateTable { table in
            let wanted = Set(list.flatMap { svc in svc.networks.map { "\(svc.name)\u{0}\($0.networkName)" } })
            for old in table.allServices where !wanted.contains("\(old.name)\u{0}\(old.network)") {
                table.removeService(name: old.name, network: old.network)
            }
            for svc in list {
                for sn in svc.networks {
                    let vip = sn.vip.flatMap(IPv4Address.init)
                    table.upsert(ServiceName(name: svc.name, network: sn.networkName, vip4: vip, vip6: nil,
                                             mode: svc.endpointMode == .dnsrr ? .dnsrr : .vip,
                                             ports: svc.ports.map { Discovery.ServicePort(name: nil, proto: $0.protocol.rawValue, port: $0.targetPort) }))
                }
            }
        }
    }
}
