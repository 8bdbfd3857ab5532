import Discovery
import OverlayModel
import Testing

@Suite struct BenchmarkTests {
    /// Prints decode + resolve + encode throughput for an A query against a table of 1000 endpoints
    /// (printed, not asserted: the real numbers come from dns-bench with dnsperf, in release builds).
    @Test func decodeResolveEncodeOpsPerSecond() throws {
        var table = NameTable()
        for i in 0..<1000 {
            table.upsert(EndpointName(id: "e\(i)", network: "front", name: "c\(i)",
                                      ipv4: IPv4Address(10, 0, UInt8(i / 250), UInt8(i % 250 + 2))))
        }
        let client = ResolverClient(networks: ["front"])
        let resolver = Resolver()
        let query = DNSMessage(id: 1, recursionDesired: true,
                               questions: [DNSQuestion(name: DNSName("c500")!, type: .a)], edns: EDNS()).encode()
        var rng = SystemRandomNumberGenerator()
        let clock = ContinuousClock()
        let n = 50_000
        var bytes = 0
        let elapsed = try clock.measure {
            for _ in 0..<n {
                let q = try DNSMessage.decode(query)
                guard case .answer(let r) = resolver.resolve(q, client: client, table: table, rng: &rng) else {
                    Issue.record("not answered")
                    return
                }
                bytes &+= r.encode(limit: udpLimit(for: q)).count
            }
        }
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        print("DiscoveryTests benchmark: decode+resolve+encode of an A query: \(Int(Double(n) / seconds)) ops/s (\(bytes / n) bytes/reply)")
        #expect(bytes / n == 49)
    }
}
