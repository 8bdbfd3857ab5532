import ClusterManager
import Discovery
import Foundation
import NodeAgent
import OverlayModel

/// The daemon as the load balancers' address book: the manager's addresses (this node's own
/// manager or the remote one) and endpoint IDs kept in the store.
struct DaemonAddressBook: NodeAddressBook {
    let daemon: OverlayDaemon

    func requestAddress(_ request: AllocateRequest) async throws -> AllocateReply { try await daemon.requestAddress(request) }
    func giveBack(_ request: ReleaseRequest) async { await daemon.giveBack(request) }
    func endpointID(forKey key: String) async throws -> String { try await daemon.keptEndpointID(key) }
}

extension OverlayDaemon {
    /// Makes the load balancers match the services, the tasks and the endpoint records (the plan
    /// and the kernel work are the node agent's), then the embedded DNS's service names.
    func reconcileLoadBalancing() async {
        guard swarm != nil, let balancers = loadBalancers, !isStopped else { return }
        let containers = (try? store.all(.container, as: ContainerRecord.self)) ?? []
        let plan = LoadBalancingPlan.make(services: allServices(), tasks: allTasks(), containers: containers,
                                          networks: cluster.networks, endpoints: endpointIndex.endpoints(network:))
        let start = ContinuousClock.now
        await balancers.apply(plan, networks: cluster.networks, gateway: gateway, addresses: DaemonAddressBook(daemon: self))
        if let metrics {
            metrics.record("overlay_lb_programming_duration_seconds", ContinuousClock.now - start)
            let vips = plan.vips.values.flatMap { $0 }
            metrics.gauge("overlay_lb_vips", vips.count)
            metrics.gauge("overlay_lb_backends", vips.reduce(0) { $0 + $1.backends.count })
            metrics.gauge("overlay_lb_published_ports", plan.ingress?.ports.count ?? 0)
        }
        updateServiceNames()
    }

    /// The endpoint ID this node uses for a load balancer: kept in the store, so a restart asks
    /// the manager for the same address again.
    func keptEndpointID(_ key: String) throws -> String {
        if let id = try store.get(.setting, key, as: String.self) { return id }
        let id = EndpointID.random().text
        try store.put(.setting, key, id)
        return id
    }

    /// Removes every load balancer (leave); a stop only forgets them (a restart rebuilds them).
    func tearDownLoadBalancing() async {
        await loadBalancers?.tearDown(gateway: gateway, addresses: DaemonAddressBook(daemon: self))
        loadBalancers = nil
    }

    /// Service names in the embedded DNS: `S` (the VIP, or the tasks for dnsrr) on each network.
    func updateServiceNames() {
        guard let dns else { return }
        let list = allServices()
        dns.updateTable { table in table.syncServices(list) }
    }
}
