import ClusterManager
import DockerPlugin
import Hummingbird
import Foundation
import IPAM
import NodeAgent
import OverlayDriver
import Netlink
import OverlayModel
import Discovery

// Docker's containers on our networks: overlayd as dockerd's remote network and IPAM driver
// (`docker network create -d swift-overlay --ipam-driver swift-overlay NAME`).
//
// Docker 20.10 sends neither the network's name nor its ID to IPAM, and the driver learns only the
// ID: so a Docker network is known here by its pool (its subnet, which no two cluster networks
// share), and bound to the cluster network of its name once dockerd can say the name (right after
// CreateNetwork returns). Addresses come from the manager, so they are unique across hosts; the
// interface Docker moves into the container is a MACVLAN (or veth) on the network's sandbox here,
// made in this namespace (dockerd's) under the name Join gives.

/// A Docker network on this node made with the plugin, by its subnet (IPAM's pool ID).
struct DockerPoolRecord: Codable, Sendable {
    var subnet: CIDR
    var gateway: IPAddress
    /// Set by CreateNetwork (the pool was asked for by a network about to be made before that).
    var dockerNetworkID: String?
    /// The cluster network it is bound to, once its name is known.
    var network: String?
    var encrypted = false
    var `internal` = false
    /// Why it cannot be bound (a cluster network of its name with another subnet, ...).
    var conflict: String?
}

/// A Docker endpoint on this node, by Docker's endpoint ID.
struct DockerEndpointRecord: Codable, Sendable {
    var dockerNetworkID: String
    var network: String
    /// Our endpoint ID: the manager's allocation and the gossip record.
    var endpointID: String
    var address: IPAddress
    var prefixLength: Int
    var mac: String
    /// The interface Docker moves into the container (its name in dockerd's namespace).
    var interface: String
    /// The container's namespace, as Join said (in dockerd's mount namespace).
    var sandboxKey: String?
    /// The container's name and its aliases on the network, once dockerd says them (after Join).
    var container: String?
    var aliases: [String]?
    /// The interface's name in the container (Docker's `ethN`), once seen there.
    var containerInterface: String?
}

/// What the plugin keeps in memory: its server and the name lookups under way.
struct DockerPluginRuntime {
    var server: APIServer?
    var binding: [String: Task<String, any Error>] = [:]
}

extension StoreKind {
    /// Agent: Docker networks made with the plugin on this node, by subnet.
    static let dockerPool = StoreKind(rawValue: "docker-pool")
    /// Agent: Docker endpoints on this node, by Docker's endpoint ID.
    static let dockerEndpoint = StoreKind(rawValue: "docker-endpoint")
}

/// The daemon as the plugin's backend.
struct DaemonDockerBackend: DockerNetworkBackend {
    let daemon: OverlayDaemon

    func requestPool(_ r: RequestPoolRequest) async throws -> RequestPoolResponse { try await daemon.dockerRequestPool(r) }
    func releasePool(_ r: ReleasePoolRequest) async throws { try await daemon.dockerReleasePool(r) }
    func requestAddress(_ r: RequestAddressRequest) async throws -> RequestAddressResponse { try await daemon.dockerRequestAddress(r) }
    func releaseAddress(_ r: ReleaseAddressRequest) async throws { try await daemon.dockerReleaseAddress(r) }
    func createNetwork(_ r: CreateNetworkRequest, options: DockerNetworkOptions) async throws {
        try await daemon.dockerCreateNetwork(r, options: options)
    }
    func deleteNetwork(_ r: NetworkRequest) async throws { try await daemon.dockerDeleteNetwork(r) }
    func createEndpoint(_ r: CreateEndpointRequest) async throws -> CreateEndpointResponse { try await daemon.dockerCreateEndpoint(r) }
    func deleteEndpoint(_ r: EndpointRequest) async throws { try await daemon.dockerDeleteEndpoint(r) }
    func join(_ r: DriverJoinRequest) async throws -> DriverJoinResponse { try await daemon.dockerJoin(r) }
    func leave(_ r: EndpointRequest) async throws {}
}

/// dockerd's answer to `GET /networks/ID`: what the plugin reads of it.
struct DockerNetworkSummary: Decodable {
    struct Attached: Decodable {
        var Name: String?
        var EndpointID: String?
    }
    var Name: String
    var Containers: [String: Attached]?
}

/// dockerd's answer to `GET /containers/ID/json`: the container's aliases on its networks.
struct DockerContainerSummary: Decodable {
    struct Settings: Decodable {
        struct Endpoint: Decodable {
            var Aliases: [String]?
            var EndpointID: String?
        }
        var Networks: [String: Endpoint]?
    }
    var NetworkSettings: Settings?
}

extension OverlayDaemon {
    /// Serves the plugin on `configuration.dockerPluginSocket`, if set.
    func startDockerPlugin() async throws {
        guard let path = configuration.dockerPluginSocket else { return }
        let plugin = DockerPlugin(backend: DaemonDockerBackend(daemon: self))
        let router = Router(context: APIContext.self)
        if let metrics { router.add(middleware: APIMetricsMiddleware(metrics: metrics, api: "docker")) }
        DockerPluginServer.addRoute(for: plugin, to: router, logger: log(.docker))
        do {
            try DockerPluginServer.prepareSocket(path)
            dockerPlugin.server = try await APIServer.start(.unix(path), limits: Self.dockerPluginLimits, group: group, logger: log(.docker), router: router)
        } catch {
            throw StoreError("cannot serve the Docker plugin on \(path): \(error)")
        }
        log(.docker).info("Docker network and IPAM plugin \(DockerPlugin.name) on \(path) (dockerd at \(configuration.dockerHost))")
    }

    /// The plugin socket's limits: dockerd makes one call at a time per request it serves, and
    /// only root may connect (0660), so these bound a runaway local client, not a stranger.
    static let dockerPluginLimits = APIServerLimits(
        maxConnections: 256, requestTimeout: .seconds(10), idleTimeout: .seconds(120), maxBody: DockerPlugin.maxBody)

    func stopDockerPlugin() async {
        if let server = dockerPlugin.server {
            await server.close()  // removes the socket if it is still ours
        }
        dockerPlugin.server = nil
        for t in dockerPlugin.binding.values { t.cancel() }
    }

    /// The swarm, or the line Docker shows when there is none.
    func dockerSwarm() throws(DockerPluginError) -> (SwarmSettings, OverlayAgent) {
        guard let s = swarm, let agent else {
            throw DockerPluginError("this host is not in a swarm: run `overlayctl swarm init` or `overlayctl swarm join` first")
        }
        return (s, agent)
    }

    func dockerPools() -> [DockerPoolRecord] { (try? store.all(.dockerPool, as: DockerPoolRecord.self)) ?? [] }

    func dockerPool(network id: String) throws(DockerPluginError) -> DockerPoolRecord {
        guard let p = dockerPools().first(where: { $0.dockerNetworkID == id }) else {
            throw DockerPluginError("swift-overlay has no Docker network \(id.prefix(12)) on this host (was overlayd's state removed?): recreate the network")
        }
        return p
    }

    // MARK: IPAM

    func dockerRequestPool(_ r: RequestPoolRequest) async throws -> RequestPoolResponse {
        _ = try dockerSwarm()
        if let sub = r.SubPool, !sub.isEmpty {
            throw DockerPluginError("--ip-range is not taken by swift-overlay's IPAM: the cluster network's range applies")
        }
        if let opts = r.Options, let key = opts.keys.sorted().first {
            throw DockerPluginError("unknown IPAM option '\(key.prefix(80))': swift-overlay's IPAM takes none")
        }
        let subnet: CIDR
        var gateway: IPAddress?
        if let given = r.Pool, !given.isEmpty {
            let c: CIDR
            do { c = try CIDR.parse(given) } catch { throw DockerPluginError("--subnet \(given.prefix(60)): \(error.message)") }
            guard c.family == .v4 else { throw DockerPluginError("--subnet \(c): swift-overlay's Docker networks are IPv4 only") }
            guard c.prefixLength <= 30 else { throw DockerPluginError("--subnet \(c) is too small: use /30 or larger") }
            subnet = c
            if let n = cluster.networks.first(where: { $0.subnets.contains { $0.subnet == c } }),
               let sub = n.subnets.first(where: { $0.subnet == c }) {
                guard n.attachable, !n.ingress else {
                    throw DockerPluginError("subnet \(c) is cluster network \(n.name)'s, which is not attachable: containers outside services need a network made with --attachable")
                }
                gateway = sub.gateway
            } else if let (n, other) = cluster.networks.flatMap({ n in n.subnets.map { (n, $0.subnet) } }).sorted(by: { $0.1 < $1.1 })
                        .first(where: { $0.1.overlaps(c) }) {
                let join = n.attachable && !n.ingress ? ", or --subnet \(other) to join \(n.name)" : ""
                throw DockerPluginError("subnet \(c) overlaps cluster network \(n.name) (\(other)): pick another --subnet\(join)")
            } else if manager == nil {
                throw DockerPluginError("no cluster network has subnet \(c), and a worker cannot make one: create the network on a manager first (docker network create there, or overlayctl network create --attachable)")
            }
        } else {
            guard let m = manager else {
                throw DockerPluginError("on a worker, give --subnet: the Docker network joins the cluster network with that subnet (overlayctl network inspect NAME shows it); networks are made on managers")
            }
            // The next free subnet of the cluster's pools, not taken yet: the cluster network of
            // this name takes it when it is made (once dockerd says the name).
            var probe = m.ipam
            let taken = Set(dockerPools().map(\.subnet))
            var found: CIDR?
            for i in 0..<64 {
                guard let s = try? probe.createNetwork("docker-pool-probe-\(i)").first?.subnet else { break }
                if !taken.contains(s) {
                    found = s
                    break
                }
            }
            guard let found else { throw DockerPluginError("the cluster's address pools have no free subnet: give --subnet") }
            subnet = found
        }
        if let p = try store.get(.dockerPool, subnet.description, as: DockerPoolRecord.self), let id = p.dockerNetworkID {
            throw DockerPluginError("subnet \(subnet) is already used by Docker network \(id.prefix(12)) on this host")
        }
        let record = DockerPoolRecord(subnet: subnet, gateway: gateway ?? subnet.address(at: 1)!)
        try store.put(.dockerPool, subnet.description, record)
        return RequestPoolResponse(
            PoolID: subnet.description, Pool: subnet.description,
            Data: ["com.docker.network.gateway": "\(record.gateway)/\(subnet.prefixLength)"])
    }

    func dockerReleasePool(_ r: ReleasePoolRequest) async throws {
        guard let p = try? store.get(.dockerPool, r.PoolID, as: DockerPoolRecord.self) else { return }
        if let id = p.dockerNetworkID { dockerPlugin.binding[id]?.cancel() }
        try store.delete(.dockerPool, r.PoolID)
    }

    func dockerRequestAddress(_ r: RequestAddressRequest) async throws -> RequestAddressResponse {
        let (s, _) = try dockerSwarm()
        guard let pool = try store.get(.dockerPool, r.PoolID, as: DockerPoolRecord.self) else {
            throw DockerPluginError("swift-overlay does not know this Docker network's pool \(r.PoolID.prefix(60)) (was it made before this host left its swarm?): remove the Docker network and make it again")
        }
        if r.isGateway {
            if let a = r.Address, !a.isEmpty, a != pool.gateway.description {
                throw DockerPluginError("--gateway \(a.prefix(40)) is not the network's gateway \(pool.gateway): leave --gateway out")
            }
            return RequestAddressResponse(Address: "\(pool.gateway)/\(pool.subnet.prefixLength)")
        }
        guard let id = pool.dockerNetworkID else {
            // Before CreateNetwork, Docker asks only for --aux-address entries.
            throw DockerPluginError("--aux-address is not taken by swift-overlay's IPAM: leave it out")
        }
        let network = try await dockerBind(id)
        let endpointID = EndpointID.random().text
        try store.put(.addressIntent, endpointID, AddressIntent(network: network, endpointID: endpointID))
        let wanted = r.Address.flatMap { $0.isEmpty ? nil : $0 }
        let a: AllocateReply
        do {
            a = try await requestAddress(AllocateRequest(network: network, endpointID: endpointID, nodeID: s.nodeID, address: wanted))
        } catch {
            let status = (error as? APIError)?.status ?? 0
            var changes: [StoreChange] = [.delete(.addressIntent, endpointID)]
            if status == 0 || status >= 500 {
                changes.append(try .set(.pendingRelease, endpointID, ReleaseRequest(network: network, address: "", endpointID: endpointID)))
            }
            try? store.write(changes)
            throw DockerPluginError((error as? APIError)?.message ?? "\(error)")
        }
        try store.put(.addressIntent, endpointID, AddressIntent(network: network, endpointID: endpointID, address: a.address.description))
        return RequestAddressResponse(Address: "\(a.address)/\(a.prefixLength)")
    }

    func dockerReleaseAddress(_ r: ReleaseAddressRequest) async throws {
        guard let pool = try? store.get(.dockerPool, r.PoolID, as: DockerPoolRecord.self), let network = pool.network,
              r.Address != pool.gateway.description else { return }
        let intents = (try? store.all(.addressIntent, as: AddressIntent.self)) ?? []
        guard let i = intents.first(where: { $0.network == network && $0.address == r.Address }) else { return }
        await giveBack(ReleaseRequest(network: network, address: r.Address, endpointID: i.endpointID))
    }

    // MARK: Networks

    func dockerCreateNetwork(_ r: CreateNetworkRequest, options: DockerNetworkOptions) async throws {
        _ = try dockerSwarm()
        guard let v4 = r.IPv4Data?.first, r.IPv4Data?.count == 1 else {
            throw DockerPluginError("a swift-overlay network has exactly one IPv4 subnet")
        }
        guard v4.AddressSpace == DockerPlugin.addressSpace, var pool = try store.get(.dockerPool, v4.Pool, as: DockerPoolRecord.self) else {
            throw DockerPluginError("swift-overlay networks need --ipam-driver swift-overlay: their addresses must be unique across hosts")
        }
        if let other = pool.dockerNetworkID, other != r.NetworkID {
            throw DockerPluginError("subnet \(pool.subnet) is already used by Docker network \(other.prefix(12)) on this host")
        }
        pool.dockerNetworkID = r.NetworkID
        pool.encrypted = options.encrypted
        pool.internal = options.internal
        try store.put(.dockerPool, pool.subnet.description, pool)
        // dockerd knows the name only once this call has returned.
        let id = r.NetworkID
        dockerPlugin.binding[id] = Task {
            do {
                let name = try await self.dockerBindNow(id, wait: .seconds(15))
                self.bindingFinished(id)
                return name
            } catch {
                self.bindingFinished(id)
                throw error
            }
        }
        log(.docker, ["docker-network": "\(id.prefix(12))", "subnet": "\(pool.subnet)"]).info("Docker network \(id.prefix(12)) made on \(pool.subnet)")
    }

    func dockerDeleteNetwork(_ r: NetworkRequest) async throws {
        guard var pool = dockerPools().first(where: { $0.dockerNetworkID == r.NetworkID }) else { return }
        dockerPlugin.binding.removeValue(forKey: r.NetworkID)?.cancel()
        pool.dockerNetworkID = nil
        try store.put(.dockerPool, pool.subnet.description, pool)
        log(.docker, ["docker-network": "\(r.NetworkID.prefix(12))"]).info("Docker network \(r.NetworkID.prefix(12)) removed (the cluster network \(pool.network ?? "-") stays)")
    }

    func bindingFinished(_ id: String) { dockerPlugin.binding[id] = nil }

    /// The cluster network a Docker network is bound to, binding it now if needed.
    func dockerBind(_ id: String) async throws -> String {
        let pool = try dockerPool(network: id)
        if let conflict = pool.conflict { throw DockerPluginError(conflict) }
        if let n = pool.network, cluster.networks.contains(where: { $0.name == n && $0.subnets.contains { $0.subnet == pool.subnet } }) {
            return n
        }
        if let running = dockerPlugin.binding[id] {
            // The lookup CreateNetwork started; if it failed, this call tries again itself.
            if let name = try? await running.value { return name }
        }
        return try await dockerBindNow(id, wait: .seconds(5))
    }

    /// A Docker network that cannot be bound as it is: kept as the pool's `conflict`, so every
    /// `docker run` on it says why at once (until the network is made again).
    struct DockerMismatch: Error {
        var message: String
    }

    /// Asks dockerd the network's name (waiting up to `wait` while it does not know it yet) and
    /// binds the pool to the cluster network of that name: made here on a manager if there is none.
    func dockerBindNow(_ id: String, wait: Duration) async throws -> String {
        let name = try await dockerNetworkName(id, wait: wait)
        var pool = try dockerPool(network: id)
        if let n = pool.network, n == name, cluster.networks.contains(where: { $0.name == n }) { return n }
        let fix = "docker network rm \(name) && docker network create -d \(DockerPlugin.name) --ipam-driver \(DockerPlugin.name)"
        do {
            if let n = cluster.networks.first(where: { $0.name == name }) {
                guard let sub = n.subnets.first(where: { $0.subnet.family == .v4 }) else {
                    throw DockerMismatch(message: "cluster network \(name) has no IPv4 subnet: swift-overlay's Docker networks are IPv4 only")
                }
                let again = "\(fix) --subnet \(sub.subnet)\(n.encrypted ? " -o encrypted" : "")\(n.internal ? " --internal" : "") \(name)"
                guard n.subnets.contains(where: { $0.subnet == pool.subnet }) else {
                    throw DockerMismatch(message: "cluster network \(name) uses subnet \(sub.subnet), this Docker network \(pool.subnet): \(again)")
                }
                guard n.encrypted == pool.encrypted else {
                    throw DockerMismatch(message: "cluster network \(name) is \(n.encrypted ? "" : "not ")encrypted: \(again)")
                }
                guard n.internal == pool.internal else {
                    throw DockerMismatch(message: "cluster network \(name) is \(n.internal ? "" : "not ")internal: \(again)")
                }
                guard n.attachable, !n.ingress else {
                    throw DockerMismatch(message: "cluster network \(name) is not attachable: containers outside services need a network made with --attachable")
                }
            } else {
                if let other = cluster.networks.first(where: { $0.subnets.contains { $0.subnet.overlaps(pool.subnet) } }) {
                    let same = other.subnets.contains { $0.subnet == pool.subnet }
                    throw DockerMismatch(message: same
                        ? "subnet \(pool.subnet) is cluster network \(other.name)'s: name the Docker network \(other.name) (docker network rm \(name) && docker network create -d \(DockerPlugin.name) --ipam-driver \(DockerPlugin.name) --subnet \(pool.subnet) \(other.name))"
                        : "subnet \(pool.subnet) overlaps cluster network \(other.name)'s: \(fix) \(name)")
                }
                guard manager != nil else {
                    throw DockerMismatch(message: "cluster network \(name) does not exist, and a worker cannot make one: create it on a manager first")
                }
                var req = NetworkCreateRequest(name: name)
                req.attachable = true
                req.internal = pool.internal
                req.subnets = [pool.subnet.description]
                req.gateways = [pool.gateway.description]
                if pool.encrypted { req.options = ["encrypted"] }
                req.labels = ["com.docker.network.id=\(id)"]
                do { _ = try await createNetwork(req) } catch let e as APIError {
                    // Not kept: another manager may have made it meanwhile (409), or the store
                    // was away (503); the next docker run decides again.
                    throw DockerPluginError("cannot make cluster network \(name): \(e.message)")
                }
                log(.docker, ["network": "\(name)", "subnet": "\(pool.subnet)"]).info("cluster network \(name) made for Docker network \(id.prefix(12))")
            }
        } catch let e as DockerMismatch {
            // Read again: the Docker network may have gone while this waited.
            if var p = try? dockerPool(network: id) {
                p.conflict = e.message
                try? store.put(.dockerPool, p.subnet.description, p)
            }
            log(.docker, ["docker-network": "\(id.prefix(12))", "network": "\(name)"]).warning("Docker network \(name) cannot be used: \(e.message)")
            throw DockerPluginError(e.message)
        }
        pool = try dockerPool(network: id)
        pool.network = name
        try store.put(.dockerPool, pool.subnet.description, pool)
        await dockerServeDNS()
        return name
    }

    /// The Docker network's name, from dockerd's API (it says 404 until CreateNetwork returned).
    func dockerNetworkName(_ id: String, wait: Duration) async throws -> String {
        let client = dockerClient()
        let deadline = ContinuousClock.now + wait
        var last = ""
        repeat {
            try Task.checkCancellation()
            do {
                let (status, body) = try await client.call("GET", "/networks/\(id)", group: group)
                if status == 200, let n = try? JSONDecoder().decode(DockerNetworkSummary.self, from: body) { return n.Name }
                last = "dockerd answered \(status): \(String(decoding: body.prefix(200), as: UTF8.self))"
            } catch {
                last = "dockerd does not answer at \(configuration.dockerHost): \((error as? APIError)?.message ?? "\(error)")"
            }
            try await Task.sleep(for: .milliseconds(100))
        } while ContinuousClock.now < deadline
        throw DockerPluginError("cannot learn the name of Docker network \(id.prefix(12)): \(last)")
    }

    // MARK: Endpoints

    func dockerCreateEndpoint(_ r: CreateEndpointRequest) async throws -> CreateEndpointResponse {
        let (_, agent) = try dockerSwarm()
        let pool = try dockerPool(network: r.NetworkID)
        let network = try await dockerBind(r.NetworkID)
        guard let given = r.Interface?.Address, let slash = given.firstIndex(of: "/"), let address = IPAddress(String(given[..<slash])) else {
            throw DockerPluginError("CreateEndpoint without an IPv4 address: use --ipam-driver \(DockerPlugin.name)")
        }
        let intents = (try? store.all(.addressIntent, as: AddressIntent.self)) ?? []
        guard let intent = intents.first(where: { $0.network == network && $0.address == address.description }) else {
            throw DockerPluginError("address \(address) was not given by \(DockerPlugin.name)'s IPAM for network \(network)")
        }
        var mac: MACAddress?
        if let m = r.Interface?.MacAddress, !m.isEmpty {
            guard let parsed = MACAddress(m) else { throw DockerPluginError("--mac-address \(m.prefix(40)) is not a MAC address") }
            mac = parsed
        }
        let interface = "swo" + r.EndpointID.prefix(11)
        let ep: OverlayEndpoint
        do {
            ep = try agent.attach(
                EndpointSpec(id: intent.endpointID, network: network, namespace: .pid(getpid()), address: address, mac: mac,
                             interfaceName: interface, configuresInterface: false))
        } catch let e as OverlayDriverError {
            throw DockerPluginError("cannot make the endpoint on \(network): \(e.message)")
        }
        let record = DockerEndpointRecord(
            dockerNetworkID: r.NetworkID, network: network, endpointID: intent.endpointID, address: address,
            prefixLength: pool.subnet.prefixLength, mac: ep.mac.description, interface: interface)
        do {
            try store.write([try .set(.dockerEndpoint, r.EndpointID, record), .delete(.addressIntent, intent.endpointID)])
        } catch {
            try? agent.detach(endpoint: intent.endpointID)
            throw error
        }
        log(.docker, ["network": "\(network)", "address": "\(address)"]).info("Docker endpoint \(r.EndpointID.prefix(12)) on \(network): \(address) (\(interface))")
        return CreateEndpointResponse(Interface: mac == nil ? EndpointInterface(MacAddress: ep.mac.description) : nil)
    }

    func dockerJoin(_ r: DriverJoinRequest) async throws -> DriverJoinResponse {
        guard var e = try store.get(.dockerEndpoint, r.EndpointID, as: DockerEndpointRecord.self) else {
            throw DockerPluginError("no endpoint \(r.EndpointID.prefix(12)) on this host")
        }
        let pool = try dockerPool(network: r.NetworkID)
        e.sandboxKey = r.SandboxKey
        try store.put(.dockerEndpoint, r.EndpointID, e)
        // dockerd lists the container on the network only once the join is done.
        let (network, endpoint) = (r.NetworkID, r.EndpointID)
        Task { await self.dockerLearnName(network: network, endpoint: endpoint) }
        // No gateway: Docker gives the container its egress and published ports on its gateway
        // bridge; an internal network has none.
        // The cluster network's other subnets, via this one's gateway (as an overlayctl container has them).
        let others = (cluster.networks.first { $0.name == e.network }?.subnets ?? [])
            .filter { $0.subnet.family == .v4 && $0.subnet != pool.subnet }
            .map { StaticRoute(Destination: $0.subnet.description, RouteType: 0, NextHop: pool.gateway.description) }
        return DriverJoinResponse(InterfaceName: InterfaceName(SrcName: e.interface, DstPrefix: "eth"),
                            StaticRoutes: others.isEmpty ? nil : others, DisableGatewayService: pool.internal ? true : nil)
    }

    func dockerDeleteEndpoint(_ r: EndpointRequest) async throws {
        guard let e = try store.get(.dockerEndpoint, r.EndpointID, as: DockerEndpointRecord.self) else { return }
        if let agent { try? agent.detach(endpoint: e.endpointID) }
        // Docker moved the interface back here under its first name: one made in the container
        // after a restart is not where the driver looks for it.
        if let host = try? NetlinkSocket(namespace: NetworkNamespace.open(pid: getpid())), let link = try? host.link(named: e.interface),
           link.mac == MACAddress(e.mac) {
            try? host.deleteLink(named: e.interface)
        }
        // The address stays held until Docker's ReleaseAddress, which comes next.
        try store.write([.delete(.dockerEndpoint, r.EndpointID),
                         try .set(.addressIntent, e.endpointID, AddressIntent(network: e.network, endpointID: e.endpointID, address: e.address.description))])
        log(.docker, ["network": "\(e.network)", "address": "\(e.address)"]).info("Docker endpoint \(r.EndpointID.prefix(12)) on \(e.network) removed")
    }

    /// Learns the name (and aliases) of the container an endpoint joined, from dockerd, and
    /// publishes them in the endpoint's record: other hosts' containers then resolve it.
    func dockerLearnName(network: String, endpoint: String) async {
        let deadline = ContinuousClock.now + .seconds(30)
        var named = false
        while ContinuousClock.now < deadline, !isStopped {
            guard (try? store.get(.dockerEndpoint, endpoint, as: DockerEndpointRecord.self)) != nil else { return }
            if !named, let found = try? await dockerContainer(network: network, endpoint: endpoint) {
                // Read after the wait: the endpoint may have gone meanwhile (docker run --rm).
                guard var e = try? store.get(.dockerEndpoint, endpoint, as: DockerEndpointRecord.self) else { return }
                named = true
                e.container = found.name
                e.aliases = found.aliases
                try? store.put(.dockerEndpoint, endpoint, e)
                do { try agent?.rename(endpoint: e.endpointID, name: found.name, aliases: found.aliases) } catch {
                    log(.docker, ["network": "\(e.network)"]).warning("cannot publish the name of \(found.name): \(error)")
                }
                log(.docker, ["network": "\(e.network)", "container": "\(found.name)"]).info("Docker container \(found.name) is \(e.address) on \(e.network)")
            }
            // The interface's name in the container (a restart remakes it there), once Docker has
            // moved it in.
            if named, var e = try? store.get(.dockerEndpoint, endpoint, as: DockerEndpointRecord.self),
               let inside = dockerInterfaceInContainer(e) {
                e.containerInterface = inside
                try? store.put(.dockerEndpoint, endpoint, e)
                return
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
        log(.docker, ["docker-endpoint": "\(endpoint.prefix(12))"]).warning("dockerd did not say which container endpoint \(endpoint.prefix(12)) is\(named ? " in" : ""): \(named ? "a restart of overlayd cannot remake its interface" : "it has no name on other hosts")")
    }

    /// dockerd's API (`--docker-host`, checked to be `unix:///PATH` when overlayd starts).
    func dockerClient() -> APIClient {
        APIClient(endpoint: .unix(String(configuration.dockerHost.dropFirst("unix://".count))), timeout: .seconds(3))
    }

    /// The name and aliases of the container that has `endpoint` on Docker network `network`.
    func dockerContainer(network: String, endpoint: String) async throws -> (name: String, aliases: [String])? {
        let client = dockerClient()
        let (status, body) = try await client.call("GET", "/networks/\(network)", group: group)
        guard status == 200, let n = try? JSONDecoder().decode(DockerNetworkSummary.self, from: body),
              let (id, attached) = n.Containers?.first(where: { $0.value.EndpointID == endpoint }),
              let name = attached.Name, OverlayDaemon.validContainerName(name), DockerPlugin.isDockerID(id) else { return nil }
        // The container's settings name the endpoint once its connect is done: its aliases are
        // final then.
        let (cs, cb) = try await client.call("GET", "/containers/\(id)/json", group: group)
        guard cs == 200, let c = try? JSONDecoder().decode(DockerContainerSummary.self, from: cb),
              let settings = c.NetworkSettings?.Networks?[n.Name], settings.EndpointID == endpoint else { return nil }
        let aliases = (settings.Aliases ?? []).filter { $0 != name && OverlayDaemon.validContainerName($0) }
        return (name, Array(aliases.prefix(32)))
    }

    /// The name Docker gave the endpoint's interface in the container (found by its MAC).
    func dockerInterfaceInContainer(_ e: DockerEndpointRecord) -> String? {
        guard let key = e.sandboxKey, let ns = try? NetworkNamespace.open(path: key), let mac = MACAddress(e.mac),
              let links = try? NetlinkSocket(namespace: ns).links() else { return nil }
        return links.first { $0.mac == mac }?.name
    }

    /// After a restart: the Docker endpoints of containers still running get their interface
    /// again (the network's sandbox, and the MACVLAN on it, may have been made anew) with the same
    /// name, MAC and address inside the container, and their records in gossip. One whose
    /// container's namespace is gone keeps its address until dockerd deletes the endpoint.
    func restoreDockerEndpoints() async {
        guard let agent else { return }
        let endpoints = (try? store.all(.dockerEndpoint)) ?? []
        for (key, _) in endpoints {
            guard var e = try? store.get(.dockerEndpoint, key, as: DockerEndpointRecord.self) else { continue }
            let l = log(.docker, ["network": "\(e.network)", "container": "\(e.container ?? "-")", "address": "\(e.address)"])
            if e.containerInterface == nil { e.containerInterface = dockerInterfaceInContainer(e) }
            guard let path = e.sandboxKey else {
                // Made, not joined yet: its interface is in this namespace under its own name.
                // Made again here, for Docker to move as it would have.
                try? NetlinkSocket(namespace: NetworkNamespace.open(pid: getpid())).deleteLink(named: e.interface)
                do {
                    _ = try agent.attach(EndpointSpec(id: e.endpointID, network: e.network, namespace: .pid(getpid()), address: e.address,
                                                      mac: MACAddress(e.mac), interfaceName: e.interface, configuresInterface: false),
                                         name: e.container ?? e.endpointID, aliases: e.aliases ?? [])
                } catch { l.error("cannot restore Docker endpoint \(key.prefix(12)) on \(e.network): \(error)") }
                continue
            }
            guard let ns = try? NetworkNamespace.open(path: path) else {
                // Its container is gone: dockerd may have given up telling us while overlayd was
                // down. Nothing is published for it; once dockerd says it no longer has the
                // endpoint, its address goes back.
                l.notice("Docker endpoint \(key.prefix(12))'s container is gone: asking dockerd whether it still has the endpoint")
                Task { await self.dockerForgetGone(key) }
                continue
            }
            guard let interface = e.containerInterface else {
                l.error("cannot restore Docker container \(e.container ?? key.prefix(12).description) on \(e.network): its interface's name in the container was never seen")
                continue
            }
            try? NetlinkSocket(namespace: ns).deleteLink(named: interface)
            do {
                _ = try agent.attach(EndpointSpec(id: e.endpointID, network: e.network, namespace: .path(path), address: e.address,
                                                  mac: MACAddress(e.mac), interfaceName: interface),
                                     name: e.container ?? e.endpointID, aliases: e.aliases ?? [])
                try? store.put(.dockerEndpoint, key, e)
                if e.container == nil {
                    let network = e.dockerNetworkID
                    Task { await self.dockerLearnName(network: network, endpoint: key) }
                }
                l.info("Docker container \(e.container ?? key.prefix(12).description) restored on \(e.network) (\(interface), \(e.address))")
            } catch {
                l.error("cannot restore Docker container \(e.container ?? key.prefix(12).description) on \(e.network): \(error)")
            }
        }
        await dockerServeDNS()
    }

    /// A Docker endpoint whose container is gone: forgotten, and its address given back, once
    /// dockerd answers and does not list it (within 10 minutes; dockerd may start after overlayd).
    func dockerForgetGone(_ key: String) async {
        let client = dockerClient()
        let deadline = ContinuousClock.now + .seconds(600)
        while ContinuousClock.now < deadline, !isStopped {
            guard let e = try? store.get(.dockerEndpoint, key, as: DockerEndpointRecord.self) else { return }
            if let (status, body) = try? await client.call("GET", "/networks/\(e.dockerNetworkID)", group: group) {
                let listed = status == 200
                    && ((try? JSONDecoder().decode(DockerNetworkSummary.self, from: body))?.Containers ?? [:]).values.contains { $0.EndpointID == key }
                if status == 200 || status == 404, !listed {
                    guard let e = try? store.get(.dockerEndpoint, key, as: DockerEndpointRecord.self) else { return }
                    try? agent?.detach(endpoint: e.endpointID)
                    try? store.delete(.dockerEndpoint, key)
                    await giveBack(ReleaseRequest(network: e.network, address: e.address.description, endpointID: e.endpointID))
                    log(.docker, ["network": "\(e.network)", "address": "\(e.address)"]).info("Docker endpoint \(key.prefix(12)) (\(e.container ?? "-")) is gone from dockerd too: \(e.address) given back")
                    return
                }
                if listed { return }   // dockerd still has it: its DeleteEndpoint will come
            }
            try? await Task.sleep(for: .seconds(2))
        }
    }

    /// Answers DNS in this (dockerd's) namespace on the embedded server's address, for the
    /// cluster networks of this host's Docker networks: dockerd forwards the names its own
    /// resolver does not know (other hosts' containers) to a loopback nameserver of its
    /// resolv.conf from here.
    func dockerServeDNS() async {
        guard let dns, configuration.dockerPluginSocket != nil else { return }
        let networks = Array(Set(dockerPools().compactMap(\.network))).sorted()
        let client = ResolverClient(networks: networks, mayForward: true)
        if await dns.servedContainers().contains(Self.dockerDNSClient) {
            dns.updateClient(container: Self.dockerDNSClient, client: client)
            return
        }
        do {
            try await dns.serve(container: Self.dockerDNSClient, namespace: try NetworkNamespace.open(pid: getpid()), client: client)
            log(.docker).info("answering Docker's forwarded names on \(dns.configuration.address):53 in dockerd's namespace")
        } catch {
            log(.docker).warning("cannot answer Docker's forwarded names on \(dns.configuration.address):53 here (containers on other hosts have no names): \(error)")
        }
    }

    static let dockerDNSClient = "docker"

    /// Leaving the swarm: every Docker endpoint is detached and its address given back, and the
    /// Docker networks' bindings go (a Docker network made here again binds in the next swarm).
    func dockerForgetAll() async {
        for (key, _) in (try? store.all(.dockerEndpoint)) ?? [] {
            guard let e = try? store.get(.dockerEndpoint, key, as: DockerEndpointRecord.self) else { continue }
            try? agent?.detach(endpoint: e.endpointID)
            try? store.delete(.dockerEndpoint, key)
            await giveBack(ReleaseRequest(network: e.network, address: e.address.description, endpointID: e.endpointID))
        }
        for t in dockerPlugin.binding.values { t.cancel() }
        dockerPlugin.binding = [:]
        for (key, _) in (try? store.all(.dockerPool)) ?? [] { try? store.delete(.dockerPool, key) }
    }

    /// Our endpoint IDs of the Docker endpoints on this node (held addresses).
    func dockerHeldEndpoints() -> [String] {
        ((try? store.all(.dockerEndpoint, as: DockerEndpointRecord.self)) ?? []).map(\.endpointID)
    }
}

