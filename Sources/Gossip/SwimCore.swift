/// A member as this node sees it.
public struct Member: Sendable, Hashable, CustomStringConvertible {
    /// Unique node name.
    public var name: String
    /// Gossip address (UDP and TCP).
    public var address: NodeAddress
    /// Opaque metadata (serf tags).
    public var meta: [UInt8]
    /// Current state.
    public var state: MemberState
    /// Last known incarnation.
    public var incarnation: UInt32
    /// Versions the member speaks.
    public var versions: ProtocolVersions
    /// `name address state`.
    public var description: String { "\(name) \(address) \(state)" }
}

/// A change in membership, for the layer above.
public enum MemberEvent: Sendable, Hashable {
    /// A node became alive (first seen, or back from dead/left).
    case joined(Member)
    /// An alive node's metadata changed.
    case updated(Member)
    /// A node left on purpose.
    case left(Member)
    /// A node was declared dead after suspicion timed out.
    case failed(Member)
}

/// Identifies a timer the core asked for; hand it back to `onTimer` when it fires.
public enum SwimTimer: Sendable, Hashable {
    /// Start the next probe.
    case probe
    /// Run a gossip round.
    case gossip
    /// Run a push-pull sync.
    case pushPull
    /// Direct ack wait for probe `seq` ended: go indirect.
    case probeTimeout(seq: UInt32)
    /// The whole probe `seq` ended: suspect if still unanswered.
    case probeDeadline(seq: UInt32)
    /// An indirect ping we relay got no answer: nack the requester.
    case relayTimeout(seq: UInt32)
    /// Try to reconnect with one failed member.
    case reconnect
    /// Suspicion of `node` may have expired (token guards against stale timers).
    case suspicion(node: String, token: UInt64)
}

/// What the shell should do for the core.
public enum SwimDirective: Sendable, Hashable {
    /// Send one UDP packet holding these encoded messages (compound if several); add a CRC if `crc`.
    case sendPacket(to: NodeAddress, parts: [[UInt8]], crc: Bool)
    /// Call `onTimer(timer)` after `after`.
    case scheduleTimer(SwimTimer, after: Duration)
    /// Open a TCP stream to `to`, send `localState(join:)`, read the reply, feed `onPushPullReply`.
    case pushPull(to: NodeAddress, join: Bool)
    /// Send `ping` over TCP to `to` and feed `onTCPPingResult(seq:acked:)` before `timeout`.
    case tcpPing(to: NodeAddress, ping: PingMessage, timeout: Duration)
    /// Membership changed.
    case memberChanged(MemberEvent)
    /// A user message arrived (gossip or stream) for the layer above.
    case deliverUser([UInt8])
    /// The remote's delegate state from a push-pull, for the layer above.
    case mergeUserState([UInt8], join: Bool)
}

/// Counters the core keeps about protocol events.
public struct SwimCounters: Sendable, Equatable {
    /// Probes started.
    public var probes = 0
    /// Probes answered (directly or indirectly).
    public var probesAcked = 0
    /// Suspicions raised by this node's own probes.
    public var suspicionsRaised = 0
    /// Times this node refuted a suspicion or death of itself.
    public var refutations = 0
    /// Pings addressed to another node name (ignored).
    public var misaddressedPings = 0
    /// Acks/nacks for no pending probe (late or forged).
    public var unexpectedAcks = 0
    /// Push-pull states not merged because of incompatible versions.
    public var incompatibleStates = 0
    /// New members refused because `maxMembers` was reached.
    public var membersRefused = 0
    /// Broadcasts dropped because `maxQueuedBroadcasts` was reached.
    public var broadcastsDropped = 0
}

private struct Prng {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func below(_ n: Int) -> Int { n <= 0 ? 0 : Int(next() % UInt64(n)) }
    mutating func shuffle<T>(_ a: inout [T]) {
        guard a.count > 1 else { return }
        for i in stride(from: a.count - 1, to: 0, by: -1) { a.swapAt(i, below(i + 1)) }
    }
}

private struct MemberRecord {
    var member: Member
    var stateChange: Duration
}

private struct Probe {
    var target: String
    var sentAt: Duration
    var expectedNacks = 0
    var nacks = 0
    var acked = false
}

private struct Relay {
    var originalSeq: UInt32
    var requester: NodeAddress
    var wantNack: Bool
}

private struct Suspicion {
    var k: Int
    var n = 0
    var min: Duration
    var max: Duration
    var start: Duration
    var deadline: Duration
    var confirmations: Set<String>
    var token: UInt64
    var stateChange: Duration
}

private struct Broadcast {
    var name: String
    var bytes: [UInt8]
    var transmits: Int
    var id: UInt64
}

/// SWIM failure detection with Lifeguard, on memberlist's semantics, as a state machine without
/// I/O: every `on...` call takes the current time and returns directives for a shell.
public struct SwimCore: Sendable {
    /// Settings.
    public private(set) var config: SwimConfig
    /// Protocol counters.
    public private(set) var counters = SwimCounters()
    /// This node's incarnation number.
    public private(set) var incarnation: UInt32 = 0
    /// Whether `leave` was called.
    public private(set) var hasLeft = false
    /// Lifeguard local-health score (0 = healthy).
    public private(set) var healthScore = 0

    private var members: [String: MemberRecord] = [:]
    private var probeOrder: [String] = []
    private var probeIndex = 0
    private var seqNo: UInt32 = 0
    private var probes: [UInt32: Probe] = [:]
    private var relays: [UInt32: Relay] = [:]
    private var suspicions: [String: Suspicion] = [:]
    private var broadcasts: [Broadcast] = []
    private var broadcastID: UInt64 = 0
    private var token: UInt64 = 0
    private var rng: Prng
    private var started = false
    private var failed: [String: (address: NodeAddress, since: Duration)] = [:]

    /// Creates the core with only this node known (alive, incarnation 0 until `start`).
    public init(config: SwimConfig) throws {
        try config.validate()
        self.config = config
        rng = Prng(state: config.randomSeed)
    }

    // MARK: - Queries

    /// Every known member including this node, sorted by name.
    public func allMembers() -> [Member] { members.values.map(\.member).sorted { $0.name < $1.name } }

    /// The member named `name`, if known.
    public func member(named name: String) -> Member? { members[name]?.member }

    /// The member at `address`, if known.
    public func member(at address: NodeAddress) -> Member? { members.values.first { $0.member.address == address }?.member }

    /// Alive (and suspect) members other than this node.
    public var liveMembers: [Member] { allMembers().filter { $0.name != config.name && ($0.state == .alive || $0.state == .suspect) } }

    /// Number of broadcasts waiting to be gossiped.
    public var pendingBroadcasts: Int { broadcasts.count }

    /// Lifeguard multiplier applied to the probe interval and timeout now.
    public var awarenessMultiplier: Int { healthScore + 1 }

    // MARK: - Lifecycle

    /// Announces this node (incarnation 1) and starts the probe, gossip and push-pull timers.
    public mutating func start(now: Duration) -> [SwimDirective] {
        guard !started else { return [] }
        started = true
        incarnation = 1
        var out: [SwimDirective] = []
        let me = AliveMessage(incarnation: incarnation, node: config.name, address: config.advertise, meta: config.meta, versions: config.versions)
        aliveNode(me, bootstrap: true, now: now, out: &out)
        // Stagger the periodic work randomly within one interval like memberlist.
        out.append(.scheduleTimer(.probe, after: stagger(config.probeInterval)))
        out.append(.scheduleTimer(.gossip, after: stagger(config.gossipInterval)))
        if config.pushPullInterval > .zero { out.append(.scheduleTimer(.pushPull, after: stagger(config.pushPullInterval))) }
        if config.reconnectInterval > .zero { out.append(.scheduleTimer(.reconnect, after: config.reconnectInterval)) }
        return out
    }

    /// Joins through `seeds`: a push-pull (join = true) to each.
    public mutating func join(seeds: [NodeAddress]) -> [SwimDirective] {
        seeds.filter { $0 != config.advertise }.map { .pushPull(to: $0, join: true) }
    }

    /// Leaves on purpose: broadcasts `dead` from itself (a leave) and gossips it right away.
    public mutating func leave(now: Duration) -> [SwimDirective] {
        guard started, !hasLeft else { return [] }
        hasLeft = true
        var out: [SwimDirective] = []
        let d = AccusationMessage(incarnation: incarnation, node: config.name, from: config.name)
        deadNode(d, now: now, out: &out)
        gossipRound(now: now, out: &out)
        return out
    }

    /// Changes this node's metadata and announces it with a new incarnation.
    public mutating func updateMeta(_ meta: [UInt8], now: Duration) throws -> [SwimDirective] {
        guard meta.count <= 512 else { throw GossipError(.invalidConfiguration, "meta is \(meta.count) bytes; memberlist allows 512") }
        config.meta = meta
        incarnation &+= 1
        var out: [SwimDirective] = []
        let a = AliveMessage(incarnation: incarnation, node: config.name, address: config.advertise, meta: meta, versions: config.versions)
        aliveNode(a, bootstrap: true, now: now, out: &out)
        return out
    }

    /// Queues an opaque user message to piggyback on gossip (serf's "user broadcasts").
    public mutating func broadcastUser(_ payload: [UInt8]) {
        broadcastID &+= 1
        enqueue(name: "\u{0}user-\(broadcastID)", bytes: [MessageType.user.rawValue] + payload, invalidates: false)
    }

    // MARK: - Events

    /// Handles messages that arrived in one UDP packet from `from`.
    public mutating func onMessages(_ messages: [GossipMessage], from: NodeAddress, now: Duration) -> [SwimDirective] {
        var out: [SwimDirective] = []
        for m in messages { handle(m, from: from, now: now, out: &out) }
        return out
    }

    /// Handles a ping that arrived on a TCP stream; returns the ack to write back (nil: not for us).
    public mutating func onStreamPing(_ ping: PingMessage) -> GossipMessage? {
        guard ping.node.isEmpty || ping.node == config.name else {
            counters.misaddressedPings += 1
            return nil
        }
        return .ack(seqNo: ping.seqNo, payload: [])
    }

    /// A timer fired.
    public mutating func onTimer(_ timer: SwimTimer, now: Duration) -> [SwimDirective] {
        var out: [SwimDirective] = []
        switch timer {
        case .probe:
            if !hasLeft { probeNext(now: now, out: &out) }
            out.append(.scheduleTimer(.probe, after: config.probeInterval * awarenessMultiplier))
        case .gossip:
            gossipRound(now: now, out: &out)
            out.append(.scheduleTimer(.gossip, after: config.gossipInterval))
        case .pushPull:
            if !hasLeft, let peer = randomMembers(1, where: { $0.state == .alive }).first {
                out.append(.pushPull(to: peer.address, join: false))
            }
            out.append(.scheduleTimer(.pushPull, after: SwimMath.pushPullScale(config.pushPullInterval, nodes: members.count)))
        case .reconnect:
            failed = failed.filter { now - $0.value.since < config.reconnectTimeout }
            let names = failed.keys.sorted()
            if !hasLeft, !names.isEmpty, let f = failed[names[rng.below(names.count)]] {
                out.append(.pushPull(to: f.address, join: true))
            }
            out.append(.scheduleTimer(.reconnect, after: config.reconnectInterval))
        case .probeTimeout(let seq):
            probeTimedOut(seq, now: now, out: &out)
        case .probeDeadline(let seq):
            probeEnded(seq, now: now, out: &out)
        case .relayTimeout(let seq):
            if let r = relays.removeValue(forKey: seq), r.wantNack {
                send([GossipMessage.nack(seqNo: r.originalSeq).encode()], to: r.requester, out: &out)
            }
        case .suspicion(let node, let tok):
            guard let s = suspicions[node], s.token == tok, now >= s.deadline else { break }
            suspicions[node] = nil
            if let rec = members[node], rec.member.state == .suspect, rec.stateChange == s.stateChange {
                deadNode(AccusationMessage(incarnation: rec.member.incarnation, node: node, from: config.name), now: now, out: &out)
            }
        }
        return out
    }

    /// The result of a `.tcpPing` directive.
    public mutating func onTCPPingResult(seq: UInt32, acked: Bool, now: Duration) -> [SwimDirective] {
        guard acked, var p = probes[seq], !p.acked else { return [] }
        p.acked = true
        probes[seq] = p
        counters.probesAcked += 1
        return []
    }

    /// Our state for a push-pull (user state left empty for the shell to fill).
    public func localState(join: Bool) -> PushPullMessage {
        PushPullMessage(join: join, nodes: members.values.map {
            PushNodeState(name: $0.member.name, address: $0.member.address, meta: $0.member.meta, incarnation: $0.member.incarnation,
                          state: $0.member.state, versions: $0.member.versions)
        }.sorted { $0.name < $1.name })
    }

    /// Why merging `remote` would mix incompatible protocol or delegate versions (memberlist's
    /// `verifyProtocol`), or nil when it is safe. Every current version must lie inside the range
    /// all alive members understand.
    public func incompatibility(with remote: PushPullMessage) -> String? {
        var maxPMin: UInt8 = 0, minPMax: UInt8 = .max, maxDMin: UInt8 = 0, minDMax: UInt8 = .max
        func widen(_ v: ProtocolVersions) {
            maxPMin = max(maxPMin, v.protocolMin)
            minPMax = min(minPMax, v.protocolMax)
            maxDMin = max(maxDMin, v.delegateMin)
            minDMax = min(minDMax, v.delegateMax)
        }
        for r in remote.nodes where r.state == .alive && r.versions != .unknown { widen(r.versions) }
        for m in members.values where m.member.state == .alive { widen(m.member.versions) }
        let all = remote.nodes.map { ($0.name, $0.versions) } + members.values.map { ($0.member.name, $0.member.versions) }
        for (name, v) in all {
            if v.protocolCurrent < maxPMin || v.protocolCurrent > minPMax {
                return "node \(name) speaks memberlist protocol \(v.protocolCurrent), outside the cluster's common range \(maxPMin)...\(minPMax)"
            }
            if v.delegateCurrent < maxDMin || v.delegateCurrent > minDMax {
                return "node \(name) speaks delegate protocol \(v.delegateCurrent), outside the cluster's common range \(maxDMin)...\(minDMax); set SwimConfig.versions to match the cluster (.serfCompatible for serf, .plainMemberlist for plain memberlist)"
            }
        }
        return nil
    }

    /// A remote started a push-pull with us: returns our state (to send first) and merges theirs.
    /// Incompatible versions (see `incompatibility(with:)`) are not merged, as in memberlist.
    public mutating func onPushPullRequest(_ remote: PushPullMessage, now: Duration) -> (reply: PushPullMessage, directives: [SwimDirective]) {
        let reply = localState(join: false)
        if incompatibility(with: remote) != nil {
            counters.incompatibleStates += 1
            return (reply, [])
        }
        return (reply, merge(remote, now: now))
    }

    /// The reply to our push-pull arrived; incompatible versions are not merged (counted).
    public mutating func onPushPullReply(_ remote: PushPullMessage, join: Bool, now: Duration) -> [SwimDirective] {
        if incompatibility(with: remote) != nil {
            counters.incompatibleStates += 1
            return []
        }
        return merge(PushPullMessage(join: join, nodes: remote.nodes, userState: remote.userState), now: now)
    }

    // MARK: - Message handling

    private mutating func handle(_ m: GossipMessage, from: NodeAddress, now: Duration, out: inout [SwimDirective]) {
        switch m {
        case .ping(let p):
            guard p.node.isEmpty || p.node == config.name else {
                counters.misaddressedPings += 1
                return
            }
            send([GossipMessage.ack(seqNo: p.seqNo, payload: []).encode()], to: p.source ?? from, out: &out)
        case .indirectPing(let ind):
            seqNo &+= 1
            let local = seqNo
            relays[local] = Relay(originalSeq: ind.seqNo, requester: ind.source ?? from, wantNack: ind.nack)
            let ping = PingMessage(seqNo: local, node: ind.node, source: config.advertise, sourceNode: config.name)
            send([GossipMessage.ping(ping).encode()], to: ind.target, out: &out)
            out.append(.scheduleTimer(.relayTimeout(seq: local), after: config.probeTimeout))
        case .ack(let seq, _):
            if var p = probes[seq] {
                if !p.acked {
                    p.acked = true
                    counters.probesAcked += 1
                }
                probes[seq] = p
            } else if let r = relays.removeValue(forKey: seq) {
                send([GossipMessage.ack(seqNo: r.originalSeq, payload: []).encode()], to: r.requester, out: &out)
            } else {
                counters.unexpectedAcks += 1
            }
        case .nack(let seq):
            if var p = probes[seq] {
                p.nacks += 1
                probes[seq] = p
            } else {
                counters.unexpectedAcks += 1
            }
        case .suspect(let s): suspectNode(s, now: now, out: &out)
        case .alive(let a): aliveNode(a, bootstrap: false, now: now, out: &out)
        case .dead(let d): deadNode(d, now: now, out: &out)
        case .user(let b): out.append(.deliverUser(b))
        case .pushPull, .err: break
        }
    }

    // MARK: - Probing

    private mutating func probeNext(now: Duration, out: inout [SwimDirective]) {
        var checked = 0
        while checked <= probeOrder.count {
            if probeIndex >= probeOrder.count {
                resetProbeOrder(now: now)
                probeIndex = 0
                checked += 1
                if probeOrder.isEmpty { return }
                continue
            }
            let name = probeOrder[probeIndex]
            probeIndex += 1
            guard let rec = members[name], name != config.name,
                  rec.member.state == .alive || rec.member.state == .suspect else {
                checked += 1
                continue
            }
            probe(rec.member, now: now, out: &out)
            return
        }
    }

    private mutating func resetProbeOrder(now: Duration) {
        // Forget nodes dead or left for longer than gossipToTheDeadTime, then reshuffle.
        for (name, rec) in members where name != config.name {
            if rec.member.state == .dead || rec.member.state == .left, now - rec.stateChange > config.gossipToTheDeadTime {
                members[name] = nil
            }
        }
        probeOrder = members.keys.sorted()
        rng.shuffle(&probeOrder)
    }

    private mutating func probe(_ target: Member, now: Duration, out: inout [SwimDirective]) {
        seqNo &+= 1
        let seq = seqNo
        counters.probes += 1
        probes[seq] = Probe(target: target.name, sentAt: now)
        let ping = GossipMessage.ping(PingMessage(seqNo: seq, node: target.name, source: config.advertise, sourceNode: config.name))
        if target.state == .alive {
            send([ping.encode()], to: target.address, out: &out)
        } else {
            let s = GossipMessage.suspect(AccusationMessage(incarnation: target.incarnation, node: target.name, from: config.name))
            out.append(.sendPacket(to: target.address, parts: [ping.encode(), s.encode()], crc: target.versions.protocolMax >= 5))
        }
        out.append(.scheduleTimer(.probeTimeout(seq: seq), after: config.probeTimeout))
        out.append(.scheduleTimer(.probeDeadline(seq: seq), after: config.probeInterval * awarenessMultiplier))
    }

    private mutating func probeTimedOut(_ seq: UInt32, now: Duration, out: inout [SwimDirective]) {
        guard var p = probes[seq], !p.acked, let target = members[p.target]?.member else { return }
        let peers = randomMembers(config.indirectChecks) { $0.state == .alive && $0.name != target.name }
        for peer in peers {
            let wantNack = peer.versions.protocolMax >= 4
            if wantNack { p.expectedNacks += 1 }
            let ind = IndirectPingMessage(seqNo: seq, target: target.address, node: target.name, nack: wantNack,
                                          source: config.advertise, sourceNode: config.name)
            send([GossipMessage.indirectPing(ind).encode()], to: peer.address, out: &out)
        }
        probes[seq] = p
        if config.tcpPings, target.versions.protocolMax >= 3 {
            let remaining = p.sentAt + config.probeInterval * awarenessMultiplier - now
            let ping = PingMessage(seqNo: seq, node: target.name, source: config.advertise, sourceNode: config.name)
            out.append(.tcpPing(to: target.address, ping: ping, timeout: max(remaining, .milliseconds(1))))
        }
    }

    private mutating func probeEnded(_ seq: UInt32, now: Duration, out: inout [SwimDirective]) {
        guard let p = probes.removeValue(forKey: seq) else { return }
        if p.acked {
            applyHealth(-1)
            return
        }
        if p.expectedNacks > 0 {
            applyHealth(max(0, p.expectedNacks - p.nacks))
        } else {
            applyHealth(1)
        }
        guard let target = members[p.target]?.member else { return }
        counters.suspicionsRaised += 1
        suspectNode(AccusationMessage(incarnation: target.incarnation, node: target.name, from: config.name), now: now, out: &out)
    }

    private mutating func applyHealth(_ delta: Int) {
        healthScore = min(max(0, healthScore + delta), config.awarenessMaxMultiplier - 1)
    }

    // MARK: - State transitions (memberlist state.go semantics)

    private mutating func aliveNode(_ a: AliveMessage, bootstrap: Bool, now: Duration, out: inout [SwimDirective]) {
        if hasLeft, a.node == config.name { return }
        let v = a.versions
        if v != .unknown, v.protocolMin == 0 || v.protocolMax == 0 || v.protocolMin > v.protocolMax { return }
        var updatesNode = false
        var rec: MemberRecord
        if let existing = members[a.node] {
            rec = existing
            if rec.member.address != a.address {
                if rec.member.state == .left {
                    updatesNode = true
                } else {
                    return  // address conflict: keep what we have
                }
            }
        } else {
            guard members.count < config.maxMembers else {
                counters.membersRefused += 1
                return
            }
            rec = MemberRecord(member: Member(name: a.node, address: a.address, meta: a.meta, state: .dead, incarnation: 0, versions: a.versions),
                               stateChange: now)
            members[a.node] = rec
            // Insert at a random place in the probe order.
            probeOrder.append(a.node)
            if probeOrder.count > 1 { probeOrder.swapAt(probeOrder.count - 1, rng.below(probeOrder.count)) }
        }
        let isLocal = a.node == config.name
        let isNew = rec.member.incarnation == 0 && rec.member.state == .dead && !isLocal
        if a.incarnation <= rec.member.incarnation, !isLocal, !updatesNode, !isNew { return }
        if a.incarnation < rec.member.incarnation, isLocal { return }
        suspicions[a.node] = nil
        let oldState = rec.member.state
        let oldMeta = rec.member.meta
        if !bootstrap, isLocal {
            if a.incarnation == rec.member.incarnation, a.meta == rec.member.meta, a.versions == rec.member.versions { return }
            refute(a.incarnation, now: now, out: &out)
            return
        }
        enqueue(name: a.node, bytes: GossipMessage.alive(a).encode())
        rec.member.versions = a.versions
        rec.member.incarnation = a.incarnation
        rec.member.meta = a.meta
        rec.member.address = a.address
        failed[a.node] = nil
        if rec.member.state != .alive {
            rec.member.state = .alive
            rec.stateChange = now
        }
        members[a.node] = rec
        if oldState == .dead || oldState == .left {
            out.append(.memberChanged(.joined(rec.member)))
        } else if oldMeta != rec.member.meta {
            out.append(.memberChanged(.updated(rec.member)))
        }
    }

    private mutating func refute(_ accused: UInt32, now: Duration, out: inout [SwimDirective]) {
        incarnation &+= 1
        if accused >= incarnation { incarnation = accused &+ 1 }
        counters.refutations += 1
        applyHealth(1)
        if var me = members[config.name] {
            me.member.incarnation = incarnation
            members[config.name] = me
        }
        let a = AliveMessage(incarnation: incarnation, node: config.name, address: config.advertise, meta: config.meta, versions: config.versions)
        enqueue(name: config.name, bytes: GossipMessage.alive(a).encode())
    }

    private mutating func suspectNode(_ s: AccusationMessage, now: Duration, out: inout [SwimDirective]) {
        guard var rec = members[s.node] else { return }
        if s.incarnation < rec.member.incarnation { return }
        if var sus = suspicions[s.node] {
            // Lifeguard: independent confirmations shorten the timeout.
            if sus.n < sus.k, !sus.confirmations.contains(s.from) {
                sus.confirmations.insert(s.from)
                sus.n += 1
                let remaining = SwimMath.remainingSuspicionTime(confirmations: sus.n, expected: sus.k, elapsed: now - sus.start, min: sus.min, max: sus.max)
                token &+= 1
                sus.token = token
                sus.deadline = now + max(remaining, .zero)
                suspicions[s.node] = sus
                out.append(.scheduleTimer(.suspicion(node: s.node, token: sus.token), after: max(remaining, .zero)))
                enqueue(name: s.node, bytes: GossipMessage.suspect(s).encode())
            }
            return
        }
        guard rec.member.state == .alive else { return }
        if s.node == config.name {
            refute(s.incarnation, now: now, out: &out)
            return
        }
        enqueue(name: s.node, bytes: GossipMessage.suspect(s).encode())
        rec.member.incarnation = s.incarnation
        rec.member.state = .suspect
        rec.stateChange = now
        members[s.node] = rec
        let n = members.count
        var k = config.suspicionMult - 2
        if n - 2 < k { k = 0 }
        let minT = SwimMath.suspicionTimeout(mult: config.suspicionMult, nodes: n, interval: config.probeInterval)
        let maxT = minT * config.suspicionMaxTimeoutMult
        let timeout = k < 1 ? minT : maxT
        token &+= 1
        suspicions[s.node] = Suspicion(k: k, min: minT, max: maxT, start: now, deadline: now + timeout, confirmations: [s.from], token: token, stateChange: now)
        out.append(.scheduleTimer(.suspicion(node: s.node, token: token), after: timeout))
    }

    private mutating func deadNode(_ d: AccusationMessage, now: Duration, out: inout [SwimDirective]) {
        guard var rec = members[d.node] else { return }
        if d.incarnation < rec.member.incarnation { return }
        suspicions[d.node] = nil
        if rec.member.state == .dead || rec.member.state == .left { return }
        if d.node == config.name, !hasLeft {
            refute(d.incarnation, now: now, out: &out)
            return
        }
        enqueue(name: d.node, bytes: GossipMessage.dead(d).encode())
        rec.member.incarnation = d.incarnation
        rec.member.state = d.node == d.from ? .left : .dead
        rec.stateChange = now
        if rec.member.state == .dead { failed[d.node] = (rec.member.address, now) }
        members[d.node] = rec
        out.append(.memberChanged(rec.member.state == .left ? .left(rec.member) : .failed(rec.member)))
    }

    private mutating func merge(_ remote: PushPullMessage, now: Duration) -> [SwimDirective] {
        var out: [SwimDirective] = []
        for r in remote.nodes {
            switch r.state {
            case .alive:
                aliveNode(AliveMessage(incarnation: r.incarnation, node: r.name, address: r.address, meta: r.meta, versions: r.versions),
                          bootstrap: false, now: now, out: &out)
            case .left:
                deadNode(AccusationMessage(incarnation: r.incarnation, node: r.name, from: r.name), now: now, out: &out)
            case .dead, .suspect:
                suspectNode(AccusationMessage(incarnation: r.incarnation, node: r.name, from: config.name), now: now, out: &out)
            }
        }
        if !remote.userState.isEmpty { out.append(.mergeUserState(remote.userState, join: remote.join)) }
        return out
    }

    // MARK: - Gossip and broadcasts

    private mutating func gossipRound(now: Duration, out: inout [SwimDirective]) {
        let changes = members.mapValues(\.stateChange)
        let deadTime = config.gossipToTheDeadTime
        let targets = randomMembers(config.gossipNodes) { m in
            switch m.state {
            case .alive, .suspect: return true
            case .dead: return now - (changes[m.name] ?? .zero) <= deadTime
            case .left: return false
            }
        }
        let avail = config.udpBufferSize - 2 - config.encryptionOverhead
        for t in targets {
            let msgs = takeBroadcasts(overhead: 2, limit: avail)
            if msgs.isEmpty { return }
            out.append(.sendPacket(to: t.address, parts: msgs, crc: t.versions.protocolMax >= 5))
        }
    }

    private mutating func enqueue(name: String, bytes: [UInt8], invalidates: Bool = true) {
        if invalidates { broadcasts.removeAll { $0.name == name } }
        broadcastID &+= 1
        broadcasts.append(Broadcast(name: name, bytes: bytes, transmits: 0, id: broadcastID))
        if broadcasts.count > config.maxQueuedBroadcasts {
            // Drop the most-sent, oldest first (memberlist's TransmitLimitedQueue.Prune keeps the newest).
            let victim = broadcasts.indices.max {
                broadcasts[$0].transmits != broadcasts[$1].transmits ? broadcasts[$0].transmits < broadcasts[$1].transmits : broadcasts[$0].id > broadcasts[$1].id
            }!
            broadcasts.remove(at: victim)
            counters.broadcastsDropped += 1
        }
    }

    /// Takes broadcasts fewest-transmits first (newest first among equals) that fit in `limit`.
    private mutating func takeBroadcasts(overhead: Int, limit: Int) -> [[UInt8]] {
        guard !broadcasts.isEmpty else { return [] }
        let transmitLimit = SwimMath.retransmitLimit(mult: config.retransmitMult, nodes: members.count)
        let order = broadcasts.indices.sorted {
            broadcasts[$0].transmits != broadcasts[$1].transmits ? broadcasts[$0].transmits < broadcasts[$1].transmits : broadcasts[$0].id > broadcasts[$1].id
        }
        var used = 0
        var picked: [[UInt8]] = []
        var drop: Set<UInt64> = []
        for i in order {
            guard picked.count < 255 else { break }
            let b = broadcasts[i]
            guard used + overhead + b.bytes.count <= limit, b.bytes.count <= 65535 else { continue }
            used += overhead + b.bytes.count
            picked.append(b.bytes)
            broadcasts[i].transmits += 1
            if broadcasts[i].transmits >= transmitLimit { drop.insert(b.id) }
        }
        broadcasts.removeAll { drop.contains($0.id) }
        return picked
    }

    /// Sends messages to one address, piggybacking pending broadcasts like memberlist's `sendMsg`.
    private mutating func send(_ parts: [[UInt8]], to address: NodeAddress, out: inout [SwimDirective]) {
        let used = parts.reduce(0) { $0 + $1.count + 2 }
        let extra = takeBroadcasts(overhead: 2, limit: config.udpBufferSize - used - 2 - config.encryptionOverhead)
        let crc = (member(at: address)?.versions.protocolMax ?? 0) >= 5
        out.append(.sendPacket(to: address, parts: parts + extra, crc: crc))
    }

    private mutating func randomMembers(_ k: Int, where keep: (Member) -> Bool) -> [Member] {
        let candidates = members.values.map(\.member).filter { $0.name != config.name && keep($0) }.sorted { $0.name < $1.name }
        var shuffled = candidates
        rng.shuffle(&shuffled)
        return Array(shuffled.prefix(k))
    }

    private mutating func stagger(_ d: Duration) -> Duration {
        let ns = d.components.seconds * 1_000_000_000 + d.components.attoseconds / 1_000_000_000
        guard ns > 0 else { return d }
        return .nanoseconds(Int64(rng.below(Int(ns))))
    }
}
