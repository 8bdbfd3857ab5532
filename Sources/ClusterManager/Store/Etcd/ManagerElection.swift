import FoundationEssentials

extension StoreKind {
    /// The managers' leadership key (`current`), held with the leader's lease.
    public static let leader = StoreKind(rawValue: "leader")
}

/// Who leads the managers, elected on etcd: ``ElectionCore``'s decisions carried out with a
/// lease, a create-only write of the leadership key with that lease, and a watch of the key.
///
/// ```swift
/// let election = ManagerElection(store: store, nodeID: "n1", address: "10.0.0.1:2377")
/// for await event in election.events() {
///     switch event {
///     case .leading(let term): ...   // run the scheduler; fence writes with .created(.leader, "current", at: term)
///     case .steppedDown, .following: ...
///     }
/// }
/// ```
public actor ManagerElection {
    /// The leadership key's value.
    public struct Leader: Codable, Sendable, Equatable {
        public var nodeID: String
        public var address: String
        /// Makes a value.
        public init(nodeID: String, address: String) {
            self.nodeID = nodeID
            self.address = address
        }
    }

    public enum Event: Sendable, Equatable {
        /// This manager leads; fence its writes with `.created(.leader, "current", at: term)`.
        case leading(term: UInt64)
        /// This manager stopped leading, and why.
        case steppedDown(reason: String)
        /// Another manager leads.
        case following(Leader)
    }

    /// The leadership key.
    public static let key = "current"

    let store: EtcdStore
    let me: Leader
    var core: ElectionCore
    let origin = ContinuousClock.now
    var lease: EtcdLease?
    var keepAlive: Task<Void, Never>?
    var watch: Task<Void, Never>?
    var retry: Task<Void, Never>?
    var output: AsyncStream<Event>.Continuation?
    /// Set once the events' consumer stopped: nothing more is done.
    var stopped = false

    /// An election among the managers sharing `store`.
    public init(store: EtcdStore, nodeID: String, address: String, ttl: Duration = .seconds(3), margin: Duration = .seconds(1)) {
        self.store = store
        me = Leader(nodeID: nodeID, address: address)
        core = ElectionCore(ttl: ttl, margin: margin)
    }

    /// Campaigns until the stream's consumer stops; then gives the leadership up at once.
    public nonisolated func events() -> AsyncStream<Event> {
        let (stream, continuation) = AsyncStream.makeStream(of: Event.self)
        let task = Task {
            await self.begin(continuation)
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(200))
                await self.tick()
            }
            await self.end()
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    var now: Duration { ContinuousClock.now - origin }

    func tick() async { await feed(.tick(at: now)) }

    func unavailable() async { await feed(.storeUnavailable(at: now)) }

    func begin(_ continuation: AsyncStream<Event>.Continuation) async {
        output = continuation
        await perform(ElectionCore.start)
    }

    func end() async {
        stopped = true
        keepAlive?.cancel()
        watch?.cancel()
        retry?.cancel()
        // This runs in the cancelled events task: the revoke goes in a task of its own, which a
        // cancellation does not reach (in this one it was refused before it was sent, and the
        // leadership lasted until its lease's TTL).
        if let lease { await Task { try? await lease.revoke() }.value }
        lease = nil
        output?.finish()
    }

    func feed(_ input: ElectionCore.Input) async {
        await perform(core.handle(input))
    }

    func perform(_ actions: [ElectionCore.Action]) async {
        for (index, action) in actions.enumerated() {
            if stopped { return }
            // A new lease or none: the current one's keep-alive loop ends, and it may be the task
            // running this (its renewals feed the election). A store call in a cancelled task is
            // refused before it is sent (a stepping-down leader's revoke was, and the grant after
            // it, so the old lease held the leadership key until its TTL), so the rest of the
            // actions then go on in a task of their own, in order.
            if action == .revokeLease || action == .grantLease {
                keepAlive?.cancel()
                keepAlive = nil
            }
            if action.callsTheStore, Task.isCancelled {
                let rest = Array(actions[index...])
                Task { await self.perform(rest) }
                return
            }
            switch action {
            case .grantLease: await grant()
            case .campaign: await campaign()
            case .watchLeader: startWatch()
            case .startLeading(let term): output?.yield(.leading(term: term))
            case .stopLeading(let reason): output?.yield(.steppedDown(reason: reason))
            case .revokeLease:
                if let lease { try? await lease.revoke() }
                lease = nil
            case .retryLater:
                // A task of its own (not a nested call: a store down for hours would nest
                // without end), and one at a time.
                guard retry == nil else { break }
                retry = Task { [weak self] in
                    try? await Task.sleep(for: .milliseconds(500))
                    await self?.retried()
                }
            }
        }
    }

    func retried() async {
        retry = nil
        if lease == nil { await perform([.grantLease]) }
    }

    func grant() async {
        keepAlive?.cancel()
        let seconds = max(1, Int64(core.ttl.components.seconds))
        do {
            let granted = try await EtcdLease.grant(ttl: seconds, on: store)
            if stopped {
                // Granted after the consumer stopped (the grant ran in a task `end()` does not
                // reach): given back, never renewed.
                Task { try? await granted.revoke() }
                return
            }
            lease = granted
            let origin = origin
            keepAlive = Task { [weak self] in
                for await renewal in granted.keepAlive(every: .milliseconds(Int64(seconds) * 1000 / 3)) {
                    switch renewal {
                    case .alive(_, let at): await self?.feed(.keepAliveAcknowledged(at: at - origin))
                    case .expired: await self?.leaseEnded(granted)
                    case .unconfirmed: await self?.feed(.storeUnavailable(at: ContinuousClock.now - origin))
                    }
                }
            }
            await feed(.leaseGranted(at: now))
        } catch {
            await feed(.storeUnavailable(at: now))
        }
    }

    func leaseEnded(_ which: EtcdLease) async {
        guard lease == which else { return }
        lease = nil
        await feed(.leaseExpired)
    }

    func campaign() async {
        guard let lease else { return await perform([.grantLease]) }
        do {
            let value = try StoreChange.set(.leader, Self.key, me)
            let result = try await store.commit([.absent(.leader, Self.key)], [value], lease: lease)
            if result.committed { return await feed(.campaignWon(term: result.revision)) }
            let view = try await store.load([.leader])
            if let holder = try view.get(.leader, Self.key, as: Leader.self) {
                if holder != me { output?.yield(.following(holder)) }
                await feed(.campaignLost(leader: holder.nodeID))
            } else {
                await feed(.leaderGone)
            }
        } catch {
            await feed(.storeUnavailable(at: now))
        }
    }

    /// Watches the leadership key until it goes (deleted, or its lease expired).
    func startWatch() {
        watch?.cancel()
        watch = Task { [weak self] in
            guard let self else { return }
            while !Task.isCancelled {
                do {
                    let view = try await self.store.load([.leader])
                    guard view.entry(.leader, Self.key) != nil else { return await self.feed(.leaderGone) }
                    for try await batch in self.store.watch([.leader], after: view.revision) {
                        if batch.events.contains(where: { if case .delete(_, Self.key, _) = $0 { true } else { false } }) {
                            return await self.feed(.leaderGone)
                        }
                    }
                } catch {
                    if Task.isCancelled { return }
                    await self.unavailable()
                    try? await Task.sleep(for: .milliseconds(500))
                }
            }
        }
    }
}

extension ElectionCore.Action {
    /// Whether carrying it out is a request to etcd.
    var callsTheStore: Bool {
        switch self {
        case .grantLease, .campaign, .revokeLease: true
        case .watchLeader, .startLeading, .stopLeading, .retryLater: false
        }
    }
}
