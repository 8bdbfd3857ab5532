import Foundation
import NodeAgent
import OverlayAPI
import OverlayModel
import Testing

/// What a node does about its tasks, with a fake clock: starts, restarts after a backoff,
/// removals, and the states it reports.
@Suite struct TaskPlanTests {
    let t0 = Date(timeIntervalSince1970: 1_000_000)

    func task(_ id: String, node: String = "n1", service: String = "s1", _ state: TaskState = .running) -> TaskRecord {
        TaskRecord(id: id, serviceID: service, serviceName: "web", slot: 1, nodeID: node, desiredState: state, created: t0)
    }

    func container(for t: TaskRecord?, name: String? = nil) -> ContainerRecord {
        ContainerRecord(id: "c-" + (name ?? t!.id), name: name ?? t!.containerName, created: t0, namespacePath: "/x", ownsNamespace: true,
                        command: [], detached: true, networks: [], publish: [], taskID: t?.id, serviceName: "web")
    }

    let service = ServiceRecord(id: "s1", name: "web", created: Date(timeIntervalSince1970: 0), updated: Date(timeIntervalSince1970: 0),
                                mode: .replicated, replicas: 1, endpointMode: .vip, networks: [], ports: [], command: [])

    @Test func backoffDoublesFromOneSecondAndStopsAtThirty() {
        #expect((1...7).map { TaskFailures.backoff(after: $0) } == [1, 2, 4, 8, 16, 30, 30])
        #expect(TaskFailures.backoff(after: 0) == 1)
        let f = TaskFailures(count: 3, lastAttempt: t0, reason: "x")
        #expect(!f.due(at: t0.addingTimeInterval(3.9)) && f.due(at: t0.addingTimeInterval(4)))
    }

    @Test func newTasksOfThisNodeStartAndOthersAreLeftAlone() {
        let mine = task("a"), other = task("b", node: "n2"), orphan = task("c", service: "gone"), draining = task("d", .shutdown)
        let plan = TaskPlan.make(nodeID: "n1", tasks: [mine, other, orphan, draining], services: [service], containers: [],
                                 isRunning: { _ in true }, failures: [:], now: t0)
        #expect(plan.start == [mine])
        #expect(plan.remove.isEmpty && plan.restart.isEmpty && plan.states.isEmpty)
    }

    @Test func aFailedStartWaitsOutItsBackoff() {
        let t = task("a")
        let failures = ["a": TaskFailures(count: 2, lastAttempt: t0, reason: "no address left")]
        let waiting = TaskPlan.make(nodeID: "n1", tasks: [t], services: [service], containers: [], isRunning: { _ in true },
                                    failures: failures, now: t0.addingTimeInterval(1.5))
        #expect(waiting.start.isEmpty && waiting.states == ["a": "failed: no address left"])
        let due = TaskPlan.make(nodeID: "n1", tasks: [t], services: [service], containers: [], isRunning: { _ in true },
                                failures: failures, now: t0.addingTimeInterval(2))
        #expect(due.start == [t] && due.states.isEmpty)
    }

    @Test func runningExitedAndShutdownContainersAndTheirRestarts() {
        let up = task("up"), ended = task("ended"), backingOff = task("wait"), stopping = task("stop", .shutdown)
        let containers = [up, ended, backingOff, stopping].map { container(for: $0) }
        let stopped: Set<String> = [ended.containerName, backingOff.containerName, stopping.containerName]
        let plan = TaskPlan.make(nodeID: "n1", tasks: [up, ended, backingOff, stopping], services: [service], containers: containers,
                                 isRunning: { !stopped.contains($0.name) },
                                 failures: ["wait": TaskFailures(count: 5, lastAttempt: t0, reason: "exited")], now: t0.addingTimeInterval(10))
        #expect(plan.states == ["up": "running", "ended": "exited", "wait": "exited", "stop": "shutdown"])
        // The first exit restarts at once; the fifth in a row waits 16 s; a task being shut down is not restarted.
        #expect(plan.restart == [ended.containerName])
        #expect(plan.start.isEmpty && plan.remove.isEmpty)
    }

    @Test func containersOfTasksNoLongerHereAreRemovedAndOthersKept() {
        let kept = task("kept"), moved = task("moved", node: "n2")
        let containers = [container(for: kept), container(for: moved), container(for: task("gone")), container(for: nil, name: "plain")]
        let plan = TaskPlan.make(nodeID: "n1", tasks: [kept, moved], services: [service], containers: containers,
                                 isRunning: { _ in true }, failures: [:], now: t0)
        #expect(plan.remove == [moved.containerName, task("gone").containerName])
        #expect(plan.states == ["kept": "running"])
    }
}
