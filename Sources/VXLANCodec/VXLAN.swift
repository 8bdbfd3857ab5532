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

    /// The header from its 8 bytes read as one big-endian word.
    init(word: UInt64) {
        self.init(flags: UInt8(word >> 56), reserved1: UInt32(truncatingIfNeeded: word >> 32) & 0xFF_FFFF,
                  vniValue: UInt32(truncatingIfNeeded: word >> 8) & 0xFF_FFFF, reserved2: UInt8(truncatingIfNeeded: word))
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
        guard let word = getInteger(at: readerIndex, as: UInt64.self) else { return nil }
        let h = VXLANHeader(word: word)
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
    public let header: VXLANHeader
    /// The inner Ethernet frame, without FCS.
    public let innerFrame: ByteBuffer

    /// The VNI (validated non-zero by the decapsulator).
    public var vni: VNI { header.vni! }
}

/// A decapsulated full VXLAN packet: outer IP and UDP headers, VXLAN header, inner frame (a slice).
public struct VXLANPacket: Hashable, Sendable {
    /// The outer IP header.
    public let outer: OuterIPHeader
    /// The outer UDP header.
    public let udp: UDPHeader
    /// The VXLAN header.
    public let header: VXLANHeader
    /// The inner Ethernet frame, without FCS.
    public let innerFrame: ByteBuffer

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
        return buffer.writeInteger(UInt64(VXLANHeader.flagI) << 56 | UInt64(vni.value) << 8) + buffer.writeImmutableBuffer(innerFrame)
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
        let vxlanWord = UInt64(VXLANHeader.flagI) << 56 | UInt64(vni.value) << 8  // RFC 7348 section 5 layout
        // Sum of the inner frame for the UDP checksum, when there is one (headers are added below).
        func innerSum() -> InternetChecksum {
            var c = InternetChecksum()
            innerFrame.withUnsafeReadableBytes { c.add(bytes: $0) }
            return c
        }
        // All outer headers are written in one go into the buffer's memory, then the inner frame is copied.
        switch (source, destination) {
        case (.v4(let s), .v4(let d)):
            let total = 20 + udpLength
            guard total <= 0xFFFF else {
                throw VXLANCodecError(.tooLarge, "outer IPv4 packet of \(total) bytes exceeds 65535")
            }
            let payloadSum: InternetChecksum? = ipv4UDPChecksum ? innerSum() : nil
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 36) { p in
                // RFC 791 section 3.1: version 4, IHL 5.
                p.put(UInt16(0x4500) | UInt16(tos), 0)
                p.put(UInt16(total), 2)
                p.put(identification, 4)
                p.put(UInt16(dontFragment ? 0x4000 : 0), 6)
                p.put(UInt16(ttl) << 8 | UInt16(IPProtocol.udp.rawValue), 8)
                p.put(UInt16(0), 10)
                p.put(s.value, 12)
                p.put(d.value, 16)
                var ck = InternetChecksum()
                ck.add(bytes: UnsafeRawBufferPointer(rebasing: p[0..<20]))
                p.put(ck.checksum, 10)
                // RFC 768 header, then the VXLAN header.
                p.put(sport, 20)
                p.put(destinationPort, 22)
                p.put(UInt16(udpLength), 24)
                p.put(UInt16(0), 26)
                p.put(vxlanWord, 28)
                if var sum = payloadSum {
                    var full = InternetChecksum.pseudoHeader(source: s, destination: d, protocol: IPProtocol.udp.rawValue, length: udpLength)
                    full.add(bytes: UnsafeRawBufferPointer(rebasing: p[20..<36]))
                    full.add(sum.foldedSum)
                    sum = full
                    let c = sum.checksum
                    p.put(c == 0 ? 0xFFFF : c, 26)
                }
                return 36
            }
            buffer.writeImmutableBuffer(innerFrame)
            return total
        case (.v6(let s), .v6(let d)):
            guard udpLength <= 0xFFFF else {
                throw VXLANCodecError(.tooLarge, "outer IPv6 payload of \(udpLength) bytes exceeds 65535")
            }
            let payloadSum = innerSum()
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 56) { p in
                // RFC 8200 section 3: version 6, traffic class, flow label.
                p.put(UInt32(6) << 28 | UInt32(tos) << 20 | (flowLabel & 0xF_FFFF), 0)
                p.put(UInt16(udpLength), 4)
                p.put(IPProtocol.udp.rawValue, 6)
                p.put(ttl, 7)
                p.put(UInt64(truncatingIfNeeded: s.value >> 64), 8)
                p.put(UInt64(truncatingIfNeeded: s.value), 16)
                p.put(UInt64(truncatingIfNeeded: d.value >> 64), 24)
                p.put(UInt64(truncatingIfNeeded: d.value), 32)
                p.put(sport, 40)
                p.put(destinationPort, 42)
                p.put(UInt16(udpLength), 44)
                p.put(UInt16(0), 46)
                p.put(vxlanWord, 48)
                // RFC 8200 section 8.1: the checksum is mandatory and covers the pseudo-header.
                var sum = InternetChecksum.pseudoHeader(source: s, destination: d, nextHeader: IPProtocol.udp.rawValue, length: udpLength)
                sum.add(bytes: UnsafeRawBufferPointer(rebasing: p[40..<56]))
                sum.add(payloadSum.foldedSum)
                let c = sum.checksum
                p.put(c == 0 ? 0xFFFF : c, 46)
                return 56
            }
            buffer.writeImmutableBuffer(innerFrame)
            return 40 + udpLength
        default:
            throw VXLANCodecError(.addressFamilyMismatch, "outer source \(source) and destination \(destination) are of different IP families")
        }
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
    /// Verify a non-zero outer UDP checksum (full packet form). On by default; turn it off only for
    /// packets captured on the sending side of a device with checksum offload (a veth, a NIC),
    /// where the kernel has written just the pseudo-header sum and the device would finish it.
    public var verifyUDPChecksum: Bool

    /// Makes a decapsulator.
    public init(vni: VNI?, destinationPort: UInt16 = 4789, strictReservedBits: Bool = true,
                allowZeroIPv6UDPChecksum: Bool = false, verifyUDPChecksum: Bool = true) {
        self.vni = vni
        self.destinationPort = destinationPort
        self.strictReservedBits = strictReservedBits
        self.allowZeroIPv6UDPChecksum = allowZeroIPv6UDPChecksum
        self.verifyUDPChecksum = verifyUDPChecksum
    }

    /// Decapsulates the UDP payload form (what a UDP socket receives): VXLAN header + inner frame.
    /// The inner frame is a slice of `udpPayload`, not a copy.
    public func decapsulate(udpPayload: ByteBuffer) throws(VXLANCodecError) -> VXLANFrame {
        var b = udpPayload
        guard let h = try b.readVXLANHeader() else {
            throw VXLANCodecError(.truncated, "VXLAN payload of \(udpPayload.readableBytes) bytes is shorter than the 8-byte header")
        }
        try h.validate(strictReserved: strictReservedBits)
        try check(h)
        guard b.readableBytes >= 14 else {
            throw VXLANCodecError(.innerFrameTooShort, "inner frame of \(b.readableBytes) bytes is shorter than an Ethernet header (14)")
        }
        return VXLANFrame(header: h, innerFrame: b)
    }

    private func check(_ h: VXLANHeader) throws(VXLANCodecError) {
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
        // One pass over the raw bytes; only the inner frame (and any IPv4 options) become slices.
        let r = packet.withUnsafeReadableBytes { raw in
            Result { () throws(VXLANCodecError) -> ParsedPacket in try parse(RawBytes(raw)) }
        }
        let parsed = try r.get()
        var outer = parsed.outer
        if case .v4(var h) = outer, parsed.ipHeaderLength > 20 {
            h.options = packet.getSlice(at: packet.readerIndex + 20, length: parsed.ipHeaderLength - 20)!
            outer = .v4(h)
        }
        let inner = packet.getSlice(at: packet.readerIndex + parsed.innerOffset, length: parsed.innerLength)!
        return VXLANPacket(outer: outer, udp: parsed.udp, header: parsed.vxlan, innerFrame: inner)
    }

    private struct ParsedPacket {
        var outer: OuterIPHeader
        var ipHeaderLength: Int
        var udp: UDPHeader
        var vxlan: VXLANHeader
        var innerOffset: Int
        var innerLength: Int
    }

    private func parse(_ r: RawBytes) throws(VXLANCodecError) -> ParsedPacket {
        guard let first = r.u8(0) else { throw VXLANCodecError(.truncated, "empty packet") }
        let outer: OuterIPHeader
        let pseudo: PseudoHeader
        let ipHeaderLength: Int
        let udpLength: Int
        switch first >> 4 {
        case 4:
            guard let (h, hl) = try IPv4Header.parse(r) else {
                throw VXLANCodecError(.truncated, "packet of \(r.count) bytes ends inside its IPv4 header")
            }
            guard !h.isFragment else {
                throw VXLANCodecError(.fragmented, "outer IPv4 packet is a fragment (offset \(h.fragmentOffset), MF \(h.moreFragments)); reassemble first or fix the underlay MTU")
            }
            guard h.protocol == .udp else {
                throw VXLANCodecError(.notUDP, "outer IPv4 protocol \(h.protocol.rawValue) is not UDP (17)")
            }
            guard Int(h.totalLength) <= r.count else {
                throw VXLANCodecError(.truncated, "IPv4 total length \(h.totalLength) exceeds the \(r.count) bytes received")
            }
            outer = .v4(h)
            pseudo = .v4(source: h.source, destination: h.destination)
            ipHeaderLength = hl
            udpLength = Int(h.totalLength) - hl
        case 6:
            guard let h = try IPv6Header.parse(r) else {
                throw VXLANCodecError(.truncated, "packet of \(r.count) bytes ends inside its IPv6 header")
            }
            guard h.nextHeader == .udp else {
                throw VXLANCodecError(.notUDP, "outer IPv6 next header \(h.nextHeader.rawValue) is not UDP (17); extension headers are not supported")
            }
            guard 40 + Int(h.payloadLength) <= r.count else {
                throw VXLANCodecError(.truncated, "IPv6 payload length \(h.payloadLength) exceeds the \(r.count - 40) bytes received")
            }
            outer = .v6(h)
            pseudo = .v6(source: h.source, destination: h.destination)
            ipHeaderLength = 40
            udpLength = Int(h.payloadLength)
        default:
            throw VXLANCodecError(.badIPVersion, "IP version \(first >> 4) is neither 4 nor 6")
        }
        let u = ipHeaderLength
        guard udpLength >= 8, let sp = r.u16(u), let dp = r.u16(u + 2), let ulen = r.u16(u + 4), let ck = r.u16(u + 6) else {
            throw VXLANCodecError(.truncated, "IP payload of \(udpLength) bytes is shorter than a UDP header")
        }
        let udp = UDPHeader(sourcePort: sp, destinationPort: dp, length: ulen, checksum: ck)
        guard Int(ulen) == udpLength else {
            throw VXLANCodecError(.badLength, "UDP length \(ulen) does not match the \(udpLength) bytes the IP header gives")
        }
        guard dp == destinationPort else {
            throw VXLANCodecError(.wrongPort, "UDP destination port \(dp) is not the VXLAN port \(destinationPort)")
        }
        if ck == 0 {
            if pseudo.isV6 && !allowZeroIPv6UDPChecksum {
                throw VXLANCodecError(.badUDPChecksum, "UDP checksum is zero over IPv6 (mandatory, RFC 8200 section 8.1)")
            }
        } else if verifyUDPChecksum {
            var sum = pseudo.checksum(protocol: .udp, length: udpLength)
            sum.add(bytes: r.bytes(u, udpLength)!)
            guard sum.verifies else {
                throw VXLANCodecError(.badUDPChecksum, "outer UDP checksum 0x\(String(ck, radix: 16)) does not verify (\(outer.source) -> \(outer.destination))")
            }
        }
        guard let word = r.u64(u + 8) else {
            throw VXLANCodecError(.truncated, "UDP payload of \(udpLength - 8) bytes is shorter than the 8-byte VXLAN header")
        }
        let vx = VXLANHeader(word: word)
        try vx.validate(strictReserved: strictReservedBits)
        try check(vx)
        let innerLength = udpLength - 16
        guard innerLength >= 14 else {
            throw VXLANCodecError(.innerFrameTooShort, "inner frame of \(innerLength) bytes is shorter than an Ethernet header (14)")
        }
        return ParsedPacket(outer: outer, ipHeaderLength: ipHeaderLength, udp: udp, vxlan: vx, innerOffset: u + 16, innerLength: innerLength)
    }
}
