import Foundation
import Testing
@testable import ClusterManager
import OverlayAPI
import OverlayModel

/// The scheduler core on made-up clusters with a fake clock: placement, spread, host-mode ports,
/// global services, moving tasks off a node that went down, and the drain.
@Suite struct SchedulerTests {
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)
    let scheduler = Scheduler(moveDelay: 10, startupGrace: 15, drain: 2)

    func node(_ name: String) -> NodeRecord {
        NodeRecord(id: "id-" + name, hostname: name, role: name == "m" ? .manager : .worker, status: .ready,
                   advertiseAddr: IPAddress("198.18.0.1")!, dataPathAddr: IPAddress("198.18.0.1")!, gossipPort: 7946, joined: t0,
                   certificateNotAfter: nil, encryption: nil)
    }

    func service(_ name: String, replicas: Int = 0, global: Bool = false, hostPort: Bool = false) -> ServiceRecord {
        ServiceRecord(id: "svc-" + name, name: name, created: t0, updated: t0, mode: global ? .global : .replicated,
                      replicas: replicas, endpointMode: .vip, networks: [],
                      ports: hostPort ? [ServicePort(protocol: .tcp, targetPort: 80, publishedPort: 8080, publishMode: .host)] : [],
                      sourceIP: nil, command: ["sleep", "infinity"])
    }

    /// A counter for task IDs, so plans compare exactly.
    final class IDs {
        var next = 0
        func make() -> String {
            next += 1
            return "task-\(next)"
        }
    }

    /// Runs rounds the way the manager does: apply each plan, carry `notReadySince` over.
    struct Cluster {
        var state: Scheduler.State
        let scheduler: Scheduler
        let ids = IDs()

        @discardableResult
        mutating func round(at now: Date) -> Scheduler.Plan {
            let plan = scheduler.plan(state, now: now, newID: ids.make)
            let changed = Dictionary((plan.shutDown + plan.created).map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
            var tasks = state.tasks.map { changed[$0.id] ?? $0 }
            tasks += plan.created
            tasks.removeAll { plan.forgotten.contains($0.id) }
            state.tasks = tasks
            state.notReadySince = plan.notReadySince
            return plan
        }

        func running(_ service: String) -> [TaskRecord] {
            state.tasks.filter { $0.serviceName == service && $0.desiredState == .running }
        }

        func perNode(_ service: String) -> [String: Int] {
            var n: [String: Int] = [:]
            for t in running(service) { n[t.nodeID, default: 0] += 1 }
            return n
        }
    }

    func cluster(_ nodes: [String], services: [ServiceRecord]) -> Cluster {
        let all = nodes.map(node)
        return Cluster(
            state: Scheduler.State(services: services, tasks: [], nodes: all, ready: Set(all.map(\.id)), notReadySince: [:],
                                   managerStarted: t0),
            scheduler: scheduler)
    }

    @Test func replicasSpreadEvenlyAndTheSecondRoundChangesNothing() {
        var c = cluster(["m", "a", "b"], services: [service("web", replicas: 7)])
        let plan = c.round(at: t0)
        #expect(plan.created.count == 7 && plan.shutDown.isEmpty)
        #expect(plan.created.map(\.slot).sorted() == Array(1...7))
        #expect(c.perNode("web").values.sorted() == [2, 2, 3])
        #expect(c.round(at: t0 + 1).isEmpty)
    }

    @Test func spreadCountsTheServiceFirstThenAllTasks() {
        // "a" already carries another service's tasks: the new service's first task goes elsewhere,
        // ties broken by hostname.
        var c = cluster(["a", "b", "c"], services: [service("db", replicas: 2)])
        c.round(at: t0)
        #expect(Set(c.running("db").map(\.nodeID)) == ["id-a", "id-b"])
        c.state.services.append(service("web", replicas: 1))
        c.round(at: t0 + 1)
        #expect(c.running("web").map(\.nodeID) == ["id-c"])
    }

    @Test func hostModePortsGetOneTaskPerNodeAndTheRestWait() {
        var c = cluster(["a", "b"], services: [service("edge", replicas: 3, hostPort: true)])
        let plan = c.round(at: t0)
        #expect(plan.created.count == 2)
        #expect(c.perNode("edge") == ["id-a": 1, "id-b": 1])
        // A third node arrives: the waiting slot goes there.
        c.state.nodes.append(node("c"))
        c.state.ready.insert("id-c")
        let later = c.round(at: t0 + 1)
        #expect(later.created.map(\.nodeID) == ["id-c"] && later.created.map(\.slot) == [3])
    }

    @Test func globalServicesRunOncePerReadyNode() {
        var c = cluster(["m", "a"], services: [service("agent", global: true)])
        c.round(at: t0)
        #expect(c.perNode("agent") == ["id-m": 1, "id-a": 1])
        #expect(c.running("agent").allSatisfy { $0.slot == 0 })
        c.state.nodes.append(node("b"))
        c.state.ready.insert("id-b")
        #expect(c.round(at: t0 + 1).created.map(\.nodeID) == ["id-b"])
        // A node removed from the swarm loses its task at once.
        c.state.nodes.removeAll { $0.id == "id-a" }
        c.state.ready.remove("id-a")
        let removed = c.round(at: t0 + 2)
        #expect(removed.shutDown.map(\.nodeID) == ["id-a"] && removed.created.isEmpty)
    }

    @Test func aPausedNodeKeepsItsTasksAndADrainedOneLosesThemToTheOthers() {
        var c = cluster(["a", "b", "c"], services: [service("web", replicas: 3), service("agent", global: true)])
        c.round(at: t0)
        #expect(c.perNode("web") == ["id-a": 1, "id-b": 1, "id-c": 1])
        func set(_ name: String, _ a: NodeAvailability) {
            if let i = c.state.nodes.firstIndex(where: { $0.hostname == name }) { c.state.nodes[i].availability = a }
        }
        // pause: what runs there stays; a new task goes elsewhere.
        set("c", .pause)
        #expect(c.round(at: t0 + 1).isEmpty)
        c.state.services[0].replicas = 4
        #expect(c.round(at: t0 + 2).created.map(\.nodeID) != ["id-c"])
        #expect(c.perNode("web")["id-c"] == 1 && c.perNode("agent")["id-c"] == 1)
        // drain: every task there is shut down; the replicated ones come back on the others at once.
        set("c", .drain)
        let drained = c.round(at: t0 + 3)
        #expect(Set(drained.shutDown.map(\.nodeID)) == ["id-c"] && drained.shutDown.count == 2)
        #expect(drained.created.count == 1 && drained.created[0].nodeID != "id-c")
        #expect(c.perNode("web")["id-c"] == nil && c.running("web").count == 4 && c.perNode("agent")["id-c"] == nil)
        // active again: the global service comes back there; replicated tasks do not move back.
        set("c", .active)
        let back = c.round(at: t0 + 4)
        #expect(back.created.map(\.nodeID) == ["id-c"] && back.created[0].serviceName == "agent" && back.shutDown.isEmpty)
    }

    @Test func tasksMoveOffANodeDownForTheMoveDelayAndNotBefore() {
        var c = cluster(["m", "a", "b"], services: [service("web", replicas: 3)])
        c.round(at: t0 + 20)   // past the startup grace
        let onB = c.running("web").filter { $0.nodeID == "id-b" }
        #expect(onB.count == 1)
        c.state.ready.remove("id-b")
        // Down for less than the move delay (a daemon restart): nothing moves.
        #expect(c.round(at: t0 + 21).isEmpty)
        #expect(c.state.notReadySince["id-b"] == t0 + 21)
        #expect(c.round(at: t0 + 30.9).isEmpty)
        // Past it: the task is shut down and its slot recreated on a ready node.
        let moved = c.round(at: t0 + 31)
        #expect(moved.shutDown.map(\.id) == onB.map(\.id))
        #expect(moved.created.count == 1 && moved.created[0].slot == onB[0].slot && moved.created[0].nodeID != "id-b")
        // The shut-down task drains for 2 s, then is forgotten.
        #expect(c.round(at: t0 + 32).forgotten.isEmpty)
        #expect(c.round(at: t0 + 33).forgotten == onB.map(\.id))
        #expect(!c.state.tasks.contains { $0.id == onB[0].id })
        // The node comes back: its clock is cleared, and nothing moves back (no rebalancing).
        c.state.ready.insert("id-b")
        let back = c.round(at: t0 + 40)
        #expect(back.isEmpty && back.notReadySince.isEmpty)
    }

    @Test func nothingMovesDuringTheManagersStartupGrace() {
        var c = cluster(["m", "a"], services: [service("web", replicas: 2)])
        c.round(at: t0)
        c.state.ready.remove("id-a")
        // Down for 12 s, but the manager started 12 s ago: gossip may not have found it yet.
        c.round(at: t0 + 0.5)
        #expect(c.round(at: t0 + 12.5).isEmpty)
        let moved = c.round(at: t0 + 15)
        #expect(moved.shutDown.count == 1 && moved.created.map(\.nodeID) == ["id-m"])
    }

    @Test func scalingDownShutsDownTheHighestSlotsAndARemovedServiceAllOfIt() {
        var c = cluster(["a", "b"], services: [service("web", replicas: 4)])
        c.round(at: t0)
        c.state.services[0].replicas = 2
        let down = c.round(at: t0 + 1)
        #expect(down.shutDown.map(\.slot).sorted() == [3, 4] && down.created.isEmpty)
        c.state.services = []
        #expect(c.round(at: t0 + 2).shutDown.map(\.slot).sorted() == [1, 2])
        // With no ready node at all, a new service's tasks wait instead of landing anywhere.
        c.state.ready = []
        c.state.services = [service("later", replicas: 2)]
        #expect(c.round(at: t0 + 3).created.isEmpty)
    }
}
