import NIOCore
import OverlayModel
import Testing
@testable import VXLANCodec

@Suite struct ChecksumTests {
    @Test func rfc1071Example() {
        // RFC 1071 section 3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2.
        var c = InternetChecksum()
        c.add(buffer: ByteBuffer(bytes: [0x00, 0x01, 0xF2, 0x03, 0xF4, 0xF5, 0xF6, 0xF7]))
        #expect(c.foldedSum == 0xDDF2)
        #expect(c.checksum == ~UInt16(0xDDF2))
    }

    @Test func chunksOfAnyLengthSumLikeTheWhole() {
        let data = (0..<301).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 5) }
        var whole = InternetChecksum()
        whole.add(buffer: ByteBuffer(bytes: data))
        for cut1 in [0, 1, 3, 64, 150] {
            for cut2 in [cut1, cut1 + 1, cut1 + 7, 300] where cut2 <= 301 {
                var c = InternetChecksum()
                c.add(buffer: ByteBuffer(bytes: data[0..<cut1]))
                c.add(buffer: ByteBuffer(bytes: data[cut1..<cut2]))
                c.add(buffer: ByteBuffer(bytes: data[cut2...]))
                #expect(c.foldedSum == whole.foldedSum, "cuts \(cut1), \(cut2)")
            }
        }
        // A naive big-endian word sum agrees.
        var naive: UInt32 = 0
        for i in stride(from: 0, to: data.count, by: 2) {
            naive += UInt32(data[i]) << 8 | (i + 1 < data.count ? UInt32(data[i + 1]) : 0)
        }
        while naive > 0xFFFF { naive = (naive & 0xFFFF) + (naive >> 16) }
        #expect(UInt16(naive) == whole.foldedSum)
    }
}

@Suite struct HeaderRoundTripTests {
    func roundTrip<T: Equatable>(_ value: T, write: (inout ByteBuffer, T) -> Int,
                                 read: (inout ByteBuffer) throws -> T?, length: Int) throws {
        var b = ByteBuffer()
        let n = write(&b, value)
        #expect(n == length)
        #expect(b.readableBytes == length)
        let back = try #require(try read(&b))
        #expect(back == value)
        #expect(b.readableBytes == 0)
    }

    @Test func vxlanHeader() throws {
        try roundTrip(VXLANHeader(vni: Sample.vni), write: { $0.writeVXLANHeader($1) }, read: { try $0.readVXLANHeader() }, length: 8)
        let odd = VXLANHeader(flags: 0x88, reserved1: 0xABCDEF, vniValue: 0xFFFFFF, reserved2: 0x5A)
        try roundTrip(odd, write: { $0.writeVXLANHeader($1) }, read: { try $0.readVXLANHeader() }, length: 8)
        var b = ByteBuffer()
        b.writeVXLANHeader(VXLANHeader(vni: try VNI(0x123456)))
        #expect(Array(b.readableBytesView) == [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0x00])  // RFC 7348 section 5 layout
    }

    @Test func ethernetHeader() throws {
        let plain = EthernetHeader(destination: Sample.macB, source: Sample.macA, etherType: .ipv4)
        try roundTrip(plain, write: { $0.writeEthernetHeader($1) }, read: { try $0.readEthernetHeader() }, length: 14)
        let tagged = EthernetHeader(destination: .broadcast, source: Sample.macA,
                                    vlan: VLANTag(vid: 4095, priority: 7, dropEligible: true), etherType: .arp)
        try roundTrip(tagged, write: { $0.writeEthernetHeader($1) }, read: { try $0.readEthernetHeader() }, length: 18)
        var b = ByteBuffer()
        b.writeEthernetHeader(tagged)
        #expect(Array(b.readableBytesView)[12...17] == [0x81, 0x00, 0xFF, 0xFF, 0x08, 0x06])
    }

    @Test func arp() throws {
        let a = ARPPacket(operation: .reply, senderMAC: Sample.macB, senderIP: Sample.ipB, targetMAC: Sample.macA, targetIP: Sample.ipA)
        try roundTrip(a, write: { $0.writeARPPacket($1) }, read: { try $0.readARPPacket() }, length: 28)
        var b = ByteBuffer()
        b.writeARPPacket(a)
        b.setInteger(UInt16(6), at: 0)  // IEEE 802 hardware type: not Ethernet
        #expect(throws: VXLANCodecError.self) { _ = try b.readARPPacket() }
    }

    @Test func ipv4Header() throws {
        var h = IPv4Header(source: Sample.ipA, destination: Sample.ipB, protocol: .udp, totalLength: 100, ttl: 1, tos: 0xFE,
                           identification: 0xBEEF, dontFragment: true, moreFragments: true, fragmentOffset: 0x1ABC,
                           options: ByteBuffer(bytes: [1, 1, 1, 0]))
        h.reservedFlag = true
        try roundTrip(h, write: { $0.writeIPv4Header($1) }, read: { try $0.readIPv4Header() }, length: 24)
    }

    @Test func ipv4KnownChecksum() throws {
        // The classic worked example: 45 00 00 73 00 00 40 00 40 11 [b8 61] c0 a8 00 01 c0 a8 00 c7.
        var b = ByteBuffer()
        b.writeIPv4Header(IPv4Header(source: IPv4Address("192.168.0.1")!, destination: IPv4Address("192.168.0.199")!,
                                     protocol: .udp, totalLength: 0x73, ttl: 64, dontFragment: true))
        #expect(b.getInteger(at: 10, as: UInt16.self) == 0xB861)
        b.setInteger(UInt16(0xB862), at: 10)
        let before = b.readerIndex
        expectCode(.badIPv4Checksum) { _ = try b.readIPv4Header() }
        #expect(b.readerIndex == before)
    }

    @Test func ipv6Header() throws {
        let h = IPv6Header(source: Sample.ip6A, destination: Sample.ip6B, nextHeader: .udp, payloadLength: 1234, hopLimit: 255,
                           trafficClass: 0xAB, flowLabel: 0xFFFFF)
        try roundTrip(h, write: { $0.writeIPv6Header($1) }, read: { try $0.readIPv6Header() }, length: 40)
    }

    @Test func udpHeader() throws {
        try roundTrip(UDPHeader(sourcePort: 1, destinationPort: 65535, length: 8, checksum: 0xFFFF),
                      write: { $0.writeUDPHeader($1) }, read: { try $0.readUDPHeader() }, length: 8)
    }

    @Test func udpDatagramBothFamilies() throws {
        for ph in [PseudoHeader.v4(source: Sample.ipA, destination: Sample.ipB), .v6(source: Sample.ip6A, destination: Sample.ip6B)] {
            for size in [0, 1, 2, 3, 100, 1401] {
                let d = UDPDatagram(sourcePort: 7, destinationPort: 9, payload: Sample.pattern(size))
                var b = ByteBuffer()
                let n = try b.writeUDPDatagram(d, pseudoHeader: ph)
                #expect(n == 8 + size)
                #expect(b.getInteger(at: 6, as: UInt16.self) != 0)
                #expect(try b.readUDPDatagram(length: n, pseudoHeader: ph) == d)
            }
        }
    }

    @Test func icmpEchoBothFamilies() throws {
        let e = ICMPEcho(isReply: false, identifier: 0xAAAA, sequenceNumber: 0x5555, payload: Sample.pattern(57))
        var b = ByteBuffer()
        b.writeICMPMessage(e.message(family: .v4))
        #expect(b.getInteger(at: 0, as: UInt8.self) == 8)
        let m = try #require(try b.readICMPMessage(length: b.readableBytes))
        #expect(try ICMPEcho(m, family: .v4) == e)
        let ph = PseudoHeader.v6(source: Sample.ip6A, destination: Sample.ip6B)
        var b6 = ByteBuffer()
        b6.writeICMPMessage(e.reply.message(family: .v6), pseudoHeader: ph)
        #expect(b6.getInteger(at: 0, as: UInt8.self) == 129)
        let m6 = try #require(try b6.readICMPMessage(length: b6.readableBytes, pseudoHeader: ph))
        #expect(try ICMPEcho(m6, family: .v6) == e.reply)
        #expect(throws: VXLANCodecError.self) { _ = try ICMPEcho(ICMPMessage(type: 3, code: 1, restOfHeader: 0, body: ByteBuffer()), family: .v4) }
    }

    @Test(arguments: Sample.frames.map(\.0))
    func ethernetFrame(_ name: String) throws {
        let f = Sample.frames.first { $0.0 == name }!.1
        var b = Sample.encode(f)
        let bytes = Array(b.readableBytesView)
        let back = try #require(try b.readEthernetFrame())
        #expect(back == f)
        #expect(b.readableBytes == 0)
        #expect(Array(Sample.encode(back).readableBytesView) == bytes)
    }
}
