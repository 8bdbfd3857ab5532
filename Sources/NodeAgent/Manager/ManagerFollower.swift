import Logging
import OverlayAPI

/// What a worker's ``ManagerFollower`` needs from its node: the node's report sent, and the
/// manager's state asked for (over the node's kept-open mutual-TLS connection).
public protocol ManagerLink: Sendable {
    /// Sends what the node says of itself (`POST /v1/report`) when it changed or is old; a
    /// failure is the link's to log, and the next call sends it again.
    func report() async
    /// The manager's state once it is newer than `since` (`GET /v1/state?since=&wait=`: the
    /// manager answers at once when it is, else at the first change or after `wait` seconds).
    func state(since: UInt64, wait: Int) async throws -> ClusterState
}

/// How a worker follows its manager: report, then a long poll for the next state, again and again;
/// each state that differs from the one held is handed on. A manager that cannot be reached is
/// asked again every `retryDelay`, logged at the first failure and every 30th after.
public struct ManagerFollower: Sendable {
    /// The node's side of the conversation.
    public var link: any ManagerLink
    /// How long the manager may hold a poll (seconds).
    public var wait: Int
    /// The pause after a failed poll.
    public var retryDelay: Duration
    /// Where failures are logged.
    public var logger: Logger

    /// A follower with Docker-like defaults: 25 s polls, 1 s between failed ones.
    public init(link: any ManagerLink, wait: Int = 25, retryDelay: Duration = .seconds(1), logger: Logger) {
        self.link = link
        self.wait = wait
        self.retryDelay = retryDelay
        self.logger = logger
    }

    /// The version to ask from: what the node holds, or 0 without an IPsec keyring (it is never
    /// stored, so after a restart the node must get the whole state again at once).
    public static func since(_ held: ClusterState) -> UInt64 {
        held.ipsecKeys == nil ? 0 : held.version
    }

    /// Whether `new` is a change from `held`: another version, or other IPsec keys.
    public static func isChange(_ new: ClusterState, from held: ClusterState) -> Bool {
        new.version != held.version || new.ipsecKeys != held.ipsecKeys
    }

    /// Follows until the task is cancelled.
    /// - Parameters:
    ///   - held: the state the node holds now.
    ///   - apply: takes each change (the node stores it and follows its networks and keys).
    public func run(held: @Sendable () async -> ClusterState, apply: @Sendable (ClusterState) async -> Void) async {
        var failures = 0
        while !Task.isCancelled {
            await link.report()
            let current = await held()
            do {
                let state = try await link.state(since: Self.since(current), wait: wait)
                failures = 0
                if Self.isChange(state, from: current) { await apply(state) }
            } catch {
                if Task.isCancelled { return }
                failures += 1
                if failures == 1 || failures % 30 == 0 { logger.warning("cannot reach the manager: \(error)") }
                try? await Task.sleep(for: retryDelay)
            }
        }
    }
}
