import ClusterManager
import Foundation
import OverlayModel

/// What a node keeps about the tasks it runs, besides their containers in the store.
struct TaskRuntime: Sendable {
    var reconciling = false
    var again = false
    /// Task ID -> (failures, last attempt, last error): failed starts are retried with a backoff.
    var failures: [String: (Int, Date, String)] = [:]
    /// The states of this node's tasks, as last reconciled (what `sendReport` reports).
    var states: [String: String] = [:]
    /// When pending releases are tried again.
    var nextReleaseRetry = Date.distantPast
}

extension OverlayDaemon {
    /// Asks for a reconciliation (tasks, then load balancers) soon, without waiting for it.
    func kickReconcile() {
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
            await reconcileTasks()
            await reconcileLoadBalancing()
            await retryPendingReleases()
        } while taskRuntime.again && swarm != nil && !isStopped
    }

    func reconcileTasks() async {
        guard let s = swarm else { return }
        let mine = allTasks().filter { $0.nodeID == s.nodeID }
        let byID = Dictionary(mine.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        let containers = (try? store.all(.container, as: ContainerRecord.self)) ?? []
        // Tasks that are gone (their drain is over, or they were moved away): their containers go.
        for c in containers {
            guard let id = c.taskID, byID[id] == nil else { continue }
            do { try await removeContainer(c.name, force: true) } catch { logger.error("cannot remove task container \(c.name): \(error)") }
            taskRuntime.failures[id] = nil
        }
        let have = Dictionary(containers.compactMap { c in c.taskID.map { ($0, c) } }, uniquingKeysWith: { a, _ in a })
        var states: [String: String] = [:]
        for t in mine where !isStopped {
            if var c = have[t.id] {
                let nets = c.networks.map { "\($0.networkName)=\($0.address)" }.joined(separator: ",")
                var state = t.desiredState == .shutdown ? "shutdown" : isRunning(c) ? "running" : "exited"
                // A task whose process ended is started again (Docker's default restart policy),
                // with the same backoff as a failed start.
                if state == "exited" {
                    let (n, last, _) = taskRuntime.failures[t.id] ?? (0, .distantPast, "")
                    if Date().timeIntervalSince(last) >= min(30, pow(2, Double(max(n, 1) - 1))) {
                        do {
                            try spawn(&c)
                            try store.put(.container, c.name, c)
                            taskRuntime.failures[t.id] = (n + 1, Date(), "exited")
                            logger.notice("task \(c.name) exited: started again (\(n + 1))")
                            state = "running"
                        } catch {
                            taskRuntime.failures[t.id] = (n + 1, Date(), "\(error)")
                        }
                    }
                }
                states[t.id] = state + "|" + nets
                continue
            }
            guard t.desiredState == .running, let svc = allServices().first(where: { $0.id == t.serviceID }) else { continue }
            if let (n, last, why) = taskRuntime.failures[t.id], Date().timeIntervalSince(last) < min(30, pow(2, Double(n - 1))) {
                states[t.id] = "failed: \(why)"
                continue
            }
            do {
                try await runTask(t, of: svc)
                taskRuntime.failures[t.id] = nil
                states[t.id] = "running"
            } catch {
                let why = (error as? APIError)?.message ?? "\(error)"
                let n = (taskRuntime.failures[t.id]?.0 ?? 0) + 1
                taskRuntime.failures[t.id] = (n, Date(), why)
                if n == 1 || n % 10 == 0 { logger.error("task \(t.containerName) of service \(svc.name) cannot start: \(why)") }
                states[t.id] = "failed: \(why)"
            }
        }
        // States with addresses again, for anything created just now.
        for c in (try? store.all(.container, as: ContainerRecord.self)) ?? [] {
            guard let id = c.taskID, let t = byID[id], states[id]?.hasPrefix("running") == true, !states[id]!.contains("|") else { continue }
            states[id] = (t.desiredState == .running ? "running" : "shutdown") + "|"
                + c.networks.map { "\($0.networkName)=\($0.address)" }.joined(separator: ",")
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
