import OverlayModel

/// A range subnets are carved from: `base` split into subnets of prefix length `size`
/// (Docker's `{"base": "10.0.0.0/8", "size": 24}`).
public struct AddressPool: Hashable, Sendable, CustomStringConvertible {
    /// The range the pool covers.
    public let base: CIDR
    /// The prefix length of each subnet handed out from the pool.
    public let size: Int

    /// Makes a pool; fails unless `size` lies between the base's prefix length and the family's width.
    public init(base: CIDR, size: Int) throws(IPAMError) {
        guard (base.prefixLength...base.family.bitWidth).contains(size) else {
            throw IPAMError(
                .invalidConfiguration,
                "--default-addr-pool-mask-length \(size) does not fit --default-addr-pool \(base); use a length between \(base.prefixLength) and \(base.family.bitWidth)")
        }
        self.base = base
        self.size = size
    }

    /// The family of the pool.
    public var family: IPFamily { base.family }

    /// `10.0.0.0/8 split into /24`, for messages and logs.
    public var description: String { "\(base) split into /\(size)" }

    /// Docker's local (bridge) defaults: 172.17.0.0/16 ... 172.31.0.0/16 as one /16 each, then
    /// 192.168.0.0/16 split into /20s.
    public static let localDefaults: [AddressPool] = {
        var pools: [AddressPool] = (17...31).map { second in
            try! AddressPool(base: CIDR(network: .v4(IPv4Address(172, UInt8(second), 0, 0)), prefixLength: 16), size: 16)
        }
        pools.append(try! AddressPool(base: CIDR(network: .v4(IPv4Address(192, 168, 0, 0)), prefixLength: 16), size: 20))
        return pools
    }()

    /// Docker swarm's global (overlay) default: 10.0.0.0/8 split into /24s.
    public static let globalDefaults: [AddressPool] = [
        try! AddressPool(base: CIDR(network: .v4(IPv4Address(10, 0, 0, 0)), prefixLength: 8), size: 24)
    ]

    /// The mask length Docker uses when `--default-addr-pool-mask-length` is not given.
    public static let defaultMaskLength = 24

    /// The pools that `--default-addr-pool CIDR` (repeatable) and `--default-addr-pool-mask-length N`
    /// describe: every base split into /N. With no base given, the global default (10.0.0.0/8 into
    /// /24s, or into /N when only the mask length is given).
    public static func pools(defaultAddrPools bases: [CIDR], maskLength: Int? = nil) throws(IPAMError) -> [AddressPool] {
        let mask = maskLength ?? defaultMaskLength
        if bases.isEmpty {
            if maskLength == nil { return globalDefaults }
            return [try AddressPool(base: globalDefaults[0].base, size: mask)]
        }
        var pools: [AddressPool] = []
        for base in bases {
            let pool = try AddressPool(base: base, size: mask)
            if !pools.contains(pool) { pools.append(pool) }
        }
        return pools
    }

    /// Parses the flag values as a user typed them (`["10.10.0.0/16"]`, `"24"`); errors name the flag.
    public static func pools(defaultAddrPools texts: [String], maskLength text: String?) throws(IPAMError) -> [AddressPool] {
        var bases: [CIDR] = []
        for t in texts {
            do { bases.append(try CIDR.parse(t)) } catch {
                throw IPAMError(.invalidConfiguration, "--default-addr-pool: \(error.message)")
            }
        }
        var mask: Int?
        if let text {
            guard let m = Int(text), m >= 0 else {
                throw IPAMError(.invalidConfiguration, "--default-addr-pool-mask-length '\(text)' is not a prefix length (like 24)")
            }
            mask = m
        }
        return try pools(defaultAddrPools: bases, maskLength: mask)
    }
}

extension AddressPool: Codable {
    private enum CodingKeys: String, CodingKey { case base, size }

    /// Decodes `{"base": "10.0.0.0/8", "size": 24}`, refusing a size that does not fit the base.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let base = try c.decode(CIDR.self, forKey: .base)
        let size = try c.decode(Int.self, forKey: .size)
        do { self = try AddressPool(base: base, size: size) } catch {
            throw DecodingError.dataCorruptedError(forKey: .size, in: c, debugDescription: error.message)
        }
    }

    /// Encodes `{"base": "10.0.0.0/8", "size": 24}`.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(base, forKey: .base)
        try c.encode(size, forKey: .size)
    }
}
