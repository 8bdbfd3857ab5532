import NIOCore
import OverlayModel

/// An ICMP (RFC 792) or ICMPv6 (RFC 4443 section 2.1) message: type, code, the 4 bytes after the
/// checksum, and the body. The checksum is not stored: reading verifies it, writing computes it.
public struct ICMPMessage: Hashable, Sendable {
    /// Message type (8/0 echo request/reply for ICMP; 128/129 for ICMPv6).
    public var type: UInt8
    /// Message code.
    public var code: UInt8
    /// The 32 bits after the checksum (identifier and sequence number for echo).
    public var restOfHeader: UInt32
    /// Everything after the 8-byte header (a slice of the packet when read).
    public var body: ByteBuffer

    /// Makes a message.
    public init(type: UInt8, code: UInt8, restOfHeader: UInt32, body: ByteBuffer) {
        self.type = type
        self.code = code
        self.restOfHeader = restOfHeader
        self.body = body
    }

    /// Bytes on the wire.
    public var length: Int { 8 + body.readableBytes }
}

/// An ICMP or ICMPv6 echo request or reply (RFC 792 "Echo or Echo Reply Message"; RFC 4443 sections 4.1, 4.2).
public struct ICMPEcho: Hashable, Sendable {
    /// True for a reply, false for a request.
    public var isReply: Bool
    /// Identifier, to match replies to requests.
    public var identifier: UInt16
    /// Sequence number.
    public var sequenceNumber: UInt16
    /// Data echoed back by the peer.
    public var payload: ByteBuffer

    /// Makes an echo message.
    public init(isReply: Bool, identifier: UInt16, sequenceNumber: UInt16, payload: ByteBuffer) {
        self.isReply = isReply
        self.identifier = identifier
        self.sequenceNumber = sequenceNumber
        self.payload = payload
    }

    /// Reads an echo out of an ICMP message of `family`; throws `.notEcho` for any other type or a nonzero code.
    public init(_ m: ICMPMessage, family: IPFamily) throws(VXLANCodecError) {
        let (req, rep): (UInt8, UInt8) = family == .v4 ? (8, 0) : (128, 129)
        guard m.code == 0, m.type == req || m.type == rep else {
            throw VXLANCodecError(.notEcho, "ICMP\(family == .v6 ? "v6" : "") type \(m.type) code \(m.code) is not an echo request or reply")
        }
        self.init(isReply: m.type == rep, identifier: UInt16(truncatingIfNeeded: m.restOfHeader >> 16),
                  sequenceNumber: UInt16(truncatingIfNeeded: m.restOfHeader), payload: m.body)
    }

    /// The ICMP message for `family`.
    public func message(family: IPFamily) -> ICMPMessage {
        let type: UInt8 = family == .v4 ? (isReply ? 0 : 8) : (isReply ? 129 : 128)
        return ICMPMessage(type: type, code: 0, restOfHeader: UInt32(identifier) << 16 | UInt32(sequenceNumber), body: payload)
    }

    /// The matching reply to this request (same identifier, sequence and data).
    public var reply: ICMPEcho { ICMPEcho(isReply: true, identifier: identifier, sequenceNumber: sequenceNumber, payload: payload) }
}

extension ByteBuffer {
    /// Reads an ICMP message of `length` bytes and verifies its checksum. ICMP for IPv4 sums the message
    /// alone (RFC 792); ICMPv6 adds the IPv6 pseudo-header (RFC 4443 section 2.3): pass `pseudoHeader`
    /// `.v6` for ICMPv6 and `nil` for ICMP.
    ///
    /// Returns nil if fewer than `length` bytes are readable; throws if `length` < 8 or the checksum is wrong.
    public mutating func readICMPMessage(length: Int, pseudoHeader: PseudoHeader? = nil) throws(VXLANCodecError) -> ICMPMessage? {
        guard length >= 8 else {
            throw VXLANCodecError(.badLength, "an ICMP message of \(length) bytes is shorter than its 8-byte header")
        }
        guard readableBytes >= length else { return nil }
        let i = readerIndex
        var sum: InternetChecksum
        if let p = pseudoHeader, p.isV6 { sum = p.checksum(protocol: .icmpv6, length: length) } else { sum = InternetChecksum() }
        sum.add(buffer: self, at: i, length: length)
        guard sum.verifies else {
            throw VXLANCodecError(.badICMPChecksum, "ICMP checksum does not verify (type \(getInteger(at: i, as: UInt8.self)!))")
        }
        let m = ICMPMessage(type: getInteger(at: i, as: UInt8.self)!, code: getInteger(at: i + 1, as: UInt8.self)!,
                            restOfHeader: getInteger(at: i + 4, as: UInt32.self)!, body: getSlice(at: i + 8, length: length - 8)!)
        moveReaderIndex(forwardBy: length)
        return m
    }

    /// Writes an ICMP message with its checksum (pseudo-header included for ICMPv6, as in `readICMPMessage`).
    @discardableResult
    public mutating func writeICMPMessage(_ m: ICMPMessage, pseudoHeader: PseudoHeader? = nil) -> Int {
        let start = writerIndex
        writeInteger(m.type)
        writeInteger(m.code)
        writeInteger(UInt16(0))
        writeInteger(m.restOfHeader)
        writeImmutableBuffer(m.body)
        let length = writerIndex - start
        var sum: InternetChecksum
        if let p = pseudoHeader, p.isV6 { sum = p.checksum(protocol: .icmpv6, length: length) } else { sum = InternetChecksum() }
        sum.add(buffer: self, at: start, length: length)
        setInteger(sum.checksum, at: start + 2)
        return length
    }
}
