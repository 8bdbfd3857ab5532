// gossip-sim: 1,000 SwimCores on a simulated lossy network with a fake clock.
//
//   swift build -c release --product gossip-sim && .build/release/gossip-sim [--nodes 1000] [--seed 1]
//
// Measures, for several packet-loss rates, (a) how long one update (a node's alive with a new
// incarnation and new meta) takes to reach 50% / 99% / 100% of the nodes, (b) how long a
// crashed node takes to be suspected by the first node and declared dead by all, and (c) false
// positives (live nodes declared dead) over 60 s of simulated time with no failure. The
// dissemination times are printed next to serf's convergence model.
//
// The network: every UDP packet goes through the real wire codec and is lost with probability
// `loss`, otherwise delivered after a uniform 0.5-2 ms. A TCP ping (memberlist's fallback probe)
// succeeds only if its four one-way segments (SYN, SYN-ACK, ping, ack) all get through on the
// first try, since a retransmission (Linux RTO >= 200 ms, SYN 1 s) would miss the probe
// deadline. Push-pull streams are delivered reliably (TCP) with the same latency.
import Foundation
import Gossip
import OverlayModel

// MARK: - Deterministic randomness

struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func chance(_ p: Double) -> Bool { p > 0 && Double(next() >> 11) / Double(1 << 53) < p }
}

// MARK: - Event queue (binary min-heap on time, then insertion order)

enum Action {
    case timer(Int, SwimTimer)
    case packet(to: Int, from: NodeAddress, bytes: [UInt8])
    case pushPullReply(to: Int, message: PushPullMessage, join: Bool)
    case tcpPingResult(to: Int, seq: UInt32, acked: Bool)
}

struct Event {
    var at: Int64  // nanoseconds
    var seq: Int
    var action: Action
    func before(_ o: Event) -> Bool { at != o.at ? at < o.at : seq < o.seq }
}

struct Heap {
    var items: [Event] = []
    var isEmpty: Bool { items.isEmpty }
    var first: Event? { items.first }
    mutating func push(_ e: Event) {
        items.append(e)
        var i = items.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            guard items[i].before(items[p]) else { break }
            items.swapAt(i, p)
            i = p
        }
    }
    mutating func pop() -> Event {
        let top = items[0]
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < items.count, items[l].before(items[m]) { m = l }
                if r < items.count, items[r].before(items[m]) { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        return top
    }
}

func nanos(_ d: Duration) -> Int64 { d.components.seconds * 1_000_000_000 + d.components.attoseconds / 1_000_000_000 }
func seconds(_ ns: Int64) -> Double { Double(ns) / 1e9 }

// MARK: - The simulated cluster

/// Settings every simulated node gets: memberlist's LAN defaults (probe 1 s, gossip 200 ms to
/// 3 nodes, retransmit mult 4), with a 64-broadcast queue cap (see `seed`).
/// With `gossipOnly`, probing and push-pull are off (probe interval one day), so only the gossip
/// rounds spread updates: the process serf's convergence model describes.
func nodeConfig(_ i: Int, seed: UInt64, gossipOnly: Bool) -> SwimConfig {
    var c = SwimConfig(name: name(i), advertise: address(i), randomSeed: seed)
    c.maxQueuedBroadcasts = 64
    if gossipOnly {
        c.probeInterval = .seconds(86400)
        c.pushPullInterval = .zero
        c.reconnectInterval = .zero
    }
    return c
}

func name(_ i: Int) -> String { "node-\(i)" }
func address(_ i: Int) -> NodeAddress { NodeAddress(ip: .v4(IPv4Address(10, 1, UInt8(i >> 8), UInt8(i & 255))), port: 7946) }
func index(of a: NodeAddress) -> Int? {
    guard case .v4(let v4) = a.ip else { return nil }
    return Int(v4.value & 0xffff)
}

struct Cluster {
    var cores: [SwimCore]
    var up: [Bool]
    var queue = Heap()
    var seq = 0
    var now: Int64 = 0
    var rng: SplitMix
    var loss = 0.0
    var packets = 0
    var lost = 0
    /// Per-node observer hook results.
    var failedEvents: [(at: Int64, observer: Int, node: String)] = []
    var updatedEvents: [(at: Int64, observer: Int, node: String)] = []
    var maxQueue = 0
    /// The node the last event was for.
    var lastNode = -1

    var count: Int { cores.count }

    /// A converged cluster: every core is started, then handed the full member list as a join
    /// push-pull reply, so all `n` know all `n` alive at incarnation 1 without simulating joins.
    /// Merging queues an alive broadcast per learned member (capped at `maxQueuedBroadcasts`);
    /// those are drained by answering pings (each ack piggybacks up to a packet's worth) whose
    /// packets are thrown away, so the
    /// experiments start from a quiet, converged cluster.
    static func converged(_ n: Int, seed: UInt64, gossipOnly: Bool = false) -> Cluster {
        var rng = SplitMix(state: seed)
        var cores = (0 ..< n).map { try! SwimCore(config: nodeConfig($0, seed: rng.next(), gossipOnly: gossipOnly)) }
        let everyone = PushPullMessage(join: true, nodes: (0 ..< n).map {
            PushNodeState(name: name($0), address: address($0), meta: [], incarnation: 1, state: .alive, versions: .serfCompatible)
        })
        var c = Cluster(cores: [], up: Array(repeating: true, count: n), rng: rng)
        for i in 0 ..< n {
            let start = cores[i].start(now: .zero)
            _ = cores[i].onPushPullReply(everyone, join: true, now: .zero)
            var rounds = 0
            let ping = GossipMessage.ping(PingMessage(seqNo: 1, node: name(i)))
            while cores[i].pendingBroadcasts > 0, rounds < 5000 {
                _ = cores[i].onMessages([ping], from: address((i + 1) % n), now: .zero)
                rounds += 1
            }
            c.cores.append(cores[i])
            for d in start { if case .scheduleTimer(let t, let after) = d { c.schedule(.timer(i, t), after: nanos(after)) } }
        }
        cores = []
        return c
    }

    mutating func schedule(_ a: Action, after: Int64) {
        seq += 1
        queue.push(Event(at: now + after, seq: seq, action: a))
    }

    mutating func latency() -> Int64 { 500_000 + Int64(rng.next() % 1_500_000) }

    mutating func apply(_ i: Int, _ ds: [SwimDirective]) {
        for d in ds {
            switch d {
            case .scheduleTimer(let t, let after):
                // A gossip round with nothing queued sends nothing: skip the call, keep the timer.
                schedule(.timer(i, t), after: nanos(after))
            case .sendPacket(let to, let parts, let crc):
                packets += 1
                if rng.chance(loss) { lost += 1; continue }
                guard let j = index(of: to) else { continue }
                let bytes = try! PacketCodec.encode(parts, crc: crc, keyring: nil)
                schedule(.packet(to: j, from: cores[i].config.advertise, bytes: bytes), after: latency())
            case .pushPull(let to, let join):
                guard let j = index(of: to), j < count, up[j] else { continue }
                let (reply, ds) = cores[j].onPushPullRequest(cores[i].localState(join: join), now: .nanoseconds(now))
                apply(j, ds)
                schedule(.pushPullReply(to: i, message: reply, join: join), after: 2 * latency())
            case .tcpPing(let to, let ping, let timeout):
                guard let j = index(of: to) else { continue }
                var ok = j < count && up[j] && cores[j].config.name == ping.node
                for _ in 0 ..< 4 where rng.chance(loss) { ok = false }
                let rtt = 4 * latency()
                if ok, rtt < nanos(timeout) {
                    schedule(.tcpPingResult(to: i, seq: ping.seqNo, acked: true), after: rtt)
                }
            case .memberChanged(let e):
                switch e {
                case .failed(let m): failedEvents.append((now, i, m.name))
                case .updated(let m): updatedEvents.append((now, i, m.name))
                default: break
                }
            case .deliverUser, .mergeUserState:
                break
            }
        }
    }

    /// Runs events until `until` (absolute ns) or `stop` returns true (checked after each event).
    mutating func run(until: Int64, stop: (inout Cluster) -> Bool = { _ in false }) {
        while let e = queue.first, e.at <= until {
            _ = queue.pop()
            now = e.at
            switch e.action {
            case .timer(let i, _), .packet(let i, _, _), .pushPullReply(let i, _, _), .tcpPingResult(let i, _, _): lastNode = i
            }
            switch e.action {
            case .timer(let i, let t):
                guard up[i] else { continue }
                if case .gossip = t, cores[i].pendingBroadcasts == 0 {
                    schedule(.timer(i, .gossip), after: nanos(cores[i].config.gossipInterval))
                    continue
                }
                apply(i, cores[i].onTimer(t, now: .nanoseconds(now)))
                maxQueue = max(maxQueue, cores[i].pendingBroadcasts)
            case .packet(let j, let from, let bytes):
                guard up[j], let p = try? PacketCodec.decode(bytes, keyring: nil) else { continue }
                apply(j, cores[j].onMessages(p.messages, from: from, now: .nanoseconds(now)))
            case .pushPullReply(let i, let message, let join):
                guard up[i] else { continue }
                apply(i, cores[i].onPushPullReply(message, join: join, now: .nanoseconds(now)))
            case .tcpPingResult(let i, let seq, let acked):
                guard up[i] else { continue }
                apply(i, cores[i].onTCPPingResult(seq: seq, acked: acked, now: .nanoseconds(now)))
            }
            if stop(&self) { return }
        }
        now = max(now, until)
    }

    var suspicionsRaised: Int { cores.reduce(0) { $0 + $1.counters.suspicionsRaised } }
    var refutations: Int { cores.reduce(0) { $0 + $1.counters.refutations } }
    var broadcastsDropped: Int { cores.reduce(0) { $0 + $1.counters.broadcastsDropped } }
}

// MARK: - serf's convergence model

/// serf's convergence simulator is a logistic epidemic: the infected fraction after `t` seconds is
/// `1 / (1 + (n-1) * exp(-b t))` with `b = fanout * (1 - loss) / interval`. Time to reach `fraction`:
/// `ln((n-1) * fraction / (1 - fraction)) / b`. For n = 1000, fanout 3, 200 ms this gives 1.07 s at
/// 0% loss and 2.15 s at 50% for 99.99%, the numbers serf publishes.
func modelTime(nodes n: Int, fanout: Double = 3, interval: Double = 0.2, loss: Double, fraction: Double) -> Double {
    let b = fanout * (1 - loss) / interval
    return log(Double(n - 1) * fraction / (1 - fraction)) / b
}

// MARK: - Experiments

/// Prints a line now (stdout may be a pipe).
func say(_ line: String) {
    print(line)
    fflush(nil)
}

var nodes = 1000
var seed: UInt64 = 1
/// Quick mode (default) shortens the slow high-loss runs; `--full` runs them all to the end (~9 min).
var full = false
var args = CommandLine.arguments.dropFirst()
while let flag = args.popFirst() {
    switch flag {
    case "--nodes": nodes = Int(args.popFirst() ?? "") ?? nodes
    case "--seed": seed = UInt64(args.popFirst() ?? "") ?? seed
    case "--full": full = true
    default:
        FileHandle.standardError.write(Data("usage: gossip-sim [--nodes N] [--seed S] [--full]\n".utf8))
        exit(2)
    }
}

let wall = ContinuousClock.now
let base = Cluster.converged(nodes, seed: seed)
let retransmits = SwimMath.retransmitLimit(mult: 4, nodes: nodes)
let suspicionMin = SwimMath.suspicionTimeout(mult: 4, nodes: nodes, interval: .seconds(1))
say("gossip-sim: \(nodes) nodes, memberlist LAN defaults (probe 1 s / timeout 500 ms, gossip 200 ms x 3, retransmit limit \(retransmits), suspicion \(suspicionMin)...\(suspicionMin * 6)), latency 0.5-2 ms, seed \(seed)")
say("converged cluster built in \(ContinuousClock.now - wall)")
say("")

/// Broadcast-queue pressure over all experiments (the cap is 64 per node).
var peakQueue = 0
var dropped = 0
@MainActor func account(_ c: Cluster) {
    peakQueue = max(peakQueue, c.maxQueue)
    dropped += c.broadcastsDropped - base.broadcastsDropped
}

func fmt(_ x: Double?) -> String { x.map { String(format: "%6.2f s", $0) } ?? "   never" }

struct UpdateResult { var t50: Double?; var t99: Double?; var t100: Double?; var reached: Int; var packets: Int; var lost: Int }

/// One node announces new meta (alive, incarnation + 1): time until 50%, 99%, 100% have it.
@MainActor func disseminate(in cluster: Cluster, loss: Double, limit: Int64 = 20) -> UpdateResult {
    var c = cluster
    c.loss = loss
    c.rng = SplitMix(state: seed &* 31 &+ UInt64(loss * 1000))
    c.run(until: 1_000_000_000)
    let origin = 0, start = c.now
    c.apply(origin, try! c.cores[origin].updateMeta([0xff, 0x80], now: .nanoseconds(c.now)))
    c.updatedEvents.removeAll()
    let p0 = c.packets, l0 = c.lost
    var have = Set([origin])
    var marks: [Int: Int64] = [:]
    let n = c.count
    c.run(until: start + limit * 1_000_000_000) { c in
        for e in c.updatedEvents where e.node == name(origin) {
            have.insert(e.observer)
            for (k, need) in [(50, n / 2), (99, (n * 99 + 99) / 100), (100, n)] where marks[k] == nil && have.count >= need {
                marks[k] = c.now - start
            }
        }
        c.updatedEvents.removeAll()
        return have.count >= n
    }
    account(c)
    return UpdateResult(t50: marks[50].map(seconds), t99: marks[99].map(seconds), t100: marks[100].map(seconds),
                        reached: have.count, packets: c.packets - p0, lost: c.lost - l0)
}

struct FailureResult {
    var firstSuspect: Double?; var firstDead: Double?; var allDead: Double?
    var deadCount: Int; var falseDeaths: Int; var falseObservations: Int; var suspicions: Int; var refutations: Int
}

/// A node stops (no more packets, timers or answers): first suspicion, first and last `failed`.
@MainActor func failure(loss: Double, duration: Int64 = 60) -> FailureResult {
    var c = base
    c.loss = loss
    c.rng = SplitMix(state: seed &* 77 &+ UInt64(loss * 1000))
    c.run(until: 2_000_000_000)
    let victim = nodes / 2, start = c.now
    let s0 = c.suspicionsRaised, r0 = c.refutations
    c.up[victim] = false
    c.failedEvents.removeAll()
    var firstSuspect: Int64?
    var dead = Set<Int>()
    var firstDead: Int64?, allDead: Int64?
    var falselyDead = Set<String>()
    var falseDeaths = 0
    let vname = name(victim)
    c.run(until: start + duration * 1_000_000_000) { c in
        // Only a prober can be first to suspect it (gossip then carries the suspicion on).
        if firstSuspect == nil, c.lastNode >= 0, c.cores[c.lastNode].member(named: vname)?.state == .suspect { firstSuspect = c.now - start }
        for e in c.failedEvents {
            if e.node == vname {
                dead.insert(e.observer)
                if firstDead == nil { firstDead = c.now - start }
            } else {
                falseDeaths += 1
                falselyDead.insert(e.node)
            }
        }
        c.failedEvents.removeAll()
        if allDead == nil, dead.count == c.count - 1 { allDead = c.now - start }
        // Quick mode stops 1 s after everyone declared it dead.
        return !full && allDead.map { c.now - start > $0 + 1_000_000_000 } ?? false
    }
    account(c)
    return FailureResult(firstSuspect: firstSuspect.map(seconds), firstDead: firstDead.map(seconds), allDead: allDead.map(seconds),
                         deadCount: dead.count, falseDeaths: falselyDead.count, falseObservations: falseDeaths,
                         suspicions: c.suspicionsRaised - s0, refutations: c.refutations - r0)
}

/// 60 s with no failure: live nodes wrongly declared dead, suspicions raised, refutations.
@MainActor func quiet(loss: Double, duration: Int64 = 60) -> (falseDeaths: Int, suspicions: Int, refutations: Int, packets: Int, lost: Int) {
    var c = base
    c.loss = loss
    c.rng = SplitMix(state: seed &* 131 &+ UInt64(loss * 1000))
    c.failedEvents.removeAll()
    c.run(until: duration * 1_000_000_000)
    account(c)
    return (Set(c.failedEvents.map(\.node)).count, c.suspicionsRaised, c.refutations, c.packets, c.lost)
}


let gossipBase = Cluster.converged(nodes, seed: seed, gossipOnly: true)
say("(a) one update (alive, new incarnation + meta) from one node, until 20 s\(full ? "" : " (full SWIM at 30% loss: 5 s; --full: 20 s)")")
say("    gossip only = probes and push-pull off (what serf's model describes); full = SWIM with probes (1 s), whose")
say("    acks also piggyback broadcasts but whose false suspicions compete for the same packets at high loss.")
say("    model = serf's convergence model: logistic, rate fanout*(1-loss)/interval, 99.99% of nodes")
say("loss | run         |    50%   |    99%   |   100%   | model 99.99% | ratio | within 20% | packets (lost)")
for loss in [0.0, 0.1, 0.3, 0.5] {
    let model = modelTime(nodes: nodes, loss: loss, fraction: 0.9999)
    // 50% is the model's comparison row; full SWIM there is a storm of false suspicions.
    for (label, cluster) in [("gossip only", gossipBase), ("full SWIM  ", base)] where loss < 0.5 || cluster.cores[0].config.pushPullInterval == .zero {
        let t0 = ContinuousClock.now
        let r = disseminate(in: cluster, loss: loss, limit: full || label == "gossip only" || loss < 0.3 ? 20 : 5)
        let ratio = r.t100.map { $0 / model }
        let within = ratio.map { abs($0 - 1) <= 0.2 ? "yes" : "no " } ?? "no "
        let reached = r.reached < nodes ? "  reached \(r.reached)/\(nodes)" : ""
        say(String(format: "%3.0f%% | %@ | %@ | %@ | %@ |    %6.2f s  | %@ | %@        | %d (%d)%@  [%@]",
                   loss * 100, label, fmt(r.t50), fmt(r.t99), fmt(r.t100), model,
                   ratio.map { String(format: "%5.2f", $0) } ?? "  -  ", within, r.packets, r.lost, reached,
                   "\(ContinuousClock.now - t0)"))
    }
}
say("")
say("(b) one node crashes (stops answering); suspicion min \(suspicionMin), max \(suspicionMin * 6), k = 2 confirmations")
say("    over 30 s\(full ? "" : " (quick mode: until 1 s after all declared it dead; 30% loss only with --full)")")
say("loss  | first suspects | first dead | all dead | dead/\(nodes - 1) | live nodes declared dead (by anyone) | suspicions | refutations")
for loss in full ? [0.0, 0.1, 0.3] : [0.0, 0.1] {
    let t0 = ContinuousClock.now
    let r = failure(loss: loss, duration: 30)
    say(String(format: "%3.0f%%  |   %@     | %@   | %@ | %4d     | %4d (%d declarations)              | %6d     | %6d  [%@]",
                 loss * 100, fmt(r.firstSuspect), fmt(r.firstDead), fmt(r.allDead), r.deadCount, r.falseDeaths, r.falseObservations, r.suspicions, r.refutations,
                 "\(ContinuousClock.now - t0)"))
}
say("")
let quietSeconds: Int64 = full ? 60 : 15
say("(c) no failure for \(quietSeconds) s of simulated time (--full: 60 s)")
say("loss  | live nodes declared dead | suspicions raised | refutations | packets (lost)")
for loss in [0.1] {
    let q = quiet(loss: loss, duration: quietSeconds)
    say(String(format: "%3.0f%%  | %4d                     | %6d            | %6d      | %d (%d)", loss * 100, q.falseDeaths, q.suspicions, q.refutations, q.packets, q.lost))
}
say("")
say("broadcast queue: peak \(peakQueue) per node (cap 64), \(dropped) dropped during the experiments")
say("total wall time \(ContinuousClock.now - wall)")
