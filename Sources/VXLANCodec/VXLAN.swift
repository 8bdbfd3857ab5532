import NIOCore
import OverlayModel

/// The 8-byte VXLAN header (RFC 7348 section 5, "VXLAN Header"):
///
///     0                   1                   2                   3
///     |R|R|R|R|I|R|R|R|            Reserved                           |
///     |                VXLAN Network Identifier (VNI) |   Reserved    |
///
/// Every field is kept, reserved ones included, so that a header is written back as it was read;
/// `validate` applies the receive rules.
public struct VXLANHeader: Hashable, Sendable {
    /// The I flag: "MUST be set to 1 for a valid VXLAN Network ID".
    public static let flagI: UInt8 = 0x08

    /// The flags byte (only the I bit is defined).
    public var flags: UInt8
    /// The 24 reserved bits after the flags.
    public var reserved1: UInt32
    /// The 24-bit VNI as on the wire (0 is representable here, but `validate` refuses it).
    public var vniValue: UInt32
    /// The 8 reserved bits after the VNI.
    public var reserved2: UInt8

    /// A header for `vni` with the I flag set and reserved fields zero, as RFC 7348 says to send.
    public init(vni: VNI) {
        self.init(flags: VXLANHeader.flagI, reserved1: 0, vniValue: vni.value, reserved2: 0)
    }

    /// A header with every field given (for tests and odd peers); `reserved1` and `vniValue` are masked to 24 bits.
    public init(flags: UInt8, reserved1: UInt32, vniValue: UInt32, reserved2: UInt8) {
        self.flags = flags
        self.reserved1 = reserved1 & 0xFF_FFFF
        self.vniValue = vniValue & 0xFF_FFFF
        self.reserved2 = reserved2
    }

    /// The VNI, or nil for VNI 0.
    public var vni: VNI? { try? VNI(vniValue) }

    /// Bytes on the wire.
    public static let length = 8

    /// Checks the receive rules: the I flag set; with `strictReserved`, every reserved bit zero
    /// (RFC 7348 says to ignore them; Linux drops such packets and so do we by default).
    public func validate(strictReserved: Bool = true) throws(VXLANCodecError) {
        guard flags & VXLANHeader.flagI != 0 else {
            throw VXLANCodecError(.badVXLANFlags, "VXLAN flags 0x\(String(flags, radix: 16)) lack the I bit (0x08, RFC 7348 section 5)")
        }
        if strictReserved && (flags != VXLANHeader.flagI || reserved1 != 0 || reserved2 != 0) {
            throw VXLANCodecError(.reservedBitsSet,
                "VXLAN reserved bits set (flags 0x\(String(flags, radix: 16)), reserved 0x\(String(reserved1, radix: 16))/0x\(String(reserved2, radix: 16))); RFC 7348 senders must zero them")
        }
    }
}

extension ByteBuffer {
    /// Reads a VXLAN header (RFC 7348 section 5). Returns nil on a short buffer. Throws
    /// `.badVXLANFlags` when the I flag is clear (then there is no VNI to speak of); other checks
    /// are `VXLANHeader.validate`'s.
    public mutating func readVXLANHeader() throws(VXLANCodecError) -> VXLANHeader? {
        guard let w0 = getInteger(at: readerIndex, as: UInt32.self),
              let w1 = getInteger(at: readerIndex + 4, as: UInt32.self) else { return nil }
        let h = VXLANHeader(flags: UInt8(w0 >> 24), reserved1: w0 & 0xFF_FFFF, vniValue: w1 >> 8,
                            reserved2: UInt8(truncatingIfNeeded: w1))
        guard h.flags & VXLANHeader.flagI != 0 else {
            throw VXLANCodecError(.badVXLANFlags, "VXLAN flags 0x\(String(h.flags, radix: 16)) lack the I bit (0x08, RFC 7348 section 5)")
        }
        moveReaderIndex(forwardBy: 8)
        return h
    }

    /// Writes a VXLAN header (8 bytes).
    @discardableResult
    public mutating func writeVXLANHeader(_ h: VXLANHeader) -> Int {
        writeInteger(UInt32(h.flags) << 24 | (h.reserved1 & 0xFF_FFFF)) +
            writeInteger((h.vniValue & 0xFF_FFFF) << 8 | UInt32(h.reserved2))
    }
}

/// The outer IP header of a full VXLAN packet.
public enum OuterIPHeader: Hashable, Sendable {
    /// An IPv4 header (RFC 791).
    case v4(IPv4Header)
    /// An IPv6 fixed header (RFC 8200).
    case v6(IPv6Header)

    /// The outer source address.
    public var source: IPAddress {
        switch self {
        case .v4(let h): return .v4(h.source)
        case .v6(let h): return .v6(h.source)
        }
    }

    /// The outer destination address.
    public var destination: IPAddress {
        switch self {
        case .v4(let h): return .v4(h.destination)
        case .v6(let h): return .v6(h.destination)
        }
    }
}

/// A decapsulated VXLAN UDP payload: the header and the inner Ethernet frame (a slice, not a copy).
public struct VXLANFrame: Hashable, Sendable {
    /// The VXLAN header.
    public var header: VXLANHeader
    /// The inner Ethernet frame, without FCS.
    public var innerFrame: ByteBuffer

    /// The VNI (validated non-zero by the decapsulator).
    public var vni: VNI { header.vni! }
}

/// A decapsulated full VXLAN packet: outer IP and UDP headers, VXLAN header, inner frame (a slice).
public struct VXLANPacket: Hashable, Sendable {
    /// The outer IP header.
    public var outer: OuterIPHeader
    /// The outer UDP header.
    public var udp: UDPHeader
    /// The VXLAN header.
    public var header: VXLANHeader
    /// The inner Ethernet frame, without FCS.
    public var innerFrame: ByteBuffer

    /// The VNI (validated non-zero by the decapsulator).
    public var vni: VNI { header.vni! }
}

/// Builds VXLAN packets for one VNI, as a VTEP sends them (RFC 7348 section 5 and 6).
public struct VXLANEncapsulator: Hashable, Sendable {
    /// The VNI written in every header.
    public var vni: VNI
    /// Outer UDP destination port: 4789 is IANA's (RFC 7348 section 5).
    public var destinationPort: UInt16
    /// Range the outer UDP source port is hashed into. Linux's default is the ephemeral range 32768...60999.
    public var sourcePortRange: ClosedRange<UInt16>
    /// Outer TTL / hop limit.
    public var ttl: UInt8
    /// Outer type of service / traffic class.
    public var tos: UInt8
    /// Whether outer IPv4 packets get the Don't Fragment bit.
    public var dontFragment: Bool
    /// Whether outer IPv4 UDP gets a checksum (RFC 7348 section 5: SHOULD be zero; Linux default off).
    /// Over IPv6 a checksum is always computed.
    public var ipv4UDPChecksum: Bool
    /// Seed of the flow hash (Linux seeds randomly per boot; fixed here so results are reproducible).
    public var hashSeed: UInt32

    /// Makes an encapsulator with Linux-like defaults.
    public init(vni: VNI, destinationPort: UInt16 = 4789, sourcePortRange: ClosedRange<UInt16> = 32768...60999,
                ttl: UInt8 = 64, tos: UInt8 = 0, dontFragment: Bool = false, ipv4UDPChecksum: Bool = false,
                hashSeed: UInt32 = 0x5678_1234) {
        self.vni = vni
        self.destinationPort = destinationPort
        self.sourcePortRange = sourcePortRange
        self.ttl = ttl
        self.tos = tos
        self.dontFragment = dontFragment
        self.ipv4UDPChecksum = ipv4UDPChecksum
        self.hashSeed = hashSeed
    }

    /// The outer source port for an inner frame: its flow hash mapped into `sourcePortRange` the way
    /// Linux's `udp_flow_src_port` does, `((UInt64(hash) * UInt64(max - min)) >> 32) + min`, so all
    /// packets of one inner flow (in both directions) take one underlay path.
    public func sourcePort(forInnerFrame frame: ByteBuffer) -> UInt16 {
        var hash = FlowHash.hash(innerFrame: frame, seed: hashSeed)
        hash ^= hash << 16  // as udp_flow_src_port: fold the high bits into the ones the scaling keeps
        return FlowHash.scale(hash, into: sourcePortRange)
    }

    /// Appends the UDP payload form, VXLAN header + inner frame, for sending over a UDP socket.
    /// Returns the bytes written. Throws `.innerFrameTooShort` for a frame under 14 bytes.
    @discardableResult
    public func encapsulate(_ innerFrame: ByteBuffer, into buffer: inout ByteBuffer) throws(VXLANCodecError) -> Int {
        guard innerFrame.readableBytes >= 14 else {
            throw VXLANCodecError(.innerFrameTooShort, "inner frame of \(innerFrame.readableBytes) bytes is shorter than an Ethernet header (14)")
        }
        return buffer.writeVXLANHeader(VXLANHeader(vni: vni)) + buffer.writeImmutableBuffer(innerFrame)
    }

    /// The UDP payload form in a new buffer.
    public func encapsulate(_ innerFrame: ByteBuffer, allocator: ByteBufferAllocator = ByteBufferAllocator()) throws(VXLANCodecError) -> ByteBuffer {
        var b = allocator.buffer(capacity: 8 + innerFrame.readableBytes)
        try encapsulate(innerFrame, into: &b)
        return b
    }

    /// Appends the full outer packet: IPv4 or IPv6 header, UDP header (source port from the flow hash,
    /// checksum per `ipv4UDPChecksum` / always for IPv6), VXLAN header, inner frame (RFC 7348 section 5).
    /// `identification` fills the outer IPv4 ID; `flowLabel` the outer IPv6 flow label.
    /// Throws if the addresses' families differ, the frame is under 14 bytes, or the packet would be too large.
    @discardableResult
    public func encapsulatePacket(_ innerFrame: ByteBuffer, source: IPAddress, destination: IPAddress,
                                  identification: UInt16 = 0, flowLabel: UInt32 = 0,
                                  into buffer: inout ByteBuffer) throws(VXLANCodecError) -> Int {
        let inner = innerFrame.readableBytes
        guard inner >= 14 else {
            throw VXLANCodecError(.innerFrameTooShort, "inner frame of \(inner) bytes is shorter than an Ethernet header (14)")
        }
        let udpLength = 8 + 8 + inner
        let sport = sourcePort(forInnerFrame: innerFrame)
        let start = buffer.writerIndex
        switch (source, destination) {
        case (.v4(let s), .v4(let d)):
            guard 20 + udpLength <= 0xFFFF else {
                throw VXLANCodecError(.tooLarge, "outer IPv4 packet of \(20 + udpLength) bytes exceeds 65535")
            }
            buffer.writeIPv4Header(IPv4Header(source: s, destination: d, protocol: .udp, totalLength: UInt16(20 + udpLength),
                                              ttl: ttl, tos: tos, identification: identification, dontFragment: dontFragment))
            let u = buffer.writerIndex
            buffer.writeUDPHeader(UDPHeader(sourcePort: sport, destinationPort: destinationPort, length: UInt16(udpLength)))
            buffer.writeVXLANHeader(VXLANHeader(vni: vni))
            buffer.writeImmutableBuffer(innerFrame)
            if ipv4UDPChecksum { buffer.fillUDPChecksum(at: u, length: udpLength, pseudoHeader: .v4(source: s, destination: d)) }
        case (.v6(let s), .v6(let d)):
            guard udpLength <= 0xFFFF else {
                throw VXLANCodecError(.tooLarge, "outer IPv6 payload of \(udpLength) bytes exceeds 65535")
            }
            buffer.writeIPv6Header(IPv6Header(source: s, destination: d, nextHeader: .udp, payloadLength: UInt16(udpLength),
                                              hopLimit: ttl, trafficClass: tos, flowLabel: flowLabel))
            let u = buffer.writerIndex
            buffer.writeUDPHeader(UDPHeader(sourcePort: sport, destinationPort: destinationPort, length: UInt16(udpLength)))
            buffer.writeVXLANHeader(VXLANHeader(vni: vni))
            buffer.writeImmutableBuffer(innerFrame)
            buffer.fillUDPChecksum(at: u, length: udpLength, pseudoHeader: .v6(source: s, destination: d))
        default:
            throw VXLANCodecError(.addressFamilyMismatch, "outer source \(source) and destination \(destination) are of different IP families")
        }
        return buffer.writerIndex - start
    }

    /// The full outer packet in a new buffer.
    public func encapsulatePacket(_ innerFrame: ByteBuffer, source: IPAddress, destination: IPAddress,
                                  identification: UInt16 = 0, flowLabel: UInt32 = 0,
                                  allocator: ByteBufferAllocator = ByteBufferAllocator()) throws(VXLANCodecError) -> ByteBuffer {
        var b = allocator.buffer(capacity: 40 + 16 + innerFrame.readableBytes)
        try encapsulatePacket(innerFrame, source: source, destination: destination, identification: identification,
                              flowLabel: flowLabel, into: &b)
        return b
    }
}

/// Validates and strips VXLAN encapsulation, as a receiving VTEP does (RFC 7348 section 5; the checks
/// Linux's `vxlan_rcv` makes). Every refusal is a `VXLANCodecError` whose code names the drop reason.
public struct VXLANDecapsulator: Hashable, Sendable {
    /// The VNI accepted, or nil to accept any non-zero VNI.
    public var vni: VNI?
    /// The outer UDP destination port accepted (full packet form only).
    public var destinationPort: UInt16
    /// Refuse headers with reserved bits set (Linux does); RFC 7348 alone would ignore them.
    public var strictReservedBits: Bool
    /// Accept a zero UDP checksum over IPv6 (RFC 6935/6936; Linux's `udp6zerocsumrx`). Off by default.
    public var allowZeroIPv6UDPChecksum: Bool

    /// Makes a decapsulator.
    public init(vni: VNI?, destinationPort: UInt16 = 4789, strictReservedBits: Bool = true, allowZeroIPv6UDPChecksum: Bool = false) {
        self.vni = vni
        self.destinationPort = destinationPort
        self.strictReservedBits = strictReservedBits
        self.allowZeroIPv6UDPChecksum = allowZeroIPv6UDPChecksum
    }

    /// Decapsulates the UDP payload form (what a UDP socket receives): VXLAN header + inner frame.
    /// The inner frame is a slice of `udpPayload`, not a copy.
    public func decapsulate(udpPayload: ByteBuffer) throws(VXLANCodecError) -> VXLANFrame {
        var b = udpPayload
        guard let h = try b.readVXLANHeader() else {
            throw VXLANCodecError(.truncated, "VXLAN payload of \(udpPayload.readableBytes) bytes is shorter than the 8-byte header")
        }
        try check(h)
        guard b.readableBytes >= 14 else {
            throw VXLANCodecError(.innerFrameTooShort, "inner frame of \(b.readableBytes) bytes is shorter than an Ethernet header (14)")
        }
        return VXLANFrame(header: h, innerFrame: b)
    }

    private func check(_ h: VXLANHeader) throws(VXLANCodecError) {
        try h.validate(strictReserved: strictReservedBits)
        guard h.vniValue != 0 else {
            throw VXLANCodecError(.vniMismatch, "VXLAN VNI 0 is not a valid network (1...16777215)")
        }
        if let want = vni, want.value != h.vniValue {
            throw VXLANCodecError(.vniMismatch, "VXLAN VNI \(h.vniValue) where \(want.value) was expected")
        }
    }

    /// Decapsulates a full packet starting at the outer IP header (IPv4 or IPv6, by the version nibble):
    /// checks the IP header (version, lengths, IPv4 checksum, no fragments), that it carries UDP to
    /// `destinationPort`, the UDP length and checksum (when present; mandatory over IPv6), then the
    /// VXLAN header and VNI. Bytes after the IP packet's length (link padding) are ignored.
    public func decapsulate(packet: ByteBuffer) throws(VXLANCodecError) -> VXLANPacket {
        var b = packet
        guard let first = b.getInteger(at: b.readerIndex, as: UInt8.self) else {
            throw VXLANCodecError(.truncated, "empty packet")
        }
        let outer: OuterIPHeader
        let pseudo: PseudoHeader
        var udpBytes: ByteBuffer
        switch first >> 4 {
        case 4:
            guard let h = try b.readIPv4Header() else {
                throw VXLANCodecError(.truncated, "packet of \(packet.readableBytes) bytes ends inside its IPv4 header")
            }
            guard !h.isFragment else {
                throw VXLANCodecError(.fragmented, "outer IPv4 packet is a fragment (offset \(h.fragmentOffset), MF \(h.moreFragments)); reassemble first or fix the underlay MTU")
            }
            guard h.protocol == .udp else {
                throw VXLANCodecError(.notUDP, "outer IPv4 protocol \(h.protocol.rawValue) is not UDP (17)")
            }
            guard let body = b.readSlice(length: Int(h.totalLength) - h.headerLength) else {
                throw VXLANCodecError(.truncated, "IPv4 total length \(h.totalLength) exceeds the \(packet.readableBytes) bytes received")
            }
            outer = .v4(h)
            pseudo = .v4(source: h.source, destination: h.destination)
            udpBytes = body
        case 6:
            guard let h = try b.readIPv6Header() else {
                throw VXLANCodecError(.truncated, "packet of \(packet.readableBytes) bytes ends inside its IPv6 header")
            }
            guard h.nextHeader == .udp else {
                throw VXLANCodecError(.notUDP, "outer IPv6 next header \(h.nextHeader.rawValue) is not UDP (17); extension headers are not supported")
            }
            guard let body = b.readSlice(length: Int(h.payloadLength)) else {
                throw VXLANCodecError(.truncated, "IPv6 payload length \(h.payloadLength) exceeds the \(packet.readableBytes - 40) bytes received")
            }
            outer = .v6(h)
            pseudo = .v6(source: h.source, destination: h.destination)
            udpBytes = body
        default:
            throw VXLANCodecError(.badIPVersion, "IP version \(first >> 4) is neither 4 nor 6")
        }
        let udpRegion = udpBytes
        let udpLength = udpBytes.readableBytes
        guard let u = try udpBytes.readUDPHeader() else {
            throw VXLANCodecError(.truncated, "IP payload of \(udpLength) bytes is shorter than a UDP header")
        }
        guard Int(u.length) == udpLength else {
            throw VXLANCodecError(.badLength, "UDP length \(u.length) does not match the \(udpLength) bytes the IP header gives")
        }
        guard u.destinationPort == destinationPort else {
            throw VXLANCodecError(.wrongPort, "UDP destination port \(u.destinationPort) is not the VXLAN port \(destinationPort)")
        }
        if u.checksum == 0 {
            if pseudo.isV6 && !allowZeroIPv6UDPChecksum {
                throw VXLANCodecError(.badUDPChecksum, "UDP checksum is zero over IPv6 (mandatory, RFC 8200 section 8.1)")
            }
        } else {
            var sum = pseudo.checksum(protocol: .udp, length: udpLength)
            sum.add(buffer: udpRegion)
            guard sum.verifies else {
                throw VXLANCodecError(.badUDPChecksum, "outer UDP checksum 0x\(String(u.checksum, radix: 16)) does not verify (\(outer.source) -> \(outer.destination))")
            }
        }
        let f = try decapsulate(udpPayload: udpBytes)
        return VXLANPacket(outer: outer, udp: u, header: f.header, innerFrame: f.innerFrame)
    }
}
