import NIOCore
import OverlayModel
import Testing
import VXLANCodec

/// The example in Sources/VXLANCodec/README.md, run as written (prints replaced by expectations).
@Suite struct ReadmeExampleTests {
    @Test func encapsulateThenDecapsulate() throws {
        let echo = ICMPEcho(isReply: false, identifier: 1, sequenceNumber: 1, payload: ByteBuffer(string: "hello"))
        let frame = EthernetFrame(
            header: EthernetHeader(destination: MACAddress("02:42:0a:00:00:03")!, source: MACAddress("02:42:0a:00:00:02")!,
                                   etherType: .ipv4),
            payload: .ipv4(IPv4Packet(header: IPv4Header(source: IPv4Address("10.0.0.2")!, destination: IPv4Address("10.0.0.3")!,
                                                         protocol: .icmp),
                                      payload: .icmp(echo.message(family: .v4)))))
        var inner = ByteBuffer()
        try inner.writeEthernetFrame(frame)

        let vni = try VNI(4096)
        let packet = try VXLANEncapsulator(vni: vni).encapsulatePacket(
            inner, source: .v4(IPv4Address("192.0.2.1")!), destination: .v4(IPv4Address("192.0.2.2")!))

        let received = try VXLANDecapsulator(vni: vni).decapsulate(packet: packet)
        var innerBytes = received.innerFrame
        guard let decoded = try innerBytes.readEthernetFrame(), case .ipv4(let ip) = decoded.payload,
              case .icmp(let message) = ip.payload else { Issue.record("not an IPv4 ICMP frame"); return }
        #expect(received.vni == vni)
        #expect((32768...60999).contains(received.udp.sourcePort))
        #expect(try ICMPEcho(message, family: .v4).sequenceNumber == 1)
        #expect(decoded == frame)

        let payload = try VXLANEncapsulator(vni: vni).encapsulate(inner)
        let otherNetwork = VXLANDecapsulator(vni: try VNI(42))
        do {
            _ = try otherNetwork.decapsulate(udpPayload: payload)
            Issue.record("VNI 42 accepted VNI 4096")
        } catch {
            #expect(error.code == .vniMismatch)
        }
    }
}
