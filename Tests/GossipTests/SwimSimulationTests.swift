import Foundation
import Testing
import OverlayCrypto
@testable import Gossip

private let names = (1 ... 5).map { "node\($0)" }

private func cluster(seed: UInt64, count: Int = 5, keyring: Keyring? = nil, configure: @escaping (inout SwimConfig) -> Void = { _ in }) -> SimNetwork {
    var sim = SimNetwork(seed: seed, keyring: keyring)
    sim.configure = configure
    sim.addNode("node1", index: 1)
    for i in 2 ... count { sim.addNode("node\(i)", index: i, joining: SimNetwork.address(1)) }
    return sim
}

@Suite struct SwimSimulationTests {
    @Test func joinConvergesEverywhere() {
        var sim = cluster(seed: 1)
        sim.run(for: .seconds(3))
        for a in names {
            #expect(sim.nodes[a]!.core.allMembers().count == 5)
            for b in names { #expect(sim.view(a, of: b) == .alive, "\(a) sees \(b) as \(String(describing: sim.view(a, of: b)))") }
        }
        // Quiet cluster: broadcasts drain after the retransmit limit.
        sim.run(for: .seconds(20))
        #expect(names.allSatisfy { sim.nodes[$0]!.core.pendingBroadcasts == 0 })
        #expect(names.allSatisfy { sim.nodes[$0]!.core.counters.suspicionsRaised == 0 })
    }

    @Test func joinWorksEncrypted() throws {
        var sim = cluster(seed: 2, keyring: try Keyring(primary: SecretKey(bytes: Array(0 ..< 32))))
        sim.run(for: .seconds(3))
        for a in names { for b in names { #expect(sim.view(a, of: b) == .alive) } }
    }

    @Test func failureIsDetectedWithinTheSuspicionBounds() {
        var sim = cluster(seed: 3)
        sim.run(for: .seconds(5))
        let killedAt = sim.now
        sim.kill("node5")
        sim.run(for: .seconds(30))
        let others = Array(names.dropLast())
        // n = 5: min suspicion = 4 s * max(1, log10 5) = 4 s, max = 24 s; k = 2 confirmations.
        for o in others {
            guard let t = sim.firstEvent(o, matching: isFailed("node5"), after: killedAt) else {
                Issue.record("\(o) never marked node5 failed"); continue
            }
            let elapsed = t - killedAt
            #expect(elapsed >= .seconds(4), "\(o) declared node5 dead after \(elapsed), before the minimum suspicion")
            #expect(elapsed <= .seconds(20), "\(o) took \(elapsed)")
            #expect(sim.view(o, of: "node5") == .dead)
        }
        // No one else was declared failed.
        for o in others { for p in others { #expect(sim.view(o, of: p) == .alive) } }
    }

    @Test func twoNodesDetectFailureAfterProbeAndMinimumSuspicion() {
        var sim = cluster(seed: 4, count: 2)
        sim.run(for: .seconds(3))
        let killedAt = sim.now
        sim.kill("node2")
        sim.run(for: .seconds(15))
        let t = sim.firstEvent("node1", matching: isFailed("node2"), after: killedAt)
        #expect(t != nil)
        if let t {
            // One probe round (<= 1 s + 1 s interval) plus 4 s suspicion (k = 0 with two nodes).
            #expect(t - killedAt >= .seconds(4) && t - killedAt <= .seconds(7), "took \(t - killedAt)")
        }
    }

    @Test func suspectedNodeRefutes() {
        var sim = cluster(seed: 5)
        sim.run(for: .seconds(3))
        let before = sim.nodes["node3"]!.core.incarnation
        // node1 hears a (false) suspicion of node3 and spreads it.
        let forged = GossipMessage.suspect(AccusationMessage(incarnation: before, node: "node3", from: "node4"))
        sim.apply("node1", sim.nodes["node1"]!.core.onMessages([forged], from: SimNetwork.address(4), now: sim.now))
        #expect(sim.view("node1", of: "node3") == .suspect)
        sim.run(for: .seconds(30))
        #expect(sim.nodes["node3"]!.core.incarnation > before)
        #expect(sim.nodes["node3"]!.core.counters.refutations >= 1)
        for o in names { #expect(sim.view(o, of: "node3") == .alive) }
        for o in names { #expect(sim.firstEvent(o, matching: isFailed("node3")) == nil) }
    }

    @Test func forgedDeathOfSelfIsRefuted() {
        var sim = cluster(seed: 6)
        sim.run(for: .seconds(3))
        let inc = sim.nodes["node2"]!.core.incarnation
        let forged = GossipMessage.dead(AccusationMessage(incarnation: inc, node: "node2", from: "node9"))
        sim.apply("node2", sim.nodes["node2"]!.core.onMessages([forged], from: SimNetwork.address(1), now: sim.now))
        #expect(sim.nodes["node2"]!.core.incarnation > inc)
        sim.run(for: .seconds(5))
        for o in names { #expect(sim.view(o, of: "node2") == .alive) }
    }

    @Test(arguments: [Duration.seconds(15), .seconds(45)])
    func partitionHeals(lasting: Duration) {
        // 15 s: both sides still remember each other as dead; 45 s: dead members were forgotten
        // (gossipToTheDeadTime 30 s) and only the reconnect loop brings them back.
        var sim = cluster(seed: 7) { $0.pushPullInterval = .seconds(5); $0.reconnectInterval = .seconds(10) }
        sim.run(for: .seconds(5))
        sim.partition(["node1", "node2", "node3"], ["node4", "node5"])
        sim.run(for: lasting)
        #expect(sim.view("node1", of: "node4") != .alive)
        #expect(sim.view("node5", of: "node2") != .alive)
        #expect(sim.view("node4", of: "node5") == .alive)
        sim.blocked = []
        // Dead members are forgotten after 30 s; push-pull (every 5 s) and refutation bring them back.
        sim.run(for: .seconds(60))
        for a in names { for b in names { #expect(sim.view(a, of: b) == .alive, "\(a) sees \(b) as \(String(describing: sim.view(a, of: b)))") } }
    }

    @Test func lossyNetworkCausesNoFalseFailures() {
        var sim = cluster(seed: 8) { $0.tcpPings = false }
        sim.run(for: .seconds(5))
        sim.lossRate = 0.10
        sim.run(for: .seconds(120))
        #expect(sim.packetsLost > 100)
        for o in names { for p in names { #expect(sim.firstEvent(o, matching: isFailed(p)) == nil, "\(o) failed \(p)") } }
    }

    @Test func leaveIsReportedAsLeftNotFailed() {
        var sim = cluster(seed: 9)
        sim.run(for: .seconds(3))
        sim.apply("node4", sim.nodes["node4"]!.core.leave(now: sim.now))
        sim.run(for: .seconds(1))
        sim.kill("node4")
        sim.run(for: .seconds(10))
        for o in names where o != "node4" {
            #expect(sim.view(o, of: "node4") == .left)
            #expect(sim.firstEvent(o, matching: isLeft("node4")) != nil)
            #expect(sim.firstEvent(o, matching: isFailed("node4")) == nil)
        }
    }

    @Test func restartedNodeRejoins() {
        var sim = cluster(seed: 10)
        sim.run(for: .seconds(3))
        sim.kill("node3")
        sim.run(for: .seconds(20))
        #expect(sim.allSee("node3", as: .dead))
        sim.restart("node3", index: 3, joining: SimNetwork.address(1))
        sim.run(for: .seconds(5))
        for o in names { #expect(sim.view(o, of: "node3") == .alive) }
        // The restarted node had to outbid its old incarnation.
        #expect(sim.nodes["node3"]!.core.incarnation > 1)
    }

    @Test func userBroadcastsReachEveryone() {
        var sim = cluster(seed: 11)
        sim.run(for: .seconds(3))
        sim.nodes["node2"]!.core.broadcastUser([0xde, 0xad])
        sim.run(for: .seconds(3))
        // Each broadcast goes out retransmitMult * ceil(log10(n+1)) = 4 times to random members,
        // so with 4 peers most (usually all) hear it; serf adds its own anti-entropy on top.
        let heard = names.filter { $0 != "node2" && sim.nodes[$0]!.userMessages.contains([0xde, 0xad]) }
        #expect(heard.count >= 3)
    }

    @Test func misaddressedPingIsIgnoredAndLifeguardScoreMoves() throws {
        var core = try SwimCore(config: SwimConfig(name: "me", advertise: SimNetwork.address(1), randomSeed: 1))
        _ = core.start(now: .zero)
        let ds = core.onMessages([.ping(PingMessage(seqNo: 1, node: "someone-else"))], from: SimNetwork.address(2), now: .zero)
        #expect(ds.isEmpty)
        #expect(core.counters.misaddressedPings == 1)
        let ack = core.onMessages([.ping(PingMessage(seqNo: 2, node: "me"))], from: SimNetwork.address(2), now: .zero)
        #expect(ack.contains { if case .sendPacket(let to, let parts, _) = $0 { return to == SimNetwork.address(2) && parts.first == GossipMessage.ack(seqNo: 2, payload: []).encode() } else { return false } })
        // A node whose probes go unanswered raises its health score, stretching its probe interval.
        var sim = cluster(seed: 12, count: 3) { $0.tcpPings = false }
        sim.run(for: .seconds(3))
        sim.partition(["node1"], ["node2", "node3"])
        sim.run(for: .seconds(3))
        #expect(sim.nodes["node1"]!.core.healthScore > 0)
    }
}

@Suite struct LargerClusterTests {
    @Test func thirtyNodesConvergeAndDetectThreeFailures() {
        var sim = SimNetwork(seed: 30)
        sim.addNode("n01", index: 1)
        let all = (1 ... 30).map { String(format: "n%02d", $0) }
        for i in 2 ... 30 {
            sim.run(for: .milliseconds(100))
            sim.addNode(all[i - 1], index: i, joining: SimNetwork.address(Int.random(in: 1 ..< i, using: &sim.rng)))
        }
        sim.run(for: .seconds(10))
        for a in all { #expect(sim.nodes[a]!.core.allMembers().filter { $0.state == .alive }.count == 30, "\(a) has not converged") }
        let killedAt = sim.now
        for v in ["n07", "n18", "n29"] { sim.kill(v) }
        // n = 30: min suspicion = 4 s * log10(30) = 5.9 s; with k = 2 confirmations it ends near min.
        sim.run(for: .seconds(30))
        for a in all where !["n07", "n18", "n29"].contains(a) {
            for v in ["n07", "n18", "n29"] {
                #expect(sim.view(a, of: v) == .dead, "\(a) sees \(v) as \(String(describing: sim.view(a, of: v)))")
                if let t = sim.firstEvent(a, matching: isFailed(v), after: killedAt) {
                    #expect(t - killedAt >= .milliseconds(5_900))
                }
            }
        }
        // Nobody alive was declared dead.
        for a in all where !["n07", "n18", "n29"].contains(a) {
            for b in all where !["n07", "n18", "n29"].contains(b) { #expect(sim.firstEvent(a, matching: isFailed(b)) == nil) }
        }
    }
}
