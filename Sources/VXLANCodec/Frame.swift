import NIOCore
import OverlayModel

/// What an IP packet carries, decoded as far as this codec goes.
public enum IPPayload: Hashable, Sendable {
    /// A UDP datagram (checksum verified when read).
    case udp(UDPDatagram)
    /// An ICMP or ICMPv6 message (checksum verified when read).
    case icmp(ICMPMessage)
    /// Anything else, or a fragment: the raw bytes after the IP header.
    case other(ByteBuffer)
}

/// An IPv4 packet: header and decoded payload. `header.totalLength` is recomputed when written, and
/// `header.protocol` too for UDP and ICMP payloads.
public struct IPv4Packet: Hashable, Sendable {
    /// The header.
    public var header: IPv4Header
    /// The payload.
    public var payload: IPPayload

    /// Makes a packet, setting the header's length and protocol to match the payload.
    public init(header: IPv4Header, payload: IPPayload) {
        self.header = header
        self.payload = payload
        self.header.totalLength = UInt16(truncatingIfNeeded: header.headerLength + payload.length(pseudoV6: false))
        switch payload {
        case .udp: self.header.protocol = .udp
        case .icmp: self.header.protocol = .icmp
        case .other: break
        }
    }
}

/// An IPv6 packet: fixed header and decoded payload. `header.payloadLength` is recomputed when
/// written, and `header.nextHeader` too for UDP and ICMPv6 payloads.
public struct IPv6Packet: Hashable, Sendable {
    /// The header.
    public var header: IPv6Header
    /// The payload.
    public var payload: IPPayload

    /// Makes a packet, setting the header's length and next header to match the payload.
    public init(header: IPv6Header, payload: IPPayload) {
        self.header = header
        self.payload = payload
        self.header.payloadLength = UInt16(truncatingIfNeeded: payload.length(pseudoV6: true))
        switch payload {
        case .udp: self.header.nextHeader = .udp
        case .icmp: self.header.nextHeader = .icmpv6
        case .other: break
        }
    }
}

extension IPPayload {
    func length(pseudoV6: Bool) -> Int {
        switch self {
        case .udp(let d): return 8 + d.payload.readableBytes
        case .icmp(let m): return m.length
        case .other(let b): return b.readableBytes
        }
    }
}

/// What an Ethernet frame carries.
public enum EthernetPayload: Hashable, Sendable {
    /// An ARP packet.
    case arp(ARPPacket)
    /// An IPv4 packet.
    case ipv4(IPv4Packet)
    /// An IPv6 packet.
    case ipv6(IPv6Packet)
    /// Any other EtherType: the raw payload.
    case other(ByteBuffer)
}

/// A whole Ethernet frame (no FCS), decoded: header, payload, and any bytes after the payload
/// (padding to the 60-byte minimum), kept so that a decoded frame is written back byte for byte.
public struct EthernetFrame: Hashable, Sendable {
    /// The Ethernet header; `etherType` is set from the payload when written (except for `.other`).
    public var header: EthernetHeader
    /// The payload.
    public var payload: EthernetPayload
    /// Bytes after the payload (Ethernet padding).
    public var trailer: ByteBuffer

    /// Makes a frame.
    public init(header: EthernetHeader, payload: EthernetPayload, trailer: ByteBuffer = ByteBuffer()) {
        self.header = header
        self.payload = payload
        self.trailer = trailer
        switch payload {
        case .arp: self.header.etherType = .arp
        case .ipv4: self.header.etherType = .ipv4
        case .ipv6: self.header.etherType = .ipv6
        case .other: break
        }
    }
}

extension ByteBuffer {
    /// Reads an IPv4 packet (RFC 791) of `header.totalLength` bytes and decodes UDP (RFC 768) and ICMP
    /// (RFC 792) payloads; fragments and other protocols are kept raw.
    ///
    /// Returns nil, reader index unchanged, if the buffer ends before the total length; throws on a
    /// malformed header or a bad payload checksum. Bytes after the total length are left unread.
    public mutating func readIPv4Packet() throws(VXLANCodecError) -> IPv4Packet? {
        var copy = self
        guard let h = try copy.readIPv4Header() else { return nil }
        let plen = Int(h.totalLength) - h.headerLength
        guard var body = copy.readSlice(length: plen) else { return nil }
        let payload: IPPayload
        if h.isFragment {
            payload = .other(body)
        } else if h.protocol == .udp {
            guard let d = try body.readUDPDatagram(length: plen, pseudoHeader: .v4(source: h.source, destination: h.destination))
            else { return nil }
            payload = .udp(d)
        } else if h.protocol == .icmp {
            guard let m = try body.readICMPMessage(length: plen) else { return nil }
            payload = .icmp(m)
        } else {
            payload = .other(body)
        }
        self = copy
        return IPv4Packet(header: h, payload: payload)
    }

    /// Writes an IPv4 packet, computing the total length, header checksum and payload checksum.
    @discardableResult
    public mutating func writeIPv4Packet(_ p: IPv4Packet) throws(VXLANCodecError) -> Int {
        var h = p.header
        let total = h.headerLength + p.payload.length(pseudoV6: false)
        guard total <= 0xFFFF else { throw VXLANCodecError(.tooLarge, "IPv4 packet of \(total) bytes exceeds 65535") }
        h.totalLength = UInt16(total)
        let ph = PseudoHeader.v4(source: h.source, destination: h.destination)
        switch p.payload {
        case .udp(let d):
            h.protocol = .udp
            writeIPv4Header(h)
            try writeUDPDatagram(d, pseudoHeader: ph)
        case .icmp(let m):
            h.protocol = .icmp
            writeIPv4Header(h)
            writeICMPMessage(m)
        case .other(let b):
            writeIPv4Header(h)
            writeImmutableBuffer(b)
        }
        return total
    }

    /// Reads an IPv6 packet (RFC 8200) of 40 + `payloadLength` bytes, decoding UDP and ICMPv6 when they
    /// directly follow the fixed header; anything else (including extension headers) is kept raw.
    ///
    /// Returns nil if the buffer ends early; throws on a bad version, a UDP/ICMPv6 payload too short for
    /// its header (a zero payload length included: jumbograms are not supported), or a bad checksum.
    public mutating func readIPv6Packet() throws(VXLANCodecError) -> IPv6Packet? {
        var copy = self
        guard let h = try copy.readIPv6Header() else { return nil }
        let plen = Int(h.payloadLength)
        guard var body = copy.readSlice(length: plen) else { return nil }
        let ph = PseudoHeader.v6(source: h.source, destination: h.destination)
        let payload: IPPayload
        if h.nextHeader == .udp {
            guard let d = try body.readUDPDatagram(length: plen, pseudoHeader: ph) else { return nil }
            payload = .udp(d)
        } else if h.nextHeader == .icmpv6 {
            guard let m = try body.readICMPMessage(length: plen, pseudoHeader: ph) else { return nil }
            payload = .icmp(m)
        } else {
            payload = .other(body)
        }
        self = copy
        return IPv6Packet(header: h, payload: payload)
    }

    /// Writes an IPv6 packet, computing the payload length and the upper-layer checksum.
    @discardableResult
    public mutating func writeIPv6Packet(_ p: IPv6Packet) throws(VXLANCodecError) -> Int {
        var h = p.header
        let plen = p.payload.length(pseudoV6: true)
        guard plen <= 0xFFFF else { throw VXLANCodecError(.tooLarge, "IPv6 payload of \(plen) bytes exceeds 65535") }
        h.payloadLength = UInt16(plen)
        let ph = PseudoHeader.v6(source: h.source, destination: h.destination)
        switch p.payload {
        case .udp(let d):
            h.nextHeader = .udp
            writeIPv6Header(h)
            try writeUDPDatagram(d, pseudoHeader: ph)
        case .icmp(let m):
            h.nextHeader = .icmpv6
            writeIPv6Header(h)
            writeICMPMessage(m, pseudoHeader: ph)
        case .other(let b):
            writeIPv6Header(h)
            writeImmutableBuffer(b)
        }
        return IPv6Header.length + plen
    }

    /// Reads a whole Ethernet frame: every readable byte is consumed (what follows the payload becomes
    /// the trailer). ARP, IPv4 and IPv6 payloads are decoded.
    ///
    /// Returns nil, reader index unchanged, if the buffer ends before the headers say it should.
    public mutating func readEthernetFrame() throws(VXLANCodecError) -> EthernetFrame? {
        var copy = self
        guard let h = try copy.readEthernetHeader() else { return nil }
        let payload: EthernetPayload
        switch h.etherType {
        case .arp:
            guard let a = try copy.readARPPacket() else { return nil }
            payload = .arp(a)
        case .ipv4:
            guard let p = try copy.readIPv4Packet() else { return nil }
            payload = .ipv4(p)
        case .ipv6:
            guard let p = try copy.readIPv6Packet() else { return nil }
            payload = .ipv6(p)
        default:
            payload = .other(copy.readSlice(length: copy.readableBytes)!)
        }
        let trailer = copy.readSlice(length: copy.readableBytes)!
        self = copy
        return EthernetFrame(header: h, payload: payload, trailer: trailer)
    }

    /// Writes an Ethernet frame: header (EtherType from the payload), payload with its checksums, trailer.
    @discardableResult
    public mutating func writeEthernetFrame(_ f: EthernetFrame) throws(VXLANCodecError) -> Int {
        let start = writerIndex
        var h = f.header
        switch f.payload {
        case .arp(let a):
            h.etherType = .arp
            writeEthernetHeader(h)
            writeARPPacket(a)
        case .ipv4(let p):
            h.etherType = .ipv4
            writeEthernetHeader(h)
            try writeIPv4Packet(p)
        case .ipv6(let p):
            h.etherType = .ipv6
            writeEthernetHeader(h)
            try writeIPv6Packet(p)
        case .other(let b):
            writeEthernetHeader(h)
            writeImmutableBuffer(b)
        }
        writeImmutableBuffer(f.trailer)
        return writerIndex - start
    }
}
