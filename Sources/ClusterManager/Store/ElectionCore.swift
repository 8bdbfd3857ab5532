/// The decisions of a manager's leader election on a leased key in the shared store, without
/// I/O: given what happened, what to do next. A driver carries out the actions (grant a lease,
/// create the leadership key only if absent with that lease, watch the key, revoke) and feeds
/// back what they gave, with the time on its own monotonic clock.
///
/// The rule that makes a lost store safe: a leader steps down `margin` before its lease could
/// have expired, measured from the last keepalive the store acknowledged, whether or not any
/// call has failed yet (on a quorum loss calls hang rather than fail). Another manager can only
/// take the key once the lease has expired, so two managers never both believe they lead; and
/// every leader write carries `StoreCondition.created` on the key at `term`, so a late write of
/// a deposed leader fails anyway.
public struct ElectionCore: Sendable, Equatable {
    public enum Role: Sendable, Equatable {
        /// Without a lease, or campaigning.
        case candidate
        /// Another manager leads.
        case follower(leader: String)
        /// This manager leads; `term` is the leadership key's create revision (the fence).
        case leader(term: UInt64)
    }

    public enum Input: Sendable, Equatable {
        /// A lease was granted (at `at` on the driver's clock).
        case leaseGranted(at: Duration)
        /// The store acknowledged a keepalive of the lease.
        case keepAliveAcknowledged(at: Duration)
        /// The store says the lease is gone.
        case leaseExpired
        /// The create-only write of the leadership key succeeded, at revision `term`.
        case campaignWon(term: UInt64)
        /// The key exists: `leader` holds it.
        case campaignLost(leader: String)
        /// The leadership key was deleted or expired (the watch saw it).
        case leaderGone
        /// A call failed: the store cannot be reached now.
        case storeUnavailable(at: Duration)
        /// Time passes.
        case tick(at: Duration)
    }

    public enum Action: Sendable, Equatable {
        case grantLease
        case campaign
        /// Watch the leadership key until it goes.
        case watchLeader
        case startLeading(term: UInt64)
        case stopLeading(reason: String)
        /// Give the lease up (best effort: it expires anyway).
        case revokeLease
        /// Try again after a pause (the store is unavailable).
        case retryLater
    }

    /// The lease's time to live.
    public let ttl: Duration
    /// How long before the lease could expire a leader steps down.
    public let margin: Duration
    public private(set) var role: Role = .candidate
    /// Whether a lease is held, and when the store last acknowledged it.
    public private(set) var lastAcknowledged: Duration?

    /// An election with Docker-like timing: a 3 s lease, stepping down 1 s before it could end.
    public init(ttl: Duration = .seconds(3), margin: Duration = .seconds(1)) {
        precondition(margin < ttl, "the step-down margin must be shorter than the lease")
        self.ttl = ttl
        self.margin = margin
    }

    /// The first actions: get a lease.
    public static let start: [Action] = [.grantLease]

    /// What to do after `input`.
    public mutating func handle(_ input: Input) -> [Action] {
        switch input {
        case .leaseGranted(let at):
            lastAcknowledged = at
            return role == .candidate ? [.campaign] : []
        case .keepAliveAcknowledged(let at):
            if let last = lastAcknowledged, at > last { lastAcknowledged = at }
            return []
        case .leaseExpired:
            return startOver(stepDown("the store expired this manager's lease"), revoke: false)
        case .campaignWon(let term):
            // The lease went while the campaign was on the way: the key goes with it.
            guard lastAcknowledged != nil else { return [.grantLease] }
            role = .leader(term: term)
            return [.startLeading(term: term), .watchLeader]
        case .campaignLost(let leader):
            if case .leader = role { return [] }
            role = .follower(leader: leader)
            return [.watchLeader]
        case .leaderGone:
            if case .leader = role { return startOver(stepDown("the leadership key went away"), revoke: true) }
            role = .candidate
            return lastAcknowledged == nil ? [.grantLease] : [.campaign]
        case .storeUnavailable(let at):
            let actions = deadline(at)
            return actions.isEmpty && role == .candidate ? [.retryLater] : actions
        case .tick(let at):
            return deadline(at)
        }
    }

    /// A leader whose last acknowledged keepalive is `ttl - margin` old steps down; any manager
    /// whose lease must have expired by now starts over with a new one.
    private mutating func deadline(_ now: Duration) -> [Action] {
        guard let last = lastAcknowledged else { return [] }
        if case .leader = role, now - last >= ttl - margin {
            return startOver(stepDown("no keepalive acknowledged for \(now - last) (the lease is \(ttl))"), revoke: true)
        }
        if now - last >= ttl { return startOver([], revoke: false) }
        return []
    }

    /// Leaves the leadership, if held.
    private mutating func stepDown(_ reason: String) -> [Action] {
        defer { role = .candidate }
        if case .leader = role { return [.stopLeading(reason: reason)] }
        return []
    }

    /// Without a lease from here: a new one is asked for (the old one given up first if it may
    /// still be alive).
    private mutating func startOver(_ actions: [Action], revoke: Bool) -> [Action] {
        lastAcknowledged = nil
        role = .candidate
        return actions + (revoke ? [.revokeLease] : []) + [.grantLease]
    }
}
