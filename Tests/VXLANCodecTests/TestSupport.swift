import Foundation
import NIOCore
import OverlayModel
import Testing
@testable import VXLANCodec

/// Shorthands and sample packets shared by the codec tests.
enum Sample {
    static let macA = MACAddress("02:00:00:42:00:01")!
    static let macB = MACAddress("02:00:00:42:00:02")!
    static let ipA = IPv4Address("198.19.42.1")!
    static let ipB = IPv4Address("198.19.42.2")!
    static let ip6A = IPv6Address("fd42::1")!
    static let ip6B = IPv6Address("fd42::2")!
    static let vni = try! VNI(42)

    static func bytes(_ b: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: b) }

    static func pattern(_ n: Int, seed: UInt8 = 0) -> ByteBuffer {
        ByteBuffer(bytes: (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(seed)) })
    }

    static func encode(_ f: EthernetFrame) -> ByteBuffer {
        var b = ByteBuffer()
        try! b.writeEthernetFrame(f)
        return b
    }

    static var arpRequest: EthernetFrame {
        EthernetFrame(header: EthernetHeader(destination: .broadcast, source: macA, etherType: .arp),
                      payload: .arp(ARPPacket(operation: .request, senderMAC: macA, senderIP: ipA, targetIP: ipB)))
    }

    static var arpReplyPadded: EthernetFrame {
        EthernetFrame(header: EthernetHeader(destination: macA, source: macB, etherType: .arp),
                      payload: .arp(ARPPacket(operation: .reply, senderMAC: macB, senderIP: ipB, targetMAC: macA, targetIP: ipA)),
                      trailer: ByteBuffer(repeating: 0, count: 18))
    }

    static func echo4(id: UInt16 = 0x1234, seq: UInt16 = 1, reply: Bool = false, size: Int = 56) -> EthernetFrame {
        let e = ICMPEcho(isReply: reply, identifier: id, sequenceNumber: seq, payload: pattern(size))
        let h = IPv4Header(source: reply ? ipB : ipA, destination: reply ? ipA : ipB, protocol: .icmp,
                           identification: 0x4242, dontFragment: true)
        return EthernetFrame(header: EthernetHeader(destination: reply ? macA : macB, source: reply ? macB : macA, etherType: .ipv4),
                             payload: .ipv4(IPv4Packet(header: h, payload: .icmp(e.message(family: .v4)))))
    }

    static func echo6(id: UInt16 = 0x5678, seq: UInt16 = 2, size: Int = 56) -> EthernetFrame {
        let e = ICMPEcho(isReply: false, identifier: id, sequenceNumber: seq, payload: pattern(size, seed: 3))
        let h = IPv6Header(source: ip6A, destination: ip6B, nextHeader: .icmpv6, flowLabel: 0xE5D89)
        return EthernetFrame(header: EthernetHeader(destination: macB, source: macA, etherType: .ipv6),
                             payload: .ipv6(IPv6Packet(header: h, payload: .icmp(e.message(family: .v6)))))
    }

    static var udp4Tagged: EthernetFrame {
        let d = UDPDatagram(sourcePort: 5353, destinationPort: 53, payload: pattern(33, seed: 9))
        let h = IPv4Header(source: ipA, destination: ipB, protocol: .udp, ttl: 7, tos: 0xB8)
        return EthernetFrame(header: EthernetHeader(destination: macB, source: macA, vlan: VLANTag(vid: 100, priority: 5), etherType: .ipv4),
                             payload: .ipv4(IPv4Packet(header: h, payload: .udp(d))))
    }

    static var udp4OptionsNoChecksum: EthernetFrame {
        let d = UDPDatagram(sourcePort: 1000, destinationPort: 2000, payload: pattern(10), hasChecksum: false)
        let h = IPv4Header(source: ipA, destination: ipB, protocol: .udp, options: bytes([0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00]))
        return EthernetFrame(header: EthernetHeader(destination: macB, source: macA, etherType: .ipv4),
                             payload: .ipv4(IPv4Packet(header: h, payload: .udp(d))))
    }

    static var udp6: EthernetFrame {
        let d = UDPDatagram(sourcePort: 40000, destinationPort: 4789, payload: pattern(101))
        let h = IPv6Header(source: ip6A, destination: ip6B, nextHeader: .udp, hopLimit: 3, trafficClass: 0x28, flowLabel: 0x12345)
        return EthernetFrame(header: EthernetHeader(destination: macB, source: macA, vlan: VLANTag(vid: 7, tpid: .serviceVLAN), etherType: .ipv6),
                             payload: .ipv6(IPv6Packet(header: h, payload: .udp(d))))
    }

    static var fragment4: EthernetFrame {
        let h = IPv4Header(source: ipA, destination: ipB, protocol: .udp, identification: 9, moreFragments: true)
        return EthernetFrame(header: EthernetHeader(destination: macB, source: macA, etherType: .ipv4),
                             payload: .ipv4(IPv4Packet(header: h, payload: .other(pattern(24)))))
    }

    static var otherEtherType: EthernetFrame {
        EthernetFrame(header: EthernetHeader(destination: macB, source: macA, etherType: EtherType(rawValue: 0x88CC)),
                      payload: .other(pattern(40)))
    }

    /// Every sample inner frame, named.
    static var frames: [(String, EthernetFrame)] {
        [("arpRequest", arpRequest), ("arpReplyPadded", arpReplyPadded), ("echo4", echo4()), ("echoReply4", echo4(reply: true)),
         ("echo6", echo6()), ("udp4Tagged", udp4Tagged), ("udp4OptionsNoChecksum", udp4OptionsNoChecksum),
         ("udp6", udp6), ("fragment4", fragment4), ("otherEtherType", otherEtherType)]
    }

    static let outer4 = (IPAddress.v4(IPv4Address("198.18.0.1")!), IPAddress.v4(IPv4Address("198.18.0.2")!))
    static let outer6 = (IPAddress.v6(IPv6Address("2001:db8:18::1")!), IPAddress.v6(IPv6Address("2001:db8:18::2")!))

    /// Full outer packets (IPv4 with and without UDP checksum, IPv6) around sample frames.
    static var packets: [(String, ByteBuffer)] {
        var out: [(String, ByteBuffer)] = []
        var enc = VXLANEncapsulator(vni: vni)
        for (name, f) in frames {
            let inner = encode(f)
            enc.ipv4UDPChecksum = false
            out.append(("v4/" + name, try! enc.encapsulatePacket(inner, source: outer4.0, destination: outer4.1)))
            enc.ipv4UDPChecksum = true
            out.append(("v4csum/" + name, try! enc.encapsulatePacket(inner, source: outer4.0, destination: outer4.1, identification: 77)))
            out.append(("v6/" + name, try! enc.encapsulatePacket(inner, source: outer6.0, destination: outer6.1, flowLabel: 0xABCDE)))
        }
        return out
    }
}

/// A minimal pcap (libpcap classic format) reader: global header, then records of
/// (ts_sec, ts_usec, incl_len, orig_len, data). Both byte orders and the nanosecond magic are accepted.
struct PcapFile {
    struct Record { var data: ByteBuffer; var originalLength: Int }
    struct Failure: Error, CustomStringConvertible { var description: String }

    var linkType: UInt32
    var records: [Record]

    init(_ data: [UInt8]) throws {
        var b = ByteBuffer(bytes: data)
        guard let magic = b.readInteger(endianness: .little, as: UInt32.self) else { throw Failure(description: "no pcap header") }
        let endian: Endianness
        switch magic {
        case 0xA1B2_C3D4, 0xA1B2_3C4D: endian = .little
        case 0xD4C3_B2A1, 0x4D3C_B2A1: endian = .big
        default: throw Failure(description: "not a pcap file (magic 0x\(String(magic, radix: 16)))")
        }
        guard b.readSlice(length: 16) != nil, let lt = b.readInteger(endianness: endian, as: UInt32.self) else {
            throw Failure(description: "short pcap header")
        }
        linkType = lt
        records = []
        while b.readableBytes > 0 {
            guard b.readSlice(length: 8) != nil,
                  let incl = b.readInteger(endianness: endian, as: UInt32.self),
                  let orig = b.readInteger(endianness: endian, as: UInt32.self),
                  let d = b.readSlice(length: Int(incl)) else { throw Failure(description: "truncated pcap record") }
            records.append(Record(data: d, originalLength: Int(orig)))
        }
    }

    static func load(_ name: String) throws -> PcapFile {
        guard let url = Bundle.module.url(forResource: "Vectors/\(name)", withExtension: nil)
            ?? Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "Vectors") else {
            throw Failure(description: "vector \(name) not in the test bundle")
        }
        return try PcapFile(Array(try Data(contentsOf: url)))
    }
}

/// Expects `body` to throw a `VXLANCodecError` with `code`.
func expectCode(_ code: VXLANCodecError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected \(code), nothing was thrown", sourceLocation: sourceLocation)
    } catch let e as VXLANCodecError {
        #expect(e.code == code, "\(e)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected \(code), got \(error)", sourceLocation: sourceLocation)
    }
}
