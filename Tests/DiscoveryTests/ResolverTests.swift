import Discovery
import OverlayModel
import Testing

/// A deterministic generator for shuffles.
struct SeededRNG: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func v4(_ s: String) -> IPv4Address { IPv4Address(s)! }
func v6(_ s: String) -> IPv6Address { IPv6Address(s)! }

/// front: web (alias www, v4+v6), api (vip service, 3 tasks, port http/tcp), rr (dnsrr, 2 tasks),
/// only4 (v4 only). back: db, and a second "web" with another address. secret: hidden.
func sampleTable() -> NameTable {
    var t = NameTable()
    t.upsert(EndpointName(id: "w", network: "front", name: "web", aliases: ["www"], ipv4: v4("10.0.1.2"), ipv6: v6("fd00:1::2")))
    t.upsert(EndpointName(id: "o", network: "front", name: "only4", ipv4: v4("10.0.1.9")))
    for i in 1...3 {
        t.upsert(EndpointName(id: "a\(i)", network: "front", name: "api.\(i).x", ipv4: v4("10.0.1.\(10 + i)"),
                              ipv6: v6("fd00:1::\(10 + i)"), service: "api"))
    }
    t.upsert(ServiceName(name: "api", network: "front", vip4: v4("10.0.1.100"), vip6: v6("fd00:1::100"), mode: .vip,
                         ports: [ServicePort(name: "http", proto: "tcp", port: 8080), ServicePort(name: nil, proto: "udp", port: 53)]))
    for i in 1...2 {
        t.upsert(EndpointName(id: "r\(i)", network: "front", name: "rr.\(i).y", ipv4: v4("10.0.1.\(20 + i)"), service: "rr"))
    }
    t.upsert(ServiceName(name: "rr", network: "front", mode: .dnsrr))
    t.upsert(EndpointName(id: "d", network: "back", name: "db", ipv4: v4("10.0.2.2")))
    t.upsert(EndpointName(id: "w2", network: "back", name: "web", ipv4: v4("10.0.2.3")))
    t.upsert(EndpointName(id: "s", network: "secret", name: "hidden", ipv4: v4("10.0.9.2"), ipv6: v6("fd00:9::2")))
    return t
}

let frontBack = ResolverClient(networks: ["front", "back"])

func ask(_ qname: String, _ type: DNSType = .a, client: ResolverClient = frontBack, table: NameTable = sampleTable(),
         edns: EDNS? = nil, seed: UInt64 = 1) -> ResolverOutcome {
    var rng = SeededRNG(state: seed)
    let q = DNSMessage(id: 0x1234, recursionDesired: true, questions: [DNSQuestion(name: DNSName(qname)!, type: type)], edns: edns)
    return Resolver().resolve(q, client: client, table: table, rng: &rng)
}

extension ResolverOutcome {
    var answer: DNSMessage? { if case .answer(let m) = self { m } else { nil } }
    var isForward: Bool { if case .forward = self { true } else { false } }
    var refused: (DNSMessage, String)? { if case .refuse(let m, let r) = self { (m, r) } else { nil } }
    var addresses: Set<String> {
        Set((answer?.answers ?? []).compactMap {
            switch $0.data {
            case .a(let a): "\(a)"
            case .aaaa(let a): "\(a)"
            default: nil
            }
        })
    }
}

@Suite struct ResolverTests {
    @Test func containerNamesAndAliasesAnswerWithFlagsAndTTL() throws {
        let r = try #require(ask("web").answer)
        #expect(r.id == 0x1234 && r.isResponse && r.authoritative && r.recursionAvailable && r.recursionDesired)
        #expect(r.rcode == 0 && r.answers.count == 1 && r.answers[0].ttl == 600)
        #expect(r.answers[0].name == DNSName("web.") && r.answers[0].data == .a(v4("10.0.1.2")))
        #expect(ask("WWW.").addresses == ["10.0.1.2"])
        #expect(ask("web", .aaaa).addresses == ["fd00:1::2"])
        #expect(ask("web", .any).addresses == ["10.0.1.2", "fd00:1::2"])
        var custom = Resolver(ttl: 30)
        custom.ttl = 30
        var rng = SeededRNG(state: 1)
        let q = DNSMessage(id: 1, questions: [DNSQuestion(name: DNSName("web")!, type: .a)])
        #expect(custom.resolve(q, client: frontBack, table: sampleTable(), rng: &rng).answer?.answers.first?.ttl == 30)
    }

    @Test func theFirstNetworkInAttachOrderWins() {
        #expect(ask("web").addresses == ["10.0.1.2"])
        #expect(ask("web", client: ResolverClient(networks: ["back", "front"])).addresses == ["10.0.2.3"])
        #expect(ask("db").addresses == ["10.0.2.2"])
    }

    @Test func nameDotNetworkOnlyOnTheClientsNetworks() {
        #expect(ask("web.back").addresses == ["10.0.2.3"])
        #expect(ask("Web.Front.").addresses == ["10.0.1.2"])
        #expect(ask("www.front").addresses == ["10.0.1.2"])
        #expect(ask("db.back").addresses == ["10.0.2.2"])
        // db is on back only: not as db.front.
        #expect(ask("db.front").answer?.rcode == DNSRCode.nxDomain.rawValue)
        #expect(ask("nothing.front").answer?.rcode == DNSRCode.nxDomain.rawValue)
    }

    @Test func namesFromOtherNetworksNeverLeak() {
        for type in [DNSType.a, .aaaa, .any, .srv] {
            for qname in ["hidden", "hidden.secret", "tasks.hidden"] {
                let out = ask(qname, type)
                #expect(out.addresses.isEmpty, "\(qname) \(type)")
                if let m = out.answer { #expect(m.answers.isEmpty && m.additionals.isEmpty) }
            }
        }
        // A single-label unknown name and a name on a foreign network are forwarded (not ours).
        #expect(ask("hidden").isForward)
        #expect(ask("hidden.secret").isForward)
        // PTR of a foreign network's address is not answered either.
        #expect(ask("2.9.0.10.in-addr.arpa", .ptr).isForward)
        // The endpoint disappears with its network.
        var t = sampleTable()
        t.removeNetwork("front")
        #expect(ask("www", table: t).isForward)
        #expect(ask("web", table: t).addresses == ["10.0.2.3"])
    }

    @Test func nodataVersusNXDOMAIN() throws {
        // Name exists, no AAAA: NOERROR with no answers, authoritative.
        let nodata = try #require(ask("only4", .aaaa).answer)
        #expect(nodata.rcode == 0 && nodata.answers.isEmpty && nodata.authoritative)
        // Other types for our names: NODATA too.
        #expect(ask("web", .mx).answer.map { $0.rcode == 0 && $0.answers.isEmpty } == true)
        #expect(ask("web", .txt).answer.map { $0.rcode == 0 && $0.answers.isEmpty } == true)
        // Clearly ours but absent.
        let nx = try #require(ask("tasks.nothing").answer)
        #expect(nx.rcode == DNSRCode.nxDomain.rawValue && nx.authoritative && nx.answers.isEmpty)
        #expect(ask("tasks.nothing.front").answer?.rcode == DNSRCode.nxDomain.rawValue)
        // tasks.<something>.<internet name> is not ours.
        #expect(ask("tasks.example.com").isForward)
    }

    @Test func vipAndDNSRRServices() {
        #expect(ask("api").addresses == ["10.0.1.100"])
        #expect(ask("api", .aaaa).addresses == ["fd00:1::100"])
        #expect(ask("api.front").addresses == ["10.0.1.100"])
        #expect(ask("tasks.api").addresses == ["10.0.1.11", "10.0.1.12", "10.0.1.13"])
        #expect(ask("tasks.api.front").addresses == ["10.0.1.11", "10.0.1.12", "10.0.1.13"])
        #expect(ask("tasks.api", .aaaa).addresses == ["fd00:1::11", "fd00:1::12", "fd00:1::13"])
        #expect(ask("rr").addresses == ["10.0.1.21", "10.0.1.22"])
        #expect(ask("tasks.rr").addresses == ["10.0.1.21", "10.0.1.22"])
        #expect(ask("rr", .aaaa).answer.map { $0.rcode == 0 && $0.answers.isEmpty } == true)
        // A service removed: its VIP goes, tasks.<service> still lists the tasks until they go.
        var t = sampleTable()
        t.removeService(name: "api", network: "front")
        #expect(ask("api", table: t).isForward)
        #expect(ask("tasks.api", table: t).addresses.count == 3)
        for i in 1...3 { t.removeEndpoint(id: "a\(i)", network: "front") }
        #expect(ask("tasks.api", table: t).answer?.rcode == DNSRCode.nxDomain.rawValue)
    }

    @Test func multipleAddressesAreShuffled() {
        var orders = Set<[DNSRData]>()
        for seed in UInt64(0)..<40 { orders.insert(ask("tasks.api", seed: seed).answer?.answers.map(\.data) ?? []) }
        #expect(orders.count > 1)
        #expect(orders.allSatisfy { $0.count == 3 })
    }

    @Test func ptrForEndpointsAndVIPs() throws {
        let r = try #require(ask("2.1.0.10.in-addr.arpa", .ptr).answer)
        #expect(r.authoritative && r.answers == [DNSRecord(name: DNSName("2.1.0.10.in-addr.arpa")!, type: .ptr, ttl: 600,
                                                            data: .ptr(DNSName("web.front.")!))])
        #expect(ask("100.1.0.10.IN-ADDR.ARPA.", .ptr).answer?.answers.first?.data == .ptr(DNSName("api.front.")!))
        #expect(ask("3.2.0.10.in-addr.arpa", .ptr).answer?.answers.first?.data == .ptr(DNSName("web.back.")!))
        let v6name = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa"
        #expect(ask(v6name, .ptr).answer?.answers.first?.data == .ptr(DNSName("web.front.")!))
        let vip6 = "0.0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa"
        #expect(ask(vip6, .ptr).answer?.answers.first?.data == .ptr(DNSName("api.front.")!))
        // Other addresses and malformed reverse names: forwarded.
        #expect(ask("8.8.8.8.in-addr.arpa", .ptr).isForward)
        #expect(ask("256.1.0.10.in-addr.arpa", .ptr).isForward)
        #expect(ask("1.0.10.in-addr.arpa", .ptr).isForward)
        // An endpoint removed: its PTR goes with it.
        var t = sampleTable()
        t.removeEndpoint(id: "w", network: "front")
        #expect(ask("2.1.0.10.in-addr.arpa", .ptr, table: t).isForward)
    }

    @Test func srvForNamedServicePorts() throws {
        let r = try #require(ask("_http._tcp.api", .srv).answer)
        #expect(r.authoritative && r.answers.count == 3)
        let targets = Set(r.answers.compactMap { rec -> String? in
            if case .srv(_, _, let port, let target) = rec.data, port == 8080 { return target.description }
            return nil
        })
        #expect(targets == ["api.1.x.front.", "api.2.x.front.", "api.3.x.front."])
        #expect(Set(r.additionals.map(\.name.description)) == targets)
        #expect(r.additionals.contains { $0.name == DNSName("api.1.x.front") && $0.data == .a(v4("10.0.1.11")) })
        #expect(ask("_http._tcp.api.front", .srv).answer?.answers.count == 3)
        // Wrong port or protocol: NODATA. Unknown service: not ours.
        #expect(ask("_http._udp.api", .srv).answer.map { $0.rcode == 0 && $0.answers.isEmpty } == true)
        #expect(ask("_dns._udp.api", .srv).answer.map { $0.rcode == 0 && $0.answers.isEmpty } == true)
        #expect(ask("_http._tcp.example.com", .srv).isForward)
        // The encoded reply still decodes and compresses.
        let wire = r.encode(limit: 512)
        #expect(try DNSMessage.decode(wire) == r)
    }

    @Test func internalNetworksRefuseInsteadOfForwarding() throws {
        let internalClient = ResolverClient(networks: ["back"], mayForward: false)
        let (m, reason) = try #require(ask("example.com", client: internalClient).refused)
        #expect(m.rcode == DNSRCode.refused.rawValue && m.id == 0x1234 && m.isResponse && !m.authoritative)
        #expect(reason.contains("back") && reason.contains("example.com."))
        // Our own names still answer.
        #expect(ask("db", client: internalClient).addresses == ["10.0.2.2"])
        #expect(ask("8.8.8.8.in-addr.arpa", .ptr, client: internalClient).refused != nil)
        // Class CH (version.bind and friends) is not ours either.
        var rng = SeededRNG(state: 1)
        let ch = DNSMessage(id: 1, questions: [DNSQuestion(name: DNSName("version.bind")!, type: .txt, klass: 3)])
        #expect(Resolver().resolve(ch, client: frontBack, table: sampleTable(), rng: &rng).isForward)
        #expect(Resolver().resolve(ch, client: internalClient, table: sampleTable(), rng: &rng).refused != nil)
    }

    @Test func opcodesCountsEDNSAndResponses() throws {
        var rng = SeededRNG(state: 1)
        let resolver = Resolver()
        var q = DNSMessage(id: 5, opcode: 2, questions: [DNSQuestion(name: DNSName("web")!, type: .a)])
        #expect(resolver.resolve(q, client: frontBack, table: sampleTable(), rng: &rng).answer?.rcode == DNSRCode.notImp.rawValue)
        q.opcode = 0
        q.questions.append(q.questions[0])
        #expect(resolver.resolve(q, client: frontBack, table: sampleTable(), rng: &rng).answer?.rcode == DNSRCode.formErr.rawValue)
        q.questions = []
        #expect(resolver.resolve(q, client: frontBack, table: sampleTable(), rng: &rng).answer?.rcode == DNSRCode.formErr.rawValue)
        q.isResponse = true
        if case .drop = resolver.resolve(q, client: frontBack, table: sampleTable(), rng: &rng) {} else {
            Issue.record("a response must be dropped")
        }
        // EDNS: the reply carries OPT; version 1 gets BADVERS.
        let withOPT = try #require(ask("web", edns: EDNS(udpPayloadSize: 4096)).answer)
        #expect(withOPT.edns?.version == 0 && withOPT.edns?.udpPayloadSize == 1232 && withOPT.answers.count == 1)
        let badvers = try #require(ask("web", edns: EDNS(udpPayloadSize: 4096, version: 1)).answer)
        #expect(badvers.responseCode == .badVers && badvers.answers.isEmpty && badvers.edns?.version == 0)
        #expect(ask("web").answer?.edns == nil)
    }

    @Test func tableUpdatesKeepIndexesRight() {
        var t = NameTable()
        t.upsert(EndpointName(id: "x", network: "n", name: "one", aliases: ["alias"], ipv4: v4("10.1.0.2")))
        #expect(t.endpointCount == 1)
        let c = ResolverClient(networks: ["n"])
        #expect(ask("alias", client: c, table: t).addresses == ["10.1.0.2"])
        // Re-upsert renames and readdresses: the old name, alias and PTR go.
        t.upsert(EndpointName(id: "x", network: "n", name: "two", ipv4: v4("10.1.0.3")))
        #expect(t.endpointCount == 1)
        #expect(ask("one", client: c, table: t).isForward)
        #expect(ask("alias", client: c, table: t).isForward)
        #expect(ask("two", client: c, table: t).addresses == ["10.1.0.3"])
        #expect(ask("2.0.1.10.in-addr.arpa", .ptr, client: c, table: t).isForward)
        #expect(ask("3.0.1.10.in-addr.arpa", .ptr, client: c, table: t).answer?.answers.count == 1)
        // Two endpoints sharing an alias: both addresses.
        t.upsert(EndpointName(id: "y", network: "n", name: "three", aliases: ["two"], ipv4: v4("10.1.0.4")))
        #expect(ask("two", client: c, table: t).addresses == ["10.1.0.3", "10.1.0.4"])
        t.removeEndpoint(id: "x", network: "n")
        #expect(ask("two", client: c, table: t).addresses == ["10.1.0.4"])
        t.removeEndpoint(id: "y", network: "n")
        #expect(t.endpointCount == 0)
        #expect(ask("n.example", client: c, table: t).isForward)
    }
}
