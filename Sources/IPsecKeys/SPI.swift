import OverlayModel

/// An ESP Security Parameters Index (RFC 4303 2.1): the 32-bit value that names an SA on the wire.
///
/// Values 0...255 are reserved by IANA and never used; `init?(rawValue:)` refuses them.
public struct SPI: RawRepresentable, Hashable, Comparable, Sendable, Codable, CustomStringConvertible {
    /// The SPI as sent on the wire (big-endian in the ESP header).
    public let rawValue: UInt32

    /// Wraps a wire value; nil for the reserved range 0...255.
    public init?(rawValue: UInt32) {
        guard rawValue > 255 else { return nil }
        self.rawValue = rawValue
    }

    /// Decodes a number and refuses reserved values.
    public init(from decoder: any Decoder) throws {
        let v = try decoder.singleValueContainer().decode(UInt32.self)
        guard let s = SPI(rawValue: v) else {
            throw IPsecError(.reservedSPI, "SPI \(v) is in the reserved range 0...255")
        }
        self = s
    }

    /// Encodes the number.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }

    /// Orders by value.
    public static func < (lhs: SPI, rhs: SPI) -> Bool { lhs.rawValue < rhs.rawValue }

    /// Hex, as `ip xfrm state` and tshark print it: `0x1a2b3c4d`.
    public var description: String {
        let h = String(rawValue, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 8 - h.count)) + h
    }

    /// Docker's SPI for traffic from `source` to `destination` under the key tagged `tag`.
    ///
    /// Docker's `buildSPI` (libnetwork/drivers/overlay/encryption.go): 32-bit FNV-1a over the
    /// source address in its 16-byte form, the tag big-endian, then the destination's 16-byte
    /// form. An IPv4 address's 16-byte form is the IPv4-mapped IPv6 address `::ffff:a.b.c.d`
    /// (Go's `net.ParseIP` / `netip.Addr.As16`), so IPv4 and IPv6 VTEPs (and mixed pairs) go
    /// through one definition and a Docker host derives the same SPI. RFC 4303 reserves 0...255,
    /// which Docker does not avoid; for those 256 of 2^32 hash values this returns the value with
    /// bit 8 set (`h | 0x100`), so such an SA would not interoperate with a stock Docker kernel
    /// host (a chance of 2^-24 per SA).
    public static func derive(source: IPAddress, destination: IPAddress, tag: UInt32) -> SPI {
        var h: UInt32 = 0x811C_9DC5  // FNV-1a 32 offset basis
        @inline(__always) func mix(_ b: UInt8) {
            h ^= UInt32(b)
            h = h &* 0x0100_0193  // FNV 32 prime
        }
        for b in source.sixteenBytes { mix(b) }
        mix(UInt8(truncatingIfNeeded: tag >> 24))
        mix(UInt8(truncatingIfNeeded: tag >> 16))
        mix(UInt8(truncatingIfNeeded: tag >> 8))
        mix(UInt8(truncatingIfNeeded: tag))
        for b in destination.sixteenBytes { mix(b) }
        if h <= 255 { h |= 0x100 }
        return SPI(rawValue: h)!
    }
}

extension IPAddress {
    /// The 16-byte form Go's `net.IP` uses: IPv4 as `::ffff:a.b.c.d`, IPv6 as is.
    var sixteenBytes: [UInt8] {
        switch self {
        case .v4(let a): return [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF] + a.bytes
        case .v6(let a): return a.bytes
        }
    }
}
