/// Why etcd gave no usable answer, as the client can tell it: what goes in the one line of
/// ``StoreUnavailable``.
enum EtcdUnreachable: Sendable, Equatable {
    /// Members answer but none can serve: no leader, or a request timed out while a member had
    /// accepted it (etcd waits 7 s for a quorum that is not there; the client stops earlier).
    case noQuorum(String)
    /// No member accepted a connection (refused, reset, unreachable).
    case noAnswer(String)
    /// A member refused the TLS connection: a wrong CA, client certificate or key.
    case tls(String)
    /// No member answered, none refused either: members that accept a connection and say
    /// nothing in time. A member whose leader just died does that for a second (etcd holds its
    /// health check until it notices), and so does a member cut off by the network.
    case silent(String)
    /// A member answered, but not within the request timeout, while the cluster seems healthy.
    case slow(String)
    /// The connection broke after the request was sent (the member stopped, the network broke).
    case interrupted(String)

    /// The phrase after "etcd at <endpoints>".
    func phrase(_ endpoints: String) -> String {
        switch self {
        case .noQuorum(let why): "etcd at \(endpoints) has no quorum (\(why))"
        case .noAnswer(let why): "no etcd member answers at \(endpoints) (\(why))"
        case .tls(let why): "etcd at \(endpoints) refused the TLS connection (\(why))"
        case .silent(let why): "etcd at \(endpoints) does not answer (\(why))"
        case .slow(let why): "etcd at \(endpoints) did not answer in time (\(why))"
        case .interrupted(let why): "the connection to etcd at \(endpoints) broke before an answer (\(why))"
        }
    }

    /// Whether the cluster was seen in a state that lasts (no leader, no connection, TLS refused),
    /// so that calls in the next moment are refused without asking. A silent cluster may be
    /// electing a leader and serve again a moment later: the next call probes it instead.
    var isSettled: Bool {
        switch self {
        case .noQuorum, .noAnswer, .tls: true
        case .silent, .slow, .interrupted: false
        }
    }
}

/// Which etcd member to ask, in which order, and whether to ask at all: a client's memory of
/// its last failure. No I/O and no clock of its own ("now" is passed in), so the rules are
/// tested without etcd.
///
/// - Members are asked from the one that answered last; one that fails to connect or says it has
///   no leader is skipped for the next in the list.
/// - After the cluster was found unavailable in a state that lasts (``EtcdUnreachable/isSettled``:
///   no leader, nothing accepts a connection), calls in the next `failFast` fail at once with the
///   same reason, without a request: nothing is sent, so nothing is changed. Etcd would otherwise
///   make every caller wait for a request timeout.
/// - After that window, or at once after a silent cluster, the first call probes every member's
///   `/health` (they answer at once, with or without a leader, except in the second after their
///   leader died) and asks a healthy one; if none is, it fails then and the window starts again.
struct EtcdEndpoints: Sendable {
    /// What a caller may do now.
    enum Admission: Equatable {
        /// Send the request to these members, in this order.
        case ask([Int])
        /// Probe the members' health first (the cluster was unavailable a while ago).
        case probe([Int])
        /// Fail at once: the cluster was found unavailable less than `failFast` ago.
        case refuse(EtcdUnreachable)
    }

    let count: Int
    let failFast: Duration
    /// The member asked first.
    private(set) var preferred = 0
    /// The last time the cluster was found unavailable, and why.
    private(set) var failure: (reason: EtcdUnreachable, at: ContinuousClock.Instant)?

    init(count: Int, failFast: Duration) {
        precondition(count > 0, "at least one endpoint")
        self.count = count
        self.failFast = failFast
    }

    /// Every member, from the preferred one on.
    var order: [Int] { (0..<count).map { (preferred + $0) % count } }

    /// Whether and where to send a request at `now`.
    func admission(now: ContinuousClock.Instant) -> Admission {
        guard let failure else { return .ask(order) }
        if failure.reason.isSettled && now < failure.at + failFast { return .refuse(failure.reason) }
        return .probe(order)
    }

    /// `endpoint` answered: ask it first from now on, and forget the last failure.
    mutating func answered(by endpoint: Int) {
        preferred = endpoint
        failure = nil
    }

    /// `endpoint` could not serve (no connection, no leader): the next call starts past it.
    mutating func skip(_ endpoint: Int) {
        if endpoint == preferred { preferred = (endpoint + 1) % count }
    }

    /// The probe found these members healthy: ask them first.
    mutating func probed(healthy: [Int]) -> [Int] {
        if let first = healthy.first { preferred = first }
        failure = nil
        return healthy + order.filter { !healthy.contains($0) }
    }

    /// The cluster is unavailable for `reason`, as found at `now`.
    mutating func failed(_ reason: EtcdUnreachable, now: ContinuousClock.Instant) {
        failure = (reason, now)
    }
}
