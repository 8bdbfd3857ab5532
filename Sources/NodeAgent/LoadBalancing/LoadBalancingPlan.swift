import Ingress
import OverlayAPI
import OverlayModel

/// What a node's load balancers should hold, worked out from the cluster's services and tasks,
/// this node's containers and the endpoint records gossip delivered. Pure: no kernel, no clock;
/// ``LoadBalancerReconciler`` makes the kernel match it.
public struct LoadBalancingPlan: Sendable, Equatable {
    /// Per network that has a container on this node: the VIPs its load-balancer namespace holds,
    /// each with its backends (the live tasks' addresses, sorted; empty when none is up yet).
    public var vips: [String: [VIPEntry]]
    /// The routing mesh, when the cluster has an ingress network and a service publishes a port
    /// through it.
    public var ingress: IngressPlan?

    /// Makes a plan.
    public init(vips: [String: [VIPEntry]] = [:], ingress: IngressPlan? = nil) {
        self.vips = vips
        self.ingress = ingress
    }

    /// The plan for this node.
    /// - Parameters:
    ///   - services: every service of the cluster.
    ///   - tasks: every task of the cluster: only those desired running get new connections.
    ///   - containers: this node's containers (which networks it is on; its tasks' gateway
    ///     addresses for `--source-ip keep`).
    ///   - networks: the cluster's networks (the ingress network among them).
    ///   - endpoints: the endpoints gossip delivered for a network, local ones included.
    public static func make(services: [ServiceRecord], tasks: [TaskRecord], containers: [ContainerRecord],
                            networks: [NetworkRecord], endpoints: (String) -> [Endpoint]) -> LoadBalancingPlan {
        let live = Set(tasks.filter { $0.desiredState == .running }.map(\.containerName))
        let localNetworks = Set(containers.flatMap { $0.networks.map(\.networkName) })
        var plan = LoadBalancingPlan()
        for svc in services where svc.endpointMode == .vip {
            for sn in svc.networks {
                guard let vip = sn.vip?.v4, localNetworks.contains(sn.networkName) else { continue }
                let backends = endpoints(sn.networkName)
                    .filter { $0.service == svc.name && live.contains($0.name) }
                    .compactMap(\.ipv4).sorted()
                plan.vips[sn.networkName, default: []].append(VIPEntry(service: svc.name, vip: vip, backends: backends))
            }
        }
        let publishing = services.filter { $0.ports.contains { $0.publishMode == .ingress } }
        guard let ingressNet = networks.first(where: \.ingress), !publishing.isEmpty else { return plan }
        let ingressEndpoints = endpoints(ingressNet.name)
        var ports: [PublishedPortPlan] = []
        for svc in publishing {
            let tasks = ingressEndpoints.filter { $0.service == svc.name && live.contains($0.name) }.compactMap(\.ipv4).sorted()
            let local = svc.sourceIP == .keep
                ? containers.filter { $0.serviceName == svc.name && live.contains($0.name) }
                    .compactMap(\.gatewayAddress).sorted()
                : []
            for p in svc.ports where p.publishMode == .ingress {
                ports.append(PublishedPortPlan(service: svc.name, protocol: p.protocol, publishedPort: p.publishedPort,
                                               targetPort: p.targetPort, tasks: tasks, localTasks: local))
            }
        }
        plan.ingress = IngressPlan(network: ingressNet, ports: ports)
        return plan
    }
}

/// The routing mesh's part of a ``LoadBalancingPlan``.
public struct IngressPlan: Sendable, Equatable {
    /// The ingress network the mesh's namespace joins.
    public var network: NetworkRecord
    /// Every port published through the mesh.
    public var ports: [PublishedPortPlan]

    /// Makes a plan.
    public init(network: NetworkRecord, ports: [PublishedPortPlan]) {
        self.network = network
        self.ports = ports
    }

    /// The ingress namespace's table: each port to the service's live tasks on the ingress
    /// network, anywhere in the cluster (a port with no task yet is left out).
    public var boxPorts: [PortEntry] {
        ports.filter { !$0.tasks.isEmpty }.map { p in
            PortEntry(service: p.service, protocol: p.protocol, port: p.publishedPort,
                      targets: p.tasks.map { LBTarget($0, port: p.targetPort) })
        }
    }

    /// The host's table: each port to the ingress namespace's gateway-bridge address (`box`), or,
    /// for `--source-ip keep`, straight to this node's own tasks when it has some.
    public func hostPorts(box: IPv4Address) -> [PortEntry] {
        ports.map { p in
            let targets = p.localTasks.isEmpty
                ? [LBTarget(box, port: p.publishedPort)] : p.localTasks.map { LBTarget($0, port: p.targetPort) }
            return PortEntry(service: p.service, protocol: p.protocol, port: p.publishedPort, targets: targets)
        }
    }
}

/// One port a service publishes through the routing mesh.
public struct PublishedPortPlan: Sendable, Equatable {
    /// The service.
    public var service: String
    /// TCP, UDP or SCTP.
    public var `protocol`: PortProtocol
    /// The port every node answers on.
    public var publishedPort: UInt16
    /// The tasks' port.
    public var targetPort: UInt16
    /// The service's live tasks on the ingress network, sorted.
    public var tasks: [IPv4Address]
    /// For `--source-ip keep`: this node's live tasks' gateway-bridge addresses, sorted; empty
    /// otherwise.
    public var localTasks: [IPv4Address]

    /// Makes a port.
    public init(service: String, protocol: PortProtocol, publishedPort: UInt16, targetPort: UInt16,
                tasks: [IPv4Address], localTasks: [IPv4Address]) {
        self.service = service
        self.protocol = `protocol`
        self.publishedPort = publishedPort
        self.targetPort = targetPort
        self.tasks = tasks
        self.localTasks = localTasks
    }
}
