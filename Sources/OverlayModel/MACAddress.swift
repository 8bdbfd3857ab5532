/// A 48-bit Ethernet MAC address.
public struct MACAddress: Hashable, Sendable, Comparable {
    /// The address in the low 48 bits, most significant byte first: 02:42:0a:00:00:02 is 0x0242_0A00_0002.
    public let value: UInt64

    /// Makes an address from the low 48 bits of `value`.
    public init(_ value: UInt64) { self.value = value & 0xFFFF_FFFF_FFFF }

    /// Makes an address from six bytes; nil unless there are exactly six.
    public init?<Bytes: Collection>(bytes: Bytes) where Bytes.Element == UInt8 {
        guard bytes.count == 6 else { return nil }
        var v: UInt64 = 0
        for b in bytes { v = v << 8 | UInt64(b) }
        value = v
    }

    /// The six bytes, first on the wire first.
    public var bytes: [UInt8] { (0..<6).map { UInt8(truncatingIfNeeded: value >> (8 * (5 - $0))) } }

    public static let broadcast = MACAddress(0xFFFF_FFFF_FFFF)
    public static let zero = MACAddress(0)

    /// Group (multicast/broadcast) bit: the low bit of the first byte.
    public var isMulticast: Bool { value & 0x0100_0000_0000 != 0 }
    /// Locally administered bit: the second-lowest bit of the first byte.
    public var isLocallyAdministered: Bool { value & 0x0200_0000_0000 != 0 }

    /// Docker's MAC for an endpoint address: `02:42` followed by the four IPv4 octets, so an
    /// endpoint's MAC follows from its IP and every host computes the same one.
    public init(derivedFrom ip: IPv4Address) { value = 0x0242_0000_0000 | UInt64(ip.value) }

    /// A random unicast, locally administered address (for IPv6-only endpoints and devices).
    public static func randomLocallyAdministered<G: RandomNumberGenerator>(using generator: inout G) -> MACAddress {
        let r = UInt64.random(in: 0...0xFFFF_FFFF_FFFF, using: &generator)
        return MACAddress((r & ~0x0100_0000_0000) | 0x0200_0000_0000)
    }

    /// A random unicast, locally administered address from the system generator.
    public static func randomLocallyAdministered() -> MACAddress {
        var g = SystemRandomNumberGenerator()
        return randomLocallyAdministered(using: &g)
    }

    public static func < (lhs: MACAddress, rhs: MACAddress) -> Bool { lhs.value < rhs.value }
}

extension MACAddress: LosslessStringConvertible, CustomStringConvertible {
    /// Parses six two-digit hex bytes separated by ':' or '-' (one separator throughout).
    public init?(_ description: String) {
        let u = Array(description.utf8)
        guard u.count == 17 else { return nil }
        let sep = u[2]
        guard sep == UInt8(ascii: ":") || sep == UInt8(ascii: "-") else { return nil }
        var v: UInt64 = 0
        for i in 0..<6 {
            let o = i * 3
            if i < 5 && u[o + 2] != sep { return nil }
            guard let hi = hexValue(u[o]), let lo = hexValue(u[o + 1]) else { return nil }
            v = v << 8 | UInt64(hi << 4 | lo)
        }
        value = v
    }

    /// Lowercase, colon-separated: `02:42:0a:00:00:02`.
    public var description: String {
        bytes.map { b in
            let s = String(b, radix: 16)
            return b < 16 ? "0" + s : s
        }.joined(separator: ":")
    }
}

extension MACAddress: Codable {
    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        let s = try c.decode(String.self)
        guard let m = MACAddress(s) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "'\(s)' is not a MAC address")
        }
        self = m
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}
