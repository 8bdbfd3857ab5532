import Foundation
import Testing
@testable import ClusterControl

/// What a node reports about its standalone containers' ports, and what the manager keeps of it.
@Suite struct PublishedPortsReportTests {
    @Test func aReportRoundTripsAndMalformedEntriesAreDropped() throws {
        let ports = ["tcp/8080": "web", "udp/53": "dns", "sctp/9": "s.1"]
        let report = NodeReport(nodeID: "n1", publishedPorts: ports)
        let decoded = try JSONDecoder().decode(NodeReport.self, from: JSONEncoder().encode(report))
        #expect(decoded == report)
        #expect(OverlayDaemon.validPublishedPorts(ports.map { ($0.key, $0.value) }) == ports)
        let bad = [("tcp/0", "a"), ("icmp/1", "b"), ("tcp/70000", "c"), ("tcp/80", ""), ("tcp/81", "bad name"), ("tcp", "d"),
                   ("", "e"), ("junk", ""), ("udp/0053", "ok"), ("tcp/82", "-x"), ("tcp/8081", "no/slash")]
        #expect(OverlayDaemon.validPublishedPorts(bad) == ["udp/53": "ok"])
        #expect(OverlayDaemon.validPublishedPorts([]).isEmpty)
        let many = (1...5000).map { ("tcp/\($0)", "c") }
        #expect(OverlayDaemon.validPublishedPorts(many).count == 4096)
    }
}
