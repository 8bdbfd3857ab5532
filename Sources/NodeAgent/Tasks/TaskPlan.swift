import Foundation
import OverlayAPI

/// A task's failed starts on this node: how many in a row, when the last was tried, why it failed.
public struct TaskFailures: Sendable, Equatable {
    /// Failed starts (or exits) in a row.
    public var count: Int
    /// When the last start was tried.
    public var lastAttempt: Date
    /// Why it failed (or `exited`).
    public var reason: String

    /// Makes a value.
    public init(count: Int, lastAttempt: Date, reason: String) {
        self.count = count
        self.lastAttempt = lastAttempt
        self.reason = reason
    }

    /// The wait before the next try after `count` failures: 1 s, 2 s, 4 s, ... at most 30 s
    /// (Docker's restart backoff, capped).
    public static func backoff(after count: Int) -> TimeInterval {
        min(30, pow(2, Double(max(count, 1) - 1)))
    }

    /// Whether the next try is due at `now`.
    public func due(at now: Date) -> Bool {
        now.timeIntervalSince(lastAttempt) >= Self.backoff(after: count)
    }
}

/// What a node does about its tasks in one reconcile: which containers go, which tasks are
/// started, which exited containers are started again, and each task's state for the report.
/// Pure: the clock and whether a container runs are given.
public struct TaskPlan: Sendable, Equatable {
    /// Containers of tasks no longer this node's (their drain is over, or they moved): removed.
    public var remove: [String] = []
    /// Tasks to start: no container yet, desired running, their service known, no backoff pending.
    public var start: [TaskRecord] = []
    /// Containers whose process ended and whose restart backoff is over: started again (Docker's
    /// default restart policy).
    public var restart: [String] = []
    /// Task ID -> state before the actions: `running`, `exited`, `shutdown`, or `failed: why` for
    /// one waiting out its backoff. The node adds addresses and the actions' outcomes.
    public var states: [String: String] = [:]

    /// Makes an empty plan.
    public init() {}

    /// The plan for this node.
    /// - Parameters:
    ///   - nodeID: this node.
    ///   - tasks: every task of the cluster (this node's are picked).
    ///   - services: every service (a task whose service is gone is not started).
    ///   - containers: this node's containers.
    ///   - isRunning: whether a container's process runs.
    ///   - failures: failed starts per task ID.
    ///   - now: the clock.
    public static func make(nodeID: String, tasks: [TaskRecord], services: [ServiceRecord], containers: [ContainerRecord],
                            isRunning: (ContainerRecord) -> Bool, failures: [String: TaskFailures], now: Date) -> TaskPlan {
        var plan = TaskPlan()
        let mine = tasks.filter { $0.nodeID == nodeID }
        let byID = Dictionary(mine.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for c in containers {
            guard let id = c.taskID, byID[id] == nil else { continue }
            plan.remove.append(c.name)
        }
        let have = Dictionary(containers.compactMap { c in c.taskID.map { ($0, c) } }, uniquingKeysWith: { a, _ in a })
        let serviceIDs = Set(services.map(\.id))
        for t in mine {
            if let c = have[t.id] {
                if t.desiredState == .shutdown {
                    plan.states[t.id] = "shutdown"
                } else if isRunning(c) {
                    plan.states[t.id] = "running"
                } else {
                    plan.states[t.id] = "exited"
                    if failures[t.id].map({ $0.due(at: now) }) ?? true { plan.restart.append(c.name) }
                }
                continue
            }
            guard t.desiredState == .running, serviceIDs.contains(t.serviceID) else { continue }
            if let f = failures[t.id], !f.due(at: now) {
                plan.states[t.id] = "failed: \(f.reason)"
                continue
            }
            plan.start.append(t)
        }
        return plan
    }
}
