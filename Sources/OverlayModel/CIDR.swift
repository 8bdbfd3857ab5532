/// An IP subnet in CIDR notation (`10.0.0.0/24`, `fd00::/64`), with its host bits zero.
///
/// All arithmetic is done on 128-bit integers so IPv4 and IPv6 behave the same; an IPv6 subnet can
/// be larger than 2^64 addresses.
public struct CIDR: Hashable, Sendable {
    /// The network address (host bits zero).
    public let network: IPAddress
    /// The prefix length: 0...32 for IPv4, 0...128 for IPv6.
    public let prefixLength: Int

    /// Makes the subnet of `prefixLength` that contains `address`, clearing the host bits.
    /// Fails when the prefix length is out of range for the family.
    public init(containing address: IPAddress, prefixLength: Int) throws(ModelError) {
        let width = address.family.bitWidth
        guard (0...width).contains(prefixLength) else {
            throw ModelError(.invalidCIDR, "prefix length /\(prefixLength) is out of range for \(address.family.rawValue) (0...\(width))")
        }
        let host = CIDR.hostMask(width: width, prefixLength: prefixLength)
        self.network = IPAddress(family: address.family, integer: address.integer & ~host)!
        self.prefixLength = prefixLength
    }

    /// Makes the subnet `network/prefixLength`; fails when host bits are set (`10.0.0.1/24`) or the
    /// prefix length is out of range.
    public init(network: IPAddress, prefixLength: Int) throws(ModelError) {
        let c = try CIDR(containing: network, prefixLength: prefixLength)
        guard c.network == network else {
            throw ModelError(.invalidCIDR, "\(network)/\(prefixLength) has host bits set; did you mean \(c)?")
        }
        self = c
    }

    /// Parses `address/prefix`, refusing host bits; errors say what was wrong.
    public static func parse(_ text: String) throws(ModelError) -> CIDR {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2 else {
            throw ModelError(.invalidCIDR, "'\(text)' is not a subnet in CIDR notation (like 10.0.0.0/24)")
        }
        guard let address = IPAddress(String(parts[0])) else {
            throw ModelError(.invalidCIDR, "'\(parts[0])' in '\(text)' is not an IP address")
        }
        guard !parts[1].isEmpty, parts[1].utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let prefix = Int(parts[1]) else {
            throw ModelError(.invalidCIDR, "'\(parts[1])' in '\(text)' is not a prefix length")
        }
        return try CIDR(network: address, prefixLength: prefix)
    }

    /// The family of the subnet.
    public var family: IPFamily { network.family }

    /// The number of host bits (address width minus prefix length).
    public var hostBits: Int { family.bitWidth - prefixLength }

    /// The largest offset in the subnet: its size minus one (so a /0 IPv6 subnet still fits).
    public var lastOffset: UInt128 { CIDR.hostMask(width: family.bitWidth, prefixLength: prefixLength) }

    /// The number of addresses, or nil for `::/0` whose 2^128 does not fit.
    public var addressCount: UInt128? { hostBits == 128 ? nil : lastOffset + 1 }

    /// The first address (the network address).
    public var first: IPAddress { network }

    /// The last address (the IPv4 broadcast address).
    public var last: IPAddress { IPAddress(family: family, integer: network.integer | lastOffset)! }

    /// The netmask as an address (`255.255.255.0` for a /24).
    public var netmask: IPAddress {
        let all: UInt128 = family == .v4 ? UInt128(UInt32.max) : .max
        return IPAddress(family: family, integer: all & ~lastOffset)!
    }

    /// The address at `offset` from the network address, or nil when it lies outside the subnet.
    public func address(at offset: UInt128) -> IPAddress? {
        guard offset <= lastOffset else { return nil }
        return IPAddress(family: family, integer: network.integer | offset)
    }

    /// The offset of `address` from the network address, or nil when it is not in the subnet.
    public func offset(of address: IPAddress) -> UInt128? {
        guard contains(address) else { return nil }
        return address.integer - network.integer
    }

    /// Whether `address` is in this subnet (always false across families).
    public func contains(_ address: IPAddress) -> Bool {
        address.family == family && address.integer & ~lastOffset == network.integer
    }

    /// Whether `other` lies wholly inside this subnet.
    public func contains(_ other: CIDR) -> Bool {
        other.family == family && other.prefixLength >= prefixLength && contains(other.network)
    }

    /// Whether the two subnets share any address.
    public func overlaps(_ other: CIDR) -> Bool { contains(other) || other.contains(self) }

    /// The subnets of `newPrefixLength` that tile this one, in address order. Lazy: a /8 split
    /// into /32s is never materialised. Empty when the new prefix is shorter or out of range.
    public func subnets(prefixLength newPrefixLength: Int) -> Subnets {
        Subnets(parent: self, prefixLength: newPrefixLength)
    }

    /// Every address in the subnet, in order. Lazy.
    public var addresses: Addresses { Addresses(subnet: self) }

    static func hostMask(width: Int, prefixLength: Int) -> UInt128 {
        let bits = width - prefixLength
        return bits >= 128 ? .max : (UInt128(1) << bits) - 1
    }

    /// The subnets of one prefix length that tile a parent subnet.
    public struct Subnets: Sequence, Sendable {
        let parent: CIDR
        let prefixLength: Int

        /// How many subnets there are, or nil when the count does not fit in 128 bits.
        public var count: UInt128? {
            guard prefixLength >= parent.prefixLength, prefixLength <= parent.family.bitWidth else { return 0 }
            let bits = prefixLength - parent.prefixLength
            return bits >= 128 ? nil : UInt128(1) << bits
        }

        /// The subnet at `index`, or nil past the end.
        public subscript(index: UInt128) -> CIDR? {
            if let count, index >= count { return nil }
            return at(index)
        }

        private func at(_ index: UInt128) -> CIDR {
            let shift = parent.family.bitWidth - prefixLength
            let base = parent.network.integer | (shift >= 128 ? 0 : index << shift)
            // In range by construction: index < count keeps base inside the parent, aligned.
            return try! CIDR(network: IPAddress(family: parent.family, integer: base)!, prefixLength: prefixLength)
        }

        public func makeIterator() -> AnyIterator<CIDR> {
            var index: UInt128 = 0
            let count = self.count
            return AnyIterator {
                if let count, index >= count { return nil }
                defer { index &+= 1 }
                return self.at(index)
            }
        }
    }

    /// The addresses of a subnet, in order.
    public struct Addresses: Sequence, Sendable {
        let subnet: CIDR

        public func makeIterator() -> AnyIterator<IPAddress> {
            var offset: UInt128 = 0
            var done = false
            let last = subnet.lastOffset
            return AnyIterator {
                guard !done else { return nil }
                defer { if offset == last { done = true } else { offset += 1 } }
                return self.subnet.address(at: offset)
            }
        }
    }
}

extension CIDR: LosslessStringConvertible, CustomStringConvertible {
    /// Parses `address/prefix`; nil where ``parse(_:)`` would throw.
    public init?(_ description: String) {
        guard let c = try? CIDR.parse(description) else { return nil }
        self = c
    }

    public var description: String { "\(network)/\(prefixLength)" }
}

extension CIDR: Comparable {
    /// Orders by network address, then by prefix length (wider first).
    public static func < (lhs: CIDR, rhs: CIDR) -> Bool {
        lhs.network != rhs.network ? lhs.network < rhs.network : lhs.prefixLength < rhs.prefixLength
    }
}

extension CIDR: Codable {
    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        let s = try c.decode(String.self)
        do { self = try CIDR.parse(s) } catch {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: error.message)
        }
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}
