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
    /// Bumped whenever the watch is replaced or stopped, so a stale watch's report is ignored.
    var watchGeneration = 0
    var retry: Task<Void, Never>?
    var output: AsyncStream<Event>.Continuation?
    /// Where the helper tasks (clock, keep-alive, watch, retry) report; only the driver acts.
    var signals: AsyncStream<Signal>.Continuation?

    /// What the helper tasks report to the driver.
    enum Signal: Sendable {
        /// 200 ms passed.
        case tick
        /// A keepalive of `lease` found this.
        case renewal(EtcdLease, EtcdLease.Renewal)
        /// The watch numbered `watch` saw the leadership key go.
        case leaderGone(watch: Int)
        /// The watch numbered `watch` could not reach the store.
        case watchFailed(watch: Int)
        /// The pause after an unavailable store is over.
        case retry
        /// An input for the core as it is (tests drive decisions with it).
        case input(ElectionCore.Input)
    }

    /// An election among the managers sharing `store`.
    public init(store: EtcdStore, nodeID: String, address: String, ttl: Duration = .seconds(3), margin: Duration = .seconds(1)) {
        self.store = store
        me = Leader(nodeID: nodeID, address: address)
        core = ElectionCore(ttl: ttl, margin: margin)
    }

    /// Campaigns until the stream's consumer stops; then gives the leadership up at once.
    ///
    /// One driver task makes every decision and every store call of the election, one at a
    /// time; the keep-alive loop, the watch, the clock and the retry pause only report to it.
    /// (When they acted themselves, a step-down decided on a keepalive ran its revoke and grant
    /// in the keep-alive task the revoke had just cancelled, which etcd's client refuses
    /// unsent; and a leader's own watch, seeing its revoke delete the key, could grant a second
    /// lease beside the first, whose keep-alive then ran on with nothing to stop it.)
    public nonisolated func events() -> AsyncStream<Event> {
        let (stream, continuation) = AsyncStream.makeStream(of: Event.self)
        let (signals, signalInput) = AsyncStream.makeStream(of: Signal.self)
        let task = Task { await self.drive(continuation, signals, signalInput) }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    var now: Duration { ContinuousClock.now - origin }

    /// Hands `signal` to the driver (tests use it to feed the core an input).
    func signal(_ signal: Signal) { signals?.yield(signal) }

    func drive(_ out: AsyncStream<Event>.Continuation, _ incoming: AsyncStream<Signal>,
               _ input: AsyncStream<Signal>.Continuation) async {
        output = out
        signals = input
        let clock = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(200))
                input.yield(.tick)
            }
        }
        await perform(ElectionCore.start)
        for await signal in incoming {
            if Task.isCancelled { break }
            await handle(signal)
        }
        clock.cancel()
        await end()
    }

    func handle(_ signal: Signal) async {
        switch signal {
        case .tick:
            await feed(.tick(at: now))
        case .renewal(let which, let renewal):
            guard which == lease else { return }  // an earlier lease's late report
            switch renewal {
            case .alive: break  // recorded as it comes (acknowledged(_:at:)), never queued
            case .expired:
                stopKeepAlive()
                lease = nil
                await feed(.leaseExpired)
            case .unconfirmed: await feed(.storeUnavailable(at: now))
            }
        case .leaderGone(let generation):
            guard generation == watchGeneration else { return }
            await feed(.leaderGone)
        case .watchFailed(let generation):
            guard generation == watchGeneration else { return }
            await feed(.storeUnavailable(at: now))
        case .retry:
            retry = nil
            // After a failed grant: a new lease. After a failed campaign (the lease held and
            // renewed): the campaign again; without it nothing would ever campaign or watch.
            if lease == nil || core.lastAcknowledged == nil {
                await perform([.grantLease])
            } else if core.role == .candidate {
                await perform([.campaign])
            }
        case .input(let input):
            await feed(input)
        }
    }

    func end() async {
        stopKeepAlive()
        stopWatch()
        retry?.cancel()
        retry = nil
        // This runs in the cancelled driver task: the revoke goes in a task of its own, which a
        // cancellation does not reach (in this one it was refused before it was sent, and the
        // leadership lasted until its lease's TTL).
        if let held = lease {
            lease = nil
            await Self.revoke(held)
        }
        signals?.finish()
        signals = nil
        output?.finish()
    }

    func feed(_ input: ElectionCore.Input) async {
        await perform(core.handle(input))
    }

    func perform(_ actions: [ElectionCore.Action]) async {
        for action in actions {
            switch action {
            case .grantLease: await grant()
            case .campaign: await campaign()
            case .watchLeader: startWatch()
            case .startLeading(let term): output?.yield(.leading(term: term))
            case .stopLeading(let reason): output?.yield(.steppedDown(reason: reason))
            case .revokeLease:
                // The key goes with the lease: watching it means nothing any more.
                stopKeepAlive()
                stopWatch()
                if let held = lease {
                    lease = nil
                    await Self.revoke(held)
                }
            case .retryLater:
                guard retry == nil, let signals else { break }
                retry = Task {
                    try? await Task.sleep(for: .milliseconds(500))
                    signals.yield(.retry)
                }
            }
        }
    }

    /// Revokes `held` in a task of its own: a cancellation of the caller (the driver, when the
    /// consumer stops during a step-down) does not reach it, so the key never waits for the TTL.
    static func revoke(_ held: EtcdLease) async {
        await Task { try? await held.revoke() }.value
    }

    /// Records a keepalive of `granted` at once, not behind the driver's queue: a store call
    /// that takes long (a slow campaign) must not make a fresh lease look stale when it returns.
    /// The core never acts on an acknowledgement, so this needs no driver.
    func acknowledged(_ granted: EtcdLease, at: ContinuousClock.Instant) {
        guard granted == lease else { return }
        _ = core.handle(.keepAliveAcknowledged(at: at - origin))
    }

    func stopKeepAlive() {
        keepAlive?.cancel()
        keepAlive = nil
    }

    func stopWatch() {
        watch?.cancel()
        watch = nil
        watchGeneration += 1
    }

    func grant() async {
        stopKeepAlive()
        lease = nil  // the core gave it up (expired, or revoked before this)
        let seconds = max(1, Int64(core.ttl.components.seconds))
        do {
            let granted = try await EtcdLease.grant(ttl: seconds, on: store)
            lease = granted
            let signals = signals
            keepAlive = Task { [weak self] in
                for await renewal in granted.keepAlive(every: .milliseconds(Int64(seconds) * 1000 / 3)) {
                    if case .alive(_, let at) = renewal {
                        await self?.acknowledged(granted, at: at)
                    } else {
                        signals?.yield(.renewal(granted, renewal))
                    }
                }
            }
            await feed(.leaseGranted(at: now))
        } catch {
            await feed(.storeUnavailable(at: now))
        }
    }

    func campaign() async {
        guard let lease else { return await perform([.grantLease]) }
        do {
            let value = try StoreChange.set(.leader, Self.key, me)
            let result = try await store.commit([.absent(.leader, Self.key)], [value], lease: lease)
            if result.committed { return await feed(.campaignWon(term: result.revision)) }
            let view = try await store.load([.leader])
            if let holder = try view.get(.leader, Self.key, as: Leader.self) {
                if holder == me {
                    // Our own key, on this lease (a commit that timed out after etcd applied it)
                    // or an earlier one of ours. Never lead on it unknowingly, never follow
                    // ourselves for good: give this lease back, then watch the key go (at once,
                    // or when the earlier lease ends) and campaign afresh.
                    if self.lease == lease {
                        stopKeepAlive()
                        self.lease = nil
                    }
                    await Self.revoke(lease)
                } else {
                    output?.yield(.following(holder))
                }
                await feed(.campaignLost(leader: holder.nodeID))
            } else {
                await feed(.leaderGone)
            }
        } catch {
            await feed(.storeUnavailable(at: now))
        }
    }

    /// Watches the leadership key until it goes (deleted, or its lease expired), and reports it.
    func startWatch() {
        stopWatch()
        let generation = watchGeneration
        let store = store, signals = signals
        watch = Task {
            while !Task.isCancelled {
                do {
                    let view = try await store.load([.leader])
                    guard view.entry(.leader, Self.key) != nil else {
                        signals?.yield(.leaderGone(watch: generation))
                        return
                    }
                    for try await batch in store.watch([.leader], after: view.revision) {
                        if batch.events.contains(where: { if case .delete(_, Self.key, _) = $0 { true } else { false } }) {
                            signals?.yield(.leaderGone(watch: generation))
                            return
                        }
                    }
                } catch {
                    if Task.isCancelled { return }
                    signals?.yield(.watchFailed(watch: generation))
                    try? await Task.sleep(for: .milliseconds(500))
                }
            }
        }
    }
}
