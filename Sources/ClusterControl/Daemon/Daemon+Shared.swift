import ClusterManager
import Foundation
import IPAM
import IPsecKeys
import NIOCore
import OverlayModel

/// What managers share (`SharedStore`: this node's SQLite file, or etcd with `--cluster-store`)
/// and how a manager uses it. It decides from its view (every shared kind at one store revision,
/// loaded at start and kept current by a watch) and writes by compare-and-swap on that view:
/// every write carries the `seq` cluster setting as it read it and bumps it, so a write decided on
/// a view another manager's write has overtaken is refused by the store and decided again on the
/// newer view. Two managers never both hand out an address, a VNI, a subnet or a port.
extension OverlayDaemon {
    /// The kinds managers share, and the view holds.
    static let sharedKinds: [StoreKind] = [.network, .node, .allocation, .service, .task, .clusterSetting]

    /// How often a write decided on an overtaken view is decided again before it gives up
    /// (managers writing at once each win a turn in a few tries; a jittered pause after each
    /// refusal spreads them out).
    static let sharedWriteAttempts = 30

    /// The most changes one shared write holds on etcd (it takes 128 operations a
    /// transaction; the `seq` and IPAM puts come on top).
    static let mostChanges = 100

    /// Reads the view at the store's revision (manager start, and after a broken watch). A
    /// load older than the view (the watch brought newer changes meanwhile) is dropped: the view
    /// never goes back.
    func loadView() async throws {
        do {
            let loaded = try await sharedStore.load(Self.sharedKinds)
            if loaded.revision >= view.revision { view = loaded }
        } catch let e as StoreUnavailable {
            throw APIError(503, e.message)
        } catch {
            throw APIError(500, "cannot read the cluster store: \(error)")
        }
    }

    /// The manager's settings and IPAM as the view has them (nil when the view holds no swarm).
    func managerStateFromView() throws -> (ManagerSettings, IPAM, UInt64)? {
        guard let settings = try view.get(.clusterSetting, "manager", as: ManagerSettings.self),
              let entry = view.entry(.clusterSetting, "ipam"),
              let snap = try view.get(.clusterSetting, "ipam", as: IPAMSnapshot.self) else { return nil }
        do { return (settings, try IPAM(restoring: snap), entry.modified) } catch {
            throw APIError(500, "cannot restore IPAM from the cluster store: \(error.message)")
        }
    }

    /// Brings the manager's cached settings and IPAM up to the view (another manager's writes).
    /// Returns whether the gossip keys or the IPsec keyring changed (another manager rotated them).
    @discardableResult
    func adoptViewIntoManager() -> (gossipKeys: Bool, ipsec: Bool) {
        guard var m = manager else { return (false, false) }
        var changed = (gossipKeys: false, ipsec: false)
        do {
            if let settings = try view.get(.clusterSetting, "manager", as: ManagerSettings.self) {
                changed.gossipKeys = settings.gossipKeys != m.settings.gossipKeys
                m.settings = settings
            }
            if let entry = view.entry(.clusterSetting, "ipam"), entry.modified != m.ipamRevision,
               let snap = try view.get(.clusterSetting, "ipam", as: IPAMSnapshot.self) {
                m.ipam = try IPAM(restoring: snap)
                m.ipamRevision = entry.modified
            }
            if sharedStore.isReplicated, let ring = try view.get(.clusterSetting, "ipsec", as: IPsecKeyring.self), ring != m.ipsec {
                m.ipsec = ring
                changed.ipsec = true
            }
            manager = m
        } catch {
            log(.manager).error("the cluster store holds manager state this manager cannot read: \(error)")
        }
        return changed
    }

    /// Writes `changes` (and `ipam`, when given) if the shared state is still as the view has
    /// it, and puts them in the view. Throws `SharedConflict` when another write came first, an
    /// `APIError` 503 with the store's one line when it cannot be reached.
    func commitShared(_ changes: [StoreChange], ipam: IPAM? = nil, conditions extra: [StoreCondition] = []) async throws {
        await takeWriteTurn()
        defer { passWriteTurn() }
        try await commitTaken(changes, ipam: ipam, conditions: extra)
    }

    /// This manager's writes go one at a time (decided, committed, in the view), so they never
    /// overtake each other: only another manager's write can make one decide again.
    func takeWriteTurn() async {
        guard writing else {
            writing = true
            return
        }
        await withCheckedContinuation { writeQueue.append($0) }
    }

    /// The next waiting writer goes (the turn passes to it), or none is writing.
    func passWriteTurn() {
        if writeQueue.isEmpty { writing = false } else { writeQueue.removeFirst().resume() }
    }

    /// `commitShared` for a caller that holds the write turn.
    func commitTaken(_ changes: [StoreChange], ipam: IPAM?, conditions extra: [StoreCondition]) async throws {
        if changes.isEmpty && ipam == nil { return }
        // etcd takes at most 128 operations a transaction: a longer write (a scheduler round
        // for a large service) goes in parts, each on the view the previous one left.
        let most = sharedStore.isReplicated ? Self.mostChanges : Int.max
        if changes.count > most {
            // An IPAM snapshot must go with every allocation change it records: such a write
            // is made in whole writes of at most `mostChanges` by its caller.
            guard ipam == nil else {
                throw APIError(500, "a write of \(changes.count) changes with the IPAM is more than one etcd transaction takes (\(most))")
            }
            var rest = changes[...]
            while rest.count > most {
                try await commitOne(Array(rest.prefix(most)), ipam: nil, conditions: extra)
                rest = rest.dropFirst(most)
            }
            try await commitOne(Array(rest), ipam: ipam, conditions: extra)
        } else {
            try await commitOne(changes, ipam: ipam, conditions: extra)
        }
    }

    private func commitOne(_ changes: [StoreChange], ipam: IPAM?, conditions extra: [StoreCondition]) async throws {
        let seq = view.entry(.clusterSetting, "seq")
        let next = ((try? view.get(.clusterSetting, "seq", as: UInt64.self)) ?? 0) + 1
        var all = changes
        if let ipam { all.append(try .set(.clusterSetting, "ipam", ipam.snapshot())) }
        all.append(try .set(.clusterSetting, "seq", next))
        let result: StoreCommit
        do {
            result = try await sharedStore.commit([.unchanged(.clusterSetting, "seq", modified: seq?.modified ?? 0)] + extra, all)
        } catch let e as StoreUnavailable {
            throw APIError(503, e.message)
        } catch let e as APIError {
            throw e
        } catch let e as StoreError {
            throw APIError(500, e.message)
        } catch {
            throw APIError(500, "cluster store write: \(error)")
        }
        guard result.committed else { throw SharedConflict(revision: result.revision, seq: seq?.modified ?? 0) }
        // Nothing shared changed between the view and this commit (`seq` held), so the view with
        // these changes is the store at `result.revision`. A watch that already brought them
        // (or later ones) leaves the view as it is.
        var events: [StoreEvent] = []
        for c in all {
            switch c {
            case .put(let kind, let key, let value):
                let created = view.entry(kind, key)?.created ?? result.revision
                events.append(.put(kind, key, StoreEntry(value: value, created: created, modified: result.revision)))
            case .delete(let kind, let key):
                events.append(.delete(kind, key, revision: result.revision))
            }
        }
        if let ipam, manager != nil, view.revision < result.revision {
            manager?.ipam = ipam
            manager?.ipamRevision = result.revision
        }
        view.apply(events)
        // The cluster state (what decisions read besides the view, and what nodes are served)
        // follows at once when objects changed; an address alone changes nothing in it.
        if all.contains(where: { c in
            switch c {
            case .put(let kind, _, _), .delete(let kind, _): [.network, .node, .service, .task].contains(kind)
            }
        }) {
            do { try refreshClusterFromStore() } catch {
                log(.manager).error("the cluster store holds state this manager cannot read: \(error)")
            }
        }
        wakeViewWaiters()
    }

    /// Decides a write on the view and commits it; decided again on the newer view when another
    /// write came first. `decide` reads only the view and the manager's state and changes
    /// nothing: it may run several times.
    func sharedWrite<T>(_ what: String, _ decide: () throws -> (changes: [StoreChange], ipam: IPAM?, result: T)) async throws -> T {
        await takeWriteTurn()
        defer { passWriteTurn() }
        for attempt in 1...Self.sharedWriteAttempts {
            let d = try decide()
            do {
                try await commitTaken(d.changes, ipam: d.ipam, conditions: [])
                return d.result
            } catch let conflict as SharedConflict {
                await catchUp(past: conflict.seq)
                try? await Task.sleep(for: .milliseconds(Int.random(in: 0...min(50, 5 * attempt))))
            }
        }
        throw APIError(503, "\(what): the cluster store changed under it \(Self.sharedWriteAttempts) times in a row; try again")
    }

    /// A write with no decision to make (the changes are known).
    func sharedWrite(_ what: String, _ changes: @autoclosure () throws -> [StoreChange]) async throws {
        try await sharedWrite(what) { (try changes(), nil, ()) }
    }

    /// The revision of the `seq` entry in the view (0: none): what every write is conditioned on.
    var seqRevision: UInt64 { view.entry(.clusterSetting, "seq")?.modified ?? 0 }

    /// After a refused write: waits (up to 1 s) for the watch to bring the write that overtook
    /// it (the view's `seq` moves past `seq`); else reads the store again. (Not the store's
    /// revision: writes of other prefixes move it, and this watch never sees them.)
    func catchUp(past seq: UInt64) async {
        if seqRevision != seq { return }
        let id = UUID()
        let timeout = Task { [weak self] in
            try? await Task.sleep(for: .seconds(1))
            await self?.wakeViewWaiter(id)
        }
        await withCheckedContinuation { viewWaiters[id] = (seq, $0) }
        timeout.cancel()
        if seqRevision == seq {
            do {
                try await loadView()
                await followView()
            } catch {
                log(.manager).warning("cannot read the cluster store again: \(error)")
            }
        }
    }

    func wakeViewWaiter(_ id: UUID) {
        viewWaiters.removeValue(forKey: id)?.continuation.resume()
    }

    func wakeViewWaiters() {
        for (id, w) in viewWaiters where w.seq != seqRevision {
            viewWaiters.removeValue(forKey: id)
            w.continuation.resume()
        }
    }

    /// Manager: keeps the view current by watching the store (other managers' writes; this
    /// manager's own come back too and change nothing). A broken watch reads the view again.
    func followSharedStore() async {
        while !Task.isCancelled {
            let stream = sharedStore.watch(Self.sharedKinds, after: view.revision)
            do {
                for try await batch in stream { await applyWatched(batch) }
                if Task.isCancelled { return }
            } catch {
                if Task.isCancelled { return }
                log(.manager).debug("the cluster store watch ended (\(error)): reading the store again")
            }
            guard (try? await Task.sleep(for: .milliseconds(200))) != nil else { return }
            do {
                try await loadView()
                await followView()
                wakeViewWaiters()
            } catch {
                log(.manager).warning("cannot read the cluster store (will retry): \(error)")
                guard (try? await Task.sleep(for: .seconds(1))) != nil else { return }
            }
        }
    }

    func applyWatched(_ batch: StoreEventBatch) async {
        let fresh = batch.events.filter { $0.revision > view.revision }
        view.apply(batch.events)
        view.advance(to: batch.revision)
        if !fresh.isEmpty { await followView() }
        wakeViewWaiters()
    }

    /// After the view changed under this manager (another manager's writes): its cached state,
    /// the cluster state it serves, and the keys it uses follow.
    func followView() async {
        let changed = adoptViewIntoManager()
        do { try refreshClusterFromStore() } catch {
            log(.manager).error("the cluster store holds state this manager cannot read: \(error)")
        }
        guard let m = manager else { return }
        if changed.ipsec { applyIPsecKeys(m.ipsec) }
        if changed.gossipKeys { await applyKeys(m.settings.gossipKeys) }
        await followOwnRole()
    }

    /// A swarm saved before managers shared a store kept the manager's settings and IPAM among
    /// the node's own settings: they move to the shared ones (once; same file).
    func moveManagerSettingsToSharedKind(clusterID: String) async throws {
        guard view.entry(.clusterSetting, "manager") == nil,
              let settings = try store.data(.setting, "manager"), let ipam = try store.data(.setting, "ipam") else { return }
        try await sharedWrite("moving the manager's settings", [
            .put(.clusterSetting, "manager", settings), .put(.clusterSetting, "ipam", ipam),
            try .set(.clusterSetting, "cluster-id", clusterID),
        ])
        try store.write([.delete(.setting, "manager"), .delete(.setting, "ipam")])
        log(.manager).notice("the manager's settings and IPAM moved to the shared cluster settings")
    }
}

/// The cluster CA as managers share it (`ca` cluster setting): any manager issues certificates.
struct SharedCA: Codable, Sendable {
    var certificate: String
    var key: String
}

extension OverlayDaemon {
    /// The cluster CA: from the shared store (any manager of the swarm), or, for a swarm made
    /// before it was kept there, from this manager's `ca` directory.
    func clusterCA() throws -> ClusterCA {
        if let shared = try view.get(.clusterSetting, "ca", as: SharedCA.self) {
            return try ClusterCA(certificatePEM: shared.certificate, privateKeyPEM: shared.key)
        }
        return try ClusterCA.load(from: caDirectory)
    }

    /// Whether this node's cluster store holds the swarm `token` is for (its CA's digest is the
    /// token's). Reads the store; a store that cannot be read is a 503.
    func storeHoldsSwarm(of token: JoinToken) async throws -> Bool {
        try await loadView()
        guard let shared = try view.get(.clusterSetting, "ca", as: SharedCA.self),
              let ca = try? ClusterCA(certificatePEM: shared.certificate, privateKeyPEM: shared.key) else { return false }
        return ca.tokenDigest == token.caDigest
    }
}

/// A write decided on a view that another write had overtaken: nothing was written; the store
/// was at `revision`.
struct SharedConflict: Error {
    var revision: UInt64
    /// The `seq` revision the refused write was decided on.
    var seq: UInt64
}

extension DaemonConfiguration {
    /// `--cluster-store` and `--cluster-store-opt` as Docker spelled them:
    /// `etcd://A:2379,B:2379,C:2379` and `kv.cacertfile=`, `kv.certfile=`, `kv.keyfile=` (TLS to
    /// every member; `https://` then), `kv.path=` (the prefix of the swarm's keys). One error line
    /// for anything else.
    public static func clusterStore(_ url: String, options: [String]) throws -> (EtcdConfiguration, prefix: String) {
        let scheme = "etcd://"
        guard url.lowercased().hasPrefix(scheme) else {
            throw StoreError("--cluster-store \(url): use etcd://HOST:PORT[,HOST:PORT...] (etcd v3 is the only store)")
        }
        var tls: (ca: String?, cert: String?, key: String?) = (nil, nil, nil)
        var prefix = "/swift-overlay/swarm/"
        for o in options {
            let kv = o.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2, !kv[1].isEmpty else { throw StoreError("--cluster-store-opt '\(o)': use key=value") }
            switch kv[0] {
            case "kv.cacertfile": tls.ca = kv[1]
            case "kv.certfile": tls.cert = kv[1]
            case "kv.keyfile": tls.key = kv[1]
            case "kv.path":
                guard kv[1].hasPrefix("/") else { throw StoreError("--cluster-store-opt kv.path=\(kv[1]): the prefix starts with /") }
                prefix = kv[1].hasSuffix("/") ? kv[1] : kv[1] + "/"
            default:
                throw StoreError("--cluster-store-opt '\(kv[0])' is not known (known: kv.cacertfile, kv.certfile, kv.keyfile, kv.path)")
            }
        }
        if (tls.cert == nil) != (tls.key == nil) {
            throw StoreError("--cluster-store-opt kv.certfile and kv.keyfile go together (a client certificate and its key)")
        }
        if tls.cert != nil && tls.ca == nil {
            throw StoreError("--cluster-store-opt kv.certfile needs kv.cacertfile (the CA of the etcd members' certificates)")
        }
        for file in [tls.ca, tls.cert, tls.key].compactMap({ $0 }) where !FileManager.default.isReadableFile(atPath: file) {
            throw StoreError("--cluster-store-opt: cannot read \(file)")
        }
        let members = url.dropFirst(scheme.count).split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard !members.isEmpty, members.allSatisfy({ !$0.isEmpty && !$0.contains("/") }) else {
            throw StoreError("--cluster-store \(url): use etcd://HOST:PORT[,HOST:PORT...]")
        }
        let endpoints = members.map { (tls.ca != nil ? "https://" : "http://") + $0 }
        let config = EtcdConfiguration(
            endpoints: endpoints, tls: tls.ca.map { EtcdConfiguration.TLS(caFile: $0, certificateFile: tls.cert, keyFile: tls.key) })
        // Each endpoint (host and port) and the TLS files are checked now, not at the first call.
        try config.check()
        return (config, prefix)
    }
}

// MARK: leadership

extension OverlayDaemon {
    /// Whether this manager runs what only one may (the scheduler, the scheduled key rotation):
    /// the single manager always; on etcd, the elected one.
    var isLeader: Bool {
        manager != nil && (!sharedStore.isReplicated || leaderTerm != nil)
    }

    /// What a leader-only write is conditioned on: the leadership key this manager created.
    var leaderFence: [StoreCondition] {
        leaderTerm.map { [.created(.leader, ManagerElection.key, at: $0)] } ?? []
    }

    /// Manager on etcd: campaigns for the leadership for as long as the membership runs (giving
    /// it up at once when it ends).
    func campaign(on etcd: EtcdStore) async {
        guard let s = swarm else { return }
        let election = ManagerElection(store: etcd, nodeID: s.nodeID, address: Addr.join(s.advertiseAddr, s.listenPort))
        for await event in election.events() { leadership(event) }
        leaderTerm = nil
    }

    func leadership(_ event: ManagerElection.Event) {
        switch event {
        case .leading(let term):
            leaderTerm = term
            leaderID = swarm?.nodeID
            log(.manager).notice("this manager leads the swarm (term \(term)): it runs the scheduler and the key rotation")
        case .steppedDown(let reason):
            leaderTerm = nil
            leaderID = nil
            log(.manager).warning("this manager stopped leading: \(reason)")
        case .following(let leader):
            leaderTerm = nil
            leaderID = leader.nodeID
            log(.manager, ["node": "\(leader.nodeID)"]).info("manager \(leader.nodeID) at \(leader.address) leads the swarm")
        }
        try? refreshClusterFromStore()
    }
}

// MARK: failing over (workers)

extension OverlayDaemon {
    /// Whether `error` says the manager could not be reached (no connection, no answer), not
    /// that it answered with a refusal.
    nonisolated static func isUnreachable(_ error: any Error) -> Bool {
        if error is CancellationError || Task.isCancelled { return false }
        guard let e = error as? APIError else { return true }
        return e.status == 0
    }

    /// A call to the manager; when it cannot be reached and the swarm has others, the call goes
    /// to the next one (each at most once).
    func callingManager<T: Sendable>(timeout: TimeAmount = .seconds(10), _ body: (APIClient) async throws -> T) async throws -> T {
        let tries = max(1, cluster.managers?.count ?? 1)
        var last: (any Error)?
        for _ in 0..<tries {
            let client = try managerClient(timeout: timeout)
            do { return try await body(client) } catch {
                guard Self.isUnreachable(error), managerFailed(error) else { throw error }
                last = error
            }
        }
        throw last ?? APIError(503, "no manager can be reached")
    }

    /// This node's manager could not be reached: the next call goes to the next manager the
    /// state names (kept across restarts). Whether there was another to go to.
    @discardableResult
    func managerFailed(_ error: any Error) -> Bool {
        guard var s = swarm, manager == nil, Self.isUnreachable(error),
              let managers = cluster.managers, managers.count > 1 else { return false }
        let next = managers.firstIndex(of: s.managerAddr).map { managers[($0 + 1) % managers.count] } ?? managers[0]
        guard next != s.managerAddr else { return false }
        log(.swarm).warning("manager \(s.managerAddr) cannot be reached (\(error)): following manager \(next)")
        s.managerAddr = next
        swarm = s
        try? store.put(.setting, "swarm", s)
        resetManagerConnections()
        return true
    }
}

// MARK: promotion and demotion (the node's side)

extension OverlayDaemon {
    /// When this node's record says another role than it has (`node promote`/`demote`, done
    /// on any manager): ends the running role's loops; `runRoleLoops` makes the change once they
    /// have (never inside a request, a write turn or a loop of the role being left) and starts
    /// the new role's.
    func followOwnRole() async {
        guard let s = swarm, let me = cluster.nodes.first(where: { $0.id == s.nodeID }), me.role != s.role,
              pendingRole == nil else { return }
        if let failed = failedRoleChange, failed.role == me.role, failed.version == cluster.version { return }
        pendingRole = (me.role, cluster.version)
        roleChange?.finish()
    }

    /// Makes the change `followOwnRole` asked for: a worker becomes a manager, a manager a worker,
    /// without restarting its containers, gossip or datapath.
    func changeOwnRole() async {
        guard let (role, version) = pendingRole else { return }
        pendingRole = nil
        guard swarm?.role != role else { return }
        do {
            if role == .manager { try await becomeManager() } else { try await becomeWorker() }
            failedRoleChange = nil
        } catch {
            failedRoleChange = (role, version)
            log(.swarm).error("this node is now a \(role.rawValue) in the swarm's records but cannot act as one: \(error)")
        }
    }

    /// Worker -> manager: a manager certificate (the swarm issues the role its record has), the
    /// shared state from this node's own cluster store, the manager API; then the manager's loops.
    func becomeManager() async throws {
        guard var s = swarm, manager == nil else { return }
        guard sharedStore.isReplicated else {
            throw APIError(400, "this node's overlayd has no --cluster-store: restart it with the swarm's")
        }
        let identity: NodeIdentity
        do { identity = try NodeIdentity.load(from: certDirectory) } catch let e as PKIError { throw APIError(500, e.message) }
        let csr = try identity.makeCSR()
        let reply: [String: String] = try await callingManager { client in
            try await client.call(ManagerAPI.renew, body: ["csr": csr], group: self.group)
        }
        let renewed = try identity.renewed(certificatePEM: reply["certificate"] ?? "", caCertificatePEM: reply["ca"] ?? "")
        guard renewed.role == .manager else { throw APIError(502, "the manager issued a \(renewed.role.rawValue) certificate, not a manager's") }
        try await loadView()
        guard (try? view.get(.clusterSetting, "cluster-id", as: String.self)) == s.clusterID,
              let (settings, ipam, ipamRevision) = try managerStateFromView() else {
            throw APIError(409, "this node's cluster store \(clusterStoreName) does not hold swarm \(s.clusterID)")
        }
        let ring = (try? view.get(.clusterSetting, "ipsec", as: IPsecKeyring.self)) ?? cluster.ipsecKeys
        var m = ManagerState(ipam: ipam, settings: settings, ipsec: try ring ?? Self.freshIPsecKeyring())
        m.ipamRevision = ipamRevision
        try renewed.save(to: certDirectory)
        let server = try ClusterTLS.Server(identity: renewed)
        managerServer = try await APIServer.start(
            .tcp(host: s.listenHost, port: s.listenPort), tls: { try server.addHandlers(to: $0) },
            limits: configuration.managerLimits, group: group, logger: log(.api), router: managerRouter())
        manager = m
        s.role = .manager
        s.managerAddr = Addr.join(s.advertiseAddr, s.listenPort)
        swarm = s
        try? store.put(.setting, "swarm", s)
        resetManagerConnections()
        try refreshClusterFromStore()
        log(.swarm).notice("this node was promoted: it is now a manager of the swarm, serving \(s.managerAddr)")
    }

    /// Manager -> worker: a worker certificate (issued here, while this node still holds the CA),
    /// the manager API closed, leadership given up; then it follows another manager.
    func becomeWorker() async throws {
        guard var s = swarm, manager != nil else { return }
        let others = (cluster.managers ?? []).filter { $0 != Addr.join(s.advertiseAddr, s.listenPort) }
        guard let next = others.first else { throw APIError(409, "no other manager to follow") }
        let identity: NodeIdentity
        do { identity = try NodeIdentity.load(from: certDirectory) } catch let e as PKIError { throw APIError(500, e.message) }
        let ca = try clusterCA()
        let renewed = try identity.renewed(certificatePEM: try ca.issue(csrPEM: try identity.makeCSR(), nodeID: s.nodeID, role: .worker),
                                           caCertificatePEM: ca.certificatePEM)
        try renewed.save(to: certDirectory)
        // Not a manager from here on (calls still in flight are refused), then the API closes.
        manager = nil
        leaderTerm = nil
        leaderID = nil
        await managerServer?.close()
        managerServer = nil
        view = StoreSnapshot(revision: 0)
        s.role = .worker
        s.managerAddr = next
        swarm = s
        try? store.write([try .set(.setting, "swarm", s), try .set(.setting, "gossip-keys", cluster.gossipKeys)])
        resetManagerConnections()
        reporting = ReportState()
        wakeStateWaiters()
        log(.swarm).notice("this node was demoted: it is now a worker, following manager \(next)")
    }
}
