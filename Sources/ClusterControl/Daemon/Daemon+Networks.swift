import ClusterManager
import Foundation
import NodeAgent
import IPAM
import OverlayDriver
import OverlayModel

extension NetworkCreateRequest {
    /// The `ingress` network `swarm init` makes.
    static var ingressDefault: NetworkCreateRequest {
        var r = NetworkCreateRequest(name: "ingress")
        r.ingress = true
        return r
    }
}

extension OverlayDaemon {
    /// The container MTU of an encrypted network: the underlay's 1500 less VXLAN (50) and ESP in
    /// transport mode (SPI, sequence, IV, trailer, 8-byte ICV: 26), Docker's 1424; ESP in UDP (the
    /// default of `swarm init`) takes 8 more: 1416. A swarm saved without a mode predates that
    /// default and is bare ESP.
    var encryptedNetworkMTU: UInt32 {
        (ESPEncapsulation(swarm?.espEncapsulation ?? "esp") ?? .raw).containerMTU(underlayMTU: 1500)
    }

    func createNetwork(_ req: NetworkCreateRequest) async throws -> NetworkInspect {
        if req.driver == "bridge" { return try createGatewayBridge(req) }
        _ = try requireManager()
        let record = try await sharedWrite("creating network \(req.name)") {
            let m = try requireManager()
            let existing = try view.all(.network, as: NetworkRecord.self)
            var ipam = m.ipam
            let record = try NetworkAllocator.make(req, ipam: &ipam, existing: existing, encryptedMTU: encryptedNetworkMTU)
            // A subnet over a node's gateway bridge would send that node's traffic the wrong way:
            // refused now, not found later as tasks that cannot start.
            var bridges = m.gatewaySubnets
            if let own = gateway?.info?.subnet, let me = swarm?.nodeID { bridges[me] = own.description }
            for sub in record.subnets {
                let c = sub.subnet
                for (node, b) in bridges.sorted(by: { $0.key < $1.key }) {
                    guard let bc = CIDR(b), bc.family == c.family, bc.overlaps(c) else { continue }
                    let host = cluster.nodes.first { $0.id == node }?.hostname ?? node
                    throw APIError(400, "subnet \(sub.subnet) overlaps the gateway bridge of node \(host) (\(b)): pick another --subnet")
                }
            }
            return ([try .set(.network, record.id, record)], ipam, record)
        }
        try refreshClusterFromStore()
        return try await inspectNetwork(record.name, verbose: false)
    }

    func network(named name: String) throws -> NetworkRecord {
        if let n = cluster.networks.first(where: { $0.name == name }) ?? cluster.networks.first(where: { $0.id == name })
            ?? cluster.networks.first(where: { name.count >= 3 && $0.id.hasPrefix(name) }) {
            return n
        }
        if swarm == nil {
            throw APIError(404, "network \(name) not found (this node is not part of a swarm: run `overlayctl swarm init` or `join`)")
        }
        throw APIError(404, "network \(name) not found")
    }

    func networkList() throws -> [NetworkInspect] {
        try cluster.networks.sorted { $0.name < $1.name }.map { try inspect($0, verbose: false, peers: nil) }
    }

    func inspectNetwork(_ name: String, verbose: Bool) async throws -> NetworkInspect {
        let n = try network(named: name)
        var peers: [NetworkInspect.Peer] = []
        if let agent {
            let members = agent.db.networkMembers(n.name)
            for id in Set(members + [swarm!.nodeID]).sorted() {
                guard let node = cluster.nodes.first(where: { $0.id == id }) else { continue }
                if id == swarm!.nodeID || members.contains(id) {
                    peers.append(.init(Name: node.hostname, IP: node.advertiseAddr.description))
                }
            }
        }
        return try inspect(n, verbose: verbose, peers: peers)
    }

    func inspect(_ n: NetworkRecord, verbose: Bool, peers: [NetworkInspect.Peer]?) throws -> NetworkInspect {
        var containers: [String: NetworkInspect.ContainerEntry] = [:]
        for c in try store.all(.container, as: ContainerRecord.self) {
            for cn in c.networks where cn.networkID == n.id {
                containers[c.id] = .init(
                    Name: c.name, EndpointID: cn.endpointID, MacAddress: cn.mac,
                    IPv4Address: cn.address.v4 == nil ? "" : "\(cn.address)/\(cn.prefixLength)",
                    IPv6Address: cn.address.v6 == nil ? "" : "\(cn.address)/\(cn.prefixLength)")
            }
        }
        // Docker's containers on this host (by Docker's endpoint ID until dockerd names them).
        for (key, _) in (try? store.all(.dockerEndpoint)) ?? [] {
            guard let e = try? store.get(.dockerEndpoint, key, as: DockerEndpointRecord.self), e.network == n.name else { continue }
            containers[key] = .init(
                Name: e.container ?? "docker-\(key.prefix(12))", EndpointID: e.endpointID, MacAddress: e.mac,
                IPv4Address: "\(e.address)/\(e.prefixLength)", IPv6Address: "")
        }
        var endpoints: [String: NetworkInspect.ContainerEntry]?
        if verbose, let agent {
            // What gossip holds, refused records included (`network inspect -v` is how an
            // operator sees them): the table itself, not the vetted feed.
            endpoints = [:]
            for entry in agent.db.entries(network: n.name, table: OverlayAgent.endpointTable) {
                guard let e = Endpoint(tableValue: entry.value) else { continue }
                let v6 = e.ipv4 == nil
                endpoints?[entry.key] = .init(
                    Name: e.name, EndpointID: e.id, MacAddress: e.mac.description,
                    IPv4Address: v6 ? "" : e.address.description, IPv6Address: v6 ? e.address.description : "")
            }
        }
        return NetworkInspect(
            Name: n.name, Id: n.id, Created: n.created, Scope: "swarm", Driver: n.driver,
            EnableIPv6: n.subnets.contains { $0.subnet.family == .v6 },
            IPAM: .init(Driver: "default", Config: n.subnets.map {
                .init(Subnet: $0.subnet.description, Gateway: $0.gateway.description, IPRange: $0.ipRange?.description,
                      AuxiliaryAddresses: $0.auxAddresses.isEmpty ? nil : $0.auxAddresses.mapValues(\.description))
            }),
            Internal: n.internal, Attachable: n.attachable, Ingress: n.ingress, Containers: containers,
            Options: n.options, Labels: n.labels, Peers: peers, Endpoints: endpoints,
            Encryption: n.encrypted ? networkEncryption(n.name) : nil,
            CleartextDropped: n.encrypted ? (try? agent?.driver.cleartextDrops(network: n.name)) ?? nil : nil,
            ESPDropped: n.encrypted ? espDrops() : nil)
    }

    /// ESP drops on this host by reason (the userspace datapath's counters; none when zero).
    func espDrops() -> [String: UInt64]? {
        guard let counters = agent?.driver.userspaceDatapath.counters else { return nil }
        var out: [String: UInt64] = [:]
        for (reason, n) in counters.drops where "\(reason)".hasPrefix("esp") && n > 0 { out["\(reason)"] = n }
        return out
    }

    func removeNetwork(_ name: String) async throws {
        _ = try requireManager()
        // Many load balancers' addresses go back in whole writes first; the network with the last.
        while try await sharedWrite("removing network \(name)", { try removingNetwork(name) }) {}
        try refreshClusterFromStore()
    }

    /// What removing network `name` writes, decided on the view; whether more is left to write.
    func removingNetwork(_ name: String) throws -> (changes: [StoreChange], ipam: IPAM?, result: Bool) {
        var ipam = try requireManager().ipam
        let n = try network(named: name)
        if n.ingress {
            let publishing = allServices().filter { $0.ports.contains { $0.publishMode == .ingress } }.map(\.name).sorted()
            if !publishing.isEmpty {
                throw APIError(409, "ingress network cannot be removed because service \(publishing.joined(separator: ", ")) depends on it")
            }
        }
        let users = allServices().filter { s in s.networks.contains { $0.networkID == n.id } }.map(\.name).sorted()
        if !users.isEmpty {
            throw APIError(409, "network \(n.name) is in use by service \(users.joined(separator: ", "))")
        }
        var allocations = try view.all(.allocation, as: AllocationRecord.self).filter { $0.networkID == n.id }
        // Load balancers of nodes with no containers left on it go with the network.
        let lbs = allocations.filter { ($0.name ?? "").hasPrefix("lb-") || ($0.name ?? "").hasPrefix("ingress-sbox") }
        var changes: [StoreChange] = []
        if lbs.count == allocations.count {
            let batch = lbs.prefix(Self.mostChanges - 1)
            for a in batch { try? ipam.releaseAddress(a.address, in: n.id) }
            changes += batch.map { .delete(.allocation, "\($0.networkID)/\($0.address)") }
            if batch.count < lbs.count { return (changes, ipam, true) }
            allocations = []
        }
        if !allocations.isEmpty {
            let nodes = Dictionary(cluster.nodes.map { ($0.id, $0.hostname) }, uniquingKeysWith: { a, _ in a })
            let who = allocations.map { "\($0.name ?? String($0.endpointID.prefix(12))) on \(nodes[$0.nodeID] ?? $0.nodeID)" }
            throw APIError(409, "network \(n.name) has active endpoints (\(who.joined(separator: ", "))): remove them first")
        }
        do { try ipam.removeNetwork(n.id) } catch { throw APIError(500, "IPAM: \(error.message)") }
        return (changes + [.delete(.network, n.id)], ipam, false)
    }

    // MARK: addresses (manager)

    /// Allocates an address for an endpoint (`AddressAllocator` decides). `caller` is the node
    /// asking through the manager port (its certificate's ID): the address is recorded as that
    /// node's, whatever the request says. Nil for this manager's own calls.
    func allocate(_ req: AllocateRequest, for caller: String?) async throws -> AllocateReply {
        _ = try requireManager()
        let owner = caller ?? req.nodeID
        return try await sharedWrite("allocating an address on \(req.network.prefix(64))") {
            var ipam = try requireManager().ipam
            let n = try network(named: req.network)
            let existing = try view.all(.allocation, as: AllocationRecord.self)
            let decided: AddressAllocator.Allocation
            do {
                decided = try AddressAllocator.allocate(req, owner: owner, network: n, existing: existing, ipam: &ipam,
                                                        maxPerNode: configuration.maxAddressesPerNode)
            } catch let e as APIError where e.status == 403 || e.status == 429 {
                log(.manager, ["node": "\(owner)", "network": "\(n.name)", "endpoint": "\(req.endpointID.prefix(64))"]).warning("refused node \(owner)'s address request for endpoint \(req.endpointID.prefix(64)) on \(n.name): \(e.message)")
                throw e
            }
            // A retry after a lost answer: the same address, nothing to write.
            guard let record = decided.record else { return ([], nil, decided.reply) }
            return ([try .set(.allocation, AddressAllocator.key(network: n.id, address: record.address), record)], ipam, decided.reply)
        }
    }

    /// Gives an address back (`AddressAllocator` decides). `caller` (a node on the manager port)
    /// may release only addresses recorded as its own; nil for this manager's own calls.
    func release(_ req: ReleaseRequest, for caller: String?) async throws {
        _ = try requireManager()
        try await sharedWrite("releasing an address on \(req.network.prefix(64))") {
            var ipam = try requireManager().ipam
            guard let n = try? network(named: req.network) else { return ([], nil, ()) }
            let found = req.address.isEmpty
                ? try view.all(.allocation, as: AllocationRecord.self).first { $0.networkID == n.id && $0.endpointID == req.endpointID }
                : try view.get(.allocation, "\(n.id)/\(req.address)", as: AllocationRecord.self)
            let a: AllocationRecord?
            do { a = try AddressAllocator.releasing(req, caller: caller, network: n, found: found) } catch let e as APIError {
                log(.manager, ["node": "\(caller ?? "?")", "network": "\(n.name)", "address": "\(req.address.prefix(64))"]).warning("refused node \(caller ?? "?")'s release of \(req.address) on \(n.name): \(e.message)")
                throw e
            }
            guard let a else { return ([], nil, ()) }
            try? ipam.releaseAddress(a.address, in: n.id)
            return ([.delete(.allocation, AddressAllocator.key(network: n.id, address: a.address))], ipam, ())
        }
    }

    /// Asks the manager (this node or the remote one) for an address.
    func requestAddress(_ req: AllocateRequest) async throws -> AllocateReply {
        if manager != nil { return try await allocate(req, for: nil) }
        return try await callingManager { client in try await client.call(ManagerAPI.allocate, body: req, group: self.group) }
    }

    /// Gives an address back to the manager. When the manager cannot be told now, the release is
    /// kept in the store and retried (`retryPendingReleases`), across restarts too.
    func giveBack(_ req: ReleaseRequest) async {
        do {
            try await tellRelease(req)
            try? store.delete(.addressIntent, req.endpointID)
        } catch {
            log(.networks, ["network": "\(req.network)", "address": "\(req.address)", "endpoint": "\(req.endpointID)"]).warning("could not give \(req.address) on \(req.network) back to the manager (will retry): \(error)")
            try? store.write([try .set(.pendingRelease, req.endpointID, req), .delete(.addressIntent, req.endpointID)])
        }
    }

    func tellRelease(_ req: ReleaseRequest) async throws {
        if manager != nil { return try await release(req, for: nil) }
        _ = try await callingManager { client in try await client.call(ManagerAPI.release, body: req, group: self.group) }
    }

    /// Retries the releases the manager could not be told of (at most every 10 s).
    func retryPendingReleases() async {
        guard swarm != nil, Date() >= taskRuntime.nextReleaseRetry else { return }
        taskRuntime.nextReleaseRetry = Date().addingTimeInterval(10)
        guard let pending = try? store.all(.pendingRelease, as: ReleaseRequest.self), !pending.isEmpty else { return }
        for req in pending {
            do {
                try await tellRelease(req)
                try? store.delete(.pendingRelease, req.endpointID)
                log(.networks, ["network": "\(req.network)", "address": "\(req.address)", "endpoint": "\(req.endpointID)"]).info("gave \(req.address.isEmpty ? "the address of endpoint \(req.endpointID.prefix(12))" : req.address) on \(req.network) back to the manager")
            } catch {
                return   // the manager is still away: the next round tries again
            }
        }
    }

    /// At start: every address asked for before a crash that no container holds is given back.
    func reclaimIntents() async {
        guard let intents = try? store.all(.addressIntent, as: AddressIntent.self), !intents.isEmpty else { return }
        let held = Set(((try? store.all(.container, as: ContainerRecord.self)) ?? []).flatMap { $0.networks.map(\.endpointID) })
        for i in intents {
            if held.contains(i.endpointID) {
                try? store.delete(.addressIntent, i.endpointID)
                continue
            }
            log(.networks, ["network": "\(i.network)"]).notice("an address on \(i.network) was asked for before a crash and no container holds it: giving it back")
            await giveBack(ReleaseRequest(network: i.network, address: i.address ?? "", endpointID: i.endpointID))
        }
    }
}

/// An address a node asked the manager for, written before asking (the address once known).
struct AddressIntent: Codable, Sendable {
    var network: String
    var endpointID: String
    var address: String?
}
