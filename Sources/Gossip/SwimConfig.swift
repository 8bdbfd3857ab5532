/// Settings for one SWIM/Lifeguard member; defaults are memberlist's `DefaultLANConfig`.
public struct SwimConfig: Sendable, Equatable {
    /// This node's unique name in the cluster.
    public var name: String
    /// Address and port other nodes use to reach this node (UDP and TCP).
    public var advertise: NodeAddress
    /// Opaque metadata carried in `alive` (serf reads tags from it; see `SerfTags`). At most 512 bytes.
    public var meta: [UInt8]
    /// Versions advertised in `Vsn`.
    public var versions: ProtocolVersions
    /// Time between failure probes (1 s).
    public var probeInterval: Duration
    /// How long to wait for a direct ack before asking others (500 ms).
    public var probeTimeout: Duration
    /// Members asked to probe indirectly (3).
    public var indirectChecks: Int
    /// Members gossiped to per gossip round (3).
    public var gossipNodes: Int
    /// Time between gossip rounds (200 ms).
    public var gossipInterval: Duration
    /// Time between push-pull anti-entropy syncs (30 s); zero disables them.
    public var pushPullInterval: Duration
    /// Suspicion timeout multiplier (4).
    public var suspicionMult: Int
    /// Upper bound on the suspicion timeout as a multiple of the lower bound (6).
    public var suspicionMaxTimeoutMult: Int
    /// Broadcast retransmit multiplier (4): each broadcast goes out `mult * ceil(log10(n+1))` times.
    public var retransmitMult: Int
    /// Lifeguard local health: probe interval and timeout stretch up to this multiple (8).
    public var awarenessMaxMultiplier: Int
    /// How long dead nodes still receive gossip and stay listed (30 s).
    public var gossipToTheDeadTime: Duration
    /// Largest UDP payload built (1400).
    public var udpBufferSize: Int
    /// Bytes encryption adds to each packet (0, or `PayloadCrypto.overhead` when a keyring is used).
    public var encryptionOverhead: Int
    /// Whether to fall back to a TCP ping when UDP probes fail (memberlist does, protocol >= 3).
    public var tcpPings: Bool
    /// How often to try a push-pull with one failed member so healed partitions merge again
    /// (serf's `ReconnectInterval`, 30 s); zero disables it.
    public var reconnectInterval: Duration
    /// How long failed members are retried before being forgotten (serf's 24 h).
    public var reconnectTimeout: Duration
    /// Most members remembered; alive messages for new names beyond this are ignored (and counted),
    /// so an unauthenticated flood cannot grow memory without bound (10 000).
    public var maxMembers: Int
    /// Most broadcasts queued for gossip; beyond it the most-sent (then oldest) are dropped (4096).
    public var maxQueuedBroadcasts: Int
    /// Seed for the member shuffles and random picks (tests pass a fixed one).
    public var randomSeed: UInt64

    /// A configuration with memberlist's LAN defaults.
    public init(name: String, advertise: NodeAddress, meta: [UInt8] = [], versions: ProtocolVersions = .serfCompatible,
                randomSeed: UInt64 = UInt64.random(in: .min ... .max)) {
        self.name = name
        self.advertise = advertise
        self.meta = meta
        self.versions = versions
        probeInterval = .seconds(1)
        probeTimeout = .milliseconds(500)
        indirectChecks = 3
        gossipNodes = 3
        gossipInterval = .milliseconds(200)
        pushPullInterval = .seconds(30)
        suspicionMult = 4
        suspicionMaxTimeoutMult = 6
        retransmitMult = 4
        awarenessMaxMultiplier = 8
        gossipToTheDeadTime = .seconds(30)
        udpBufferSize = 1400
        encryptionOverhead = 0
        tcpPings = true
        maxMembers = 10_000
        maxQueuedBroadcasts = 4096
        reconnectInterval = .seconds(30)
        reconnectTimeout = .seconds(24 * 3600)
        self.randomSeed = randomSeed
    }

    /// Throws if a value is out of range.
    public func validate() throws {
        guard !name.isEmpty else { throw GossipError(.invalidConfiguration, "node name is empty; give every node a unique name") }
        guard meta.count <= 512 else { throw GossipError(.invalidConfiguration, "meta is \(meta.count) bytes; memberlist allows 512") }
        guard probeInterval > .zero, probeTimeout > .zero, probeTimeout <= probeInterval else {
            throw GossipError(.invalidConfiguration, "need 0 < probeTimeout <= probeInterval")
        }
        guard gossipInterval > .zero, suspicionMult >= 1, suspicionMaxTimeoutMult >= 1, retransmitMult >= 1, awarenessMaxMultiplier >= 1 else {
            throw GossipError(.invalidConfiguration, "intervals and multipliers must be positive")
        }
        guard maxMembers >= 1, maxQueuedBroadcasts >= 1 else {
            throw GossipError(.invalidConfiguration, "maxMembers and maxQueuedBroadcasts must be at least 1")
        }
        guard udpBufferSize >= 512, udpBufferSize <= 65000 else {
            throw GossipError(.invalidConfiguration, "udpBufferSize \(udpBufferSize) must be 512...65000")
        }
    }
}

/// Lifeguard/memberlist timing formulas (util.go, suspicion.go).
public enum SwimMath {
    /// `mult * max(1, log10(max(1, n))) * interval`, rounded to milliseconds like memberlist.
    public static func suspicionTimeout(mult: Int, nodes n: Int, interval: Duration) -> Duration {
        let scale = max(1.0, log10(Double(max(1, n))))
        let ms = Int64(scale * 1000)
        return interval * Int(mult) * Int(ms) / 1000
    }

    /// `mult * ceil(log10(n + 1))`.
    public static func retransmitLimit(mult: Int, nodes n: Int) -> Int {
        mult * Int(log10(Double(n + 1)).rounded(.up))
    }

    /// Remaining suspicion time after `n` of `k` confirmations: `max - log(n+1)/log(k+1) * (max - min)`,
    /// floored to ms, at least `min`, minus `elapsed`.
    public static func remainingSuspicionTime(confirmations n: Int, expected k: Int, elapsed: Duration, min: Duration, max: Duration) -> Duration {
        let frac = k > 0 ? log(Double(n) + 1) / log(Double(k) + 1) : 1
        let raw = max.seconds - frac * (max.seconds - min.seconds)
        var timeout = Duration.milliseconds(Int64((1000 * raw).rounded(.down)))
        if timeout < min { timeout = min }
        return timeout - elapsed
    }

    /// Push-pull interval scaled for clusters over 32 nodes.
    public static func pushPullScale(_ interval: Duration, nodes n: Int) -> Duration {
        guard n > 32 else { return interval }
        let mult = (log2(Double(n)) - log2(32)).rounded(.up) + 1
        return interval * Int(mult)
    }
}

extension Duration {
    var seconds: Double {
        let c = components
        return Double(c.seconds) + Double(c.attoseconds) / 1e18
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
