/// An IPv4 address, held as a host-order 32-bit integer.
public struct IPv4Address: Hashable, Sendable, Comparable {
    /// The address as a host-order integer: 10.0.0.1 is 0x0A00_0001.
    public var value: UInt32

    /// Makes an address from a host-order integer.
    public init(_ value: UInt32) { self.value = value }

    /// Makes an address from its four octets, most significant first.
    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        value = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    /// Makes an address from four network-order bytes; nil unless there are exactly four.
    public init?<Bytes: Collection>(bytes: Bytes) where Bytes.Element == UInt8 {
        guard bytes.count == 4 else { return nil }
        var v: UInt32 = 0
        for b in bytes { v = v << 8 | UInt32(b) }
        value = v
    }

    /// The four octets in network order.
    public var bytes: [UInt8] {
        [UInt8(value >> 24), UInt8(truncatingIfNeeded: value >> 16), UInt8(truncatingIfNeeded: value >> 8),
         UInt8(truncatingIfNeeded: value)]
    }

    public static let any = IPv4Address(0)
    public static let broadcast = IPv4Address(0xFFFF_FFFF)
    public static let loopback = IPv4Address(127, 0, 0, 1)

    public static func < (lhs: IPv4Address, rhs: IPv4Address) -> Bool { lhs.value < rhs.value }
}

extension IPv4Address: LosslessStringConvertible, CustomStringConvertible {
    /// Parses dotted-quad notation (`10.0.0.1`). Exactly four decimal octets, each 0...255,
    /// no leading zeros beyond a lone `0` (so `010.0.0.1` is refused rather than read as octal or decimal).
    public init?(_ description: String) {
        var octets: [UInt32] = []
        octets.reserveCapacity(4)
        var current: UInt32 = 0
        var digits = 0
        var leadingZero = false
        for ch in description.utf8 {
            if ch == UInt8(ascii: ".") {
                guard digits > 0, octets.count < 3 else { return nil }
                octets.append(current)
                current = 0
                digits = 0
                leadingZero = false
            } else if ch >= UInt8(ascii: "0") && ch <= UInt8(ascii: "9") {
                if leadingZero { return nil }
                if digits == 0 && ch == UInt8(ascii: "0") { leadingZero = true }
                current = current * 10 + UInt32(ch - UInt8(ascii: "0"))
                digits += 1
                guard current <= 255, digits <= 3 else { return nil }
            } else {
                return nil
            }
        }
        guard digits > 0, octets.count == 3 else { return nil }
        octets.append(current)
        value = octets[0] << 24 | octets[1] << 16 | octets[2] << 8 | octets[3]
    }

    public var description: String {
        "\(value >> 24).\((value >> 16) & 0xFF).\((value >> 8) & 0xFF).\(value & 0xFF)"
    }
}

/// An IPv6 address, held as a host-order 128-bit integer.
///
/// Stored as two 64-bit halves rather than a `UInt128`: values of 16-byte alignment captured in
/// closures have been seen to crash on this toolchain (a misaligned `movaps`), and an address is
/// captured in closures everywhere.
public struct IPv6Address: Hashable, Sendable, Comparable {
    private var high: UInt64
    private var low: UInt64

    /// The address as a host-order integer: ::1 is 1.
    public var value: UInt128 {
        get { UInt128(high) << 64 | UInt128(low) }
        set {
            high = UInt64(truncatingIfNeeded: newValue >> 64)
            low = UInt64(truncatingIfNeeded: newValue)
        }
    }

    /// Makes an address from a host-order integer.
    public init(_ value: UInt128) {
        high = UInt64(truncatingIfNeeded: value >> 64)
        low = UInt64(truncatingIfNeeded: value)
    }

    /// Makes an address from sixteen network-order bytes; nil unless there are exactly sixteen.
    public init?<Bytes: Collection>(bytes: Bytes) where Bytes.Element == UInt8 {
        guard bytes.count == 16 else { return nil }
        var v: UInt128 = 0
        for b in bytes { v = v << 8 | UInt128(b) }
        self.init(v)
    }

    /// The sixteen bytes in network order.
    public var bytes: [UInt8] {
        (0..<16).map { UInt8(truncatingIfNeeded: value >> (8 * (15 - $0))) }
    }

    /// The eight 16-bit groups, most significant first.
    public var groups: [UInt16] {
        (0..<8).map { UInt16(truncatingIfNeeded: value >> (16 * (7 - $0))) }
    }

    public static let any = IPv6Address(0)
    public static let loopback = IPv6Address(1)

    /// The IPv4-mapped form `::ffff:a.b.c.d` of an IPv4 address.
    public init(mapping v4: IPv4Address) { self.init(0xFFFF_0000_0000 | UInt128(v4.value)) }

    /// The embedded IPv4 address when this is an IPv4-mapped address.
    public var mappedIPv4: IPv4Address? {
        value >> 32 == 0xFFFF ? IPv4Address(UInt32(truncatingIfNeeded: value)) : nil
    }

    public static func < (lhs: IPv6Address, rhs: IPv6Address) -> Bool {
        (lhs.high, lhs.low) < (rhs.high, rhs.low)
    }
}

extension IPv6Address: LosslessStringConvertible, CustomStringConvertible {
    /// Parses RFC 4291 section 2.2 text: eight groups, `::` once for a run of zero groups, and an
    /// optional trailing dotted-quad (`::ffff:10.0.0.1`). A zone (`%eth0`) is refused.
    public init?(_ description: String) {
        let utf8 = Array(description.utf8)
        guard !utf8.isEmpty, utf8.count <= 45 else { return nil }
        var head: [UInt16] = []
        var tail: [UInt16] = []
        var sawDoubleColon = false
        var i = 0
        // A leading "::" or a leading single ':' (which is invalid).
        if utf8.count >= 2 && utf8[0] == UInt8(ascii: ":") && utf8[1] == UInt8(ascii: ":") {
            sawDoubleColon = true
            i = 2
            if i == utf8.count { self.init(0); return }
        } else if utf8[0] == UInt8(ascii: ":") {
            return nil
        }
        while i < utf8.count {
            // Read one group (hex) or a trailing IPv4 dotted quad.
            var j = i
            while j < utf8.count && utf8[j] != UInt8(ascii: ":") { j += 1 }
            let token = utf8[i..<j]
            guard !token.isEmpty else { return nil }
            if token.contains(UInt8(ascii: ".")) {
                guard j == utf8.count, let v4 = IPv4Address(String(decoding: token, as: UTF8.self)) else { return nil }
                let pair = [UInt16(v4.value >> 16), UInt16(v4.value & 0xFFFF)]
                if sawDoubleColon { tail += pair } else { head += pair }
                i = j
                break
            }
            guard token.count <= 4 else { return nil }
            var g: UInt16 = 0
            for c in token {
                guard let d = hexValue(c) else { return nil }
                g = g << 4 | UInt16(d)
            }
            if sawDoubleColon { tail.append(g) } else { head.append(g) }
            guard head.count + tail.count <= 8 else { return nil }
            i = j
            if i == utf8.count { break }
            // At a ':'. "::" starts the zero run (once); a trailing single ':' is invalid.
            if i + 1 < utf8.count && utf8[i + 1] == UInt8(ascii: ":") {
                guard !sawDoubleColon else { return nil }
                sawDoubleColon = true
                i += 2
                if i == utf8.count { break }
            } else {
                i += 1
                guard i < utf8.count else { return nil }
            }
        }
        let count = head.count + tail.count
        if sawDoubleColon {
            guard count <= 7 else { return nil }
        } else {
            guard count == 8 else { return nil }
        }
        let groups = head + Array(repeating: 0, count: 8 - count) + tail
        var v: UInt128 = 0
        for g in groups { v = v << 16 | UInt128(g) }
        self.init(v)
    }

    /// RFC 5952 canonical text: lowercase, leading zeros dropped, the longest run (of two or more)
    /// of zero groups shortened to `::`, the first such run on a tie. IPv4-mapped addresses print
    /// with a dotted-quad tail.
    public var description: String {
        if let v4 = mappedIPv4 { return "::ffff:\(v4)" }
        let g = groups
        var bestStart = -1, bestLen = 0, curStart = -1, curLen = 0
        for (idx, v) in g.enumerated() {
            if v == 0 {
                if curStart < 0 { curStart = idx; curLen = 0 }
                curLen += 1
                if curLen > bestLen { bestStart = curStart; bestLen = curLen }
            } else {
                curStart = -1
            }
        }
        if bestLen < 2 { return g.map { String($0, radix: 16) }.joined(separator: ":") }
        let left = g[..<bestStart].map { String($0, radix: 16) }.joined(separator: ":")
        let right = g[(bestStart + bestLen)...].map { String($0, radix: 16) }.joined(separator: ":")
        return left + "::" + right
    }
}

@inline(__always)
func hexValue(_ c: UInt8) -> UInt8? {
    switch c {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
    default: return nil
    }
}

/// Which IP version an address, subnet or pool is.
public enum IPFamily: String, Hashable, Sendable, Codable {
    case v4 = "IPv4"
    case v6 = "IPv6"

    /// The address width in bits: 32 or 128.
    public var bitWidth: Int { self == .v4 ? 32 : 128 }
}

/// An IPv4 or IPv6 address.
public enum IPAddress: Hashable, Sendable, Comparable {
    case v4(IPv4Address)
    case v6(IPv6Address)

    /// The address's family.
    public var family: IPFamily {
        switch self {
        case .v4: return .v4
        case .v6: return .v6
        }
    }

    /// The address as an unsigned integer of its family's width, widened to 128 bits. Used for
    /// arithmetic that works the same for both families (offsets in a subnet, ranges).
    public var integer: UInt128 {
        switch self {
        case .v4(let a): return UInt128(a.value)
        case .v6(let a): return a.value
        }
    }

    /// Makes an address of `family` from an integer; nil when it does not fit the family's width.
    public init?(family: IPFamily, integer: UInt128) {
        switch family {
        case .v4:
            guard integer <= UInt128(UInt32.max) else { return nil }
            self = .v4(IPv4Address(UInt32(integer)))
        case .v6:
            self = .v6(IPv6Address(integer))
        }
    }

    /// The network-order bytes: 4 for IPv4, 16 for IPv6.
    public var bytes: [UInt8] {
        switch self {
        case .v4(let a): return a.bytes
        case .v6(let a): return a.bytes
        }
    }

    /// The IPv4 address, if this is one.
    public var v4: IPv4Address? { if case .v4(let a) = self { return a } else { return nil } }
    /// The IPv6 address, if this is one.
    public var v6: IPv6Address? { if case .v6(let a) = self { return a } else { return nil } }

    /// IPv4 sorts before IPv6; within a family, numerically.
    public static func < (lhs: IPAddress, rhs: IPAddress) -> Bool {
        switch (lhs, rhs) {
        case (.v4(let a), .v4(let b)): return a < b
        case (.v6(let a), .v6(let b)): return a < b
        case (.v4, .v6): return true
        case (.v6, .v4): return false
        }
    }
}

extension IPAddress: LosslessStringConvertible, CustomStringConvertible {
    /// Parses either family's text form; a string with a ':' is read as IPv6.
    public init?(_ description: String) {
        if description.utf8.contains(UInt8(ascii: ":")) {
            guard let a = IPv6Address(description) else { return nil }
            self = .v6(a)
        } else {
            guard let a = IPv4Address(description) else { return nil }
            self = .v4(a)
        }
    }

    public var description: String {
        switch self {
        case .v4(let a): return a.description
        case .v6(let a): return a.description
        }
    }
}

extension IPv4Address: Codable {
    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        let s = try c.decode(String.self)
        guard let a = IPv4Address(s) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "'\(s)' is not an IPv4 address")
        }
        self = a
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

extension IPv6Address: Codable {
    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        let s = try c.decode(String.self)
        guard let a = IPv6Address(s) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "'\(s)' is not an IPv6 address")
        }
        self = a
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

extension IPAddress: Codable {
    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        let s = try c.decode(String.self)
        guard let a = IPAddress(s) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "'\(s)' is not an IP address")
        }
        self = a
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}
