import OverlayCrypto
import OverlayModel

/// The length of the ESP Integrity Check Value (the truncated GCM tag), RFC 4106 section 8.
public enum ESPICVLength: Int, Sendable, Hashable, Codable {
    /// 8 bytes: what Docker programs (`ICVLen: 64`, `rfc4106(gcm(aes))`).
    case eight = 8
    /// 16 bytes: the full GCM tag.
    case sixteen = 16
}

/// The settings of one ESP SA (transport mode, AES-GCM per RFC 4106), for one direction.
///
/// The same value describes an outbound SA (for ``ESPSealer``) and an inbound one (for
/// ``ESPOpener``); `replayWindowSize` only matters inbound and `rekeyAfterPackets` only outbound.
public struct ESPSecurityAssociation: Sendable, Equatable {
    /// The SA's SPI.
    public var spi: SPI
    /// The AES key (16, 24 or 32 bytes).
    public var key: SecretKey
    /// The RFC 4106 salt: the nonce's first 4 bytes (Docker: the SPI).
    public var salt: UInt32
    /// The ICV (tag) length on the wire.
    public var icvLength: ESPICVLength
    /// Extended (64-bit) sequence numbers, RFC 4303 2.2.1: the high 32 bits are not sent but are
    /// authenticated (AAD = SPI || seq-hi || seq-lo). Docker's kernel SAs do not use ESN; set
    /// false to talk to a stock Docker host.
    public var extendedSequenceNumbers: Bool
    /// The anti-replay window in packets, 1...1024 (RFC 4303 3.4.3; Linux's default is 32, ours 64).
    public var replayWindowSize: Int
    /// The sequence number from which ``ESPSealer/needsRekey`` is true; nil for the default
    /// (`2^32 - 2^20` without ESN, `2^64 - 2^32` with ESN). Must be at most the hard limit.
    public var rekeyAfterPackets: UInt64?

    /// Describes an SA; see each property. Throws `.invalidParameter` or `.invalidKey` for values out of range.
    public init(
        spi: SPI, key: SecretKey, salt: UInt32, icvLength: ESPICVLength = .eight, extendedSequenceNumbers: Bool = true,
        replayWindowSize: Int = 64, rekeyAfterPackets: UInt64? = nil
    ) throws(IPsecError) {
        guard [16, 24, 32].contains(key.count) else {
            throw IPsecError(.invalidKey, "ESP key for SPI \(spi) is \(key.count) bytes; AES-GCM takes 16, 24 or 32")
        }
        guard (1...1024).contains(replayWindowSize) else {
            throw IPsecError(.invalidParameter, "replay window \(replayWindowSize) is out of range; use 1...1024 packets")
        }
        self.spi = spi
        self.key = key
        self.salt = salt
        self.icvLength = icvLength
        self.extendedSequenceNumbers = extendedSequenceNumbers
        self.replayWindowSize = replayWindowSize
        self.rekeyAfterPackets = rekeyAfterPackets
        if let r = rekeyAfterPackets, r > hardSequenceLimit || r == 0 {
            throw IPsecError(.invalidParameter, "rekeyAfterPackets \(r) must be in 1...\(hardSequenceLimit) for this SA")
        }
    }

    /// The last sequence number the SA may send: `2^32 - 1` without ESN, `2^64 - 1` with it
    /// (RFC 4303 3.3.3: the counter never cycles; a new SA is needed first).
    public var hardSequenceLimit: UInt64 { extendedSequenceNumbers ? UInt64.max : UInt64(UInt32.max) }

    /// The sequence number from which the sender should ask for a new SA.
    public var softSequenceLimit: UInt64 {
        rekeyAfterPackets ?? (extendedSequenceNumbers ? UInt64.max - (1 << 32) : (1 << 32) - (1 << 20))
    }

    /// The outbound and inbound SAs between this host (`local`, its VTEP address) and `remote`
    /// under `key`, as Docker derives them: SPI from ``SPI/derive(source:destination:tag:)``,
    /// salt = the SPI, 8-byte ICV.
    ///
    /// With boot IDs (`localBoot` for what this host sends, `remoteBoot` for what the peer sends),
    /// each direction's AES key is instead bound to its sender's boot: HKDF-SHA256 of the key with
    /// the boot ID (``boundKey(_:boot:)``). A host that restarts has a new boot ID, so its sequence
    /// numbers start again under a new key, never under one it used before (RFC 4303 3.3.3), and
    /// traffic captured before the restart does not authenticate afterwards. SPIs and the wire
    /// format stay Docker's.
    public static func derive(
        local: IPAddress, remote: IPAddress, key: IPsecKey, extendedSequenceNumbers: Bool = true, replayWindowSize: Int = 64,
        localBoot: [UInt8]? = nil, remoteBoot: [UInt8]? = nil
    ) throws(IPsecError) -> ESPSAPair {
        let out = SPI.derive(source: local, destination: remote, tag: key.tag)
        let inb = SPI.derive(source: remote, destination: local, tag: key.tag)
        let outKey = try localBoot.map { b throws(IPsecError) in try boundKey(key, boot: b) } ?? key.material
        let inKey = try remoteBoot.map { b throws(IPsecError) in try boundKey(key, boot: b) } ?? key.material
        return ESPSAPair(
            outbound: try ESPSecurityAssociation(
                spi: out, key: outKey, salt: out.rawValue, extendedSequenceNumbers: extendedSequenceNumbers,
                replayWindowSize: replayWindowSize),
            inbound: try ESPSecurityAssociation(
                spi: inb, key: inKey, salt: inb.rawValue, extendedSequenceNumbers: extendedSequenceNumbers,
                replayWindowSize: replayWindowSize))
    }

    /// `key` bound to a sender's boot ID: HKDF-SHA256(key, salt "swift-overlay esp boot", info =
    /// the boot ID), as long as the key. Refuses an empty boot ID.
    public static func boundKey(_ key: IPsecKey, boot: [UInt8]) throws(IPsecError) -> SecretKey {
        guard !boot.isEmpty else { throw IPsecError(.invalidKey, "a boot ID to bind an IPsec key to cannot be empty") }
        do {
            return try HKDF.deriveKey(inputKey: key.material, salt: Array("swift-overlay esp boot".utf8), info: boot,
                                      outputByteCount: key.material.count)
        } catch {
            throw IPsecError(.openssl, "cannot bind the IPsec key with tag \(key.tag) to a boot ID: \(error)")
        }
    }
}

/// The two SAs between a pair of hosts for one key: what this host sends with and receives with.
public struct ESPSAPair: Sendable, Equatable {
    /// This host to the peer (Docker's forward SA, `fSA`).
    public var outbound: ESPSecurityAssociation
    /// The peer to this host (Docker's reverse SA, `rSA`).
    public var inbound: ESPSecurityAssociation
}

/// Packet and drop counts of a sealer or an opener; every refused packet is counted by reason.
public struct ESPCounters: Sendable, Equatable, CustomStringConvertible {
    /// Packets sealed.
    public var sealedPackets: UInt64 = 0
    /// Payload bytes sealed.
    public var sealedBytes: UInt64 = 0
    /// Seals refused because the SA reached its last sequence number.
    public var sequenceExhausted: UInt64 = 0
    /// Packets opened (authenticated, in window, well padded).
    public var openedPackets: UInt64 = 0
    /// Payload bytes opened.
    public var openedBytes: UInt64 = 0
    /// Packets whose SPI no inbound SA has.
    public var unknownSPI: UInt64 = 0
    /// Packets too short to be ESP with this SA.
    public var tooShort: UInt64 = 0
    /// Packets whose ICV did not verify.
    public var authFailed: UInt64 = 0
    /// Packets with a sequence number already received.
    public var replayed: UInt64 = 0
    /// Packets older than the replay window.
    public var outsideWindow: UInt64 = 0
    /// Authenticated packets with a malformed trailer.
    public var badPadding: UInt64 = 0

    /// Creates zeroed counters.
    public init() {}

    /// Every packet refused on open, whatever the reason.
    public var droppedOnOpen: UInt64 { unknownSPI + tooShort + authFailed + replayed + outsideWindow + badPadding }

    /// `name=value` pairs, zero counts left out.
    public var description: String {
        let all: [(String, UInt64)] = [
            ("sealed", sealedPackets), ("sealedBytes", sealedBytes), ("sequenceExhausted", sequenceExhausted),
            ("opened", openedPackets), ("openedBytes", openedBytes), ("unknownSPI", unknownSPI), ("tooShort", tooShort),
            ("authFailed", authFailed), ("replayed", replayed), ("outsideWindow", outsideWindow), ("badPadding", badPadding),
        ]
        return all.filter { $0.1 != 0 }.map { "\($0.0)=\($0.1)" }.joined(separator: " ")
    }
}
