import ClusterManager
import Foundation
import NodeAgent
import OverlayModel

/// What a node keeps about the tasks it runs, besides their containers in the store.
struct TaskRuntime: Sendable {
    var reconciling = false
    var again = false
    /// Failed starts per task ID: retried with a backoff (`TaskFailures.backoff`).
    var failures: [String: TaskFailures] = [:]
    /// Containers with a removal or a network connect in flight. A removal kills the process
    /// but the record and namespace stay while it awaits: a reconcile or a `start` meanwhile must
    /// not take the container for exited and start it again (a process left in a namespace
    /// nobody holds), and a connect must not write back a record the removal deleted.
    var busy: Set<String> = []
    /// The states of this node's tasks, as last reconciled (what `sendReport` reports).
    var states: [String: String] = [:]
    /// When pending releases are tried again.
    var nextReleaseRetry = Date.distantPast
    /// The first change not yet reconciled (for `overlay_reconcile_lag_seconds`).
    var changedAt: ContinuousClock.Instant?
}

extension OverlayDaemon {
    /// Asks for a reconciliation (tasks, then load balancers) soon, without waiting for it.
    func kickReconcile() {
        if taskRuntime.changedAt == nil { taskRuntime.changedAt = .now }
        reconcileKick?.yield()
    }

    /// Runs the tasks this node is given, removes the containers of tasks that are gone, then
    /// brings the load balancers in line. Never runs twice at once: a call during a run makes the
    /// run go round once more.
    func reconcile() async {
        guard swarm != nil, agent != nil, !isStopped else { return }
        if taskRuntime.reconciling {
            taskRuntime.again = true
            return
        }
        taskRuntime.reconciling = true
        defer { taskRuntime.reconciling = false }
        repeat {
            taskRuntime.again = false
            let start = ContinuousClock.now
            let changed = taskRuntime.changedAt
            taskRuntime.changedAt = nil
            await reconcileTasks()
            await reconcileLoadBalancing()
            await retryPendingReleases()
            let end = ContinuousClock.now
            metrics?.record("overlay_reconcile_duration_seconds", end - start)
            if let changed { metrics?.record("overlay_reconcile_lag_seconds", end - changed) }
        } while taskRuntime.again && swarm != nil && !isStopped
    }

    /// Does what the node agent's `TaskPlan` says: removes the containers of tasks gone from
    /// this node, starts exited ones again and new ones (each failure backs off), then reports
    /// every task's state with its addresses.
    func reconcileTasks() async {
        guard let s = swarm else { return }
        let containers = (try? store.all(.container, as: ContainerRecord.self)) ?? []
        let plan = TaskPlan.make(nodeID: s.nodeID, tasks: allTasks(), services: allServices(), containers: containers,
                                 isRunning: { isRunning($0) }, failures: taskRuntime.failures, now: Date())
        for name in plan.remove where !taskRuntime.busy.contains(name) {
            guard let c = containers.first(where: { $0.name == name }) else { continue }
            do { try await removeContainer(c.name, force: true) } catch { log(.tasks, ["container": "\(c.name)", "task": "\(c.taskID ?? "")"]).error("cannot remove task container \(c.name): \(error)") }
            if let id = c.taskID { taskRuntime.failures[id] = nil }
        }
        var states = plan.states
        for name in plan.restart where !isStopped {
            // Read again: the removals above awaited, and a container may have been removed (or
            // be being removed) since the plan was made. From here to the store nothing awaits.
            guard !taskRuntime.busy.contains(name), var c = try? store.get(.container, name, as: ContainerRecord.self),
                  !isRunning(c), let id = c.taskID else { continue }
            let n = (taskRuntime.failures[id]?.count ?? 0) + 1
            do {
                // Its exited command's children go first: the task starts again whole.
                killContainerProcesses(c)
                try spawn(&c)
                try store.put(.container, c.name, c)
                taskRuntime.failures[id] = TaskFailures(count: n, lastAttempt: Date(), reason: "exited")
                log(.tasks, ["container": "\(c.name)", "task": "\(id)"]).notice("task \(c.name) exited: started again (\(n))")
                states[id] = "running"
            } catch {
                taskRuntime.failures[id] = TaskFailures(count: n, lastAttempt: Date(), reason: "\(error)")
            }
        }
        let services = Dictionary(allServices().map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for t in plan.start where !isStopped {
            guard let svc = services[t.serviceID] else { continue }
            do {
                try await runTask(t, of: svc)
                taskRuntime.failures[t.id] = nil
                states[t.id] = "running"
            } catch {
                let why = (error as? APIError)?.message ?? "\(error)"
                let n = (taskRuntime.failures[t.id]?.count ?? 0) + 1
                taskRuntime.failures[t.id] = TaskFailures(count: n, lastAttempt: Date(), reason: why)
                if n == 1 || n % 10 == 0 { log(.tasks, ["task": "\(t.id)", "service": "\(svc.name)", "node": "\(t.nodeID)"]).error("task \(t.containerName) of service \(svc.name) cannot start: \(why)") }
                states[t.id] = "failed: \(why)"
            }
        }
        // Each state with the task's addresses, as its container has them now.
        let desired = Dictionary(allTasks().map { ($0.id, $0.desiredState) }, uniquingKeysWith: { a, _ in a })
        for c in (try? store.all(.container, as: ContainerRecord.self)) ?? [] {
            guard let id = c.taskID, let state = states[id], state == "running" || state == "exited" || state == "shutdown" else { continue }
            let base = state == "running" && desired[id] == .shutdown ? "shutdown" : state
            states[id] = base + "|" + c.networks.map { "\($0.networkName)=\($0.address)" }.joined(separator: ",")
        }
        await reportTaskStates(states)
    }

    /// Creates a task's container: its service's networks (the ingress network too when it
    /// publishes through the mesh), its host-mode ports, its command.
    func runTask(_ t: TaskRecord, of svc: ServiceRecord) async throws {
        var req = ContainerCreateRequest(name: t.containerName, networks: svc.networks.map(\.networkName), command: svc.command, detach: true)
        req.publish = svc.ports.filter { $0.publishMode == .host }.map { "\($0.publishedPort):\($0.targetPort)/\($0.protocol)" }
        _ = try await runContainer(req, task: t)
    }

    func reportTaskStates(_ states: [String: String]) async {
        taskRuntime.states = states
        await sendReport()
    }
}
