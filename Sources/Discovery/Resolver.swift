import OverlayModel

/// The container asking: the networks it is attached to and whether it may reach the outside.
public struct ResolverClient: Hashable, Sendable {
    /// The client's networks in attach order; only these are searched, first match wins.
    public var networks: [String]
    /// False when every network of the client is `--internal`: names not in the tables are refused
    /// rather than forwarded.
    public var mayForward: Bool

    /// Makes a client description.
    public init(networks: [String], mayForward: Bool = true) {
        self.networks = networks
        self.mayForward = mayForward
    }
}

/// What the server should do with a query.
public enum ResolverOutcome: Sendable {
    /// Send this reply (ours: an answer, NODATA, NXDOMAIN, FORMERR, NOTIMP or BADVERS).
    case answer(DNSMessage)
    /// The name is not ours: hand this query to the forwarder.
    case forward(DNSMessage)
    /// The name is not ours and the client may not reach the outside: send this REFUSED reply and
    /// log `reason`.
    case refuse(DNSMessage, reason: String)
    /// Send nothing (the message was a response, not a query); count it.
    case drop(reason: String)
}

/// Answers queries from a `NameTable` the way Docker's embedded resolver does (see README.md).
public struct Resolver: Sendable {
    /// TTL of every record we answer.
    public var ttl: UInt32 = 600

    /// Makes a resolver.
    public init(ttl: UInt32 = 600) { self.ttl = ttl }

    /// Decides what to do with `query` from `client`: answer it from `table`, forward it, or refuse
    /// it. Multiple addresses are shuffled with `rng`.
    public func resolve(_ query: DNSMessage, client: ResolverClient, table: NameTable,
                        rng: inout some RandomNumberGenerator) -> ResolverOutcome {
        if query.isResponse { return .drop(reason: "a response (QR=1) was sent to the resolver") }
        if query.opcode != 0 { return .answer(query.response(rcode: .notImp)) }
        guard query.questions.count == 1 else { return .answer(query.response(rcode: .formErr)) }
        if let e = query.edns, e.version > 0 { return .answer(query.response(rcode: .badVers)) }
        let q = query.questions[0]
        guard q.klass == dnsClassIN else { return notOurs(query, client: client) }

        // The client's networks, each once, in attach order.
        var nets: [(name: String, names: NetworkNames)] = []
        nets.reserveCapacity(client.networks.count)
        for n in client.networks where !nets.contains(where: { $0.name == n }) {
            if let names = table.networks[n] { nets.append((n, names)) }
        }

        if q.type == .ptr, let answer = reverse(query, q, nets) { return answer }
        guard let key = q.name.lowercasedDottedKey else { return notOurs(query, client: client) }
        if q.type == .srv, let answer = service(query, q, key, nets, &rng) { return answer }

        for net in nets {
            guard let found = lookup(key, in: net) else { continue }
            return .answer(addresses(query, q, found, &rng))
        }
        // Clearly ours but absent: tasks.<x> (x one label, or x.<client network>), <x>.<client network>.
        if startsWith(key, tasksPrefix) {
            let rest = key[tasksPrefix.count...]
            if !rest.contains(UInt8(ascii: ".")) || client.networks.contains(where: { hasNetworkSuffix(rest, $0) != nil }) {
                return .answer(nxDomain(query))
            }
        }
        if client.networks.contains(where: { hasNetworkSuffix(key[...], $0) != nil }) {
            return .answer(nxDomain(query))
        }
        return notOurs(query, client: client)
    }

    // MARK: Forward lookups

    private enum Found {
        case endpoints([EndpointName])
        case vip(ServiceName)
    }

    private let tasksPrefix = Array("tasks.".utf8)

    /// Looks `key` up on one network: the full name, then the name without a `.<network>` suffix.
    private func lookup(_ key: [UInt8], in net: (name: String, names: NetworkNames)) -> Found? {
        if let f = lookupExact(key, net.names) { return f }
        if let stripped = hasNetworkSuffix(key[...], net.name), let f = lookupExact(Array(stripped), net.names) { return f }
        return nil
    }

    private func lookupExact(_ k: [UInt8], _ names: NetworkNames) -> Found? {
        let key = NameKey(k)
        if let s = names.services[key] {
            if s.mode == .vip { return .vip(s) }
            return .endpoints(tasks(of: k, names))
        }
        if let ids = names.byName[key] { return .endpoints(ids.compactMap { names.endpoints[$0] }) }
        if startsWith(k, tasksPrefix) {
            let svc = Array(k[tasksPrefix.count...])
            if names.services[NameKey(svc)] != nil || names.tasks[NameKey(svc)] != nil { return .endpoints(tasks(of: svc, names)) }
        }
        return nil
    }

    private func tasks(of service: [UInt8], _ names: NetworkNames) -> [EndpointName] {
        (names.tasks[NameKey(service)] ?? []).compactMap { names.endpoints[$0] }
    }

    /// Builds the reply for a name that exists: A/AAAA/ANY records, or NODATA.
    private func addresses(_ query: DNSMessage, _ q: DNSQuestion, _ found: Found,
                           _ rng: inout some RandomNumberGenerator) -> DNSMessage {
        var r = ours(query)
        let want4 = q.type == .a || q.type == .any
        let want6 = q.type == .aaaa || q.type == .any
        switch found {
        case .vip(let s):
            if want4, let a = s.vip4 { r.answers.append(DNSRecord(name: q.name, type: .a, ttl: ttl, data: .a(a))) }
            if want6, let a = s.vip6 { r.answers.append(DNSRecord(name: q.name, type: .aaaa, ttl: ttl, data: .aaaa(a))) }
        case .endpoints(let eps):
            if want4 {
                for e in eps { if let a = e.ipv4 { r.answers.append(DNSRecord(name: q.name, type: .a, ttl: ttl, data: .a(a))) } }
            }
            if want6 {
                for e in eps {
                    if let a = e.ipv6 { r.answers.append(DNSRecord(name: q.name, type: .aaaa, ttl: ttl, data: .aaaa(a))) }
                }
            }
            if r.answers.count > 1 { r.answers.shuffle(using: &rng) }
        }
        return r
    }

    // MARK: SRV

    /// `_<port>._<proto>.<service>[.<network>]`: one SRV per task, the tasks' addresses as
    /// additionals. Nil when the name is not of that form or names no service of the client's.
    private func service(_ query: DNSMessage, _ q: DNSQuestion, _ key: [UInt8], _ nets: [(name: String, names: NetworkNames)],
                         _ rng: inout some RandomNumberGenerator) -> ResolverOutcome? {
        let parts = key.split(separator: UInt8(ascii: "."), maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].first == UInt8(ascii: "_"), parts[1].first == UInt8(ascii: "_") else { return nil }
        let portName = parts[0].dropFirst()
        let proto = parts[1].dropFirst()
        for net in nets {
            var svcKey = Array(parts[2])
            var s = net.names.services[NameKey(svcKey)]
            if s == nil, let stripped = hasNetworkSuffix(parts[2], net.name) {
                svcKey = Array(stripped)
                s = net.names.services[NameKey(svcKey)]
            }
            guard let s else { continue }
            var r = ours(query)
            guard let port = s.ports.first(where: { p in
                guard let n = p.name else { return false }
                return lowercasedKey(n)[...] == portName && lowercasedKey(p.proto)[...] == proto
            }) else { return .answer(r) }  // the service exists, the port does not: NODATA
            for t in tasks(of: svcKey, net.names) {
                guard let target = DNSName(t.name + "." + net.name + ".") else { continue }
                r.answers.append(DNSRecord(name: q.name, type: .srv, ttl: ttl,
                                           data: .srv(priority: 0, weight: 0, port: port.port, target: target)))
                if let a = t.ipv4 { r.additionals.append(DNSRecord(name: target, type: .a, ttl: ttl, data: .a(a))) }
                if let a = t.ipv6 { r.additionals.append(DNSRecord(name: target, type: .aaaa, ttl: ttl, data: .aaaa(a))) }
            }
            if r.answers.count > 1 { r.answers.shuffle(using: &rng) }
            return .answer(r)
        }
        return nil
    }

    // MARK: PTR

    /// PTR for an address on one of the client's networks; nil when the name is not a reverse name
    /// or the address is not ours (the caller then forwards).
    private func reverse(_ query: DNSMessage, _ q: DNSQuestion, _ nets: [(name: String, names: NetworkNames)]) -> ResolverOutcome? {
        let labels = q.name.labels
        var target: DNSName?
        if let v4 = reverseIPv4(labels) {
            for net in nets { if let t = net.names.ptr4[v4] { target = t.target; break } }
        } else if let v6 = reverseIPv6(labels) {
            for net in nets { if let t = net.names.ptr6[v6] { target = t.target; break } }
        } else {
            return nil
        }
        guard let target else { return nil }
        var r = ours(query)
        r.answers.append(DNSRecord(name: q.name, type: .ptr, ttl: ttl, data: .ptr(target)))
        return .answer(r)
    }

    // MARK: Replies

    private func ours(_ query: DNSMessage) -> DNSMessage {
        var r = query.response(rcode: .noError)
        r.authoritative = true
        return r
    }

    private func nxDomain(_ query: DNSMessage) -> DNSMessage {
        var r = query.response(rcode: .nxDomain)
        r.authoritative = true
        return r
    }

    private func notOurs(_ query: DNSMessage, client: ResolverClient) -> ResolverOutcome {
        if client.mayForward { return .forward(query) }
        let name = query.questions.first.map { "\($0.name)" } ?? "?"
        let nets = client.networks.joined(separator: ", ")
        return .refuse(query.response(rcode: .refused),
                       reason: "\(name) is not a name on network(s) \(nets), and every one of them is internal (--internal), so it is not forwarded")
    }
}

// MARK: - Helpers

@inline(__always)
private func startsWith(_ key: [UInt8], _ prefix: [UInt8]) -> Bool {
    key.count > prefix.count && key[0..<prefix.count].elementsEqual(prefix)
}

/// If `key` ends with ".<network>" (case-insensitive), the part before it.
private func hasNetworkSuffix(_ key: ArraySlice<UInt8>, _ network: String) -> ArraySlice<UInt8>? {
    let net = lowercasedKey(network)
    guard !net.isEmpty, key.count > net.count + 1 else { return nil }
    let dot = key.endIndex - net.count - 1
    guard key[dot] == UInt8(ascii: "."), key[(dot + 1)...].elementsEqual(net) else { return nil }
    return key[key.startIndex..<dot]
}

/// `d.c.b.a.in-addr.arpa` -> a.b.c.d.
internal func reverseIPv4(_ labels: [[UInt8]]) -> IPv4Address? {
    guard labels.count == 6, lowercased(labels[4]) == Array("in-addr".utf8), lowercased(labels[5]) == Array("arpa".utf8)
    else { return nil }
    var v: UInt32 = 0
    for i in (0..<4).reversed() {
        let l = labels[i]
        guard l.count >= 1, l.count <= 3, l.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
        guard l.count == 1 || l[0] != 48 else { return nil }
        let n = l.reduce(0) { $0 * 10 + Int($1 - 48) }
        guard n <= 255 else { return nil }
        v = v << 8 | UInt32(n)
    }
    return IPv4Address(v)
}

/// 32 nibble labels (least significant first) + `ip6.arpa` -> the address.
internal func reverseIPv6(_ labels: [[UInt8]]) -> IPv6Address? {
    guard labels.count == 34, lowercased(labels[32]) == Array("ip6".utf8), lowercased(labels[33]) == Array("arpa".utf8)
    else { return nil }
    var v: UInt128 = 0
    for i in (0..<32).reversed() {
        guard labels[i].count == 1 else { return nil }
        let c = asciiLower(labels[i][0])
        let nibble: UInt8
        switch c {
        case 48...57: nibble = c - 48
        case 97...102: nibble = c - 87
        default: return nil
        }
        v = v << 4 | UInt128(nibble)
    }
    return IPv6Address(v)
}

private func lowercased(_ l: [UInt8]) -> [UInt8] { l.map(asciiLower) }
