import OverlayCrypto

/// One network-encryption key as the managers hand it out: AES key bytes and a tag.
///
/// Like Docker's (`libnetwork/drivers/overlay/encryption.go`, type `key`), the key is 16 bytes
/// (AES-128; 24 and 32 are accepted too) and the tag is the key's Lamport time, which orders keys
/// by age and feeds SPI derivation. The 4-byte RFC 4106 salt is not part of the key: Docker
/// programs each SA with `salt = SPI` (big-endian), so the salt differs per host pair and
/// direction; ``ESPSecurityAssociation/derive(local:remote:key:extendedSequenceNumbers:replayWindowSize:localBoot:remoteBoot:)`` does
/// the same. The bytes live in a zeroizing `SecretKey` and are never printed.
public struct IPsecKey: Sendable, Equatable, Hashable, Codable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The key's Lamport time (Docker's `key.tag`); larger is newer.
    public let tag: UInt32
    /// The AES key bytes (16, 24 or 32), zeroed when released.
    public let material: SecretKey

    /// Wraps key bytes and a tag; throws `.invalidKey` unless the key is 16, 24 or 32 bytes.
    public init(tag: UInt32, material: SecretKey) throws(IPsecError) {
        guard [16, 24, 32].contains(material.count) else {
            throw IPsecError(.invalidKey, "IPsec key with tag \(tag) is \(material.count) bytes; AES-GCM in ESP takes 16 (Docker), 24 or 32")
        }
        self.tag = tag
        self.material = material
    }

    /// A fresh random 16-byte key (what a manager makes at each rotation) with `tag`.
    public static func random(tag: UInt32, byteCount: Int = 16) throws(IPsecError) -> IPsecKey {
        let k: SecretKey
        do { k = try SecretKey.random(byteCount: byteCount) } catch {
            throw IPsecError(.openssl, "cannot draw a random IPsec key: \(error)")
        }
        return try IPsecKey(tag: tag, material: k)
    }

    /// Redacted: `IPsecKey(tag: 7, <redacted>, 16 bytes)`.
    public var description: String { "IPsecKey(tag: \(tag), <redacted>, \(material.count) bytes)" }
    /// Redacted, like `description`.
    public var debugDescription: String { description }

    private enum CodingKeys: String, CodingKey { case tag, key }

    /// Decodes `{"tag": n, "key": [bytes]}`; key bytes of a wrong length fail to decode.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let tag = try c.decode(UInt32.self, forKey: .tag)
        var bytes = try c.decode([UInt8].self, forKey: .key)
        defer { bytes.withUnsafeMutableBytes { p in for i in p.indices { p[i] = 0 } } }
        try self.init(tag: tag, material: SecretKey(bytes: bytes))
    }

    /// Encodes `{"tag": n, "key": [bytes]}`: only for the manager-to-node mTLS channel, never disk or logs.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(tag, forKey: .tag)
        try material.withUnsafeBytes { try c.encode(Array($0), forKey: .key) }
    }
}

/// The keys a node holds for network encryption: 3 keys ordered by age, as Docker's agent keeps them.
///
/// Docker (libnetwork `agent.go`, `getPrimaryKeyTag`) sorts the keys by Lamport time and transmits
/// with the second one (`keys[1]`), the middle of three; the newest is receive-only until the next
/// rotation makes it primary, so every node can already decrypt it when the first node switches to
/// it; the oldest stays for receiving from nodes that have not rotated yet. A ring of 2 keys (no
/// receive-only key) is accepted too, with the newer one primary, as Docker does.
///
/// Codable so a manager can send it to a node over mutually authenticated TLS.
/// - Warning: the encoded form holds the keys in clear. Never write it to disk, a log, or any
///   channel that is not authenticated and encrypted.
public struct IPsecKeyring: Sendable, Equatable, Codable, CustomStringConvertible {
    /// How many keys a full ring holds (Docker/swarmkit: 3).
    public static let capacity = 3

    /// The keys, oldest first (ascending tag).
    public private(set) var keys: [IPsecKey]

    /// A ring of 2 or 3 keys with distinct tags, in any order; throws `.invalidKeyring` otherwise.
    public init(keys: [IPsecKey]) throws(IPsecError) {
        guard (2...Self.capacity).contains(keys.count) else {
            throw IPsecError(.invalidKeyring, "an IPsec keyring holds 2 or 3 keys, got \(keys.count); send the manager's whole ring")
        }
        let sorted = keys.sorted { $0.tag < $1.tag }
        for i in 1..<sorted.count where sorted[i].tag == sorted[i - 1].tag {
            throw IPsecError(.invalidKeyring, "two IPsec keys share tag \(sorted[i].tag); every key needs its own Lamport time")
        }
        self.keys = sorted
    }

    /// The key every SA transmits with: the second oldest (the middle of three).
    public var primary: IPsecKey { keys[1] }
    /// The newest key, installed for receiving only, or nil in a ring of 2.
    public var receiveOnly: IPsecKey? { keys.count == 3 ? keys[2] : nil }
    /// The oldest key, kept for receiving from nodes that have not rotated yet.
    public var oldest: IPsecKey { keys[0] }
    /// The tags, oldest first.
    public var tags: [UInt32] { keys.map(\.tag) }

    /// The key with `tag`, if the ring holds it.
    public func key(tag: UInt32) -> IPsecKey? { keys.first { $0.tag == tag } }

    /// One rotation (every 12 h, or `swarm rotate-keys`): adds `newKey` as the newest and drops the
    /// oldest when the ring is full, so the old receive-only key becomes primary.
    /// Throws `.invalidKeyring` unless `newKey`'s tag is newer than every key held.
    public mutating func rotate(newKey: IPsecKey) throws(IPsecError) {
        guard let newest = keys.last, newKey.tag > newest.tag else {
            throw IPsecError(.invalidKeyring, "a rotated-in IPsec key must be newer than tag \(keys.last?.tag ?? 0), got tag \(newKey.tag)")
        }
        keys.append(newKey)
        if keys.count > Self.capacity { keys.removeFirst(keys.count - Self.capacity) }
    }

    /// The ring after `rotate(newKey:)`, leaving this one unchanged.
    public func rotated(newKey: IPsecKey) throws(IPsecError) -> IPsecKeyring {
        var r = self
        try r.rotate(newKey: newKey)
        return r
    }

    /// Tags only: `IPsecKeyring(tags: [1, 2*, 3])` with the primary starred.
    public var description: String {
        "IPsecKeyring(tags: [" + keys.map { $0.tag == primary.tag ? "\($0.tag)*" : "\($0.tag)" }.joined(separator: ", ") + "])"
    }

    private enum CodingKeys: String, CodingKey { case keys }

    /// Decodes `{"keys": [...]}` and checks it like `init(keys:)`.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try self.init(keys: c.decode([IPsecKey].self, forKey: .keys))
    }

    /// Encodes `{"keys": [...]}` with the key bytes in clear: mTLS transport only, never disk.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(keys, forKey: .keys)
    }
}

/// One step a datapath takes to move from one keyring to the next, for every peer.
public enum IPsecRotationStep: Sendable, Equatable, CustomStringConvertible {
    /// Install the inbound SAs for `key` (from each peer to us) before anyone can send with it.
    case addRx(IPsecKey)
    /// Switch the outbound SA (to each peer) to `key`.
    case setPrimaryTx(IPsecKey)
    /// Remove the outbound SAs of the key with this tag (no longer primary).
    case removeTx(tag: UInt32)
    /// Remove the inbound SAs of the key with this tag (dropped from the ring).
    case removeRx(tag: UInt32)

    /// Short form without key bytes, e.g. `addRx(4)`.
    public var description: String {
        switch self {
        case .addRx(let k): return "addRx(\(k.tag))"
        case .setPrimaryTx(let k): return "setPrimaryTx(\(k.tag))"
        case .removeTx(let t): return "removeTx(\(t))"
        case .removeRx(let t): return "removeRx(\(t))"
        }
    }
}

/// The ordered steps from an old keyring to a new one, so that no packet finds its SA missing.
///
/// Docker's order per peer (`updateNodeKey`): `-rSA0, +rSA3, +fSA2, +fSP2/-fSP1, -fSA1`: drop the
/// pruned key's inbound SA, add the new key's inbound SA, add the new primary's outbound SA,
/// switch the policy to it, remove the old outbound SA. This plan keeps that order except that
/// inbound removals come last (`addRx`, `setPrimaryTx`, `removeTx`, `removeRx`): a node never
/// holds fewer inbound SAs than either ring needs, which is as gapless as Docker's order and also
/// holds when a node skipped a rotation. A first plan (`old == nil`) adds every key for receiving
/// and sets the primary.
public struct IPsecRotationPlan: Sendable, Equatable, CustomStringConvertible {
    /// The steps, in the order to apply them.
    public let steps: [IPsecRotationStep]

    /// The steps from `old` (nil: nothing installed yet) to `new`.
    public init(from old: IPsecKeyring?, to new: IPsecKeyring) {
        var steps: [IPsecRotationStep] = []
        let oldTags = Set(old?.tags ?? [])
        let newTags = Set(new.tags)
        for k in new.keys where !oldTags.contains(k.tag) { steps.append(.addRx(k)) }
        if old?.primary.tag != new.primary.tag {
            steps.append(.setPrimaryTx(new.primary))
            if let o = old { steps.append(.removeTx(tag: o.primary.tag)) }
        }
        for k in old?.keys ?? [] where !newTags.contains(k.tag) { steps.append(.removeRx(tag: k.tag)) }
        self.steps = steps
    }

    /// The steps joined by `, `.
    public var description: String { steps.map(\.description).joined(separator: ", ") }
}
