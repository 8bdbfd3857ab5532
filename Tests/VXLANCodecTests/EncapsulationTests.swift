import NIOCore
import OverlayModel
import Testing
@testable import VXLANCodec

@Suite struct EncapsulationTests {
    let enc = VXLANEncapsulator(vni: Sample.vni)
    let dec = VXLANDecapsulator(vni: Sample.vni)

    @Test(arguments: Sample.frames.map(\.0))
    func udpPayloadRoundTrip(_ name: String) throws {
        let inner = Sample.encode(Sample.frames.first { $0.0 == name }!.1)
        let wire = try enc.encapsulate(inner)
        #expect(wire.readableBytes == 8 + inner.readableBytes)
        #expect(Array(wire.readableBytesView.prefix(8)) == [0x08, 0, 0, 0, 0, 0, 42, 0])
        let f = try dec.decapsulate(udpPayload: wire)
        #expect(f.vni == Sample.vni)
        #expect(f.innerFrame == inner)
    }

    @Test(arguments: Sample.packets.map(\.0))
    func fullPacketRoundTrip(_ name: String) throws {
        let wire = Sample.packets.first { $0.0 == name }!.1
        let p = try dec.decapsulate(packet: wire)
        let frameName = String(name.split(separator: "/")[1])
        let inner = Sample.encode(Sample.frames.first { $0.0 == frameName }!.1)
        #expect(p.innerFrame == inner)
        #expect(p.vni == Sample.vni)
        #expect(p.udp.destinationPort == 4789)
        #expect((32768...60999).contains(p.udp.sourcePort))
        #expect(p.udp.sourcePort == enc.sourcePort(forInnerFrame: inner))
        #expect(Int(p.udp.length) == 16 + inner.readableBytes)
        switch p.outer {
        case .v4(let h):
            #expect(name.hasPrefix("v4"))
            #expect(h.source == IPv4Address("198.18.0.1")!)
            #expect(h.destination == IPv4Address("198.18.0.2")!)
            #expect(h.ttl == 64)
            #expect(Int(h.totalLength) == wire.readableBytes)
            #expect((p.udp.checksum != 0) == name.hasPrefix("v4csum"))
        case .v6(let h):
            #expect(name.hasPrefix("v6"))
            #expect(h.source == IPv6Address("2001:db8:18::1")!)
            #expect(h.flowLabel == 0xABCDE)
            #expect(p.udp.checksum != 0)
        }
        // The generic parsers agree with the decapsulator.
        var b = wire
        if name.hasPrefix("v6") {
            let ip = try #require(try b.readIPv6Packet())
            guard case .udp(let d) = ip.payload else { Issue.record("not UDP"); return }
            #expect(d.payload.getSlice(at: d.payload.readerIndex + 8, length: inner.readableBytes) == inner)
        } else {
            let ip = try #require(try b.readIPv4Packet())
            guard case .udp(let d) = ip.payload else { Issue.record("not UDP"); return }
            #expect(d.hasChecksum == name.hasPrefix("v4csum"))
        }
    }

    @Test func sourcePortMapsLikeLinux() {
        let r: ClosedRange<UInt16> = 32768...60999
        #expect(FlowHash.scale(0, into: r) == 32768)
        #expect(FlowHash.scale(0xFFFF_FFFF, into: r) == 32768 + 28230)
        #expect(FlowHash.scale(0x8000_0000, into: r) == 32768 + 14115)
        var seen = Set<UInt16>()
        for id in 0..<200 {
            let inner = Sample.encode(Sample.echo4(id: UInt16(id)))
            let p = enc.sourcePort(forInnerFrame: inner)
            #expect(r.contains(p))
            seen.insert(p)
        }
        #expect(seen.count > 150, "flows spread over ports: \(seen.count) distinct of 200")
    }

    @Test func sourcePortIsPerFlowAndSymmetric() {
        let req = Sample.encode(Sample.echo4(id: 7, seq: 1))
        let req2 = Sample.encode(Sample.echo4(id: 7, seq: 2))
        let rep = Sample.encode(Sample.echo4(id: 7, seq: 1, reply: true))
        let other = Sample.encode(Sample.echo4(id: 8, seq: 1))
        #expect(enc.sourcePort(forInnerFrame: req) == enc.sourcePort(forInnerFrame: req2))
        #expect(enc.sourcePort(forInnerFrame: req) == enc.sourcePort(forInnerFrame: rep))
        #expect(enc.sourcePort(forInnerFrame: req) != enc.sourcePort(forInnerFrame: other))
        // UDP: ports count, in either direction.
        var f = Sample.udp4Tagged
        let a = enc.sourcePort(forInnerFrame: Sample.encode(f))
        guard case .ipv4(var p) = f.payload, case .udp(var d) = p.payload else { Issue.record("sample"); return }
        swap(&p.header.source, &p.header.destination)
        swap(&d.sourcePort, &d.destinationPort)
        p.payload = .udp(d)
        f.payload = .ipv4(p)
        #expect(enc.sourcePort(forInnerFrame: Sample.encode(f)) == a)
        d.sourcePort = 5354
        p.payload = .udp(d)
        f.payload = .ipv4(p)
        #expect(enc.sourcePort(forInnerFrame: Sample.encode(f)) != a)
    }

    @Test func encapsulationRefusals() throws {
        expectCode(.innerFrameTooShort) { _ = try enc.encapsulate(Sample.pattern(13)) }
        expectCode(.addressFamilyMismatch) { _ = try enc.encapsulatePacket(Sample.pattern(60), source: Sample.outer4.0, destination: Sample.outer6.1) }
        expectCode(.tooLarge) { _ = try enc.encapsulatePacket(Sample.pattern(65_500), source: Sample.outer4.0, destination: Sample.outer4.1) }
    }

    @Test func decapsulationDropReasons() throws {
        let inner = Sample.encode(Sample.echo4())
        let good = try enc.encapsulate(inner)
        func mutated(_ at: Int, _ v: UInt8) -> ByteBuffer { var b = good; b.setInteger(v, at: at); return b }
        expectCode(.badVXLANFlags) { _ = try dec.decapsulate(udpPayload: mutated(0, 0x00)) }
        expectCode(.reservedBitsSet) { _ = try dec.decapsulate(udpPayload: mutated(0, 0x0C)) }
        expectCode(.reservedBitsSet) { _ = try dec.decapsulate(udpPayload: mutated(2, 0x01)) }
        expectCode(.reservedBitsSet) { _ = try dec.decapsulate(udpPayload: mutated(7, 0x01)) }
        let lenient = VXLANDecapsulator(vni: Sample.vni, strictReservedBits: false)
        #expect(try lenient.decapsulate(udpPayload: mutated(7, 0xFF)).innerFrame == inner)
        expectCode(.vniMismatch) { _ = try dec.decapsulate(udpPayload: mutated(6, 43)) }
        expectCode(.vniMismatch) { _ = try VXLANDecapsulator(vni: nil).decapsulate(udpPayload: mutated(6, 0)) }
        #expect(try VXLANDecapsulator(vni: nil).decapsulate(udpPayload: mutated(6, 43)).vni == (try VNI(43)))
        expectCode(.truncated) { _ = try dec.decapsulate(udpPayload: good.getSlice(at: 0, length: 7)!) }
        expectCode(.innerFrameTooShort) { _ = try dec.decapsulate(udpPayload: good.getSlice(at: 0, length: 21)!) }

        var e4 = enc
        e4.ipv4UDPChecksum = true
        let p4 = try e4.encapsulatePacket(inner, source: Sample.outer4.0, destination: Sample.outer4.1)
        func m4(_ at: Int, _ v: UInt8) -> ByteBuffer { var b = p4; b.setInteger(v, at: at); return b }
        expectCode(.badIPv4Checksum) { _ = try dec.decapsulate(packet: m4(8, 63)) }  // TTL changed, checksum not
        expectCode(.badUDPChecksum) { _ = try dec.decapsulate(packet: m4(p4.readableBytes - 1, 0xEE)) }
        // A checksum field left partial by offload (as captured on a sending veth): refused unless
        // the caller says the checksum is not to be verified.
        var partial = p4
        partial.setInteger(partial.getInteger(at: 26, as: UInt16.self)! &+ 1, at: 26)
        expectCode(.badUDPChecksum) { _ = try dec.decapsulate(packet: partial) }
        let unverified = VXLANDecapsulator(vni: Sample.vni, verifyUDPChecksum: false)
        #expect(try unverified.decapsulate(packet: partial).innerFrame == inner)
        expectCode(.badIPv4Checksum) { _ = try unverified.decapsulate(packet: m4(8, 63)) }
        expectCode(.badIPVersion) { _ = try dec.decapsulate(packet: m4(0, 0x55)) }
        expectCode(.badLength) { _ = try dec.decapsulate(packet: m4(0, 0x44)) }
        expectCode(.truncated) { _ = try dec.decapsulate(packet: p4.getSlice(at: 0, length: p4.readableBytes - 1)!) }
        expectCode(.truncated) { _ = try dec.decapsulate(packet: ByteBuffer()) }
        // Rebuild headers with a valid IPv4 checksum but other faults.
        func rebuilt(_ change: (inout IPv4Header) -> Void) throws -> ByteBuffer {
            var b = p4
            var h = try #require(try b.readIPv4Header())
            change(&h)
            var out = ByteBuffer()
            out.writeIPv4Header(h)
            out.writeImmutableBuffer(b)
            return out
        }
        expectCode(.fragmented) { _ = try dec.decapsulate(packet: try rebuilt { $0.moreFragments = true }) }
        expectCode(.fragmented) { _ = try dec.decapsulate(packet: try rebuilt { $0.fragmentOffset = 3 }) }
        expectCode(.notUDP) { _ = try dec.decapsulate(packet: try rebuilt { $0.protocol = .tcp }) }
        expectCode(.badUDPChecksum) { _ = try dec.decapsulate(packet: try rebuilt { $0.source = IPv4Address(1) }) }
        expectCode(.badLength) { _ = try dec.decapsulate(packet: try rebuilt { $0.totalLength -= 1 }) }
        expectCode(.wrongPort) { _ = try VXLANDecapsulator(vni: Sample.vni, destinationPort: 8472).decapsulate(packet: p4) }
        // Link padding after the IP packet is ignored.
        var padded = p4
        padded.writeRepeatingByte(0, count: 6)
        #expect(try dec.decapsulate(packet: padded).innerFrame == inner)

        let p6 = try enc.encapsulatePacket(inner, source: Sample.outer6.0, destination: Sample.outer6.1)
        var z6 = p6
        z6.setInteger(UInt16(0), at: 46)
        expectCode(.badUDPChecksum) { _ = try dec.decapsulate(packet: z6) }
        let allowZero = VXLANDecapsulator(vni: Sample.vni, allowZeroIPv6UDPChecksum: true)
        #expect(try allowZero.decapsulate(packet: z6).innerFrame == inner)
        var n6 = p6
        n6.setInteger(UInt8(6), at: 6)
        expectCode(.notUDP) { _ = try dec.decapsulate(packet: n6) }
        var l6 = p6
        l6.setInteger(UInt16(p6.readableBytes), at: 4)
        expectCode(.truncated) { _ = try dec.decapsulate(packet: l6) }
    }
}
