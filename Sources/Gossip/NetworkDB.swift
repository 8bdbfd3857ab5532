import NIOCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Network-scoped replicated tables over a `GossipNode` (Docker's NetworkDB): owns the node,
/// carries table events in memberlist user messages to the members of each network, network
/// memberships in the push-pull user state, and withdraws a failed node's entries.
public final class NetworkDB: Sendable {
    /// The gossip node underneath (started by `start()`).
    public let node: GossipNode
    /// The table settings.
    public let tableConfig: NetworkDBConfig
    /// Cluster membership changes, re-published from the node's `events` (which this type consumes). One consumer.
    public let memberEvents: AsyncStream<MemberEvent>

    private struct State {
        var core: NetworkDBCore
        var watchers: [UInt64: Watcher] = [:]
        var membershipWatchers: [UInt64: AsyncStream<NetworkMembershipEvent>.Continuation] = [:]
        var nextID: UInt64 = 0
        var tasks: [Task<Void, Never>] = []
    }
    private struct Watcher {
        var network: String?
        var table: String?
        var continuation: AsyncStream<TableChange>.Continuation
    }

    /// How the gossip node's hooks reach this database: weakly, since the database holds the
    /// node (a strong reference here kept every database, its node and their tables alive after
    /// `shutdown`: half a megabyte and more per `swarm leave` and join).
    private final class Ref: Sendable {
        private struct Weak { weak var db: NetworkDB? }
        private let box = Mutex(Weak())
        var db: NetworkDB? { box.withLock { $0.db } }
        func set(_ db: NetworkDB) { box.withLock { $0.db = db } }
    }

    private let state: Mutex<State>
    private let memberContinuation: AsyncStream<MemberEvent>.Continuation
    private let epoch = ContinuousClock.now

    /// Creates the tables and their gossip node. The configuration's user-state and
    /// user-message hooks are wrapped: table messages are handled here, anything else is passed
    /// to the hooks the configuration came with.
    public init(configuration: GossipConfiguration, tables: NetworkDBConfig? = nil, group: EventLoopGroup? = nil) throws {
        let ref = Ref()
        var cfg = configuration
        let otherMessage = configuration.userMessage
        let otherLocal = configuration.localUserState
        let otherMerge = configuration.mergeUserState
        cfg.userMessage = { bytes in
            if TableWire.isTableMessage(bytes) {
                ref.db?.received(bytes)
            } else {
                otherMessage(bytes)
            }
        }
        // The push-pull user state carries network memberships; a configuration that already
        // has its own user state keeps it (tables then rely on broadcasts and bulk syncs).
        cfg.localUserState = { join in
            let mine = otherLocal(join)
            if !mine.isEmpty { return mine }
            return ref.db?.localState() ?? []
        }
        cfg.mergeUserState = { bytes, join in
            if TableWire.isTableMessage(bytes) {
                ref.db?.received(bytes)
            } else {
                otherMerge(bytes, join)
            }
        }
        let tc = tables ?? NetworkDBConfig(nodeName: configuration.swim.name)
        tableConfig = tc
        node = try GossipNode(configuration: cfg, group: group)
        let wallMillis = UInt64(max(0, Duration.nowSinceEpoch.components.seconds)) * 1000
        state = Mutex(State(core: NetworkDBCore(config: tc, clock: wallMillis)))
        (memberEvents, memberContinuation) = AsyncStream.makeStream(of: MemberEvent.self, bufferingPolicy: .bufferingNewest(4096))
        ref.set(self)
    }

    private var now: Duration { ContinuousClock.now - epoch }

    /// Starts the gossip node, the membership consumer and the tick timer.
    public func start() async throws {
        try await node.start()
        let events = node.events
        let membersTask = Task { [weak self] in
            for await event in events {
                guard let self else { return }
                switch event {
                case .joined(let m), .updated(let m):
                    self.perform { $0.nodeAlive(m.name, address: m.address, now: self.now) }
                case .left(let m), .failed(let m):
                    self.perform { $0.nodeGone(m.name, now: self.now) }
                }
                self.memberContinuation.yield(event)
            }
            self?.memberContinuation.finish()
        }
        let interval = tableConfig.tickInterval
        let tickTask = Task { [weak self] in
            while !Task.isCancelled {
                do { try await Task.sleep(for: interval) } catch { return }
                guard let self else { return }
                self.perform { $0.onTick(now: self.now) }
            }
        }
        state.withLock { $0.tasks += [membersTask, tickTask] }
    }

    /// Joins a cluster through `seeds` (see `GossipNode.join`).
    @discardableResult
    public func join(_ seeds: [NodeAddress]) async throws -> Int {
        try await node.join(seeds)
    }

    /// Joins a network: from now on its table events reach this node.
    public func joinNetwork(_ network: String) {
        perform { $0.joinNetwork(network, now: now) }
    }

    /// Leaves a network; its entries disappear locally (watchers see deletes).
    public func leaveNetwork(_ network: String) {
        perform { $0.leaveNetwork(network, now: now) }
    }

    /// Creates an entry owned by this node and sends it to the network's members.
    public func createEntry(network: String, table: String, key: String, value: [UInt8]) throws {
        try performThrowing { try $0.createEntry(network: network, table: table, key: key, value: value, now: now) }
    }

    /// Updates an entry (this node becomes its owner).
    public func updateEntry(network: String, table: String, key: String, value: [UInt8]) throws {
        try performThrowing { try $0.updateEntry(network: network, table: table, key: key, value: value, now: now) }
    }

    /// Deletes an entry.
    public func deleteEntry(network: String, table: String, key: String) throws {
        try performThrowing { try $0.deleteEntry(network: network, table: table, key: key, now: now) }
    }

    /// The visible entries, optionally of one network and table.
    public func entries(network: String? = nil, table: String? = nil) -> [TableEntry] {
        state.withLock { $0.core.visibleEntries(network: network, table: table) }
    }

    /// Live members (this node included) of a network, as far as this node knows.
    public func networkMembers(_ network: String) -> [String] {
        state.withLock { $0.core.members(of: network) }
    }

    /// Signs this node's deletes, leaves and bulk syncs from now on, and drops other nodes' that
    /// `authenticator` does not verify (nil: none are signed or checked).
    public func setAuthenticator(_ authenticator: TableAuthenticator?) {
        state.withLock { $0.core.authenticator = authenticator }
    }

    /// Deletes and leaves dropped, and bulk syncs taken without their implicit deletes, because
    /// their signature did not verify.
    public var unauthenticatedMessages: Int { state.withLock { $0.core.unauthenticated } }

    /// Malformed table messages received and dropped so far.
    public var malformedMessages: Int { state.withLock { $0.core.malformedMessages } }
    /// Table messages dropped for a Lamport time too far ahead of this node's clock.
    public var rejectedClockMessages: Int { state.withLock { $0.core.rejectedClocks } }

    /// Entry changes, optionally of one network and table: first a `create` for every current
    /// entry, then every change as it happens, until the consumer stops or `shutdown()`.
    public func watch(network: String? = nil, table: String? = nil) -> AsyncStream<TableChange> {
        let (stream, continuation) = AsyncStream.makeStream(of: TableChange.self, bufferingPolicy: .unbounded)
        let id = state.withLock { s -> UInt64 in
            for e in s.core.visibleEntries(network: network, table: table) {
                continuation.yield(TableChange(kind: .create, network: e.network, table: e.table, key: e.key, value: e.value, owner: e.owner))
            }
            s.nextID += 1
            s.watchers[s.nextID] = Watcher(network: network, table: table, continuation: continuation)
            return s.nextID
        }
        continuation.onTermination = { [weak self] _ in
            self?.state.withLock { _ = $0.watchers.removeValue(forKey: id) }
        }
        return stream
    }

    /// Network membership changes (nodes joining, leaving or failing in networks this node is in).
    public func watchNetworks() -> AsyncStream<NetworkMembershipEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: NetworkMembershipEvent.self, bufferingPolicy: .unbounded)
        let id = state.withLock { s -> UInt64 in
            s.nextID += 1
            s.membershipWatchers[s.nextID] = continuation
            return s.nextID
        }
        continuation.onTermination = { [weak self] _ in
            self?.state.withLock { _ = $0.membershipWatchers.removeValue(forKey: id) }
        }
        return stream
    }

    /// Leaves the cluster gracefully (if `leave`), stops timers, ends every watch stream and shuts the node down.
    public func shutdown(leave: Bool = true) async throws {
        if leave { try? await node.leave() }
        let (tasks, conts, mconts) = state.withLock { s in
            let r = (s.tasks, s.watchers.values.map(\.continuation), Array(s.membershipWatchers.values))
            s.tasks = []
            s.watchers = [:]
            s.membershipWatchers = [:]
            return r
        }
        for t in tasks { t.cancel() }
        for c in conts { c.finish() }
        for c in mconts { c.finish() }
        try await node.shutdown()
    }

    // MARK: - Plumbing

    func received(_ bytes: [UInt8]) {
        perform { $0.receive(bytes, now: now) }
    }

    func localState() -> [UInt8] {
        state.withLock { $0.core.localState() }
    }

    private func performThrowing(_ body: (inout NetworkDBCore) throws -> [NetworkDBDirective]) throws {
        let sends = try state.withLock { s throws -> [NetworkDBDirective] in
            let out = try body(&s.core)
            return Self.deliver(out, to: s)
        }
        transmit(sends)
    }

    private func perform(_ body: (inout NetworkDBCore) -> [NetworkDBDirective]) {
        let sends = state.withLock { s -> [NetworkDBDirective] in
            Self.deliver(body(&s.core), to: s)
        }
        transmit(sends)
    }

    /// Yields changes to watchers (in order, under the lock); returns what must go on the wire.
    private static func deliver(_ out: [NetworkDBDirective], to s: State) -> [NetworkDBDirective] {
        var wire: [NetworkDBDirective] = []
        for d in out {
            switch d {
            case .change(let c):
                for w in s.watchers.values where (w.network == nil || w.network == c.network) && (w.table == nil || w.table == c.table) {
                    w.continuation.yield(c)
                }
            case .membership(let m):
                for c in s.membershipWatchers.values { c.yield(m) }
            case .send, .broadcast:
                wire.append(d)
            }
        }
        return wire
    }

    private func transmit(_ directives: [NetworkDBDirective]) {
        guard !directives.isEmpty else { return }
        let node = self.node
        let logger = node.configuration.logger
        // One task per message: a send to an unreachable node must not hold up the others
        // (order does not matter, Lamport times decide).
        for d in directives {
            Task {
                switch d {
                case .send(let name, let address, let bytes):
                    do { try await node.sendUserMessage(bytes, to: address) } catch {
                        logger.debug("table message to \(name) failed: \(error)", metadata: ["node": "\(name)"])
                    }
                case .broadcast(let bytes):
                    do { try await node.broadcastUserMessage(bytes) } catch {
                        logger.debug("table broadcast failed: \(error)")
                    }
                default: break
                }
            }
        }
    }
}

extension Duration {
    /// Wall-clock time since the Unix epoch (seeds the Lamport clock).
    static var nowSinceEpoch: Duration {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return .seconds(ts.tv_sec) + .nanoseconds(ts.tv_nsec)
    }
}
