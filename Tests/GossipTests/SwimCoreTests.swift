import Testing
@testable import Gossip

/// Single-core tests with exact timer values: the directives are the observable behaviour.
@Suite struct SwimCoreTests {
    func core(_ name: String = "me", seed: UInt64 = 1) throws -> SwimCore {
        var c = try SwimCore(config: SwimConfig(name: name, advertise: SimNetwork.address(1), randomSeed: seed))
        _ = c.start(now: .zero)
        return c
    }

    func alive(_ name: String, _ i: Int, inc: UInt32 = 1, meta: [UInt8] = []) -> GossipMessage {
        .alive(AliveMessage(incarnation: inc, node: name, address: SimNetwork.address(i), meta: meta, versions: .serfCompatible))
    }

    func suspicionTimer(_ ds: [SwimDirective]) -> Duration? {
        for d in ds { if case .scheduleTimer(.suspicion, let after) = d { return after } }
        return nil
    }

    @Test func incompatibleVersionsAreNotMerged() throws {
        var c = try core()
        let plain = PushPullMessage(join: true, nodes: [PushNodeState(name: "docker1", address: SimNetwork.address(2), meta: [], incarnation: 1, state: .alive, versions: .plainMemberlist)])
        #expect(c.incompatibility(with: plain)?.contains("delegate protocol") == true)
        #expect(c.onPushPullReply(plain, join: true, now: .zero).isEmpty)
        #expect(c.member(named: "docker1") == nil)
        #expect(c.counters.incompatibleStates == 1)
        let serf = PushPullMessage(join: true, nodes: [PushNodeState(name: "serf1", address: SimNetwork.address(3), meta: [], incarnation: 1, state: .alive, versions: .serfCompatible)])
        #expect(c.incompatibility(with: serf) == nil)
        _ = c.onPushPullReply(serf, join: true, now: .zero)
        #expect(c.member(named: "serf1")?.state == .alive)
    }

    @Test func membersAndBroadcastsAreBounded() throws {
        var cfg = SwimConfig(name: "me", advertise: SimNetwork.address(1), randomSeed: 1)
        cfg.maxMembers = 10
        cfg.maxQueuedBroadcasts = 5
        var c = try SwimCore(config: cfg)
        _ = c.start(now: .zero)
        for i in 2 ... 50 { _ = c.onMessages([alive("n\(i)", i)], from: SimNetwork.address(i), now: .zero) }
        #expect(c.allMembers().count == 10)
        #expect(c.counters.membersRefused == 40)
        for i in 0 ..< 100 { c.broadcastUser([UInt8(i)]) }
        #expect(c.pendingBroadcasts == 5)
        #expect(c.counters.broadcastsDropped > 0)
        // The newest survive.
        let sent = c.onTimer(.gossip, now: .seconds(1)).compactMap { if case .sendPacket(_, let parts, _) = $0 { return parts } else { return nil } }.flatMap { $0 }
        #expect(sent.contains([MessageType.user.rawValue, 99]))
    }

    @Test func lifeguardConfirmationsShortenSuspicion() throws {
        var c = try core()
        for i in 2 ... 5 { _ = c.onMessages([alive("n\(i)", i)], from: SimNetwork.address(i), now: .zero) }
        // n = 5: min = 4 s * max(1, log10 5) = 4 s, max = 6 * min = 24 s, k = 4 - 2 = 2.
        let first = c.onMessages([.suspect(AccusationMessage(incarnation: 1, node: "n5", from: "n2"))], from: SimNetwork.address(2), now: .zero)
        #expect(suspicionTimer(first) == .seconds(24))
        #expect(c.member(named: "n5")?.state == .suspect)
        // One confirmation at t = 1 s: 24 - ln2/ln3 * 20 = 11.381 s (ms floor), minus 1 s elapsed.
        let second = c.onMessages([.suspect(AccusationMessage(incarnation: 1, node: "n5", from: "n3"))], from: SimNetwork.address(3), now: .seconds(1))
        #expect(suspicionTimer(second) == .milliseconds(10_381))
        // The same accuser again changes nothing.
        #expect(suspicionTimer(c.onMessages([.suspect(AccusationMessage(incarnation: 1, node: "n5", from: "n3"))], from: SimNetwork.address(3), now: .seconds(1))) == nil)
        // Second confirmation at t = 2 s: down to min (4 s) minus 2 s elapsed.
        let third = c.onMessages([.suspect(AccusationMessage(incarnation: 1, node: "n5", from: "n4"))], from: SimNetwork.address(4), now: .seconds(2))
        #expect(suspicionTimer(third) == .seconds(2))
        // k reached: more accusers are ignored.
        #expect(suspicionTimer(c.onMessages([.suspect(AccusationMessage(incarnation: 1, node: "n5", from: "me2"))], from: SimNetwork.address(4), now: .seconds(2))) == nil)
        // The timer fires: dead, with a failed event and a dead broadcast queued.
        var token: UInt64 = 0
        for d in third { if case .scheduleTimer(.suspicion(_, let t), _) = d { token = t } }
        let end = c.onTimer(.suspicion(node: "n5", token: token), now: .seconds(4))
        #expect(end.contains { if case .memberChanged(.failed(let m)) = $0 { return m.name == "n5" } else { return false } })
        #expect(c.member(named: "n5")?.state == .dead)
    }

    @Test func staleSuspicionTimerAndRefutationByAlive() throws {
        var c = try core()
        for i in 2 ... 3 { _ = c.onMessages([alive("n\(i)", i)], from: SimNetwork.address(i), now: .zero) }
        let s = c.onMessages([.suspect(AccusationMessage(incarnation: 1, node: "n3", from: "n2"))], from: SimNetwork.address(2), now: .zero)
        var token: UInt64 = 0
        for d in s { if case .scheduleTimer(.suspicion(_, let t), _) = d { token = t } }
        // n3 refutes with a higher incarnation before the timer.
        _ = c.onMessages([alive("n3", 3, inc: 2)], from: SimNetwork.address(3), now: .seconds(1))
        #expect(c.member(named: "n3")?.state == .alive)
        #expect(c.onTimer(.suspicion(node: "n3", token: token), now: .seconds(30)).isEmpty)
        #expect(c.member(named: "n3")?.state == .alive)
    }

    @Test func aliveRules() throws {
        var c = try core()
        _ = c.onMessages([alive("n2", 2, inc: 5)], from: SimNetwork.address(2), now: .zero)
        // Older or equal incarnations are ignored; a newer one with new meta is an update.
        #expect(c.onMessages([alive("n2", 2, inc: 4, meta: [9])], from: SimNetwork.address(2), now: .zero).isEmpty)
        let upd = c.onMessages([alive("n2", 2, inc: 6, meta: [9])], from: SimNetwork.address(2), now: .zero)
        #expect(upd.contains { if case .memberChanged(.updated(let m)) = $0 { return m.meta == [9] } else { return false } })
        // Another address for a live name is a conflict: ignored.
        _ = c.onMessages([alive("n2", 7, inc: 9)], from: SimNetwork.address(7), now: .zero)
        #expect(c.member(named: "n2")?.address == SimNetwork.address(2))
        // A node that left may come back at a new address.
        _ = c.onMessages([.dead(AccusationMessage(incarnation: 6, node: "n2", from: "n2"))], from: SimNetwork.address(2), now: .zero)
        #expect(c.member(named: "n2")?.state == .left)
        _ = c.onMessages([alive("n2", 7, inc: 7)], from: SimNetwork.address(7), now: .zero)
        #expect(c.member(named: "n2")?.address == SimNetwork.address(7))
        #expect(c.member(named: "n2")?.state == .alive)
        // Bad versions are refused; suspicion of unknown nodes is ignored.
        let bad = AliveMessage(incarnation: 1, node: "n9", address: SimNetwork.address(9), meta: [], versions: ProtocolVersions(protocolMin: 3, protocolMax: 2, protocolCurrent: 2, delegateMin: 2, delegateMax: 5, delegateCurrent: 5))
        _ = c.onMessages([.alive(bad)], from: SimNetwork.address(9), now: .zero)
        #expect(c.member(named: "n9") == nil)
        #expect(c.onMessages([.suspect(AccusationMessage(incarnation: 1, node: "ghost", from: "x"))], from: SimNetwork.address(9), now: .zero).isEmpty)
    }

    @Test func selfSuspicionIsRefutedAboveTheAccusedIncarnation() throws {
        var c = try core()
        _ = c.onMessages([alive("n2", 2)], from: SimNetwork.address(2), now: .zero)
        _ = c.onMessages([.suspect(AccusationMessage(incarnation: 41, node: "me", from: "n2"))], from: SimNetwork.address(2), now: .zero)
        #expect(c.incarnation == 42)
        #expect(c.member(named: "me")?.state == .alive)
        #expect(c.healthScore == 1)
        // The refutation rides on the next packet.
        let ds = c.onMessages([.ping(PingMessage(seqNo: 7, node: "me"))], from: SimNetwork.address(2), now: .zero)
        guard case .sendPacket(_, let parts, let crc)? = ds.first else { Issue.record("no packet"); return }
        #expect(crc)
        #expect(parts.contains { (try? PacketCodec.decode($0, keyring: nil).messages.first).flatMap { $0 }.map { if case .alive(let a) = $0 { return a.incarnation == 42 } else { return false } } ?? false })
    }

    @Test func probeCycleWithIndirectChecksNacksAndAwareness() throws {
        var c = try core()
        for i in 2 ... 5 { _ = c.onMessages([alive("n\(i)", i)], from: SimNetwork.address(i), now: .zero) }
        let p = c.onTimer(.probe, now: .seconds(1))
        var seq: UInt32 = 0, target: NodeAddress?
        for d in p { if case .scheduleTimer(.probeTimeout(let s), let after) = d { seq = s; #expect(after == .milliseconds(500)) } }
        for d in p { if case .sendPacket(let to, _, _) = d { target = to } }
        #expect(p.contains(.scheduleTimer(.probe, after: .seconds(1))))
        // No ack: 3 indirect pings (asking for nacks: pmax 5 >= 4) and a TCP ping.
        let ind = c.onTimer(.probeTimeout(seq: seq), now: .milliseconds(1500))
        let indirect = ind.filter { if case .sendPacket(let to, _, _) = $0 { return to != target } else { return false } }
        #expect(indirect.count == 3)
        #expect(ind.contains { if case .tcpPing(let to, _, let timeout) = $0 { return to == target && timeout == .milliseconds(500) } else { return false } })
        // Only one nack of three expected: health score rises by 2, the target becomes suspect.
        _ = c.onMessages([.nack(seqNo: seq)], from: SimNetwork.address(2), now: .milliseconds(1900))
        let end = c.onTimer(.probeDeadline(seq: seq), now: .seconds(2))
        #expect(c.healthScore == 2)
        #expect(suspicionTimer(end) != nil)
        // Lifeguard: the next probe waits probeInterval * (score + 1).
        #expect(c.onTimer(.probe, now: .seconds(2)).contains(.scheduleTimer(.probe, after: .seconds(3))))
    }
}

@Suite struct SwimCoreFuzzTests {
    @Test func randomMessagesKeepInvariants() throws {
        var rng = SeededRNG(seed: 2024)
        var c = try SwimCore(config: SwimConfig(name: "me", advertise: SimNetwork.address(1), randomSeed: 3))
        _ = c.start(now: .zero)
        var now = Duration.zero
        var lastIncarnation = c.incarnation
        let names = ["me", "a", "b", "c", "d"]
        for step in 0 ..< 5000 {
            now += .milliseconds(Int.random(in: 0 ... 300, using: &rng))
            let name = names.randomElement(using: &rng)!
            let inc = UInt32.random(in: 0 ... 20, using: &rng)
            let from = SimNetwork.address(Int.random(in: 1 ... 9, using: &rng))
            let msg: GossipMessage
            switch Int.random(in: 0 ..< 7, using: &rng) {
            case 0: msg = .alive(AliveMessage(incarnation: inc, node: name, address: SimNetwork.address(Int.random(in: 1 ... 9, using: &rng)), meta: [UInt8(step % 3)], versions: .serfCompatible))
            case 1: msg = .suspect(AccusationMessage(incarnation: inc, node: name, from: names.randomElement(using: &rng)!))
            case 2: msg = .dead(AccusationMessage(incarnation: inc, node: name, from: names.randomElement(using: &rng)!))
            case 3: msg = .ack(seqNo: UInt32.random(in: 0 ... 50, using: &rng), payload: [])
            case 4: msg = .nack(seqNo: UInt32.random(in: 0 ... 50, using: &rng))
            case 5: msg = .ping(PingMessage(seqNo: 1, node: name))
            default: msg = .indirectPing(IndirectPingMessage(seqNo: 9, target: from, node: name, nack: true))
            }
            func timers(_ ds: [SwimDirective]) -> [SwimTimer] {
                ds.compactMap { if case .scheduleTimer(let t, _) = $0 { return t } else { return nil } }
            }
            // Fire the timers the core asked for right away (not the periodic ones).
            var pending = timers(c.onMessages([msg], from: from, now: now))
            var fired = 0
            while let t = pending.popLast(), fired < 20 {
                fired += 1
                if t == .probe || t == .gossip || t == .pushPull || t == .reconnect { continue }
                pending += timers(c.onTimer(t, now: now))
            }
            let me = c.member(named: "me")
            #expect(me?.state == .alive, "step \(step): self is \(String(describing: me?.state))")
            #expect(c.incarnation >= lastIncarnation)
            lastIncarnation = c.incarnation
            #expect(c.allMembers().count <= names.count)
            #expect(c.healthScore >= 0 && c.healthScore < c.config.awarenessMaxMultiplier)
        }
    }
}
