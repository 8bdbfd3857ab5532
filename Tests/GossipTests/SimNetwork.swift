import OverlayCrypto
import OverlayModel
@testable import Gossip

/// A deterministic simulated network of SwimCores with a fake clock: packets go through the real
/// wire codecs, can be lost, delayed or partitioned; push-pull and TCP pings are simulated streams.
struct SimNetwork {
    enum Action {
        case timer(String, SwimTimer)
        case packet(from: NodeAddress, to: NodeAddress, bytes: [UInt8])
        case pushPullReply(to: String, bytes: [UInt8], join: Bool)
    }
    struct Event { var at: Duration; var seq: Int; var action: Action }
    struct Node {
        var core: SwimCore
        var up = true
        var events: [(Duration, MemberEvent)] = []
        var userMessages: [[UInt8]] = []
        var generation = 0
    }

    var now: Duration = .zero
    var nodes: [String: Node] = [:]
    var byAddress: [NodeAddress: String] = [:]
    var queue: [Event] = []
    var seq = 0
    var rng: SeededRNG
    var lossRate = 0.0
    var latency: Duration = .milliseconds(1)
    /// Pairs of names that cannot talk (both directions).
    var blocked: Set<[String]> = []
    var keyring: Keyring?
    var configure: (inout SwimConfig) -> Void = { _ in }
    var packetsSent = 0
    var packetsLost = 0

    init(seed: UInt64, keyring: Keyring? = nil) {
        rng = SeededRNG(seed: seed)
        self.keyring = keyring
    }

    static func address(_ i: Int) -> NodeAddress { NodeAddress(ip: .v4(IPv4Address(10, 0, 0, UInt8(i))), port: 7946) }

    mutating func addNode(_ name: String, index: Int, joining seed: NodeAddress? = nil) {
        var cfg = SwimConfig(name: name, advertise: Self.address(index), randomSeed: rng.next())
        if keyring != nil { cfg.encryptionOverhead = PayloadCrypto.overhead }
        configure(&cfg)
        let core = try! SwimCore(config: cfg)
        var node = Node(core: core)
        if let old = nodes[name] { node.generation = old.generation + 1; node.events = old.events }
        nodes[name] = node
        byAddress[cfg.advertise] = name
        var ds = nodes[name]!.core.start(now: now)
        if let s = seed { ds += nodes[name]!.core.join(seeds: [s]) }
        apply(name, ds)
    }

    func canTalk(_ a: String, _ b: String) -> Bool {
        !blocked.contains([a, b].sorted()) && (nodes[a]?.up ?? false) && (nodes[b]?.up ?? false)
    }

    mutating func partition(_ left: [String], _ right: [String]) {
        for a in left { for b in right { blocked.insert([a, b].sorted()) } }
    }

    mutating func schedule(_ action: Action, after: Duration) {
        seq += 1
        let e = Event(at: now + after, seq: seq, action: action)
        var lo = 0, hi = queue.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if (queue[mid].at, queue[mid].seq) < (e.at, e.seq) { lo = mid + 1 } else { hi = mid }
        }
        queue.insert(e, at: lo)
    }

    mutating func apply(_ name: String, _ directives: [SwimDirective]) {
        for d in directives {
            switch d {
            case .scheduleTimer(let t, let after):
                schedule(.timer(name, t), after: after)
            case .sendPacket(let to, let parts, let crc):
                let bytes = try! PacketCodec.encode(parts, crc: crc, keyring: keyring)
                packetsSent += 1
                if Double.random(in: 0 ..< 1, using: &rng) < lossRate {
                    packetsLost += 1
                    continue
                }
                schedule(.packet(from: nodes[name]!.core.config.advertise, to: to, bytes: bytes), after: latency)
            case .pushPull(let to, let join):
                guard let target = byAddress[to], canTalk(name, target) else { continue }
                let local = nodes[name]!.core.localState(join: join)
                let req = try! StreamCodec.encode(.pushPull(local), keyring: keyring)
                guard case .message(.pushPull(let remote), _) = try! StreamCodec.decode(req, keyring: keyring) else { fatalError("stream codec") }
                let (reply, ds) = nodes[target]!.core.onPushPullRequest(remote, now: now)
                apply(target, ds)
                let replyBytes = try! StreamCodec.encode(.pushPull(reply), keyring: keyring)
                schedule(.pushPullReply(to: name, bytes: replyBytes, join: join), after: latency * 2)
            case .tcpPing(let to, let ping, _):
                let ok = byAddress[to].map { canTalk(name, $0) && nodes[$0]!.core.config.name == ping.node } ?? false
                apply(name, nodes[name]!.core.onTCPPingResult(seq: ping.seqNo, acked: ok, now: now))
            case .memberChanged(let e):
                nodes[name]!.events.append((now, e))
            case .deliverUser(let b):
                nodes[name]!.userMessages.append(b)
            case .mergeUserState:
                break
            }
        }
    }

    mutating func run(for duration: Duration) {
        let end = now + duration
        while let e = queue.first, e.at <= end {
            queue.removeFirst()
            now = e.at
            switch e.action {
            case .timer(let name, let t):
                guard nodes[name]?.up == true else { continue }
                let ds = nodes[name]!.core.onTimer(t, now: now)
                apply(name, ds)
            case .packet(let from, let to, let bytes):
                guard let dst = byAddress[to], let src = byAddress[from], canTalk(src, dst) else { continue }
                guard let p = try? PacketCodec.decode(bytes, keyring: keyring) else { fatalError("undecodable packet from \(src)") }
                let ds = nodes[dst]!.core.onMessages(p.messages, from: from, now: now)
                apply(dst, ds)
            case .pushPullReply(let name, let bytes, let join):
                guard nodes[name]?.up == true else { continue }
                guard case .message(.pushPull(let remote), _) = try! StreamCodec.decode(bytes, keyring: keyring) else { fatalError("stream codec") }
                apply(name, nodes[name]!.core.onPushPullReply(remote, join: join, now: now))
            }
        }
        now = end
    }

    mutating func kill(_ name: String) {
        nodes[name]!.up = false
    }

    /// Drops queued timers of a killed node so a restarted one starts clean.
    mutating func restart(_ name: String, index: Int, joining seed: NodeAddress) {
        queue.removeAll { if case .timer(let n, _) = $0.action { return n == name } else { return false } }
        addNode(name, index: index, joining: seed)
    }

    func view(_ observer: String, of target: String) -> MemberState? {
        nodes[observer]?.core.member(named: target)?.state
    }

    /// Names of running nodes.
    var upNames: [String] { nodes.filter { $0.value.up }.map(\.key).sorted() }

    func allSee(_ target: String, as state: MemberState, among observers: [String]? = nil) -> Bool {
        (observers ?? upNames).filter { $0 != target }.allSatisfy { view($0, of: target) == state }
    }

    func firstEvent(_ observer: String, matching: (MemberEvent) -> Bool, after: Duration = .zero) -> Duration? {
        nodes[observer]?.events.first { $0.0 >= after && matching($0.1) }?.0
    }
}

func isFailed(_ name: String) -> (MemberEvent) -> Bool {
    { if case .failed(let m) = $0 { return m.name == name } else { return false } }
}

func isLeft(_ name: String) -> (MemberEvent) -> Bool {
    { if case .left(let m) = $0 { return m.name == name } else { return false } }
}
