import NIOCore
import OverlayModel
import Testing
@testable import VXLANCodec

/// Every truncation of every sample parses to nil or throws, never crashes, and a nil leaves the
/// reader index where it was.
@Suite struct PrefixTests {
    /// Runs `read` on every strict prefix of `whole` (each copied into its own buffer, so there is
    /// nothing past its end to read) and checks the nil/throw contract.
    func everyPrefix<T>(_ whole: ByteBuffer, mayParse: Bool = false, sourceLocation: SourceLocation = #_sourceLocation,
                        _ read: (inout ByteBuffer) throws -> T?) {
        for n in 0..<whole.readableBytes {
            var b = ByteBuffer(bytes: whole.readableBytesView.prefix(n))
            do {
                if let _ = try read(&b) {
                    if !mayParse { Issue.record("prefix \(n) of \(whole.readableBytes) parsed", sourceLocation: sourceLocation) }
                    #expect(b.readerIndex <= n, sourceLocation: sourceLocation)
                } else {
                    #expect(b.readerIndex == 0, "nil must not move the reader index (prefix \(n))", sourceLocation: sourceLocation)
                }
            } catch {
                #expect(error is VXLANCodecError, sourceLocation: sourceLocation)
            }
        }
    }

    @Test func headers() {
        var b = ByteBuffer()
        b.writeVXLANHeader(VXLANHeader(vni: Sample.vni))
        everyPrefix(b) { try $0.readVXLANHeader() }
        b.clear(); b.writeEthernetHeader(EthernetHeader(destination: .broadcast, source: Sample.macA, vlan: VLANTag(vid: 3), etherType: .ipv6))
        everyPrefix(b) { try $0.readEthernetHeader() }
        b.clear(); b.writeARPPacket(ARPPacket(operation: .request, senderMAC: Sample.macA, senderIP: Sample.ipA, targetIP: Sample.ipB))
        everyPrefix(b) { try $0.readARPPacket() }
        b.clear(); b.writeIPv4Header(IPv4Header(source: Sample.ipA, destination: Sample.ipB, protocol: .udp, totalLength: 60, options: Sample.pattern(12)))
        everyPrefix(b) { try $0.readIPv4Header() }
        b.clear(); b.writeIPv6Header(IPv6Header(source: Sample.ip6A, destination: Sample.ip6B, nextHeader: .udp))
        everyPrefix(b) { try $0.readIPv6Header() }
        b.clear(); b.writeUDPHeader(UDPHeader(sourcePort: 1, destinationPort: 2, length: 8))
        everyPrefix(b) { try $0.readUDPHeader() }
    }

    @Test(arguments: Sample.frames.map(\.0))
    func innerFrames(_ name: String) {
        let f = Sample.frames.first { $0.0 == name }!.1
        let wire = Sample.encode(f)
        // Frames whose payload has no length field of its own (raw EtherTypes, trailers) may parse shorter.
        let open = name == "otherEtherType" || name == "arpReplyPadded"
        everyPrefix(wire, mayParse: open) { try $0.readEthernetFrame() }
        if open {
            // Then the parse must still be exact for what it covered.
            for n in 14..<wire.readableBytes {
                var b = ByteBuffer(bytes: wire.readableBytesView.prefix(n))
                if let g = try? b.readEthernetFrame() { #expect(Sample.encode(g).readableBytes == n) }
            }
        }
    }

    @Test(arguments: Sample.packets.map(\.0))
    func fullPackets(_ name: String) {
        let wire = Sample.packets.first { $0.0 == name }!.1
        let dec = VXLANDecapsulator(vni: Sample.vni)
        for n in 0..<wire.readableBytes {
            let b = ByteBuffer(bytes: wire.readableBytesView.prefix(n))
            #expect(throws: VXLANCodecError.self, "prefix \(n)") { _ = try dec.decapsulate(packet: b) }
        }
        everyPrefix(wire) { b -> IPPayload? in
            if name.hasPrefix("v6") { return try b.readIPv6Packet()?.payload }
            return try b.readIPv4Packet()?.payload
        }
    }

    @Test(arguments: Sample.frames.map(\.0))
    func udpPayloads(_ name: String) throws {
        let inner = Sample.encode(Sample.frames.first { $0.0 == name }!.1)
        let wire = try VXLANEncapsulator(vni: Sample.vni).encapsulate(inner)
        let dec = VXLANDecapsulator(vni: Sample.vni)
        for n in 0..<22 {
            let b = ByteBuffer(bytes: wire.readableBytesView.prefix(n))
            #expect(throws: VXLANCodecError.self, "prefix \(n)") { _ = try dec.decapsulate(udpPayload: b) }
        }
        // Longer prefixes are valid VXLAN (the inner frame has no length of its own) and slice exactly.
        for n in 22..<wire.readableBytes {
            let b = ByteBuffer(bytes: wire.readableBytesView.prefix(n))
            #expect(try dec.decapsulate(udpPayload: b).innerFrame.readableBytes == n - 8)
        }
    }
}
