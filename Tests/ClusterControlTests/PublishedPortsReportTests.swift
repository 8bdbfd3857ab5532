import Testing
@testable import ClusterControl

/// What a node reports about its standalone containers' ports, and what the manager keeps of it.
@Suite struct PublishedPortsReportTests {
    @Test func aReportRoundTripsAndMalformedEntriesAreDropped() {
        let ports = ["tcp/8080": "web", "udp/53": "dns", "sctp/9": "s.1"]
        let text = OverlayDaemon.formatPublishedPorts(ports)
        #expect(text == "sctp/9=s.1,tcp/8080=web,udp/53=dns")
        #expect(OverlayDaemon.parsePublishedPorts(text) == ports)
        let bad = "tcp/0=a,icmp/1=b,tcp/70000=c,tcp/80=,tcp/81=bad name,tcp=d,=e,junk,udp/0053=ok,tcp/82=-x"
        #expect(OverlayDaemon.parsePublishedPorts(bad) == ["udp/53": "ok"])
        #expect(OverlayDaemon.parsePublishedPorts("").isEmpty)
        let many = (1...5000).map { "tcp/\($0)=c" }.joined(separator: ",")
        #expect(OverlayDaemon.parsePublishedPorts(many).count == 4096)
        #expect(OverlayDaemon.validPublishedPorts([("tcp/8080", "web"), ("tcp/8081", "no/slash")]) == ["tcp/8080": "web"])
    }
}
