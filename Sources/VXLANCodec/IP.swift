import NIOCore
import OverlayModel

/// An IP protocol number / IPv6 next header value (IANA "Assigned Internet Protocol Numbers").
public struct IPProtocol: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The 8-bit value on the wire.
    public var rawValue: UInt8
    /// Makes a protocol number from its wire value.
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// ICMP for IPv4 (RFC 792).
    public static let icmp = IPProtocol(rawValue: 1)
    /// TCP (RFC 9293).
    public static let tcp = IPProtocol(rawValue: 6)
    /// UDP (RFC 768).
    public static let udp = IPProtocol(rawValue: 17)
    /// ICMPv6 (RFC 4443).
    public static let icmpv6 = IPProtocol(rawValue: 58)
    /// SCTP (RFC 9260).
    public static let sctp = IPProtocol(rawValue: 132)
    public var description: String { String(rawValue) }
}

/// An IPv4 header (RFC 791 section 3.1). The checksum is not stored: reading verifies it, writing computes it.
public struct IPv4Header: Hashable, Sendable {
    /// Type of service byte: DSCP (high 6 bits) and ECN (low 2 bits), RFC 2474/3168.
    public var tos: UInt8
    /// Total length of header and data in bytes.
    public var totalLength: UInt16
    /// Identification, for reassembly.
    public var identification: UInt16
    /// Don't Fragment flag.
    public var dontFragment: Bool
    /// More Fragments flag.
    public var moreFragments: Bool
    /// The reserved (evil) bit, kept so that what is read is written back unchanged.
    public var reservedFlag: Bool
    /// Fragment offset in 8-byte units, 0...8191.
    public var fragmentOffset: UInt16
    /// Time to live.
    public var ttl: UInt8
    /// The payload's protocol.
    public var `protocol`: IPProtocol
    /// Source address.
    public var source: IPv4Address
    /// Destination address.
    public var destination: IPv4Address
    /// Options, a slice of the packet (0...40 bytes; written padded with zeros to a multiple of 4).
    public var options: ByteBuffer

    /// Makes a header without options.
    public init(source: IPv4Address, destination: IPv4Address, protocol proto: IPProtocol, totalLength: UInt16 = 20,
                ttl: UInt8 = 64, tos: UInt8 = 0, identification: UInt16 = 0, dontFragment: Bool = false,
                moreFragments: Bool = false, fragmentOffset: UInt16 = 0, options: ByteBuffer = ByteBuffer()) {
        self.tos = tos
        self.totalLength = totalLength
        self.identification = identification
        self.dontFragment = dontFragment
        self.moreFragments = moreFragments
        self.reservedFlag = false
        self.fragmentOffset = fragmentOffset & 0x1FFF
        self.ttl = ttl
        self.protocol = proto
        self.source = source
        self.destination = destination
        self.options = options
    }

    /// Header bytes on the wire: 20 plus options rounded up to 4, at most 60.
    public var headerLength: Int { 20 + min(40, (options.readableBytes + 3) & ~3) }

    /// Whether this is a fragment (more fragments follow, or it is not the first).
    public var isFragment: Bool { moreFragments || fragmentOffset != 0 }
}

extension IPv4Header {
    /// Parses the header at the start of `r` (options left empty; the caller slices them) and its length.
    /// Nil if `r` ends inside the header; throws on a malformed header or a bad checksum.
    static func parse(_ r: RawBytes) throws(VXLANCodecError) -> (IPv4Header, Int)? {
        guard let vihl = r.u8(0) else { return nil }
        guard vihl >> 4 == 4 else {
            throw VXLANCodecError(.badIPVersion, "IP version \(vihl >> 4) where IPv4 was expected")
        }
        let hl = Int(vihl & 0xF) * 4
        guard hl >= 20 else {
            throw VXLANCodecError(.badLength, "IPv4 header length \(hl) bytes is under the minimum 20 (RFC 791 IHL >= 5)")
        }
        guard let hdr = r.bytes(0, hl), let tos = r.u8(1), let total = r.u16(2), let ident = r.u16(4), let frag = r.u16(6),
              let ttl = r.u8(8), let proto = r.u8(9), let src = r.u32(12), let dst = r.u32(16)
        else { return nil }
        guard Int(total) >= hl else {
            throw VXLANCodecError(.badLength, "IPv4 total length \(total) is shorter than its header (\(hl) bytes)")
        }
        var sum = InternetChecksum()
        sum.add(bytes: hdr)
        guard sum.verifies else {
            throw VXLANCodecError(.badIPv4Checksum, "IPv4 header checksum does not verify (\(IPv4Address(src)) -> \(IPv4Address(dst)))")
        }
        var h = IPv4Header(source: IPv4Address(src), destination: IPv4Address(dst), protocol: IPProtocol(rawValue: proto),
                           totalLength: total, ttl: ttl, tos: tos, identification: ident,
                           dontFragment: frag & 0x4000 != 0, moreFragments: frag & 0x2000 != 0, fragmentOffset: frag & 0x1FFF)
        h.reservedFlag = frag & 0x8000 != 0
        return (h, hl)
    }
}

extension ByteBuffer {
    /// Reads an IPv4 header (RFC 791 section 3.1) and verifies its checksum; the payload is not consumed.
    ///
    /// Returns nil, reader index unchanged, if the buffer ends inside the header. Throws for a version
    /// other than 4, an IHL under 5, a total length shorter than the header, or a bad checksum.
    public mutating func readIPv4Header() throws(VXLANCodecError) -> IPv4Header? {
        let r = withUnsafeReadableBytes { raw in
            Result { () throws(VXLANCodecError) -> (IPv4Header, Int)? in try IPv4Header.parse(RawBytes(raw)) }
        }
        guard let (parsed, hl) = try r.get() else { return nil }
        var h = parsed
        if hl > 20 { h.options = getSlice(at: readerIndex + 20, length: hl - 20)! }
        moveReaderIndex(forwardBy: hl)
        return h
    }

    /// Writes an IPv4 header as given (total length and protocol too) with a freshly computed checksum.
    @discardableResult
    public mutating func writeIPv4Header(_ h: IPv4Header) -> Int {
        let start = writerIndex
        let hl = h.headerLength
        writeInteger(UInt8(0x40 | (hl / 4)))
        writeInteger(h.tos)
        writeInteger(h.totalLength)
        writeInteger(h.identification)
        var frag = h.fragmentOffset & 0x1FFF
        if h.reservedFlag { frag |= 0x8000 }
        if h.dontFragment { frag |= 0x4000 }
        if h.moreFragments { frag |= 0x2000 }
        writeInteger(frag)
        writeInteger(h.ttl)
        writeInteger(h.protocol.rawValue)
        writeInteger(UInt16(0))
        writeInteger(h.source.value)
        writeInteger(h.destination.value)
        if hl > 20 {
            var opts = h.options
            let take = min(opts.readableBytes, 40)
            writeBuffer(&opts, length: take)
            writeRepeatingByte(0, count: hl - 20 - take)
        }
        var sum = InternetChecksum()
        sum.add(buffer: self, at: start, length: hl)
        setInteger(sum.checksum, at: start + 10)
        return hl
    }

    mutating func writeBuffer(_ b: inout ByteBuffer, length: Int) {
        if let s = b.readSlice(length: length) { writeImmutableBuffer(s) }
    }
}

/// An IPv6 fixed header (RFC 8200 section 3). Extension headers are left in the payload.
public struct IPv6Header: Hashable, Sendable {
    /// Traffic class (DSCP and ECN).
    public var trafficClass: UInt8
    /// Flow label, 20 bits.
    public var flowLabel: UInt32
    /// Length of everything after this 40-byte header.
    public var payloadLength: UInt16
    /// Type of the header that follows.
    public var nextHeader: IPProtocol
    /// Hop limit.
    public var hopLimit: UInt8
    /// Source address.
    public var source: IPv6Address
    /// Destination address.
    public var destination: IPv6Address

    /// Makes a header; `flowLabel` is masked to 20 bits.
    public init(source: IPv6Address, destination: IPv6Address, nextHeader: IPProtocol, payloadLength: UInt16 = 0,
                hopLimit: UInt8 = 64, trafficClass: UInt8 = 0, flowLabel: UInt32 = 0) {
        self.trafficClass = trafficClass
        self.flowLabel = flowLabel & 0xF_FFFF
        self.payloadLength = payloadLength
        self.nextHeader = nextHeader
        self.hopLimit = hopLimit
        self.source = source
        self.destination = destination
    }

    /// Bytes on the wire.
    public static let length = 40
}

extension IPv6Header {
    /// Parses the fixed header at the start of `r`: nil if short, throws if the version is not 6.
    static func parse(_ r: RawBytes) throws(VXLANCodecError) -> IPv6Header? {
        guard let first = r.u32(0) else { return nil }
        guard first >> 28 == 6 else {
            throw VXLANCodecError(.badIPVersion, "IP version \(first >> 28) where IPv6 was expected")
        }
        guard let plen = r.u16(4), let nh = r.u8(6), let hop = r.u8(7), let sh = r.u64(8), let sl = r.u64(16),
              let dh = r.u64(24), let dl = r.u64(32) else { return nil }
        return IPv6Header(source: IPv6Address(UInt128(sh) << 64 | UInt128(sl)), destination: IPv6Address(UInt128(dh) << 64 | UInt128(dl)),
                          nextHeader: IPProtocol(rawValue: nh), payloadLength: plen, hopLimit: hop,
                          trafficClass: UInt8(truncatingIfNeeded: first >> 20), flowLabel: first & 0xF_FFFF)
    }
}

extension ByteBuffer {
    func getIPv6(at index: Int) -> IPv6Address? {
        guard let hi = getInteger(at: index, as: UInt64.self), let lo = getInteger(at: index + 8, as: UInt64.self) else { return nil }
        return IPv6Address(UInt128(hi) << 64 | UInt128(lo))
    }

    @discardableResult
    mutating func writeIPv6(_ a: IPv6Address) -> Int {
        writeInteger(UInt64(truncatingIfNeeded: a.value >> 64)) + writeInteger(UInt64(truncatingIfNeeded: a.value))
    }

    /// Reads the IPv6 fixed header (RFC 8200 section 3); the payload is not consumed.
    ///
    /// Returns nil on a short buffer; throws if the version is not 6.
    public mutating func readIPv6Header() throws(VXLANCodecError) -> IPv6Header? {
        let r = withUnsafeReadableBytes { raw in
            Result { () throws(VXLANCodecError) -> IPv6Header? in try IPv6Header.parse(RawBytes(raw)) }
        }
        guard let h = try r.get() else { return nil }
        moveReaderIndex(forwardBy: IPv6Header.length)
        return h
    }

    /// Writes the IPv6 fixed header as given (40 bytes).
    @discardableResult
    public mutating func writeIPv6Header(_ h: IPv6Header) -> Int {
        writeInteger(UInt32(6) << 28 | UInt32(h.trafficClass) << 20 | (h.flowLabel & 0xF_FFFF))
        writeInteger(h.payloadLength)
        writeInteger(h.nextHeader.rawValue)
        writeInteger(h.hopLimit)
        writeIPv6(h.source)
        writeIPv6(h.destination)
        return IPv6Header.length
    }
}

/// A UDP header (RFC 768 "Format").
public struct UDPHeader: Hashable, Sendable {
    /// Source port.
    public var sourcePort: UInt16
    /// Destination port.
    public var destinationPort: UInt16
    /// Length of header and data in bytes (>= 8).
    public var length: UInt16
    /// Checksum as on the wire; 0 means "none" over IPv4 (RFC 768).
    public var checksum: UInt16

    /// Makes a header.
    public init(sourcePort: UInt16, destinationPort: UInt16, length: UInt16, checksum: UInt16 = 0) {
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.length = length
        self.checksum = checksum
    }

    /// Bytes on the wire.
    public static let length = 8
}

extension ByteBuffer {
    /// Reads a UDP header (RFC 768). Returns nil on a short buffer; throws if the length field is under 8.
    /// The checksum is returned as read: verifying needs the pseudo-header, see `readUDPDatagram`.
    public mutating func readUDPHeader() throws(VXLANCodecError) -> UDPHeader? {
        let i = readerIndex
        guard let sp = getInteger(at: i, as: UInt16.self), let dp = getInteger(at: i + 2, as: UInt16.self),
              let len = getInteger(at: i + 4, as: UInt16.self), let ck = getInteger(at: i + 6, as: UInt16.self)
        else { return nil }
        guard len >= 8 else {
            throw VXLANCodecError(.badLength, "UDP length \(len) is under the 8-byte header (RFC 768)")
        }
        moveReaderIndex(forwardBy: 8)
        return UDPHeader(sourcePort: sp, destinationPort: dp, length: len, checksum: ck)
    }

    /// Writes a UDP header as given.
    @discardableResult
    public mutating func writeUDPHeader(_ h: UDPHeader) -> Int {
        writeInteger(h.sourcePort) + writeInteger(h.destinationPort) + writeInteger(h.length) + writeInteger(h.checksum)
    }
}

/// The two IP pseudo-headers an upper-layer checksum covers (RFC 768, RFC 8200 section 8.1).
public enum PseudoHeader: Hashable, Sendable {
    /// Addresses of an IPv4 packet.
    case v4(source: IPv4Address, destination: IPv4Address)
    /// Addresses of an IPv6 packet.
    case v6(source: IPv6Address, destination: IPv6Address)

    /// A checksum started with this pseudo-header for `proto` and an upper-layer `length`.
    public func checksum(protocol proto: IPProtocol, length: Int) -> InternetChecksum {
        switch self {
        case .v4(let s, let d): return .pseudoHeader(source: s, destination: d, protocol: proto.rawValue, length: length)
        case .v6(let s, let d): return .pseudoHeader(source: s, destination: d, nextHeader: proto.rawValue, length: length)
        }
    }

    var isV6: Bool { if case .v6 = self { return true } else { return false } }
}

/// A UDP datagram: ports and a payload slice. Length and checksum are computed when written.
public struct UDPDatagram: Hashable, Sendable {
    /// Source port.
    public var sourcePort: UInt16
    /// Destination port.
    public var destinationPort: UInt16
    /// Whether the datagram carries a checksum. Over IPv4 it may be absent (RFC 768); over IPv6 it is
    /// always written (RFC 8200 section 8.1) whatever this says.
    public var hasChecksum: Bool
    /// The data after the header (a slice of the packet when read).
    public var payload: ByteBuffer

    /// Makes a datagram.
    public init(sourcePort: UInt16, destinationPort: UInt16, payload: ByteBuffer, hasChecksum: Bool = true) {
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.payload = payload
        self.hasChecksum = hasChecksum
    }
}

extension ByteBuffer {
    /// Reads a whole UDP datagram of `length` bytes and verifies its checksum against `pseudoHeader`.
    ///
    /// Returns nil if fewer than `length` bytes are readable. Throws if the UDP length field differs from
    /// `length`, if the checksum is wrong, or if it is zero over IPv6 (RFC 8200 section 8.1).
    public mutating func readUDPDatagram(length: Int, pseudoHeader: PseudoHeader) throws(VXLANCodecError) -> UDPDatagram? {
        guard length >= 8 else {
            throw VXLANCodecError(.badLength, "a UDP datagram of \(length) bytes is shorter than its header")
        }
        guard readableBytes >= length else { return nil }
        let i = readerIndex
        var copy = self
        guard let h = try copy.readUDPHeader() else { return nil }
        guard Int(h.length) == length else {
            throw VXLANCodecError(.badLength, "UDP length \(h.length) does not match the \(length) bytes the IP header gives")
        }
        if h.checksum == 0 {
            if pseudoHeader.isV6 {
                throw VXLANCodecError(.badUDPChecksum, "UDP checksum is zero over IPv6 (mandatory, RFC 8200 section 8.1)")
            }
        } else {
            var sum = pseudoHeader.checksum(protocol: .udp, length: length)
            sum.add(buffer: self, at: i, length: length)
            guard sum.verifies else {
                throw VXLANCodecError(.badUDPChecksum, "UDP checksum 0x\(String(h.checksum, radix: 16)) does not verify (port \(h.sourcePort) -> \(h.destinationPort))")
            }
        }
        let payload = getSlice(at: i + 8, length: length - 8)!
        moveReaderIndex(forwardBy: length)
        return UDPDatagram(sourcePort: h.sourcePort, destinationPort: h.destinationPort, payload: payload,
                           hasChecksum: h.checksum != 0)
    }

    /// Writes a UDP datagram with its length and (unless absent over IPv4) its checksum.
    /// Throws `.tooLarge` if it would exceed 65,535 bytes.
    @discardableResult
    public mutating func writeUDPDatagram(_ d: UDPDatagram, pseudoHeader: PseudoHeader) throws(VXLANCodecError) -> Int {
        let length = 8 + d.payload.readableBytes
        guard length <= 0xFFFF else {
            throw VXLANCodecError(.tooLarge, "UDP datagram of \(length) bytes exceeds 65535")
        }
        let start = writerIndex
        writeUDPHeader(UDPHeader(sourcePort: d.sourcePort, destinationPort: d.destinationPort, length: UInt16(length)))
        writeImmutableBuffer(d.payload)
        if d.hasChecksum || pseudoHeader.isV6 {
            fillUDPChecksum(at: start, length: length, pseudoHeader: pseudoHeader)
        }
        return length
    }

    /// Computes and stores the checksum of the UDP datagram written at absolute `start` (RFC 768: a
    /// computed zero is sent as 0xFFFF).
    mutating func fillUDPChecksum(at start: Int, length: Int, pseudoHeader: PseudoHeader) {
        var sum = pseudoHeader.checksum(protocol: .udp, length: length)
        sum.add(buffer: self, at: start, length: length)
        let c = sum.checksum
        setInteger(c == 0 ? 0xFFFF : c, at: start + 6)
    }
}
