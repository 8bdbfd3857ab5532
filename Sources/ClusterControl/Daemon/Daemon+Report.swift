import ClusterManager
import Foundation
import NIOCore

/// What this node last told the manager, and when: a report goes again only when it changes,
/// when the manager is a new one, or after 30 s.
struct ReportState: Sendable {
    var last: NodeReport?
    var at = Date.distantPast
}

extension OverlayDaemon {
    /// This node's report as of now: encryption status, gateway subnet, standalone published
    /// ports, task states.
    func currentReport(nodeID: String) -> NodeReport {
        NodeReport(
            nodeID: nodeID, encryption: encryptionStatus(), gatewaySubnet: gateway?.info?.subnet.description,
            publishedPorts: standalonePublishedPorts(), taskStates: taskRuntime.states, endpoints: heldEndpoints())
    }

    /// The endpoints this node holds addresses for, as far as its store says: its containers',
    /// those asked for and not yet recorded, those waiting to be given back, and every load
    /// balancer endpoint it has kept an ID for (more than it holds, never less). Nil when the
    /// store cannot be read (then the manager gives nothing back).
    func heldEndpoints() -> [String]? {
        do {
            var held = Set(try store.all(.container, as: ContainerRecord.self).flatMap { $0.networks.map(\.endpointID) })
            held.formUnion(try store.all(.addressIntent).map(\.0))
            held.formUnion(try store.all(.pendingRelease).map(\.0))
            held.formUnion(dockerHeldEndpoints())
            for (key, _) in try store.all(.setting) where key.hasPrefix("lb/") {
                if let id = try store.get(.setting, key, as: String.self) { held.insert(id) }
            }
            return held.sorted()
        } catch {
            return nil
        }
    }

    /// The one way a node tells the manager about itself (`POST /v1/report`), sent when the report
    /// changed or is 30 s old. A manager records its own task states directly. A failure is
    /// logged; the next call sends it again. With several managers every one of them is told
    /// (each decides from what nodes report: task states, gateway subnets, published ports),
    /// the others at most 2 s each and without holding the report back when they fail.
    func sendReport(timeout: TimeAmount = .seconds(5)) async {
        guard let s = swarm, !isStopped else { return }
        let report = currentReport(nodeID: s.nodeID)
        guard report != reporting.last || Date().timeIntervalSince(reporting.at) > 30 else { return }
        let own = manager != nil ? Addr.join(s.advertiseAddr, s.listenPort) : s.managerAddr
        if manager != nil {
            recordTaskStatus(TaskStatusReport(nodeID: s.nodeID, states: report.taskStates ?? [:]))
        } else {
            do {
                let client = try managerClient(timeout: timeout)
                _ = try await client.call(ManagerAPI.report, body: report, group: group)
            } catch {
                log(.swarm).warning("cannot report to the manager: \(error)")
                return
            }
        }
        reporting = ReportState(last: report, at: Date())
        let others = (cluster.managers ?? []).filter { $0 != own }
        guard !others.isEmpty, let tls = try? nodeTLS() else { return }
        let group = self.group
        await withTaskGroup(of: Void.self) { tasks in
            for address in others {
                guard let (h, p) = try? Addr.split(address, defaultPort: 2377) else { continue }
                tasks.addTask {
                    let client = APIClient(endpoint: .tcp(host: h, port: p), tls: { try tls.addHandlers(to: $0) }, timeout: .seconds(2),
                                           describeError: ClusterTLS.describe)
                    _ = try? await client.call(ManagerAPI.report, body: report, group: group)
                }
            }
        }
    }

    /// Manager: records what a node says of itself. Every part is checked: a gateway subnet that
    /// is not plausible is refused (400), ports and task states not well-formed or not the node's
    /// are dropped and counted.
    func recordReport(_ report: NodeReport, from node: String) async throws -> NodeReportReply {
        guard report.nodeID == node else {
            log(.manager, ["node": "\(node)"]).warning("refused a report from node \(node) for node \(report.nodeID.prefix(64))")
            throw APIError(403, "a node reports only for itself")
        }
        if let gateway = report.gatewaySubnet, !gateway.isEmpty {
            guard let c = Self.plausibleGatewaySubnet(gateway) else {
                log(.manager, ["node": "\(node)"]).warning("node \(node) reported an implausible gateway bridge subnet '\(gateway.prefix(60))': ignored")
                throw APIError(400, "gateway '\(gateway.prefix(60))' is not a plausible gateway bridge subnet (an IPv4 CIDR from /8 to /30)")
            }
            manager?.gatewaySubnets[node] = c.description
        }
        if let encryption = report.encryption, encryption.count <= 200 { manager?.encryptionStatus[node] = encryption }
        if let ports = report.publishedPorts {
            manager?.standalonePorts[node] = Self.validPublishedPorts(ports.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
        }
        if let held = report.endpoints, held.count <= 1_000_000 { try await giveBackOrphans(of: node, holds: Set(held)) }
        guard let states = report.taskStates else { return NodeReportReply(recorded: 0, ignored: 0) }
        let ignored = recordTaskStatus(TaskStatusReport(nodeID: node, states: states))
        if ignored > 0 { log(.manager, ["node": "\(node)"]).notice("node \(node) reported \(ignored) task(s) not assigned to it: ignored") }
        return NodeReportReply(recorded: states.count - ignored, ignored: ignored)
    }

    /// Manager: gives back the addresses `node` holds by the manager's records but, by two of its
    /// reports at least `orphanedAddressGrace` apart, no longer knows of.
    func giveBackOrphans(of node: String, holds held: Set<String>) async throws {
        guard var m = manager else { return }
        let allocations = try view.all(.allocation, as: AllocationRecord.self)
        let orphans = m.orphans.report(node: node, holds: held, allocations: allocations, now: Date(),
                                       grace: configuration.orphanedAddressGrace)
        manager = m
        let networks = Dictionary(cluster.networks.map { ($0.id, $0.name) }, uniquingKeysWith: { a, _ in a })
        for a in orphans {
            guard let name = networks[a.networkID] else { continue }
            log(.manager, ["node": "\(node)", "network": "\(name)", "endpoint": "\(a.endpointID)", "address": "\(a.address)"]).notice("node \(node) no longer holds endpoint \(a.endpointID.prefix(12)) (\(a.address) on \(name), \(a.name ?? "unnamed")) by two of its reports: the address is given back")
            try await release(ReleaseRequest(network: name, address: a.address.description, endpointID: a.endpointID), for: node)
        }
    }
}
