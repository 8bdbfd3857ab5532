import NIOCore
import OverlayModel
import Testing
@testable import VXLANCodec

/// Packets captured from real Linux VXLAN devices (see Vectors/README.md): every one must decode, and
/// every field we can predict must match.
@Suite struct VectorTests {
    struct Decoded {
        var packet: VXLANPacket
        var inner: EthernetFrame
        var outerEthernet: EthernetHeader
    }

    func decodeAll(_ file: String, vni: UInt32) throws -> [Decoded] {
        let pcap = try PcapFile.load(file)
        #expect(pcap.linkType == 1, "Ethernet captures")
        let dec = VXLANDecapsulator(vni: try VNI(vni))
        return try pcap.records.map { r in
            #expect(r.data.readableBytes == r.originalLength, "whole packets captured")
            var b = r.data
            let eth = try #require(try b.readEthernetHeader())
            let p = try dec.decapsulate(packet: b)
            var inner = p.innerFrame
            let f = try #require(try inner.readEthernetFrame())
            // Our encoder writes the decoded inner frame back byte for byte.
            #expect(Sample.encode(f) == p.innerFrame)
            return Decoded(packet: p, inner: f, outerEthernet: eth)
        }
    }

    func checkOuterV4(_ d: Decoded) -> Bool {
        guard case .v4(let h) = d.packet.outer else { Issue.record("outer not IPv4"); return false }
        let a = IPv4Address("198.18.0.1")!, b = IPv4Address("198.18.0.2")!
        #expect(Set([h.source, h.destination]) == Set([a, b]))
        #expect(h.ttl == 64)
        #expect(d.packet.udp.destinationPort == 4789)
        #expect((32768...60999).contains(d.packet.udp.sourcePort))
        #expect(d.outerEthernet.etherType == .ipv4)
        let fromA = h.source == a
        // Side a's device has udpcsum, b's noudpcsum: the checksum (already verified) is there exactly when sent by a.
        #expect((d.packet.udp.checksum != 0) == fromA)
        #expect(d.outerEthernet.source == MACAddress(fromA ? "02:00:00:18:00:01" : "02:00:00:18:00:02")!)
        return fromA
    }

    @Test func ipv4UnderlayCapture() throws {
        let all = try decodeAll("vxlan-ipv4-underlay.pcap", vni: 42)
        #expect(all.count == 16)
        var arp = 0, echo4 = 0, echo6 = 0, nd = 0
        var requestPorts: [UInt16: UInt16] = [:]
        for d in all {
            #expect(d.packet.vni.value == 42)
            let fromA = checkOuterV4(d)
            let macA = MACAddress("02:00:00:42:00:01")!, macB = MACAddress("02:00:00:42:00:02")!
            #expect(d.inner.header.source == (fromA ? macA : macB))
            switch d.inner.payload {
            case .arp(let a):
                arp += 1
                #expect(a.operation == (fromA ? .request : .reply))
                #expect(a.senderIP == (fromA ? Sample.ipA : Sample.ipB))
                #expect(a.targetIP == (fromA ? Sample.ipB : Sample.ipA))
                #expect(a.senderMAC == d.inner.header.source)
                if !fromA { #expect(a.targetMAC == macA) }
                #expect(d.inner.header.destination == (fromA ? .broadcast : macA))
            case .ipv4(let p):
                echo4 += 1
                #expect(p.header.source == (fromA ? Sample.ipA : Sample.ipB))
                #expect(p.header.destination == (fromA ? Sample.ipB : Sample.ipA))
                guard case .icmp(let m) = p.payload else { Issue.record("not ICMP"); continue }
                let e = try ICMPEcho(m, family: .v4)
                #expect(e.isReply == !fromA)
                #expect((1...3).contains(e.sequenceNumber))
                #expect(e.payload.readableBytes == 56)
                // ping -p 0123456789abcdef: the pattern fills the data after the 16-byte timestamp.
                let pat: [UInt8] = [0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF]
                #expect(Array(e.payload.readableBytesView.dropFirst(16)) == Array((0..<5).map { _ in pat }.joined()))
                // The kernel's flow hash is symmetric: the reply takes the request's source port.
                if fromA { requestPorts[e.sequenceNumber] = d.packet.udp.sourcePort }
                else { #expect(requestPorts[e.sequenceNumber] == d.packet.udp.sourcePort) }
            case .ipv6(let p):
                guard case .icmp(let m) = p.payload else { Issue.record("not ICMPv6"); continue }
                #expect(p.header.source == (fromA ? Sample.ip6A : Sample.ip6B))
                if m.type == 135 || m.type == 136 {
                    nd += 1  // neighbour solicitation / advertisement, checksum verified on read
                    #expect(p.header.hopLimit == 255)
                } else {
                    echo6 += 1
                    let e = try ICMPEcho(m, family: .v6)
                    #expect(e.isReply == !fromA)
                    #expect(p.header.destination == (fromA ? Sample.ip6B : Sample.ip6A))
                }
            case .other:
                Issue.record("unexpected inner frame \(d.inner.header)")
            }
        }
        #expect(arp == 2)
        #expect(echo4 == 6)
        #expect(nd == 2)
        #expect(echo6 == 6)
    }

    @Test func ipv6UnderlayCapture() throws {
        let all = try decodeAll("vxlan-ipv6-underlay.pcap", vni: 43)
        #expect(all.count == 8)
        var kinds: [String] = []
        for d in all {
            #expect(d.packet.vni.value == 43)
            guard case .v6(let h) = d.packet.outer else { Issue.record("outer not IPv6"); continue }
            let a = IPv6Address("2001:db8:18::1")!, b = IPv6Address("2001:db8:18::2")!
            #expect(Set([h.source, h.destination]) == Set([a, b]))
            #expect(h.hopLimit == 64)
            #expect(d.packet.udp.checksum != 0)
            switch d.inner.payload {
            case .arp(let p): kinds.append(p.operation == .request ? "arp-req" : "arp-rep")
            case .ipv4(let p):
                guard case .icmp(let m) = p.payload else { Issue.record("not ICMP"); continue }
                let e = try ICMPEcho(m, family: .v4)
                #expect(p.header.source == IPv4Address(e.isReply ? "198.19.43.2" : "198.19.43.1")!)
                kinds.append(e.isReply ? "reply" : "request")
            default: Issue.record("unexpected inner frame")
            }
        }
        #expect(kinds.filter { $0 == "request" }.count == 3)
        #expect(kinds.filter { $0 == "reply" }.count == 3)
        #expect(kinds.prefix(2) == ["arp-req", "arp-rep"])
    }

    /// Our encapsulator, given the captured inner frame and the kernel's IP ID, writes the same outer
    /// packet as the kernel except for the source port (the kernel's hash has a per-boot seed) and so
    /// the UDP checksum.
    @Test func ourEncapsulationMatchesTheKernels() throws {
        for (file, vni) in [("vxlan-ipv4-underlay.pcap", UInt32(42)), ("vxlan-ipv6-underlay.pcap", 43)] {
            for d in try decodeAll(file, vni: vni) {
                var enc = VXLANEncapsulator(vni: try VNI(vni))
                var id: UInt16 = 0
                if case .v4(let h) = d.packet.outer { id = h.identification }
                enc.ipv4UDPChecksum = d.packet.udp.checksum != 0
                enc.sourcePortRange = d.packet.udp.sourcePort...d.packet.udp.sourcePort  // pin the port to the kernel's
                let ours = try enc.encapsulatePacket(d.packet.innerFrame, source: d.packet.outer.source,
                                                     destination: d.packet.outer.destination, identification: id)
                let theirs = try PcapFile.load(file).records.map(\.data).first { b in
                    var c = b
                    _ = try? c.readEthernetHeader()
                    return c.readableBytesView.elementsEqual(ours.readableBytesView)
                }
                #expect(theirs != nil, "our \(file) packet for \(d.inner.header) equals a captured one")
            }
        }
    }
}
