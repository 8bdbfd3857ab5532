import ClusterManager
import Foundation
import IPAM
import OverlayModel

/// The manager's side of services: validation, virtual IPs, the scheduler, and the answers of
/// `service ls|ps|inspect`. Nodes run what the scheduler assigns them (Daemon+Tasks.swift).
extension OverlayDaemon {
    /// How long a task that is going away keeps running after every node stopped sending it new
    /// connections (it is out of the load balancers as soon as its desired state is `shutdown`).
    static let drainSeconds: TimeInterval = 2
    /// Ingress ports given when `-p` names only a target (Docker's range).
    static let dynamicPorts: ClosedRange<UInt16> = 30000...32767

    func allServices() -> [ServiceRecord] { cluster.services ?? [] }
    func allTasks() -> [TaskRecord] { cluster.tasks ?? [] }

    func service(named name: String) throws -> ServiceRecord {
        let all = allServices()
        if let s = all.first(where: { $0.name == name }) ?? all.first(where: { $0.id == name })
            ?? all.first(where: { name.count >= 3 && $0.id.hasPrefix(name) }) {
            return s
        }
        throw APIError(404, "service \(name) not found")
    }

    // MARK: create / update / rm

    func createService(_ req: ServiceCreateRequest) async throws -> ServiceListEntry {
        _ = try requireManager()
        let id = try await sharedWrite("creating service \(req.name.prefix(64))") { try creatingService(req) }
        try refreshClusterFromStore()
        await scheduleServices()
        return try serviceEntry(service(named: id))
    }

    /// What creating a service writes (its record and virtual IPs), decided on the view.
    func creatingService(_ req: ServiceCreateRequest) throws -> (changes: [StoreChange], ipam: IPAM?, result: String) {
        var m = try requireManager()
        guard Self.validContainerName(req.name), !req.name.contains(".") else {
            throw APIError(400, "invalid service name '\(req.name)': use letters, digits, '_', '-' (starting with a letter or digit)")
        }
        if allServices().contains(where: { $0.name == req.name }) {
            throw APIError(409, "service \(req.name) already exists")
        }
        guard !req.command.isEmpty else { throw APIError(400, "a service needs a command to run: service create --name S -- CMD...") }
        guard let mode = ServiceMode(rawValue: req.mode ?? "replicated") else {
            throw APIError(400, "invalid --mode '\(req.mode ?? "")': use replicated or global")
        }
        if mode == .global && req.replicas != nil { throw APIError(400, "--replicas can only be used with replicated mode") }
        let replicas = req.replicas ?? 1
        guard (0...1000).contains(replicas) else { throw APIError(400, "--replicas \(replicas) is out of range 0-1000") }
        guard let endpointMode = EndpointMode(rawValue: req.endpointMode ?? "vip") else {
            throw APIError(400, "invalid --endpoint-mode '\(req.endpointMode ?? "")': use vip or dnsrr")
        }
        var nets: [NetworkRecord] = []
        for name in req.networks {
            let n = try network(named: name)
            guard !n.ingress else {
                throw APIError(400, "service cannot be explicitly attached to the ingress network \"\(n.name)\": publish a port instead")
            }
            guard !nets.contains(where: { $0.id == n.id }) else { throw APIError(400, "network \(n.name) is given twice") }
            nets.append(n)
        }
        let ports = try servicePorts(req.publish, existing: [], endpointMode: endpointMode, excluding: nil)
        var sourceIP: SourceIPMode?
        if let s = req.sourceIP {
            guard let keep = SourceIPMode(rawValue: s) else { throw APIError(400, "invalid --source-ip '\(s)': use keep") }
            sourceIP = keep
            guard ports.contains(where: { $0.publishMode == .ingress }) else {
                throw APIError(400, "--source-ip keep needs a port published in ingress mode")
            }
        }
        let id = NodeID.random().text
        var record = ServiceRecord(
            id: id, name: req.name, created: Date(), updated: Date(), mode: mode, replicas: mode == .global ? 0 : replicas,
            endpointMode: endpointMode, networks: [], ports: ports, sourceIP: sourceIP, command: req.command)
        var changes: [StoreChange] = []
        for n in nets {
            var vip: IPAddress?
            if endpointMode == .vip {
                let a = try allocateVIP(&m, network: n, service: record)
                vip = a.address
                changes.append(try .set(.allocation, "\(n.id)/\(a.address)", a))
            }
            record.networks.append(ServiceNetwork(networkID: n.id, networkName: n.name, vip: vip))
        }
        try addIngress(to: &record)
        changes.append(try .set(.service, id, record))
        return (changes, m.ipam, id)
    }

    /// Adds the ingress network (no VIP: the mesh sends to task addresses) when the service
    /// publishes through the mesh, and removes it when it no longer does.
    func addIngress(to record: inout ServiceRecord) throws {
        let needs = record.ports.contains { $0.publishMode == .ingress }
        record.networks.removeAll { sn in cluster.networks.first(where: { $0.id == sn.networkID })?.ingress ?? false }
        guard needs else { return }
        guard let ingress = cluster.networks.first(where: { $0.ingress }) else {
            throw APIError(400, "service needs ingress network, but no ingress network is present: create one with `network create -d overlay --ingress`")
        }
        record.networks.append(ServiceNetwork(networkID: ingress.id, networkName: ingress.name, vip: nil))
    }

    func allocateVIP(_ m: inout ManagerState, network n: NetworkRecord, service: ServiceRecord) throws -> AllocationRecord {
        let address: IPAddress
        do { address = try m.ipam.allocateAddress(in: n.id) } catch {
            throw APIError(400, "no address left for the service's virtual IP on \(n.name): \(error.message)")
        }
        return AllocationRecord(networkID: n.id, address: address, endpointID: "vip-" + service.id, nodeID: "",
                                name: "service \(service.name) (VIP)")
    }

    /// The standalone container (and its node's hostname) publishing `key` ("proto/port") on any
    /// node: this one from its own store, the others as their last state poll reported.
    func standaloneHolder(of key: String) -> (String, String)? {
        let me = swarm?.nodeID ?? localNodeID
        if let c = standalonePublishedPorts()[key] { return (c, configuration.hostname) }
        for (node, ports) in (manager?.standalonePorts ?? [:]).sorted(by: { $0.key < $1.key }) where node != me {
            if let c = ports[key] { return (c, cluster.nodes.first { $0.id == node }?.hostname ?? node) }
        }
        return nil
    }

    /// Parses `-p` specs into service ports, checking every rule Docker has for them.
    func servicePorts(_ specs: [String], existing: [ServicePort], endpointMode: EndpointMode, excluding: String?) throws -> [ServicePort] {
        var out = existing
        var taken: [String: String] = [:]   // "proto/port" -> service name
        for s in allServices() where s.id != excluding {
            for p in s.ports { taken["\(p.protocol)/\(p.publishedPort)"] = s.name }
        }
        for text in specs {
            let parsed: [PortSpec]
            do { parsed = try PortSpec.parse(text) } catch { throw APIError(400, "invalid -p '\(text)': \(error.message)") }
            for p in parsed {
                if p.hostIP != nil { throw APIError(400, "-p \(text): a service publishes on every address; drop the host IP") }
                if p.mode == .ingress && endpointMode == .dnsrr {
                    throw APIError(400, "port published with ingress mode can't be used with dnsrr mode")
                }
                var published = p.published
                if published == nil {
                    guard p.mode == .ingress else { throw APIError(400, "-p \(text): mode=host needs a published port") }
                    published = Self.dynamicPorts.first { port in
                        taken["\(p.protocol.rawValue)/\(port)"] == nil && !out.contains { $0.publishedPort == port && $0.protocol == p.protocol }
                    }
                    guard published != nil else { throw APIError(409, "no free port left in \(Self.dynamicPorts) for -p \(text)") }
                }
                let port = ServicePort(protocol: p.protocol, targetPort: p.target, publishedPort: published!, publishMode: p.mode)
                if let other = taken["\(port.protocol)/\(port.publishedPort)"] {
                    throw APIError(409, "port '\(port.publishedPort)/\(port.protocol)' is already in use by service '\(other)'")
                }
                if port.publishMode == .ingress, let (container, node) = standaloneHolder(of: "\(port.protocol)/\(port.publishedPort)") {
                    throw APIError(
                        409, "port '\(port.publishedPort)/\(port.protocol)' is already in use by container '\(container)' on node \(node) (overlayctl run -p): the routing mesh needs it on every node")
                }
                if out.contains(where: { $0.protocol == port.protocol && $0.publishedPort == port.publishedPort }) {
                    throw APIError(400, "port '\(port.publishedPort)/\(port.protocol)' is published twice")
                }
                out.append(port)
            }
        }
        return out
    }

    func updateService(_ name: String, _ req: ServiceUpdateRequest) async throws -> ServiceListEntry {
        _ = try requireManager()
        let id = try await sharedWrite("updating service \(name.prefix(64))") { try updatingService(name, req) }
        try refreshClusterFromStore()
        await scheduleServices()
        return try serviceEntry(service(named: id))
    }

    /// What `service update` writes, decided on the view (the record as stored now, the ports
    /// every other service publishes now).
    func updatingService(_ name: String, _ req: ServiceUpdateRequest) throws -> (changes: [StoreChange], ipam: IPAM?, result: String) {
        let found = try service(named: name)
        guard var s = try view.get(.service, found.id, as: ServiceRecord.self) else { throw APIError(404, "service \(name) not found") }
        if let r = req.replicas {
            guard s.mode == .replicated else { throw APIError(400, "--replicas can only be used with replicated mode") }
            guard (0...1000).contains(r) else { throw APIError(400, "--replicas \(r) is out of range 0-1000") }
            s.replicas = r
        }
        if let remove = req.publishRemove {
            for text in remove {
                let parts = text.split(separator: "/").map(String.init)
                guard let port = parts.first.flatMap({ UInt16($0) }), parts.count <= 2 else {
                    throw APIError(400, "--publish-rm '\(text)': use PORT or PORT/PROTOCOL")
                }
                var proto: PortProtocol?
                if parts.count == 2 {
                    guard let p = PortProtocol(rawValue: parts[1].lowercased()) else {
                        throw APIError(400, "--publish-rm '\(text)': unknown protocol '\(parts[1])' (tcp, udp or sctp)")
                    }
                    proto = p
                }
                let before = s.ports.count
                s.ports.removeAll { $0.publishedPort == port && (proto == nil || $0.protocol == proto) }
                if s.ports.count == before { throw APIError(404, "service \(s.name) does not publish \(text)") }
            }
        }
        if let add = req.publishAdd {
            s.ports = try servicePorts(add, existing: s.ports, endpointMode: s.endpointMode, excluding: s.id)
        }
        var changes: [StoreChange] = []
        if req.publishAdd != nil || req.publishRemove != nil {
            if s.sourceIP == .keep && !s.ports.contains(where: { $0.publishMode == .ingress }) { s.sourceIP = nil }
            let before = Set(s.networks.map(\.networkID))
            try addIngress(to: &s)
            if Set(s.networks.map(\.networkID)) != before {
                // A new network means new containers: every task is replaced (Docker's rolling update, all at once).
                for t in try view.all(.task, as: TaskRecord.self) where t.serviceID == s.id && t.desiredState == .running {
                    var d = t
                    d.desiredState = .shutdown
                    d.shutdownAt = Date()
                    changes.append(try .set(.task, t.id, d))
                }
            }
        }
        s.updated = Date()
        return (changes + [try .set(.service, s.id, s)], nil, s.id)
    }

    func removeService(_ name: String) async throws {
        _ = try requireManager()
        // The service and its virtual IPs in one write (with the IPAM); its tasks shut down in a
        // second (the scheduler would at its next round, too: their service is gone).
        let id = try await sharedWrite("removing service \(name.prefix(64))") {
            var ipam = try requireManager().ipam
            let s = try service(named: name)
            var changes: [StoreChange] = [.delete(.service, s.id)]
            for sn in s.networks {
                guard let vip = sn.vip else { continue }
                try? ipam.releaseAddress(vip, in: sn.networkID)
                changes.append(.delete(.allocation, "\(sn.networkID)/\(vip)"))
            }
            return (changes, ipam, s.id)
        }
        try? await sharedWrite("shutting down the tasks of service \(name.prefix(64))") {
            var changes: [StoreChange] = []
            for t in try view.all(.task, as: TaskRecord.self) where t.serviceID == id && t.desiredState == .running {
                var d = t
                d.desiredState = .shutdown
                d.shutdownAt = Date()
                changes.append(try .set(.task, t.id, d))
            }
            return (changes, nil, ())
        }
        try refreshClusterFromStore()
    }

    // MARK: the scheduler

    /// The nodes that can take tasks now: this manager, and every node gossip says is alive.
    func readyNodes() async -> [NodeRecord] {
        guard let s = swarm else { return [] }
        var alive: Set<String> = [s.nodeID]
        if let agent, let members = try? await agent.db.node.members() {
            for m in members where m.state == .alive || m.state == .suspect { alive.insert(m.name) }
        }
        return cluster.nodes.filter { alive.contains($0.id) }
    }

    /// Makes the tasks match the services (`Scheduler` decides; this gathers its inputs and
    /// writes its plan). One store write per round, only when something changed.
    func scheduleServices() async {
        guard manager != nil, isLeader else { return }
        let ready = Set(await readyNodes().map(\.id))
        // Decided and written in this manager's write turn, on the view as it is then, and fenced
        // with the leadership taken after every await: a manager that lost the leadership (and
        // does not know it yet) writes nothing; a refused write is decided again next round.
        await takeWriteTurn()
        defer { passWriteTurn() }
        guard let m = manager, isLeader else { return }
        let fence = leaderFence
        // A node's tasks move once it has been down for a while (a daemon restart takes a second
        // or two: its tasks stay), and not while a restarted manager's gossip is still finding the others.
        let scheduler = Scheduler(
            moveDelay: configuration.fastGossip ? 5 : 10, startupGrace: configuration.fastGossip ? 5 : 15, drain: Self.drainSeconds)
        do {
            let state = Scheduler.State(
                services: try view.all(.service, as: ServiceRecord.self), tasks: try view.all(.task, as: TaskRecord.self),
                nodes: try view.all(.node, as: NodeRecord.self), ready: ready, notReadySince: m.notReadySince, managerStarted: m.started)
            let plan = scheduler.plan(state, now: Date(), newID: { NodeID.random().text })
            manager?.notReadySince = plan.notReadySince
            guard !plan.isEmpty else { return }
            var changes: [StoreChange] = []
            for t in plan.shutDown + plan.created { changes.append(try .set(.task, t.id, t)) }
            changes += plan.forgotten.map { .delete(.task, $0) }
            do { try await commitTaken(changes, ipam: nil, conditions: fence) } catch is SharedConflict { return }
        } catch {
            log(.manager).error("the scheduler could not save its decisions: \(error)")
        }
    }

    // MARK: ls / ps / inspect

    func serviceEntry(_ s: ServiceRecord) throws -> ServiceListEntry {
        let states = manager?.taskStates ?? [:]
        let live = allTasks().filter { $0.serviceID == s.id && $0.desiredState == .running }
        let running = live.filter { states[$0.id] == "running" }.count
        let desired = s.mode == .global ? live.count : s.replicas
        var vips: [String: String] = [:]
        for sn in s.networks { if let v = sn.vip { vips[sn.networkName] = v.description } }
        return ServiceListEntry(
            ID: s.id, Name: s.name, Mode: s.mode.rawValue, Replicas: "\(running)/\(desired)", EndpointMode: s.endpointMode.rawValue,
            Ports: s.ports.map { "*:\($0.publishedPort)->\($0.targetPort)/\($0.protocol)" + ($0.publishMode == .host ? " (host)" : "") },
            VirtualIPs: vips)
    }

    func serviceList() throws -> [ServiceListEntry] {
        _ = try requireManager()
        return try allServices().sorted { $0.name < $1.name }.map(serviceEntry)
    }

    func inspectService(_ name: String) throws -> ServiceRecord {
        _ = try requireManager()
        return try service(named: name)
    }

    func serviceTasks(_ name: String) throws -> [TaskListEntry] {
        _ = try requireManager()
        let s = try service(named: name)
        let nodes = Dictionary(cluster.nodes.map { ($0.id, $0.hostname) }, uniquingKeysWith: { a, _ in a })
        let states = manager?.taskStates ?? [:]
        let addresses = manager?.taskAddresses ?? [:]
        return allTasks().filter { $0.serviceID == s.id }
            .sorted { ($0.slot, $0.desiredState == .shutdown ? 1 : 0, $0.created) < ($1.slot, $1.desiredState == .shutdown ? 1 : 0, $1.created) }
            .map { t in
                TaskListEntry(
                    ID: t.id, Name: t.slot == 0 ? "\(t.serviceName).\(t.nodeID.prefix(12))" : "\(t.serviceName).\(t.slot)",
                    Node: nodes[t.nodeID] ?? t.nodeID, DesiredState: t.desiredState.rawValue.capitalized,
                    CurrentState: states[t.id] ?? "pending", Addresses: addresses[t.id] ?? [:])
            }
    }

    /// A node's report of its tasks (the manager keeps it in memory).
    /// Records what a node says of its tasks; states of tasks not assigned to that node are
    /// ignored (a stale report after a move, or a node speaking for another). Returns how many.
    @discardableResult
    func recordTaskStatus(_ r: TaskStatusReport) -> Int {
        guard var m = manager else { return 0 }
        let mine = Set(allTasks().filter { $0.nodeID == r.nodeID }.map(\.id))
        var ignored = 0
        for (id, state) in r.states.prefix(10_000) {
            guard mine.contains(id) else {
                ignored += 1
                continue
            }
            let parts = state.split(separator: "|", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            m.taskStates[id] = String(parts[0].prefix(300))
            if parts.count > 1 {
                var a: [String: String] = [:]
                for kv in parts[1].split(separator: ",") {
                    let p = kv.split(separator: "=", maxSplits: 1).map(String.init)
                    if p.count == 2 { a[p[0]] = p[1] }
                }
                m.taskAddresses[id] = a
            }
        }
        let live = Set(allTasks().map(\.id))
        m.taskStates = m.taskStates.filter { live.contains($0.key) }
        m.taskAddresses = m.taskAddresses.filter { live.contains($0.key) }
        manager = m
        return ignored + max(0, r.states.count - 10_000)
    }
}
