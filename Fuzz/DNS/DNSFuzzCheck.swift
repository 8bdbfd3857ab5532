// The checks fuzz-dns runs on every input; Tests/DiscoveryTests links this same file (a symlink)
// to replay the seeds and kept crash inputs. See Documentation/Fuzzing.md.
import Discovery
import OverlayModel

/// A small table for the resolver to search while fuzzing.
let fuzzTable: NameTable = {
    var t = NameTable()
    t.upsert(EndpointName(id: "e1", network: "front", name: "web", aliases: ["www"], ipv4: IPv4Address(10, 0, 1, 2),
                          ipv6: IPv6Address("fd00::2")))
    t.upsert(EndpointName(id: "e2", network: "front", name: "api.1.x", ipv4: IPv4Address(10, 0, 1, 3), service: "api"))
    t.upsert(EndpointName(id: "e3", network: "back", name: "db", ipv4: IPv4Address(10, 0, 2, 2)))
    t.upsert(ServiceName(name: "api", network: "front", vip4: IPv4Address(10, 0, 1, 100), mode: .vip,
                         ports: [ServicePort(name: "http", proto: "tcp", port: 80)]))
    return t
}()

/// Runs one input through the decoder, the encoder, the resolver, the forwarder and the TCP
/// framing. Returns a description of a broken rule (a finding), or nil. Crashes are findings too.
func checkDNSInput(_ bytes: [UInt8]) -> String? {
    if let f = dnsFormErr(for: bytes) {
        guard f.count == 12, f[0] == bytes[0], f[1] == bytes[1] else { return "bad FORMERR reply" }
    }
    var reader = DNSStreamReader()
    reader.append(bytes)
    reader.append(bytes)
    while reader.next() != nil {}

    var forwarder = ForwarderCore(upstreams: [Upstream(address: .v4(IPv4Address(192, 0, 2, 53)))], seed: 1)
    _ = forwarder.receive(bytes, from: forwarder.upstreams[0], now: .zero)

    guard let m = try? DNSMessage.decode(bytes) else { return nil }
    let full = m.encode(limit: Int.max)
    guard let again = try? DNSMessage.decode(full) else { return "re-encoded message does not decode" }
    guard again == m else { return "round trip changed the message" }
    for limit in [512, 1232] {
        let cut = m.encode(limit: limit)
        guard cut.count <= limit else { return "encode(limit: \(limit)) made \(cut.count) bytes" }
        guard (try? DNSMessage.decode(cut)) != nil else { return "truncated message does not decode" }
    }

    var rng = SystemRandomNumberGenerator()
    for client in [ResolverClient(networks: ["front", "back"]), ResolverClient(networks: ["back"], mayForward: false)] {
        switch Resolver().resolve(m, client: client, table: fuzzTable, rng: &rng) {
        case .answer(let r), .refuse(let r, _):
            let limit = udpLimit(for: m)
            let wire = r.encode(limit: limit)
            guard wire.count <= limit, (try? DNSMessage.decode(wire)) != nil else { return "our reply does not decode" }
        case .forward(let q):
            let sent = forwarder.forward(q, client: 7, now: .zero)
            for case .send(let wire, _) in sent {
                var reply = wire
                if reply.count >= 3 { reply[2] |= 0x80 }
                _ = forwarder.receive(reply, from: forwarder.upstreams[0], now: .zero)
            }
            _ = forwarder.tick(now: .seconds(10))
        case .drop:
            break
        }
    }
    return nil
}
