import Foundation
import NodeAgent
import OverlayDriver
import OverlayModel
import Testing

@Suite struct EndpointRecordTests {
    let json = Array(#"{"address":"10.0.0.2","id":"c1","mac":"02:42:0a:00:00:02","name":"web","vtep":"198.18.0.1"}"#.utf8)

    @Test func recordRoundTripsAndRejectsGarbage() throws {
        let r = try #require(EndpointRecord.decode(json))
        #expect(r.peer == PeerEntry(address: IPAddress("10.0.0.2")!, mac: MACAddress("02:42:0a:00:00:02")!, vtep: IPAddress("198.18.0.1")!))
        #expect(EndpointRecord.decode(r.encoded()) == r)
        #expect(r.encoded() == json)
        #expect(EndpointRecord.decode(Array("{".utf8)) == nil)
        var bad = r
        bad.mac = "zz"
        #expect(bad.peer == nil)
    }

    @Test func theSignedMessageLeavesTheSignatureOutAndBindsNetworkAndOwner() throws {
        var r = try #require(EndpointRecord.decode(json))
        let message = r.signedMessage(network: "web", owner: "n1")
        #expect(message == Array("swift-overlay endpoint record 1\nweb\nn1\n".utf8) + json)
        r.signature = "c2ln"
        // The signature travels in the record and is not part of what it signs...
        #expect(EndpointRecord.decode(r.encoded())?.signature == "c2ln")
        #expect(r.signedMessage(network: "web", owner: "n1") == message)
        // ... which differs by network, owner and every field.
        #expect(r.signedMessage(network: "db", owner: "n1") != message)
        #expect(r.signedMessage(network: "web", owner: "n2") != message)
        r.address = "10.0.0.3"
        #expect(r.signedMessage(network: "web", owner: "n1") != message)
    }

    @Test func anEndpointIsTheRecordTypedOnceAndNilWhenAnAddressDoesNotParse() throws {
        let e = try #require(Endpoint(tableValue: json))
        #expect(e.address == IPAddress("10.0.0.2") && e.ipv4 == IPv4Address("10.0.0.2"))
        #expect(e.mac == MACAddress("02:42:0a:00:00:02") && e.vtep == IPAddress("198.18.0.1"))
        #expect(e.aliases == [] && e.service == nil && e.name == "web" && e.id == "c1")
        #expect(e.peer == EndpointRecord.decode(json)?.peer)
        var r = try #require(EndpointRecord.decode(json))
        r.address = "fd00::2"
        #expect(Endpoint(r)?.ipv4 == nil && Endpoint(r)?.address == IPAddress("fd00::2"))
        for field in [\EndpointRecord.address, \.mac, \.vtep] {
            var bad = try #require(EndpointRecord.decode(json))
            bad[keyPath: field] = "10.0.0.300"
            #expect(Endpoint(bad) == nil)
        }
        #expect(Endpoint(tableValue: Array("[]".utf8)) == nil)
        #expect(Endpoint(tableValue: []) == nil)
    }
}

@Suite struct EndpointIndexTests {
    func endpoint(_ name: String, _ address: String, vtep: String = "198.18.0.2", service: String? = nil) -> Endpoint {
        var r = EndpointRecord.decode(Array(#"{"address":"10.0.0.2","id":"x","mac":"02:42:0a:00:00:02","name":"x","vtep":"198.18.0.1"}"#.utf8))!
        r.id = name
        r.name = name
        r.address = address
        r.vtep = vtep
        r.service = service
        return Endpoint(r)!
    }

    @Test func theIndexFollowsTheFeed() {
        let index = EndpointIndex()
        index.apply(.upsert(network: "a", key: "k1", owner: "n1", endpoint: endpoint("c1", "10.0.0.2", service: "web")))
        index.apply(.upsert(network: "a", key: "k2", owner: "n2", endpoint: endpoint("c2", "10.0.0.3")))
        index.apply(.upsert(network: "b", key: "k3", owner: "n2", endpoint: endpoint("c3", "10.1.0.2")))
        #expect(Set(index.endpoints(network: "a").map(\.name)) == ["c1", "c2"])
        index.apply(.upsert(network: "a", key: "k1", owner: "n1", endpoint: endpoint("c1", "10.0.0.9", service: "web")))
        #expect(index.endpoints(network: "a").first { $0.name == "c1" }?.ipv4 == IPv4Address("10.0.0.9"))
        #expect(index.endpoints(network: "a").count == 2)
        index.apply(.remove(network: "a", key: "k2"))
        #expect(index.endpoints(network: "a").map(\.name) == ["c1"])
        index.apply(.networkLeft("a"))
        #expect(index.endpoints(network: "a").isEmpty)
        #expect(index.endpoints(network: "b").map(\.name) == ["c3"])
    }

    @Test func onlyAKnownNodeAtItsOwnVTEPVouchesForAnEndpoint() {
        let vteps = NodeVTEPs()
        #expect(vteps.replace(with: ["n1": IPAddress("198.18.0.1")!]))
        #expect(!vteps.replace(with: ["n1": IPAddress("198.18.0.1")!]))   // no change
        #expect(vteps.vouches(owner: "n1", for: endpoint("c", "10.0.0.2", vtep: "198.18.0.1")))
        #expect(!vteps.vouches(owner: "n1", for: endpoint("c", "10.0.0.2", vtep: "198.18.0.9")))
        #expect(!vteps.vouches(owner: "n2", for: endpoint("c", "10.0.0.2", vtep: "198.18.0.1")))
    }
}

@Suite struct ResolvConfTests {
    @Test func theHostsFileIsReadAndAContainersWritten() {
        let host = ResolvConf(parsing: """
            # comment
            nameserver 192.0.2.53
            nameserver 2001:db8::53 ; trailing
            domain old.example
            search corp.example lab.example
            options edns0 rotate
            nameserver
            garbage line
            """)
        #expect(host.nameservers == ["192.0.2.53", "2001:db8::53"])
        #expect(host.search == ["corp.example", "lab.example"])
        #expect(host.options == ["edns0", "rotate"])
        #expect(ResolvConf.forContainer(search: host.search, address: "127.0.0.11") == """
            # written by overlayd: the embedded DNS server answers here
            nameserver 127.0.0.11
            search corp.example lab.example
            options ndots:0

            """)
        #expect(!ResolvConf.forContainer(search: [], address: "127.0.0.11").contains("search"))
    }
}
