import NIOCore
import OverlayModel
import Testing
@testable import VXLANCodec

/// Named inputs that once crashed or misbehaved, or that sit right on a boundary. The seeded fuzzer
/// (FuzzTests) found no crash in 200,000 mutations; these came from review and from the boundaries
/// the fuzzer's mutations aim at. Each must keep going through `FuzzTests.exercise` without a crash.
@Suite struct FuzzRegressionTests {
    /// The outer UDP checksum was first summed from the reader index *after* the UDP header had been
    /// read, indexing 8 bytes before the buffer's readable start: a trap on every checksummed packet.
    @Test func outerUDPChecksumAfterHeaderRead() throws {
        var e = VXLANEncapsulator(vni: Sample.vni)
        e.ipv4UDPChecksum = true
        let p = try e.encapsulatePacket(Sample.encode(Sample.echo4()), source: Sample.outer4.0, destination: Sample.outer4.1)
        #expect(try VXLANDecapsulator(vni: Sample.vni).decapsulate(packet: p).udp.checksum != 0)
        FuzzTests.exercise(Array(p.readableBytesView))
    }

    /// IHL 15 (60-byte header) with a total length of 20: header longer than the packet.
    @Test func ihlLongerThanTotalLength() {
        var b = ByteBuffer()
        b.writeIPv4Header(IPv4Header(source: Sample.ipA, destination: Sample.ipB, protocol: .udp, totalLength: 20, options: Sample.pattern(40)))
        expectCode(.badLength) { var c = b; _ = try c.readIPv4Header() }
        FuzzTests.exercise(Array(b.readableBytesView))
    }

    /// IPv6 with payload length 0 and next header UDP: a zero-length UDP datagram is impossible.
    @Test func ipv6ZeroPayloadUDP() {
        var b = ByteBuffer()
        b.writeIPv6Header(IPv6Header(source: Sample.ip6A, destination: Sample.ip6B, nextHeader: .udp, payloadLength: 0))
        expectCode(.badLength) { var c = b; _ = try c.readIPv6Packet() }
        expectCode(.truncated) { _ = try VXLANDecapsulator(vni: nil).decapsulate(packet: b) }
        FuzzTests.exercise(Array(b.readableBytesView))
    }

    /// A VLAN tag with nothing after it, and a lone TPID.
    @Test func vlanTagCutShort() throws {
        for n in 12...17 {
            var b = ByteBuffer()
            b.writeEthernetHeader(EthernetHeader(destination: Sample.macB, source: Sample.macA, vlan: VLANTag(vid: 1), etherType: .ipv4))
            b.moveWriterIndex(to: n)
            #expect(try b.readEthernetHeader() == nil)
            #expect(b.readerIndex == 0)
            FuzzTests.exercise(Array(b.readableBytesView))
            _ = FlowHash.hash(innerFrame: b, seed: 0)
        }
    }

    /// UDP length 8 over IPv4 with checksum 0xFFFF (the RFC 768 form of a computed zero).
    @Test func emptyUDPDatagram() throws {
        let ph = PseudoHeader.v4(source: Sample.ipA, destination: Sample.ipB)
        var b = ByteBuffer()
        try b.writeUDPDatagram(UDPDatagram(sourcePort: 0, destinationPort: 0, payload: ByteBuffer()), pseudoHeader: ph)
        #expect(b.readableBytes == 8)
        #expect(try b.readUDPDatagram(length: 8, pseudoHeader: ph)?.payload.readableBytes == 0)
    }

    /// The libFuzzer harness's ARP seed (Fuzz/VXLAN/seeds/arp-request): who-has 10.0.0.3 tell
    /// 10.0.0.2, and every prefix of it, through all the decoders (docs: Documentation/Fuzzing.md).
    @Test func libFuzzerARPSeed() throws {
        let seed: [UInt8] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x08, 0x06,
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02,
            10, 0, 0, 2, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 0, 0, 3,
        ]
        var b = ByteBuffer(bytes: seed)
        let frame = try #require(try b.readEthernetFrame())
        guard case .arp(let arp) = frame.payload else {
            Issue.record("ARP seed decoded as \(frame.payload)")
            return
        }
        #expect(arp.operation == .request)
        #expect(arp.senderIP == IPv4Address(10, 0, 0, 2))
        #expect(arp.targetIP == IPv4Address(10, 0, 0, 3))
        for n in 0...seed.count { FuzzTests.exercise(Array(seed[..<n])) }
        for n in 0..<28 {  // an ARP packet cut short is "need more bytes", not an error
            var c = ByteBuffer(bytes: seed[14..<(14 + n)])
            #expect(try c.readARPPacket() == nil)
        }
    }
}
