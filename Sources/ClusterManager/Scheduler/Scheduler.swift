import Foundation
import OverlayAPI

/// The service scheduler as a pure function of the cluster's state and the time: which tasks to
/// create, where, which to shut down, and which to forget. No store, no gossip, no clock of its
/// own: the manager gathers the inputs each round, calls `plan`, and writes what it returns.
///
/// Rules (Docker's, as far as this build has them):
/// - Replicated services keep one running task per slot 1...replicas; global services one per
///   ready node.
/// - Spread: a new task goes to the ready node with the fewest running tasks of its service, then
///   the fewest tasks in all, then the lowest hostname. A service publishing a host-mode port gets
///   at most one task per node (a second could not bind the port); with no node left, the slot
///   waits for one.
/// - A node not ready for `moveDelay` has its replicated tasks moved (shut down here, recreated
///   elsewhere), but not within `startupGrace` of the manager's start, while gossip is still
///   finding everyone. Tasks of nodes no longer in the swarm go at once.
/// - A node's availability (`node update --availability`): `pause` keeps its tasks and takes no
///   new ones; `drain` has its tasks shut down (replicated ones are placed elsewhere) and takes
///   no new ones.
/// - Shut-down tasks are forgotten `drain` after they were shut down.
public struct Scheduler: Sendable {
    /// How long a node may be not ready before its tasks move.
    public var moveDelay: TimeInterval
    /// How long after the manager starts no task moves.
    public var startupGrace: TimeInterval
    /// How long a shut-down task is kept (its load-balancer entries drain meanwhile).
    public var drain: TimeInterval

    /// Makes a scheduler with these timings.
    public init(moveDelay: TimeInterval, startupGrace: TimeInterval, drain: TimeInterval) {
        self.moveDelay = moveDelay
        self.startupGrace = startupGrace
        self.drain = drain
    }

    /// Everything one round looks at.
    public struct State: Sendable {
        /// The services.
        public var services: [ServiceRecord]
        /// Every task the manager holds, running or draining.
        public var tasks: [TaskRecord]
        /// Every node in the swarm.
        public var nodes: [NodeRecord]
        /// The IDs of the nodes that can take tasks now.
        public var ready: Set<String>
        /// Since when each node has not been ready (kept by the caller from round to round).
        public var notReadySince: [String: Date]
        /// When the manager started.
        public var managerStarted: Date

        /// Gathers a round's inputs.
        public init(services: [ServiceRecord], tasks: [TaskRecord], nodes: [NodeRecord], ready: Set<String>,
                    notReadySince: [String: Date], managerStarted: Date) {
            self.services = services
            self.tasks = tasks
            self.nodes = nodes
            self.ready = ready
            self.notReadySince = notReadySince
            self.managerStarted = managerStarted
        }
    }

    /// What a round decided.
    public struct Plan: Sendable, Equatable {
        /// New tasks (desired state running), on the nodes chosen.
        public var created: [TaskRecord] = []
        /// Tasks now to shut down (desired state shutdown, `shutdownAt` set).
        public var shutDown: [TaskRecord] = []
        /// IDs of shut-down tasks whose drain is over: to forget.
        public var forgotten: [String] = []
        /// `notReadySince` for the next round.
        public var notReadySince: [String: Date] = [:]

        /// Whether anything in the store changes.
        public var isEmpty: Bool { created.isEmpty && shutDown.isEmpty && forgotten.isEmpty }
    }

    /// One round at `now`. `newID` names new tasks (random in the daemon, a counter in tests).
    public func plan(_ state: State, now: Date, newID: () -> String) -> Plan {
        var plan = Plan()
        let ready = state.nodes.filter { state.ready.contains($0.id) && ($0.availability ?? .active) == .active }
        let known = Set(state.nodes.map(\.id))
        let drained = Set(state.nodes.filter { $0.availability == .drain }.map(\.id))
        // Which nodes have been away long enough for their tasks to move.
        var gone: Set<String> = []
        for n in state.nodes {
            if state.ready.contains(n.id) {
                continue
            }
            let since = state.notReadySince[n.id] ?? now
            plan.notReadySince[n.id] = since
            if now.timeIntervalSince(since) >= moveDelay && now.timeIntervalSince(state.managerStarted) >= startupGrace {
                gone.insert(n.id)
            }
        }
        var all = state.tasks
        let services = Dictionary(state.services.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        func shutDown(_ i: Int) {
            all[i].desiredState = .shutdown
            all[i].shutdownAt = now
            plan.shutDown.append(all[i])
        }
        for i in all.indices where all[i].desiredState == .running {
            let t = all[i]
            guard let s = services[t.serviceID] else {
                shutDown(i)
                continue
            }
            switch s.mode {
            case .replicated where t.slot > s.replicas || gone.contains(t.nodeID) || !known.contains(t.nodeID) || drained.contains(t.nodeID):
                shutDown(i)
            case .global where !known.contains(t.nodeID) || drained.contains(t.nodeID):
                shutDown(i)
            default:
                continue
            }
        }
        var load: [String: Int] = [:]
        for t in all where t.desiredState == .running { load[t.nodeID, default: 0] += 1 }
        for s in state.services.sorted(by: { $0.name < $1.name }) {
            let running = all.filter { $0.serviceID == s.id && $0.desiredState == .running }
            var mine: [String: Int] = [:]
            for t in running { mine[t.nodeID, default: 0] += 1 }
            var wanted: [(slot: Int, node: String?)] = []
            if s.mode == .replicated {
                let slots = Set(running.map(\.slot))
                wanted = (1...max(s.replicas, 1)).filter { $0 <= s.replicas && !slots.contains($0) }.map { ($0, nil) }
            } else {
                let have = Set(running.map(\.nodeID))
                wanted = ready.filter { !have.contains($0.id) }.map { (0, $0.id) }
            }
            let onePerNode = s.ports.contains { $0.publishMode == .host }
            for w in wanted {
                let candidates = onePerNode ? ready.filter { (mine[$0.id] ?? 0) == 0 } : ready
                let node = w.node ?? candidates.min { a, b in
                    (mine[a.id] ?? 0, load[a.id] ?? 0, a.hostname) < (mine[b.id] ?? 0, load[b.id] ?? 0, b.hostname)
                }?.id
                guard let node else { continue }   // no ready node: stays pending until one comes
                let t = TaskRecord(id: newID(), serviceID: s.id, serviceName: s.name, slot: w.slot, nodeID: node,
                                   desiredState: .running, created: now)
                mine[node, default: 0] += 1
                load[node, default: 0] += 1
                all.append(t)
                plan.created.append(t)
            }
        }
        for t in state.tasks where t.desiredState == .shutdown && now.timeIntervalSince(t.shutdownAt ?? t.created) >= drain {
            plan.forgotten.append(t.id)
        }
        return plan
    }
}
