import NIOCore
import OverlayModel

/// An EtherType (IEEE 802.3 Length/Type field, values >= 0x0600).
public struct EtherType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The 16-bit value on the wire.
    public var rawValue: UInt16
    /// Makes an EtherType from its wire value.
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// IPv4 (RFC 894).
    public static let ipv4 = EtherType(rawValue: 0x0800)
    /// ARP (RFC 826).
    public static let arp = EtherType(rawValue: 0x0806)
    /// IPv6 (RFC 2464).
    public static let ipv6 = EtherType(rawValue: 0x86DD)
    /// IEEE 802.1Q customer VLAN tag.
    public static let vlan = EtherType(rawValue: 0x8100)
    /// IEEE 802.1ad service VLAN tag (QinQ outer tag).
    public static let serviceVLAN = EtherType(rawValue: 0x88A8)

    public var description: String {
        let h = String(rawValue, radix: 16)
        return "0x" + String(repeating: "0", count: 4 - h.count) + h
    }
}

/// An IEEE 802.1Q tag: tag protocol identifier and tag control information (PCP, DEI, VID).
public struct VLANTag: Hashable, Sendable {
    /// The TPID: 0x8100 (802.1Q) or 0x88A8 (802.1ad).
    public var tpid: EtherType
    /// Priority code point, 0...7.
    public var priority: UInt8
    /// Drop eligible indicator.
    public var dropEligible: Bool
    /// VLAN identifier, 0...4095.
    public var vid: UInt16

    /// Makes a tag; `priority` and `vid` are masked to 3 and 12 bits.
    public init(vid: UInt16, priority: UInt8 = 0, dropEligible: Bool = false, tpid: EtherType = .vlan) {
        self.tpid = tpid
        self.priority = priority & 0x7
        self.dropEligible = dropEligible
        self.vid = vid & 0x0FFF
    }

    /// The 16-bit TCI as on the wire.
    public var tci: UInt16 { UInt16(priority & 0x7) << 13 | (dropEligible ? 0x1000 : 0) | (vid & 0x0FFF) }

    init(tpid: EtherType, tci: UInt16) {
        self.init(vid: tci & 0x0FFF, priority: UInt8(tci >> 13), dropEligible: tci & 0x1000 != 0, tpid: tpid)
    }
}

/// An Ethernet II header (IEEE 802.3 clause 3.1.1), with at most one 802.1Q tag.
public struct EthernetHeader: Hashable, Sendable {
    /// Destination MAC.
    public var destination: MACAddress
    /// Source MAC.
    public var source: MACAddress
    /// The 802.1Q (or 802.1ad) tag, when the frame carries one.
    public var vlan: VLANTag?
    /// The type of the payload (after the tag, if any).
    public var etherType: EtherType

    /// Makes a header.
    public init(destination: MACAddress, source: MACAddress, vlan: VLANTag? = nil, etherType: EtherType) {
        self.destination = destination
        self.source = source
        self.vlan = vlan
        self.etherType = etherType
    }

    /// Bytes on the wire: 14, or 18 with a tag.
    public var length: Int { vlan == nil ? 14 : 18 }
}

extension ByteBuffer {
    /// Reads a 6-byte MAC address at absolute `index`.
    func getMAC(at index: Int) -> MACAddress? {
        guard let hi = getInteger(at: index, as: UInt16.self),
              let lo = getInteger(at: index + 2, as: UInt32.self) else { return nil }
        return MACAddress(UInt64(hi) << 32 | UInt64(lo))
    }

    /// Writes a MAC address as six bytes.
    @discardableResult
    mutating func writeMAC(_ mac: MACAddress) -> Int {
        writeInteger(UInt16(truncatingIfNeeded: mac.value >> 32)) + writeInteger(UInt32(truncatingIfNeeded: mac.value))
    }

    /// Reads an Ethernet II header, with an 802.1Q/802.1ad tag if present (IEEE 802.1Q clause 9).
    ///
    /// Returns nil, leaving the reader index alone, if the buffer is too short. Never throws today
    /// (every 14 bytes are some header) but keeps the codec convention.
    public mutating func readEthernetHeader() throws(VXLANCodecError) -> EthernetHeader? {
        let i = readerIndex
        guard let dst = getMAC(at: i), let src = getMAC(at: i + 6),
              let type = getInteger(at: i + 12, as: UInt16.self) else { return nil }
        let et = EtherType(rawValue: type)
        if et == .vlan || et == .serviceVLAN {
            guard let tci = getInteger(at: i + 14, as: UInt16.self),
                  let inner = getInteger(at: i + 16, as: UInt16.self) else { return nil }
            moveReaderIndex(forwardBy: 18)
            return EthernetHeader(destination: dst, source: src, vlan: VLANTag(tpid: et, tci: tci),
                                  etherType: EtherType(rawValue: inner))
        }
        moveReaderIndex(forwardBy: 14)
        return EthernetHeader(destination: dst, source: src, etherType: et)
    }

    /// Writes an Ethernet II header (destination, source, optional tag, EtherType).
    @discardableResult
    public mutating func writeEthernetHeader(_ header: EthernetHeader) -> Int {
        var n = writeMAC(header.destination) + writeMAC(header.source)
        if let tag = header.vlan {
            n += writeInteger(tag.tpid.rawValue) + writeInteger(tag.tci)
        }
        return n + writeInteger(header.etherType.rawValue)
    }
}

/// An ARP packet for IPv4 over Ethernet (RFC 826): hardware type 1, protocol type 0x0800.
public struct ARPPacket: Hashable, Sendable {
    /// ARP operation (RFC 826; RFC 5494 registry).
    public struct Operation: RawRepresentable, Hashable, Sendable {
        /// The 16-bit value on the wire.
        public var rawValue: UInt16
        /// Makes an operation from its wire value.
        public init(rawValue: UInt16) { self.rawValue = rawValue }
        /// 1: who has `targetIP`?
        public static let request = Operation(rawValue: 1)
        /// 2: `senderIP` is at `senderMAC`.
        public static let reply = Operation(rawValue: 2)
    }

    /// Request or reply.
    public var operation: Operation
    /// Sender hardware address.
    public var senderMAC: MACAddress
    /// Sender protocol address.
    public var senderIP: IPv4Address
    /// Target hardware address (zero in a request).
    public var targetMAC: MACAddress
    /// Target protocol address.
    public var targetIP: IPv4Address

    /// Makes an ARP packet.
    public init(operation: Operation, senderMAC: MACAddress, senderIP: IPv4Address,
                targetMAC: MACAddress = .zero, targetIP: IPv4Address) {
        self.operation = operation
        self.senderMAC = senderMAC
        self.senderIP = senderIP
        self.targetMAC = targetMAC
        self.targetIP = targetIP
    }

    /// Bytes on the wire.
    public static let length = 28
}

extension ByteBuffer {
    /// Reads an Ethernet/IPv4 ARP packet (RFC 826 "Packet format").
    ///
    /// Returns nil on a short buffer; throws `.unsupportedARP` for other hardware or protocol types or lengths.
    public mutating func readARPPacket() throws(VXLANCodecError) -> ARPPacket? {
        let i = readerIndex
        guard readableBytes >= ARPPacket.length,
              let htype = getInteger(at: i, as: UInt16.self), let ptype = getInteger(at: i + 2, as: UInt16.self),
              let hlen = getInteger(at: i + 4, as: UInt8.self), let plen = getInteger(at: i + 5, as: UInt8.self),
              let op = getInteger(at: i + 6, as: UInt16.self),
              let sha = getMAC(at: i + 8), let spa = getInteger(at: i + 14, as: UInt32.self),
              let tha = getMAC(at: i + 18), let tpa = getInteger(at: i + 24, as: UInt32.self)
        else { return nil }
        guard htype == 1, ptype == EtherType.ipv4.rawValue, hlen == 6, plen == 4 else {
            throw VXLANCodecError(.unsupportedARP,
                "ARP hardware/protocol \(htype)/\(ptype) with lengths \(hlen)/\(plen); only Ethernet/IPv4 (1/2048, 6/4) is handled")
        }
        moveReaderIndex(forwardBy: ARPPacket.length)
        return ARPPacket(operation: .init(rawValue: op), senderMAC: sha, senderIP: IPv4Address(spa),
                         targetMAC: tha, targetIP: IPv4Address(tpa))
    }

    /// Writes an Ethernet/IPv4 ARP packet (28 bytes).
    @discardableResult
    public mutating func writeARPPacket(_ arp: ARPPacket) -> Int {
        var n = writeInteger(UInt16(1)) + writeInteger(EtherType.ipv4.rawValue)
        n += writeInteger(UInt8(6)) + writeInteger(UInt8(4)) + writeInteger(arp.operation.rawValue)
        n += writeMAC(arp.senderMAC) + writeInteger(arp.senderIP.value)
        n += writeMAC(arp.targetMAC) + writeInteger(arp.targetIP.value)
        return n
    }
}
