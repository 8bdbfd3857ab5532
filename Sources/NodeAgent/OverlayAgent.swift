import Foundation
import Gossip
import OverlayDriver
import OverlayModel
import Synchronization

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
        /// network -> table key -> the endpoint programmed as a peer from it, and its owner.
        var programmed: [String: [String: (endpoint: Endpoint, owner: String)]] = [:]
        var observers: [UInt64: AsyncStream<PeerChange>.Continuation] = [:]
        var nextID: UInt64 = 0
        var errors: [String] = []
        var endpointObserver: (@Sendable (EndpointEvent) -> Void)?
        var ownerCheck: (@Sendable (_ owner: String, _ endpoint: Endpoint) -> Bool)?
        var signer: (@Sendable (_ message: [UInt8]) -> [UInt8]?)?
        var verifier: (@Sendable (_ owner: String, _ message: [UInt8], _ signature: [UInt8]?) -> Bool)?
        /// network -> table key -> a record the owner check refused (until it passes).
        var quarantined: [String: [String: TableChange]] = [:]
        /// Peers of endpoints withdrawn because their owner failed, kept in the driver until
        /// their grace ends (network -> key -> the withdrawal's number).
        var withdrawing: [String: [String: UInt64]] = [:]
        var withdrawals: UInt64 = 0
        var withdrawalGrace: Duration = .zero
        var refusedRecords = 0
        var malformedRecords = 0
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

    /// Calls `observer` with every endpoint change of every followed network, local endpoints
    /// included, in order (the current endpoints of a network first when it is followed), on the
    /// gossip thread that delivered it: each record is decoded and checked once, before anyone
    /// sees it.
    public func setEndpointObserver(_ observer: (@Sendable (EndpointEvent) -> Void)?) {
        state.withLock { $0.endpointObserver = observer }
    }

    /// Attaches an endpoint through the driver and publishes its record.
    @discardableResult
    public func attach(_ spec: EndpointSpec, name: String? = nil, aliases: [String] = [], service: String? = nil) throws -> OverlayEndpoint {
        let endpoint = try driver.attach(spec)
        let record = signedRecord(endpoint, name: name ?? spec.id, aliases: aliases, service: service)
        do {
            try db.createEntry(network: spec.network, table: Self.endpointTable, key: endpoint.id, value: record.encoded())
        } catch {
            try? driver.detach(endpoint: endpoint.id)
            throw error
        }
        return endpoint
    }

    /// Publishes an attached endpoint's record again with another name and aliases: for a runtime
    /// that names its container only after the attach (Docker tells its plugin no names).
    public func rename(endpoint id: String, name: String, aliases: [String] = [], service: String? = nil) throws {
        guard let endpoint = driver.endpoints().first(where: { $0.id == id }) else {
            throw OverlayDriverError(.unknownEndpoint, "no endpoint '\(id)' is attached on this host")
        }
        let record = signedRecord(endpoint, name: name, aliases: aliases, service: service)
        try db.updateEntry(network: endpoint.network, table: Self.endpointTable, key: id, value: record.encoded())
    }

    private func signedRecord(_ endpoint: OverlayEndpoint, name: String, aliases: [String], service: String?) -> EndpointRecord {
        var record = EndpointRecord(endpoint: endpoint, name: name, aliases: aliases, service: service)
        if let sign = state.withLock({ $0.signer }), let signature = sign(record.signedMessage(network: endpoint.network, owner: me)) {
            record.signature = Data(signature).base64EncodedString()
        }
        return record
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
        await shutdownKeepingEndpoints(leave: leave)
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
        let (task, observer) = state.withLock { s -> (Task<Void, Never>?, (@Sendable (EndpointEvent) -> Void)?) in
            s.programmed[name] = nil
            return (s.watchers.removeValue(forKey: name), s.endpointObserver)
        }
        task?.cancel()
        state.withLock { _ = $0.quarantined.removeValue(forKey: name) }
        db.leaveNetwork(name)
        observer?(.networkLeft(name))
    }

    /// Sets who may publish what: a record from another node is used (programmed as a peer, and
    /// passed to the record observer) only if `check(owner, record)` holds, e.g. that its VTEP is
    /// its owner's data-path address as the manager knows it. A holder of the gossip key could
    /// otherwise publish endpoints under any live member's name, pointing anywhere. Refused
    /// records wait, and are looked at again by ``recheckRecords()`` (call it when what the check
    /// knows changes, such as a new node).
    public func setOwnerCheck(_ check: (@Sendable (_ owner: String, _ endpoint: Endpoint) -> Bool)?) {
        state.withLock { $0.ownerCheck = check }
    }

    /// Signs this node's endpoint records from now on: `sign` returns the signature of a
    /// record's ``EndpointRecord/signedMessage(network:owner:)`` (nil: published unsigned).
    public func setRecordSigner(_ sign: (@Sendable (_ message: [UInt8]) -> [UInt8]?)?) {
        state.withLock { $0.signer = sign }
    }

    /// Uses a record from another node only if `verify(owner, message, signature)` holds for its
    /// signed message and signature (nil when unsigned), e.g. that the owner's key as the manager
    /// knows it verifies it. Refused records wait for ``recheckRecords()`` like the owner check's.
    public func setRecordVerifier(_ verify: (@Sendable (_ owner: String, _ message: [UInt8], _ signature: [UInt8]?) -> Bool)?) {
        state.withLock { $0.verifier = verify }
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

    /// Records dropped because they were not valid JSON records with parseable addresses.
    public var malformedRecords: Int { state.withLock { $0.malformedRecords } }

    /// Whether the agent follows this network.
    public func follows(_ name: String) -> Bool { state.withLock { $0.watchers[name] != nil } }

    private func apply(_ change: TableChange) {
        let network = change.network
        let mine = change.owner == me
        // The record is decoded, and its addresses parsed, here and nowhere else. A value that is
        // not a valid record is a counted drop: what the key held before stays (a write that does
        // not decode is not its owner's, who never makes one, and must not withdraw its endpoint).
        var endpoint: Endpoint?
        if change.kind != .delete {
            endpoint = Endpoint(tableValue: change.value)
            if endpoint == nil {
                state.withLock { $0.malformedRecords += 1 }
                note("ignored malformed endpoint record \(change.key) on \(network) from \(change.owner)")
                return
            }
        }
        if !mine, let endpoint {
            let (check, verify) = state.withLock { ($0.ownerCheck, $0.verifier) }
            var why: String?
            if let check, !check(change.owner, endpoint) {
                why = "its owner is not a node the manager knows at that VTEP"
            } else if endpoint.id != change.key {
                why = "it is the record of endpoint \(endpoint.id.prefix(64)), not of its key"
            } else if let verify {
                let record = EndpointRecord.decode(change.value)
                let signature = record?.signature.flatMap { Data(base64Encoded: $0) }.map { Array($0) }
                if record.map({ verify(change.owner, $0.signedMessage(network: network, owner: change.owner), signature) }) != true {
                    why = signature == nil ? "it is not signed by its owner" : "its signature is not its owner's"
                }
            }
            let refused = state.withLock { s -> Bool in
                guard why != nil else {
                    s.quarantined[network]?[change.key] = nil
                    return false
                }
                if s.quarantined[network]?[change.key] == nil { s.refusedRecords += 1 }
                s.quarantined[network, default: [:]][change.key] = change
                return true
            }
            if refused, let why {
                note("refused endpoint record \(change.key) on \(network) from \(change.owner): \(why)")
                return
            }
        } else if !mine {
            state.withLock { _ = $0.quarantined[network]?.removeValue(forKey: change.key) }
        }
        if let observer = state.withLock({ $0.endpointObserver }) {
            if let endpoint {
                observer(.upsert(network: network, key: change.key, owner: change.owner, endpoint: endpoint))
            } else {
                observer(.remove(network: network, key: change.key))
            }
        }
        guard !mine else { return }
        let old = state.withLock { $0.programmed[network]?[change.key] }
        // An owner that stops answering gossip (its daemon killed or restarting, or its host
        // gone) has its endpoints withdrawn: names and load-balancer backends go at once (above),
        // but the datapath keeps their peers for a grace, so traffic to containers that still run
        // there is not cut while their daemon restarts. The owner back re-announces them.
        // Any change of a withdrawn endpoint ends its grace (its owner's re-announcement, or a delete).
        state.withLock { _ = $0.withdrawing[network]?.removeValue(forKey: change.key) }
        if change.kind == .delete, change.withdrawn, let old, state.withLock({ $0.withdrawalGrace }) > .zero {
            let (number, grace) = state.withLock { s -> (UInt64, Duration) in
                s.withdrawals += 1
                s.withdrawing[network, default: [:]][change.key] = s.withdrawals
                return (s.withdrawals, s.withdrawalGrace)
            }
            let key = change.key
            Task { [weak self] in
                try? await Task.sleep(for: grace)
                self?.endWithdrawal(network: network, key: key, number: number, peer: old)
            }
            return
        }
        if let old, old.endpoint.peer != endpoint?.peer {
            do { try driver.removePeer(old.endpoint.peer, network: network) } catch { note("removePeer \(old.endpoint.peer): \(error)") }
            publish(PeerChange(added: false, network: network, endpoint: old.endpoint, owner: old.owner))
            state.withLock { _ = $0.programmed[network]?.removeValue(forKey: change.key) }
        }
        if let endpoint, old?.endpoint.peer != endpoint.peer {
            do {
                try driver.addPeer(endpoint.peer, network: network)
                state.withLock { $0.programmed[network, default: [:]][change.key] = (endpoint, change.owner) }
                publish(PeerChange(added: true, network: network, endpoint: endpoint, owner: change.owner))
            } catch { note("addPeer \(endpoint.peer): \(error)") }
        } else if let endpoint, old != nil {
            // The same peer, other fields changed (a name, aliases): keep the newest.
            state.withLock { $0.programmed[network]?[change.key] = (endpoint, change.owner) }
        }
    }

    /// A withdrawn endpoint's grace is over and its owner has not re-announced it: its peer goes.
    private func endWithdrawal(network: String, key: String, number: UInt64, peer old: (endpoint: Endpoint, owner: String)) {
        let due = state.withLock { s -> Bool in
            guard s.withdrawing[network]?[key] == number else { return false }
            s.withdrawing[network]?[key] = nil
            s.programmed[network]?[key] = nil
            return true
        }
        guard due else { return }
        do { try driver.removePeer(old.endpoint.peer, network: network) } catch { note("removePeer \(old.endpoint.peer): \(error)") }
        publish(PeerChange(added: false, network: network, endpoint: old.endpoint, owner: old.owner))
    }

    /// How long the peers of a failed owner's endpoints stay in the datapath; zero (the
    /// default, Docker's behaviour) removes them with the withdrawal.
    public func setWithdrawalGrace(_ grace: Duration) {
        state.withLock { $0.withdrawalGrace = grace }
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
