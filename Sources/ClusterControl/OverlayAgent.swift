import Foundation
import Gossip
import OverlayDriver
import OverlayModel
import Synchronization

/// What a host publishes about one of its endpoints in a network's `endpoint_table` (JSON).
public struct EndpointRecord: Codable, Hashable, Sendable {
    /// The endpoint ID (the table key).
    public var id: String
    /// A human name (the container's).
    public var name: String
    /// The overlay address, e.g. `10.0.0.2`.
    public var address: String
    /// The MAC address, e.g. `02:42:0a:00:00:02`.
    public var mac: String
    /// The underlay address of the host (its VTEP).
    public var vtep: String
    /// Other names the endpoint answers to in DNS on this network (`--network-alias`).
    public var aliases: [String]?
    /// The service this endpoint is a task of, if any.
    public var service: String?

    /// Makes a record from an attached endpoint.
    public init(endpoint: OverlayEndpoint, name: String, aliases: [String] = [], service: String? = nil) {
        id = endpoint.id
        self.name = name
        address = endpoint.address.description
        mac = endpoint.mac.description
        vtep = endpoint.vtep.description
        self.aliases = aliases.isEmpty ? nil : aliases
        self.service = service
    }

    /// The JSON bytes stored in the table.
    public func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return Array((try? encoder.encode(self)) ?? Data())
    }

    /// Decodes table bytes; nil if they are not a valid record.
    public static func decode(_ bytes: [UInt8]) -> EndpointRecord? {
        try? JSONDecoder().decode(EndpointRecord.self, from: Data(bytes))
    }

    /// The driver's peer entry, or nil if an address does not parse.
    public var peer: PeerEntry? {
        guard let a = IPAddress(address), let m = MACAddress(mac), let v = IPAddress(vtep) else { return nil }
        return PeerEntry(address: a, mac: m, vtep: v)
    }
}

/// A peer the agent programmed into (or removed from) the driver, for logs and UIs.
public struct PeerChange: Sendable, Hashable, CustomStringConvertible {
    /// Whether the peer was added (true) or removed (false).
    public var added: Bool
    /// The network.
    public var network: String
    /// The record the peer came from.
    public var record: EndpointRecord
    /// The node that published it.
    public var owner: String
    /// `+ demo 10.0.0.3 02:42:0a:00:00:03 via 198.18.0.2 (h2/c2)`.
    public var description: String {
        "\(added ? "+" : "-") \(network) \(record.address) \(record.mac) via \(record.vtep) (\(owner)/\(record.name))"
    }
}

/// A change to the endpoint records of a network, local ones included (for the DNS tables).
public enum EndpointRecordEvent: Sendable, Hashable {
    /// A record was created or changed.
    case upsert(network: String, key: String, owner: String, record: EndpointRecord)
    /// A record was deleted, or withdrawn because its owner failed.
    case remove(network: String, key: String)
    /// This host stopped following the network: forget all of its records.
    case networkLeft(String)
}

/// The agent that connects the layers on one host: endpoints attached through the driver are
/// published in gossip's `endpoint_table` of their network, and endpoints other hosts publish
/// there become the driver's peers (added on create/update, removed on delete or owner failure).
public final class OverlayAgent: Sendable {
    /// The table endpoint records live in (Docker's name).
    public static let endpointTable = "endpoint_table"

    /// The replicated tables (and the gossip node under them).
    public let db: NetworkDB
    /// The host's overlay driver.
    public let driver: OverlayDriver

    private struct State {
        var watchers: [String: Task<Void, Never>] = [:]
        /// network -> table key -> peer programmed from it.
        var programmed: [String: [String: (PeerEntry, EndpointRecord, String)]] = [:]
        var observers: [UInt64: AsyncStream<PeerChange>.Continuation] = [:]
        var nextID: UInt64 = 0
        var errors: [String] = []
        var recordObserver: (@Sendable (EndpointRecordEvent) -> Void)?
        var ownerCheck: (@Sendable (_ owner: String, _ record: EndpointRecord) -> Bool)?
        /// network -> table key -> a record the owner check refused (until it passes).
        var quarantined: [String: [String: TableChange]] = [:]
        var refusedRecords = 0
    }
    private let state = Mutex(State())

    /// Makes an agent over a started-or-not `NetworkDB` and a driver.
    public init(db: NetworkDB, driver: OverlayDriver) {
        self.db = db
        self.driver = driver
    }

    private var me: String { db.tableConfig.nodeName }

    /// Creates the network in the driver, joins its gossip network and starts programming its peers.
    @discardableResult
    public func createNetwork(_ spec: OverlayNetworkSpec) throws -> OverlayNetwork {
        let network = try driver.createNetwork(spec)
        db.joinNetwork(spec.name)
        let changes = db.watch(network: spec.name, table: Self.endpointTable)
        let task = Task { [weak self] in
            for await change in changes {
                guard let self else { return }
                self.apply(change)
            }
        }
        state.withLock { $0.watchers[spec.name]?.cancel(); $0.watchers[spec.name] = task }
        return network
    }

    /// Calls `observer` for every endpoint record change of every followed network, local records
    /// included, in order (the current records of a network first when it is followed).
    public func setRecordObserver(_ observer: (@Sendable (EndpointRecordEvent) -> Void)?) {
        state.withLock { $0.recordObserver = observer }
    }

    /// Attaches an endpoint through the driver and publishes its record.
    @discardableResult
    public func attach(_ spec: EndpointSpec, name: String? = nil, aliases: [String] = [], service: String? = nil) throws -> OverlayEndpoint {
        let endpoint = try driver.attach(spec)
        let record = EndpointRecord(endpoint: endpoint, name: name ?? spec.id, aliases: aliases, service: service)
        do {
            try db.createEntry(network: spec.network, table: Self.endpointTable, key: endpoint.id, value: record.encoded())
        } catch {
            try? driver.detach(endpoint: endpoint.id)
            throw error
        }
        return endpoint
    }

    /// Withdraws an endpoint's record and detaches it from the driver.
    public func detach(endpoint id: String) throws {
        if let ep = driver.endpoints().first(where: { $0.id == id }) {
            try? db.deleteEntry(network: ep.network, table: Self.endpointTable, key: id)
        }
        try driver.detach(endpoint: id)
    }

    /// Peers added and removed from now on.
    public func peerChanges() -> AsyncStream<PeerChange> {
        let (stream, continuation) = AsyncStream.makeStream(of: PeerChange.self, bufferingPolicy: .unbounded)
        let id = state.withLock { s -> UInt64 in
            s.nextID += 1
            s.observers[s.nextID] = continuation
            return s.nextID
        }
        continuation.onTermination = { [weak self] _ in self?.state.withLock { _ = $0.observers.removeValue(forKey: id) } }
        return stream
    }

    /// Driver errors met while programming peers (most recent last, at most 100).
    public var errors: [String] { state.withLock { $0.errors } }

    /// Detaches every local endpoint (withdrawing its record), leaves the cluster and stops the driver.
    public func shutdown(leave: Bool = true) async {
        for ep in driver.endpoints() { try? detach(endpoint: ep.id) }
        if leave { try? await Task.sleep(for: .milliseconds(300)) }   // let the deletes go out
        let (tasks, observers) = state.withLock { s in
            let r = (Array(s.watchers.values), Array(s.observers.values))
            s.watchers = [:]
            s.observers = [:]
            return r
        }
        for t in tasks { t.cancel() }
        for o in observers { o.finish() }
        try? await db.shutdown(leave: leave)
        driver.shutdown()
    }

    /// Stops following gossip and leaves the cluster without detaching anything: the kernel state
    /// stays for the next start (a daemon restart), whose driver removes and rebuilds it.
    public func shutdownKeepingEndpoints(leave: Bool = false) async {
        let (tasks, observers) = state.withLock { s in
            let r = (Array(s.watchers.values), Array(s.observers.values))
            s.watchers = [:]
            s.observers = [:]
            return r
        }
        for t in tasks { t.cancel() }
        for o in observers { o.finish() }
        try? await db.shutdown(leave: leave)
    }

    /// Stops programming a network's peers and leaves its gossip network (the caller removes it
    /// from the driver).
    public func leaveNetwork(_ name: String) {
        let (task, observer) = state.withLock { s -> (Task<Void, Never>?, (@Sendable (EndpointRecordEvent) -> Void)?) in
            s.programmed[name] = nil
            return (s.watchers.removeValue(forKey: name), s.recordObserver)
        }
        task?.cancel()
        db.leaveNetwork(name)
        observer?(.networkLeft(name))
    }

    /// Sets who may publish what: a record from another node is used (programmed as a peer, and
    /// passed to the record observer) only if `check(owner, record)` holds, e.g. that its VTEP is
    /// its owner's data-path address as the manager knows it. A holder of the gossip key could
    /// otherwise publish endpoints under any live member's name, pointing anywhere. Refused
    /// records wait, and are looked at again by ``recheckRecords()`` (call it when what the check
    /// knows changes, such as a new node).
    public func setOwnerCheck(_ check: (@Sendable (_ owner: String, _ record: EndpointRecord) -> Bool)?) {
        state.withLock { $0.ownerCheck = check }
    }

    /// Applies again the records the owner check refused; those that pass now are used.
    public func recheckRecords() {
        let waiting = state.withLock { s -> [TableChange] in
            let all = s.quarantined.values.flatMap(\.values)
            s.quarantined = [:]
            return all
        }
        for change in waiting { apply(change) }
    }

    /// Records refused by the owner check so far (each refusal once).
    public var refusedRecords: Int { state.withLock { $0.refusedRecords } }

    /// Whether the agent follows this network.
    public func follows(_ name: String) -> Bool { state.withLock { $0.watchers[name] != nil } }

    private func apply(_ change: TableChange) {
        if change.owner != me {
            let refused = state.withLock { s -> Bool in
                if change.kind == .delete {
                    s.quarantined[change.network]?[change.key] = nil
                    return false
                }
                guard let check = s.ownerCheck, let record = EndpointRecord.decode(change.value), !check(change.owner, record) else {
                    s.quarantined[change.network]?[change.key] = nil
                    return false
                }
                if s.quarantined[change.network]?[change.key] == nil { s.refusedRecords += 1 }
                s.quarantined[change.network, default: [:]][change.key] = change
                return true
            }
            if refused {
                note("refused endpoint record \(change.key) on \(change.network) from \(change.owner): its owner is not a node the manager knows at that VTEP")
                return
            }
        }
        if let observer = state.withLock({ $0.recordObserver }) {
            if change.kind == .delete {
                observer(.remove(network: change.network, key: change.key))
            } else if let record = EndpointRecord.decode(change.value) {
                observer(.upsert(network: change.network, key: change.key, owner: change.owner, record: record))
            }
        }
        guard change.owner != me else { return }
        let network = change.network
        let old = state.withLock { $0.programmed[network]?[change.key] }
        var removed: (PeerEntry, EndpointRecord, String)?
        var added: (PeerEntry, EndpointRecord, String)?
        if let old, change.kind == .delete || EndpointRecord.decode(change.value)?.peer != old.0 {
            removed = old
        }
        if change.kind != .delete {
            if let record = EndpointRecord.decode(change.value), let peer = record.peer {
                if old?.0 != peer { added = (peer, record, change.owner) }
            } else {
                note("ignored malformed endpoint record \(change.key) from \(change.owner)")
            }
        }
        if let r = removed {
            do { try driver.removePeer(r.0, network: network) } catch { note("removePeer \(r.0): \(error)") }
            publish(PeerChange(added: false, network: network, record: r.1, owner: r.2))
            state.withLock { _ = $0.programmed[network]?.removeValue(forKey: change.key) }
        }
        if let a = added {
            do {
                try driver.addPeer(a.0, network: network)
                state.withLock { $0.programmed[network, default: [:]][change.key] = a }
                publish(PeerChange(added: true, network: network, record: a.1, owner: a.2))
            } catch { note("addPeer \(a.0): \(error)") }
        }
    }

    private func publish(_ change: PeerChange) {
        state.withLock { s in for o in s.observers.values { o.yield(change) } }
    }

    private func note(_ message: String) {
        db.node.configuration.logger.warning("\(message)")
        state.withLock { s in
            s.errors.append(message)
            if s.errors.count > 100 { s.errors.removeFirst() }
        }
    }
}
