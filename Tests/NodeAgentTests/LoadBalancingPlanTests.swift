import Discovery
import Foundation
import Ingress
import NodeAgent
import OverlayAPI
import OverlayModel
import Testing

typealias EndpointMode = OverlayAPI.EndpointMode
typealias ServicePort = OverlayAPI.ServicePort

/// The load-balancing plan: which VIPs each network's namespace holds and where published ports
/// go, from services, tasks, this node's containers and the endpoint feed. No kernel.
@Suite struct LoadBalancingPlanTests {
    let t0 = Date(timeIntervalSince1970: 0)

    func network(_ name: String, ingress: Bool = false) -> NetworkRecord {
        NetworkRecord(id: "id-\(name)", name: name, driver: "overlay", created: t0, attachable: true, internal: false, ingress: ingress,
                      encrypted: false, subnets: [], mtu: 1450, options: [:], labels: [:])
    }

    func service(_ name: String, networks: [(String, String?)], mode: EndpointMode = .vip, ports: [ServicePort] = [],
                 sourceIP: SourceIPMode? = nil) -> ServiceRecord {
        ServiceRecord(id: "svc-\(name)", name: name, created: t0, updated: t0, mode: .replicated, replicas: 1, endpointMode: mode,
                      networks: networks.map { ServiceNetwork(networkID: "id-\($0.0)", networkName: $0.0, vip: $0.1.flatMap(IPAddress.init)) },
                      ports: ports, sourceIP: sourceIP, command: ["sleep", "1"])
    }

    func task(_ service: String, slot: Int, _ state: TaskState = .running) -> TaskRecord {
        TaskRecord(id: "t\(service)\(slot)", serviceID: "svc-\(service)", serviceName: service, slot: slot, nodeID: "n1",
                   desiredState: state, created: t0)
    }

    func container(_ name: String, on networks: [String], service: String? = nil, gateway: String? = nil) -> ContainerRecord {
        ContainerRecord(id: "c-\(name)", name: name, created: t0, namespacePath: "/x", ownsNamespace: true, command: [], detached: true,
                        networks: networks.map {
                            ContainerNetwork(networkID: "id-\($0)", networkName: $0, endpointID: "e", address: IPAddress("10.0.0.9")!, prefixLength: 24,
                                             gateway: IPAddress("10.0.0.1")!, mac: "02:42:0a:00:00:09", aliases: [])
                        },
                        publish: [], gatewayAddress: gateway.flatMap(IPv4Address.init), serviceName: service)
    }

    func endpoint(_ name: String, _ address: String, service: String?) -> Endpoint {
        var r = EndpointRecord.decode(Array(#"{"address":"10.0.0.2","id":"x","mac":"02:42:0a:00:00:02","name":"x","vtep":"198.18.0.1"}"#.utf8))!
        r.id = name
        r.name = name
        r.address = address
        r.service = service
        return Endpoint(r)!
    }

    @Test func aVIPGetsTheLiveTasksOfItsServiceOnNetworksWithALocalContainer() {
        let web = task("web", slot: 1), web2 = task("web", slot: 2), gone = task("web", slot: 3, .shutdown)
        let endpoints: [String: [Endpoint]] = [
            "front": [
                endpoint(web2.containerName, "10.0.0.7", service: "web"),
                endpoint(web.containerName, "10.0.0.5", service: "web"),
                endpoint(gone.containerName, "10.0.0.6", service: "web"),
                endpoint("db.1.x", "10.0.0.8", service: "db"),
                endpoint("client", "10.0.0.9", service: nil),
            ],
        ]
        let plan = LoadBalancingPlan.make(
            services: [service("web", networks: [("front", "10.0.0.2"), ("back", "10.1.0.2")]),
                       service("dns-only", networks: [("front", nil)], mode: .dnsrr)],
            tasks: [web, web2, gone], containers: [container("client", on: ["front"])],
            networks: [network("front"), network("back")], endpoints: { endpoints[$0] ?? [] })
        // "back" has no container here: no namespace. dnsrr has no VIP. The draining task is left out.
        #expect(plan.vips == ["front": [VIPEntry(service: "web", vip: IPv4Address("10.0.0.2")!,
                                                 backends: [IPv4Address("10.0.0.5")!, IPv4Address("10.0.0.7")!])]])
        #expect(plan.ingress == nil)
    }

    @Test func aVIPWithNoTaskUpYetIsPlannedWithNoBackends() {
        let plan = LoadBalancingPlan.make(services: [service("web", networks: [("front", "10.0.0.2")])], tasks: [task("web", slot: 1)],
                                          containers: [container("client", on: ["front"])], networks: [network("front")],
                                          endpoints: { _ in [] })
        #expect(plan.vips["front"]?.map(\.backends) == [[]])
    }

    @Test func publishedPortsGoToTasksAnywhereAndTheHostSendsThemToTheIngressBox() throws {
        let web = task("web", slot: 1)
        let tcp80 = ServicePort(protocol: .tcp, targetPort: 80, publishedPort: 8080, publishMode: .ingress)
        let hostOnly = ServicePort(protocol: .udp, targetPort: 53, publishedPort: 5353, publishMode: .host)
        let plan = LoadBalancingPlan.make(
            services: [service("web", networks: [("ingress", "10.255.0.2")], ports: [tcp80, hostOnly])],
            tasks: [web], containers: [], networks: [network("ingress", ingress: true)],
            endpoints: { $0 == "ingress" ? [self.endpoint(web.containerName, "10.255.0.5", service: "web")] : [] })
        let ingress = try #require(plan.ingress)
        #expect(ingress.network.name == "ingress")
        #expect(ingress.ports == [PublishedPortPlan(service: "web", protocol: .tcp, publishedPort: 8080, targetPort: 80,
                                                    tasks: [IPv4Address("10.255.0.5")!], localTasks: [])])
        #expect(ingress.boxPorts == [PortEntry(service: "web", protocol: .tcp, port: 8080,
                                               targets: [LBTarget(IPv4Address("10.255.0.5")!, port: 80)])])
        let box = IPv4Address("172.18.0.2")!
        #expect(ingress.hostPorts(box: box) == [PortEntry(service: "web", protocol: .tcp, port: 8080, targets: [LBTarget(box, port: 8080)])])
    }

    @Test func sourceIPKeepSendsTheHostsPortsToItsOwnTasksWhenItHasSome() throws {
        let web = task("web", slot: 1), other = task("web", slot: 2)
        let port = ServicePort(protocol: .tcp, targetPort: 80, publishedPort: 8080, publishMode: .ingress)
        let svc = service("web", networks: [("ingress", nil)], ports: [port], sourceIP: .keep)
        let local = container(web.containerName, on: ["ingress"], service: "web", gateway: "172.18.0.5")
        let plan = LoadBalancingPlan.make(services: [svc], tasks: [web, other], containers: [local],
                                          networks: [network("ingress", ingress: true)], endpoints: { _ in [] })
        let ingress = try #require(plan.ingress)
        // No task on the ingress network yet: the box leaves the port out; the host goes straight to its own task.
        #expect(ingress.boxPorts == [])
        #expect(ingress.hostPorts(box: IPv4Address("172.18.0.2")!)
                    == [PortEntry(service: "web", protocol: .tcp, port: 8080, targets: [LBTarget(IPv4Address("172.18.0.5")!, port: 80)])])
        // No local task: through the box like any other port.
        let remote = LoadBalancingPlan.make(services: [svc], tasks: [web], containers: [], networks: [network("ingress", ingress: true)],
                                            endpoints: { _ in [] })
        #expect(remote.ingress?.hostPorts(box: IPv4Address("172.18.0.2")!).first?.targets == [LBTarget(IPv4Address("172.18.0.2")!, port: 8080)])
    }

    @Test func noMeshWithoutAnIngressNetworkOrAPublishingService() {
        let port = ServicePort(protocol: .tcp, targetPort: 80, publishedPort: 8080, publishMode: .ingress)
        let publishing = service("web", networks: [], ports: [port])
        #expect(LoadBalancingPlan.make(services: [publishing], tasks: [], containers: [], networks: [network("front")],
                                       endpoints: { _ in [] }).ingress == nil)
        #expect(LoadBalancingPlan.make(services: [service("web", networks: [])], tasks: [], containers: [],
                                       networks: [network("ingress", ingress: true)], endpoints: { _ in [] }).ingress == nil)
    }
}

/// The embedded DNS's names as the agent feeds them.
@Suite struct NameTableFeedTests {
    func endpoint(_ name: String, _ address: String, aliases: [String] = []) -> Endpoint {
        var r = EndpointRecord.decode(Array(#"{"address":"10.0.0.2","id":"x","mac":"02:42:0a:00:00:02","name":"x","vtep":"198.18.0.1"}"#.utf8))!
        r.name = name
        r.address = address
        r.aliases = aliases
        return Endpoint(r)!
    }

    @Test func endpointEventsAddAndRemoveNames() {
        var table = NameTable()
        table.apply(.upsert(network: "front", key: "k1", owner: "n1", endpoint: endpoint("web", "10.0.0.5", aliases: ["www"])))
        table.apply(.upsert(network: "front", key: "k2", owner: "n1", endpoint: endpoint("v6", "fd00::5")))
        table.apply(.upsert(network: "back", key: "k3", owner: "n1", endpoint: endpoint("db", "10.1.0.5")))
        let front = table.endpoints(on: "front")
        #expect(front.count == 2)
        #expect(front.first { $0.name == "web" }?.ipv4 == IPv4Address("10.0.0.5"))
        #expect(front.first { $0.name == "web" }?.aliases == ["www"])
        #expect(front.first { $0.name == "v6" }?.ipv6 == IPv6Address("fd00::5"))
        #expect(front.first { $0.name == "v6" }?.ipv4 == nil)
        table.apply(.remove(network: "front", key: "k1"))
        #expect(table.endpoints(on: "front").map(\.name) == ["v6"])
        table.apply(.networkLeft("back"))
        #expect(table.endpoints(on: "back").isEmpty)
    }

    @Test func serviceNamesFollowTheServices() {
        let t0 = Date(timeIntervalSince1970: 0)
        func svc(_ name: String, _ mode: EndpointMode, _ nets: [String]) -> ServiceRecord {
            ServiceRecord(id: name, name: name, created: t0, updated: t0, mode: .replicated, replicas: 1, endpointMode: mode,
                          networks: nets.map { ServiceNetwork(networkID: $0, networkName: $0, vip: mode == .vip ? IPAddress("10.0.0.2") : nil) },
                          ports: [ServicePort(protocol: .udp, targetPort: 53, publishedPort: 53, publishMode: .ingress)], command: [])
        }
        var table = NameTable()
        table.syncServices([svc("web", .vip, ["front", "back"]), svc("db", .dnsrr, ["back"])])
        #expect(Set(table.allServices.map { "\($0.name)@\($0.network)" }) == ["web@front", "web@back", "db@back"])
        let web = table.allServices.first { $0.name == "web" && $0.network == "front" }
        #expect(web?.vip4 == IPv4Address("10.0.0.2") && web?.mode == .vip && web?.ports.first?.proto == "udp")
        #expect(table.allServices.first { $0.name == "db" }?.mode == .dnsrr)
        table.syncServices([svc("web", .vip, ["front"])])
        #expect(table.allServices.map { "\($0.name)@\($0.network)" } == ["web@front"])
    }
}
