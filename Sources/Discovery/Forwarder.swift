import OverlayModel

/// An upstream resolver (the host's resolv.conf nameservers).
public struct Upstream: Hashable, Sendable, CustomStringConvertible {
    /// Its address.
    public var address: IPAddress
    /// Its port.
    public var port: UInt16 = 53

    /// Makes an upstream.
    public init(address: IPAddress, port: UInt16 = 53) {
        self.address = address
        self.port = port
    }

    /// "address:port" ("[v6]:port").
    public var description: String {
        address.v6 != nil ? "[\(address)]:\(port)" : "\(address):\(port)"
    }
}

/// What the forwarder's shell should do.
public enum ForwarderAction: Hashable, Sendable {
    /// Send these bytes over UDP to the upstream.
    case send([UInt8], to: Upstream)
    /// Send this reply to the client the server knows by `client`.
    case reply([UInt8], client: UInt64)
}

/// What the forwarder has done since it was made.
public struct ForwarderCounters: Hashable, Sendable {
    /// Queries accepted for forwarding.
    public var forwarded = 0
    /// Upstream replies passed to clients.
    public var answered = 0
    /// Upstream attempts that timed out (a query can time out once per upstream).
    public var timedOut = 0
    /// SERVFAIL replies made here (no upstreams, over the in-flight limit, every upstream timed out).
    public var servfails = 0
    /// Queries refused because `maxInFlight` were already waiting.
    public var overLimit = 0
    /// Upstream datagrams dropped: unparsable, unknown ID, wrong source or question.
    public var droppedResponses = 0

    /// Makes zeroed counters.
    public init() {}
}

/// Forwards queries to up to three upstreams over UDP without doing I/O: it rewrites IDs, keeps
/// what is in flight, retries on the next upstream after a timeout, and says what to send.
public struct ForwarderCore: Sendable {
    private struct Pending: Sendable {
        var query: DNSMessage
        var client: UInt64
        var wire: [UInt8]
        var upstream: Int
        var deadline: Duration
    }

    /// The upstreams in use (at most three).
    public let upstreams: [Upstream]
    /// How long to wait for one upstream.
    public let timeout: Duration
    /// The most queries waiting at once.
    public let maxInFlight: Int
    /// What has happened so far.
    public private(set) var counters = ForwarderCounters()

    private var pending: [UInt16: Pending] = [:]
    /// (deadline, id) in deadline order; entries whose query is gone or re-armed are skipped.
    private var timeouts: [(deadline: Duration, id: UInt16)] = []
    private var timeoutsHead = 0
    /// The ID generator of a seeded forwarder (tests); nil: the system's cryptographic one, so an
    /// off-path attacker cannot predict the next ID (RFC 5452 section 9.2).
    private var rng: Xoshiro?

    /// Makes a forwarder; only the first three upstreams are used.
    public init(upstreams: [Upstream], timeout: Duration = .seconds(2), maxInFlight: Int = 1024) {
        self.upstreams = Array(upstreams.prefix(3))
        self.timeout = timeout
        self.maxInFlight = max(1, min(maxInFlight, 60000))
        self.rng = nil
    }

    /// Makes a forwarder whose IDs come from `seed` (for tests).
    public init(upstreams: [Upstream], timeout: Duration = .seconds(2), maxInFlight: Int = 1024, seed: UInt64) {
        self.upstreams = Array(upstreams.prefix(3))
        self.timeout = timeout
        self.maxInFlight = max(1, min(maxInFlight, 60000))
        self.rng = Xoshiro(seed: seed)
    }

    /// Queries waiting for an upstream.
    public var inFlight: Int { pending.count }

    /// Whether the query forwarded under `id` still waits for an upstream.
    public func isWaiting(id: UInt16) -> Bool { pending[id] != nil }

    private mutating func nextID() -> UInt16 {
        if rng != nil { return UInt16(truncatingIfNeeded: rng!.next()) }
        var system = SystemRandomNumberGenerator()
        return UInt16.random(in: 0 ... .max, using: &system)
    }

    /// The earliest time `tick` has something to do, or nil when nothing is in flight.
    public var nextDeadline: Duration? {
        var i = timeoutsHead
        while i < timeouts.count {
            let t = timeouts[i]
            if let p = pending[t.id], p.deadline == t.deadline { return t.deadline }
            i += 1
        }
        return nil
    }

    /// Accepts a query from `client`: sends it to the first upstream under a fresh random ID, or
    /// replies SERVFAIL at once when there is no upstream or `maxInFlight` queries are waiting.
    public mutating func forward(_ query: DNSMessage, client: UInt64, now: Duration) -> [ForwarderAction] {
        guard !upstreams.isEmpty, query.questions.count == 1 else {
            counters.servfails += 1
            return [.reply(query.response(rcode: .servFail).encode(limit: udpLimit(for: query)), client: client)]
        }
        guard pending.count < maxInFlight else {
            counters.overLimit += 1
            counters.servfails += 1
            return [.reply(query.response(rcode: .servFail).encode(limit: udpLimit(for: query)), client: client)]
        }
        var id = nextID()
        while pending[id] != nil { id = nextID() }
        var out = query
        out.id = id
        let wire = out.encode()
        let deadline = now + timeout
        pending[id] = Pending(query: query, client: client, wire: wire, upstream: 0, deadline: deadline)
        pushTimeout(deadline, id)
        counters.forwarded += 1
        return [.send(wire, to: upstreams[0])]
    }

    /// Takes a datagram from an upstream: if its ID, source and question match a waiting query,
    /// the reply goes to the client under the client's ID; anything else is dropped and counted.
    /// A late reply from an upstream tried earlier for the same query is accepted too.
    public mutating func receive(_ bytes: [UInt8], from: Upstream, now: Duration) -> [ForwarderAction] {
        guard bytes.count >= 12, bytes[2] & 0x80 != 0 else { return drop() }
        let id = UInt16(bytes[0]) << 8 | UInt16(bytes[1])
        guard let p = pending[id] else { return drop() }
        guard let k = upstreams.firstIndex(of: from), k <= p.upstream else { return drop() }
        guard let question = firstQuestion(bytes), question == p.query.questions[0] else { return drop() }
        pending[id] = nil
        var reply = bytes
        reply[0] = UInt8(p.query.id >> 8)
        reply[1] = UInt8(truncatingIfNeeded: p.query.id)
        counters.answered += 1
        compactTimeouts()
        return [.reply(reply, client: p.client)]
    }

    /// Handles timeouts due by `now`: each is retried on the next upstream under the same ID, and
    /// after the last upstream the client gets SERVFAIL.
    public mutating func tick(now: Duration) -> [ForwarderAction] {
        var actions: [ForwarderAction] = []
        while timeoutsHead < timeouts.count, timeouts[timeoutsHead].deadline <= now {
            let t = timeouts[timeoutsHead]
            timeoutsHead += 1
            guard var p = pending[t.id], p.deadline == t.deadline else { continue }
            counters.timedOut += 1
            if p.upstream + 1 < upstreams.count {
                p.upstream += 1
                p.deadline = now + timeout
                pending[t.id] = p
                pushTimeout(p.deadline, t.id)
                actions.append(.send(p.wire, to: upstreams[p.upstream]))
            } else {
                pending[t.id] = nil
                counters.servfails += 1
                actions.append(.reply(p.query.response(rcode: .servFail).encode(limit: udpLimit(for: p.query)),
                                      client: p.client))
            }
        }
        compactTimeouts()
        return actions
    }

    private mutating func drop() -> [ForwarderAction] {
        counters.droppedResponses += 1
        return []
    }

    private mutating func pushTimeout(_ deadline: Duration, _ id: UInt16) {
        // Deadlines are now + timeout with a monotonic now, so appending keeps the order; a caller
        // whose clock steps back only makes a timeout fire late, never lost.
        timeouts.append((deadline, id))
    }

    private mutating func compactTimeouts() {
        // Skip entries of answered or re-armed queries at the head, so `nextDeadline` finds the
        // first live one at once.
        while timeoutsHead < timeouts.count {
            let t = timeouts[timeoutsHead]
            if let p = pending[t.id], p.deadline == t.deadline { break }
            timeoutsHead += 1
        }
        if pending.isEmpty {
            timeouts.removeAll(keepingCapacity: true)
            timeoutsHead = 0
        } else if timeoutsHead > 1024, timeoutsHead * 2 > timeouts.count {
            timeouts.removeSubrange(0..<timeoutsHead)
            timeoutsHead = 0
        }
    }

    /// The question of a reply, decoded without the rest of the message.
    private func firstQuestion(_ bytes: [UInt8]) -> DNSQuestion? {
        guard bytes[4] == 0, bytes[5] == 1 else { return nil }
        return bytes.withUnsafeBufferPointer { p -> DNSQuestion? in
            var r = DNSReader(p)
            r.pos = 12
            guard let n = try? r.name(), let t = try? r.u16(), let c = try? r.u16() else { return nil }
            return DNSQuestion(name: n, type: DNSType(rawValue: t), klass: c)
        }
    }
}

/// xoshiro256** seeded by SplitMix64: fast IDs for the forwarder.
internal struct Xoshiro: RandomNumberGenerator, Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    init(seed: UInt64) {
        var x = seed
        func splitmix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s = (splitmix(), splitmix(), splitmix(), splitmix())
    }

    mutating func next() -> UInt64 {
        let result = ((s.1 &* 5) << 7 | (s.1 &* 5) >> 57) &* 9
        let t = s.1 << 17
        s.2 ^= s.0
        s.3 ^= s.1
        s.1 ^= s.2
        s.0 ^= s.3
        s.2 ^= t
        s.3 = (s.3 << 45) | (s.3 >> 19)
        return result
    }
}
