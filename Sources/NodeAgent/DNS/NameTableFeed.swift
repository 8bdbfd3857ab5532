import Discovery
import OverlayAPI
import OverlayModel

/// The embedded DNS server's names, fed by the node agent: endpoint names from the endpoint feed,
/// service names from the cluster's services.
extension NameTable {
    /// Applies one event of the agent's endpoint feed: a container's name and aliases on a
    /// network, or their removal.
    public mutating func apply(_ event: EndpointEvent) {
        switch event {
        case .upsert(let network, let key, _, let e):
            var v4: IPv4Address?
            var v6: IPv6Address?
            switch e.address {
            case .v4(let a): v4 = a
            case .v6(let a): v6 = a
            }
            upsert(EndpointName(id: key, network: network, name: e.name, aliases: e.aliases, ipv4: v4, ipv6: v6, service: e.service))
        case .remove(let network, let key):
            removeEndpoint(id: key, network: network)
        case .networkLeft(let network):
            removeNetwork(network)
        }
    }

    /// Makes the service names match `services`: `S` on each of a service's networks, answering
    /// its VIP (or, for `dnsrr`, its tasks' addresses).
    public mutating func syncServices(_ services: [ServiceRecord]) {
        let wanted = Set(services.flatMap { svc in svc.networks.map { ServiceKey(name: svc.name, network: $0.networkName) } })
        for old in allServices where !wanted.contains(ServiceKey(name: old.name, network: old.network)) {
            removeService(name: old.name, network: old.network)
        }
        for svc in services {
            for sn in svc.networks {
                upsert(ServiceName(name: svc.name, network: sn.networkName, vip4: sn.vip?.v4, vip6: sn.vip?.v6,
                                   mode: svc.endpointMode == .dnsrr ? .dnsrr : .vip,
                                   ports: svc.ports.map { Discovery.ServicePort(name: nil, proto: $0.protocol.rawValue, port: $0.targetPort) }))
            }
        }
    }
}

private struct ServiceKey: Hashable {
    var name: String
    var network: String
}
