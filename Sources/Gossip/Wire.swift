import OverlayCrypto

/// Bounds on what the wire decoders accept from the network.
public struct WireLimits: Sendable, Equatable {
    /// Largest UDP packet accepted.
    public var maxPacketBytes: Int
    /// Largest TCP stream message (memberlist `maxPushStateBytes`, 20 MiB).
    public var maxStreamBytes: Int
    /// Most node states in one push-pull.
    public var maxPushNodes: Int
    /// Largest LZW output accepted (guards against compression bombs).
    public var maxDecompressedBytes: Int
    /// Largest TCP stream message from an address no member has: a node joining for the first
    /// time sends its own state only, and a stranger (before any key check: an encrypted frame
    /// is authenticated once whole) may make the node hold no more than this per stream.
    public var maxUnknownSourceStreamBytes: Int
    /// Defaults: 64 KiB packets, 20 MiB streams (1 MiB from an unknown address), 65536 nodes,
    /// 20 MiB decompressed.
    public init(maxPacketBytes: Int = 65536, maxStreamBytes: Int = 20 << 20, maxPushNodes: Int = 65536, maxDecompressedBytes: Int = 20 << 20,
                maxUnknownSourceStreamBytes: Int = 1 << 20) {
        self.maxPacketBytes = maxPacketBytes
        self.maxStreamBytes = maxStreamBytes
        self.maxPushNodes = maxPushNodes
        self.maxDecompressedBytes = maxDecompressedBytes
        self.maxUnknownSourceStreamBytes = maxUnknownSourceStreamBytes
    }
}

/// CRC-32 (IEEE 802.3, reflected 0xEDB88320), as Go's `crc32.ChecksumIEEE`.
public enum CRC32 {
    private static let table: [UInt32] = (0 ..< 256).map { i -> UInt32 in
        var c = UInt32(i)
        for _ in 0 ..< 8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }
    /// The checksum of the bytes in `buffer`.
    public static func checksum(_ buffer: UnsafeRawBufferPointer) -> UInt32 {
        table.withUnsafeBufferPointer { t in
            var c: UInt32 = 0xFFFF_FFFF
            for b in buffer { c = t[Int(UInt8(truncatingIfNeeded: c) ^ b)] ^ (c >> 8) }
            return c ^ 0xFFFF_FFFF
        }
    }

    /// The checksum of `bytes`.
    public static func checksum(_ bytes: [UInt8]) -> UInt32 { bytes.withUnsafeBytes { checksum($0) } }

    /// The checksum of `bytes`.
    public static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt32 { bytes.withUnsafeBytes { checksum($0) } }
}

/// LZW decoding as Go's `compress/lzw` with LSB bit order and 8-bit literals (memberlist's
/// `compressMsg`). Only decoding: we never compress what we send.
public enum LZW {
    /// Decodes `input`; throws on an invalid code, a missing EOF code, or output over `maxOutput`.
    public static func decode(_ input: [UInt8], maxOutput: Int) throws -> [UInt8] {
        let clear = 256, eof = 257, maxWidth = 12
        var width = 9, hi = eof, overflow = 1 << 9, last = -1
        var prefix = [UInt16](repeating: 0, count: 1 << maxWidth)
        var suffix = [UInt8](repeating: 0, count: 1 << maxWidth)
        var scratch = [UInt8](repeating: 0, count: 1 << maxWidth)
        var bits: UInt32 = 0, nBits = 0, pos = 0
        var out: [UInt8] = []
        while true {
            while nBits < width {
                guard pos < input.count else { throw GossipCodecError(.truncated, "LZW data ended before its EOF code") }
                bits |= UInt32(input[pos]) << UInt32(nBits)
                pos += 1
                nBits += 8
            }
            let code = Int(bits & ((1 << UInt32(width)) - 1))
            bits >>= UInt32(width)
            nBits -= width
            if code < clear {
                out.append(UInt8(code))
                if last != -1 {
                    suffix[hi] = UInt8(code)
                    prefix[hi] = UInt16(last)
                }
            } else if code == clear {
                width = 9
                hi = eof
                overflow = 1 << 9
                last = -1
                continue
            } else if code == eof {
                return out
            } else if code <= hi {
                var c = code, i = scratch.count - 1
                if code == hi, last != -1 {
                    c = last
                    while c >= clear { c = Int(prefix[c]) }
                    scratch[i] = UInt8(c)
                    i -= 1
                    c = last
                }
                while c >= clear {
                    guard i > 0 else { throw GossipCodecError(.malformed, "LZW code chain too long") }
                    scratch[i] = suffix[c]
                    i -= 1
                    c = Int(prefix[c])
                }
                scratch[i] = UInt8(c)
                out.append(contentsOf: scratch[i...])
                if last != -1 {
                    suffix[hi] = UInt8(c)
                    prefix[hi] = UInt16(last)
                }
            } else {
                throw GossipCodecError(.malformed, "LZW code \(code) is above the table's next entry \(hi)")
            }
            guard out.count <= maxOutput else {
                throw GossipCodecError(.tooLarge, "LZW output exceeds \(maxOutput) bytes")
            }
            last = code
            hi += 1
            if hi >= overflow {
                if width == maxWidth {
                    last = -1
                    hi -= 1
                } else {
                    width += 1
                    overflow <<= 1
                }
            }
        }
    }
}

/// A set of AES keys for memberlist encryption: the primary (first) seals what we send, every key
/// is tried on what we receive (memberlist keyring.go).
public struct Keyring: Sendable, Equatable {
    /// Installed keys; `keys[0]` is the primary.
    public private(set) var keys: [SecretKey]

    /// A keyring with `primary` first, then `others`; every key must be 16, 24 or 32 bytes.
    public init(primary: SecretKey, others: [SecretKey] = []) throws {
        keys = []
        for k in [primary] + others { try install(k) }
    }

    /// The key used to seal outgoing data.
    public var primary: SecretKey { keys[0] }

    /// Adds a key that will be accepted on receive (no-op if present).
    public mutating func install(_ key: SecretKey) throws {
        guard [16, 24, 32].contains(key.count) else {
            throw GossipError(.invalidKey, "gossip key is \(key.count) bytes; use 16, 24 or 32 (AES-128/192/256)")
        }
        if !keys.contains(key) { keys.append(key) }
    }

    /// Makes an installed key the primary.
    public mutating func use(_ key: SecretKey) throws {
        guard let i = keys.firstIndex(of: key) else {
            throw GossipError(.invalidKey, "cannot use a key that is not installed; install it first")
        }
        keys.remove(at: i)
        keys.insert(key, at: 0)
    }

    /// Removes a non-primary key.
    public mutating func remove(_ key: SecretKey) throws {
        guard let i = keys.firstIndex(of: key) else { return }
        guard i != 0 else {
            throw GossipError(.invalidKey, "cannot remove the primary key; make another key primary with use() first")
        }
        keys.remove(at: i)
    }
}

/// memberlist's payload encryption (security.go): `version(1) | nonce(12) | AES-GCM(ciphertext|tag)`.
/// Version 0 pads the plaintext with PKCS#7 first; version 1 (protocol >= 2) does not.
public enum PayloadCrypto {
    /// Bytes added by version 1 encryption: 1 + 12 + 16.
    public static let overhead = 29

    /// Length of a version-`version` ciphertext for `plaintextCount` bytes.
    public static func encryptedLength(version: UInt8, plaintextCount: Int) -> Int {
        version >= 1 ? 1 + 12 + plaintextCount + 16 : 1 + 12 + plaintextCount + (16 - plaintextCount % 16) + 16
    }

    /// Seals `plaintext` with `key`, authenticating `aad` (empty for packets, the 5-byte header on streams).
    public static func encrypt(version: UInt8 = 1, key: SecretKey, plaintext: [UInt8], aad: [UInt8] = []) throws -> [UInt8] {
        let nonce = try SecureRandom.bytes(count: 12)
        var msg = plaintext
        if version == 0 {
            let pad = 16 - msg.count % 16
            msg.append(contentsOf: repeatElement(UInt8(pad), count: pad))
        }
        do {
            return [version] + nonce + (try AESGCM.sealCombined(msg, key: key, nonce: nonce, aad: aad))
        } catch let e as CryptoError {
            throw GossipError(.invalidKey, "cannot encrypt: \(e.message)")
        }
    }

    /// Opens `payload` with the first key that authenticates it; throws `.unauthenticated` if none does.
    public static func decrypt(keys: [SecretKey], payload: [UInt8], aad: [UInt8] = []) throws -> [UInt8] {
        guard let vsn = payload.first else { throw GossipError(.unauthenticated, "empty encrypted payload") }
        guard vsn <= 1 else { throw GossipError(.unauthenticated, "unsupported encryption version \(vsn)") }
        guard payload.count >= encryptedLength(version: vsn, plaintextCount: 0) else {
            throw GossipError(.unauthenticated, "encrypted payload of \(payload.count) bytes is too short")
        }
        let nonce = Array(payload[1 ..< 13]), sealed = Array(payload[13...])
        for key in keys {
            guard var plain = try? AESGCM.openCombined(sealed, key: key, nonce: nonce, aad: aad) else { continue }
            if vsn == 0 {
                guard let pad = plain.last, pad >= 1, pad <= 16, Int(pad) <= plain.count else {
                    throw GossipError(.unauthenticated, "bad PKCS#7 padding in a version 0 payload")
                }
                plain.removeLast(Int(pad))
            }
            return plain
        }
        throw GossipError(.unauthenticated, "no installed key decrypts the payload (\(keys.count) tried); check the cluster's gossip keys")
    }
}

/// memberlist (>= 0.3) labels: an optional `244, len(u8), label` header in front of packets and
/// streams; the label is also authenticated (packet AAD = label, stream AAD = 5-byte header + label).
/// Nodes with different labels ignore each other. Empty label = no header (memberlist 0.2, serf 0.9).
public enum LabelHeader {
    /// The header's type byte.
    public static let typeByte: UInt8 = 244

    /// `244, len, label` for a non-empty label; empty for none. Labels are 1...255 bytes.
    public static func encode(_ label: String) throws -> [UInt8] {
        let b = Array(label.utf8)
        if b.isEmpty { return [] }
        guard b.count <= 255 else { throw GossipError(.invalidConfiguration, "label of \(b.count) bytes; memberlist allows 255") }
        return [typeByte, UInt8(b.count)] + b
    }

    /// Splits a label header off `bytes`: (label, header length), or nil when more bytes are needed.
    static func split(_ bytes: [UInt8]) throws -> (label: String, length: Int)? {
        guard bytes.first == typeByte else { return ("", 0) }
        guard bytes.count >= 2 else { return nil }
        let n = Int(bytes[1])
        guard n >= 1 else { throw GossipCodecError(.malformed, "label header cannot be empty when present") }
        guard bytes.count >= 2 + n else { return nil }
        return (String(decoding: bytes[2 ..< 2 + n], as: UTF8.self), 2 + n)
    }

    static func check(_ got: String, expected: String) throws {
        guard got == expected else {
            throw GossipError(.unauthenticated, "gossip label \"\(got)\" does not match ours (\"\(expected)\"); nodes of different clusters must not mix")
        }
    }
}

/// What one UDP packet held after decryption, CRC, compound and compression framing were removed.
public struct DecodedPacket: Sendable, Equatable {
    /// Messages in order.
    public var messages: [GossipMessage] = []
    /// Compound parts cut off by the packet's end (memberlist logs and drops these).
    public var truncatedParts = 0
    /// Compound parts that failed to decode (dropped, the rest is kept).
    public var malformedParts = 0
    /// Compressed (LZW) sections met.
    public var compressedSections = 0
    /// Whether the packet was encrypted.
    public var wasEncrypted = false
    /// Whether it carried a CRC (checked).
    public var hadCRC = false
}

/// Packet (UDP) framing: compound messages, CRC32, compression and encryption.
public enum PacketCodec {
    /// Builds `compound`: type 7, count (u8), big-endian u16 lengths, then the messages.
    public static func compound(_ messages: [[UInt8]]) -> [UInt8] {
        precondition(messages.count <= 255, "a compound message holds at most 255 parts")
        var out: [UInt8] = [MessageType.compound.rawValue, UInt8(messages.count)]
        for m in messages { out.append(UInt8(truncatingIfNeeded: m.count >> 8)); out.append(UInt8(truncatingIfNeeded: m.count)) }
        for m in messages { out.append(contentsOf: m) }
        return out
    }

    /// Frames encoded messages for one packet: compound if several, CRC if the peer speaks
    /// protocol >= 5, then encryption with the primary key if a keyring is given.
    public static func encode(_ messages: [[UInt8]], crc: Bool, keyring: Keyring?, encryptionVersion: UInt8 = 1, label: String = "") throws -> [UInt8] {
        var msg = messages.count == 1 ? messages[0] : compound(messages)
        if crc {
            let c = CRC32.checksum(msg)
            msg = [MessageType.hasCrc.rawValue, UInt8(c >> 24), UInt8(truncatingIfNeeded: c >> 16), UInt8(truncatingIfNeeded: c >> 8), UInt8(truncatingIfNeeded: c)] + msg
        }
        if let k = keyring {
            msg = try PayloadCrypto.encrypt(version: encryptionVersion, key: k.primary, plaintext: msg, aad: Array(label.utf8))
        }
        return try LabelHeader.encode(label) + msg
    }

    /// Decodes one UDP packet. With a keyring the packet must decrypt unless `verifyIncoming` is
    /// false (then plaintext is accepted too, as memberlist's `GossipVerifyIncoming`).
    public static func decode(_ packet: [UInt8], keyring: Keyring?, verifyIncoming: Bool = true, label: String = "", limits: WireLimits = .init()) throws -> DecodedPacket {
        guard packet.count <= limits.maxPacketBytes else {
            throw GossipCodecError(.tooLarge, "packet of \(packet.count) bytes exceeds \(limits.maxPacketBytes)")
        }
        guard let (got, headerLength) = try LabelHeader.split(packet) else {
            throw GossipCodecError(.truncated, "packet ends inside its label header")
        }
        try LabelHeader.check(got, expected: label)
        var result = DecodedPacket()
        let body = headerLength == 0 ? packet : Array(packet[headerLength...])
        var buf = body
        if let k = keyring {
            do {
                buf = try PayloadCrypto.decrypt(keys: k.keys, payload: body, aad: Array(label.utf8))
                result.wasEncrypted = true
            } catch {
                if verifyIncoming { throw error }
            }
        }
        if buf.count >= 5, buf[0] == MessageType.hasCrc.rawValue {
            let expected = UInt32(buf[1]) << 24 | UInt32(buf[2]) << 16 | UInt32(buf[3]) << 8 | UInt32(buf[4])
            let body = buf[5...]
            guard CRC32.checksum(body) == expected else {
                throw GossipCodecError(.malformed, "packet CRC32 mismatch: corrupted in transit")
            }
            buf = Array(body)
            result.hadCRC = true
        }
        try command(buf, depth: 0, limits: limits, into: &result)
        return result
    }

    private static func command(_ buf: [UInt8], depth: Int, limits: WireLimits, into result: inout DecodedPacket) throws {
        guard let first = buf.first else { throw GossipCodecError(.truncated, "empty message") }
        guard let type = MessageType(rawValue: first) else {
            throw GossipCodecError(.unknownMessage, "message type \(first) is not a memberlist message")
        }
        guard depth < 4 else { throw GossipCodecError(.tooDeep, "compound/compress nested more than 4 deep") }
        switch type {
        case .compound:
            guard buf.count >= 2 else { throw GossipCodecError(.truncated, "compound message without a count") }
            let n = Int(buf[1])
            guard buf.count >= 2 + 2 * n else { throw GossipCodecError(.truncated, "compound length table cut short") }
            var offset = 2 + 2 * n
            for i in 0 ..< n {
                let len = Int(buf[2 + 2 * i]) << 8 | Int(buf[3 + 2 * i])
                guard offset + len <= buf.count else {
                    result.truncatedParts += n - i
                    break
                }
                let part = Array(buf[offset ..< offset + len])
                offset += len
                do { try command(part, depth: depth + 1, limits: limits, into: &result) } catch { result.malformedParts += 1 }
            }
        case .compress:
            result.compressedSections += 1
            let plain = try decompress(Array(buf.dropFirst()), limits: limits)
            try command(plain, depth: depth + 1, limits: limits, into: &result)
        case .encrypt, .hasCrc, .pushPull:
            throw GossipCodecError(.malformed, "\(type) is not valid inside a packet")
        default:
            var r = MsgPackReader(buf, offset: 1)
            let m = try GossipMessage.decodeBody(type, &r, limits: limits)
            result.messages.append(m)
        }
    }

    /// Decodes a `compress` body (MessagePack `{Algo, Buf}`) into the message it wraps.
    static func decompress(_ body: [UInt8], limits: WireLimits) throws -> [UInt8] {
        var r = MsgPackReader(body)
        let g = try GoStruct(r.read(), "compress")
        let algo: UInt8 = try g.uint("Algo")
        guard algo == 0 else { throw GossipCodecError(.unsupported, "compression algorithm \(algo) is unknown (only LZW, 0)") }
        return try LZW.decode(try g.bytes("Buf"), maxOutput: limits.maxDecompressedBytes)
    }
}

/// The result of trying to read one message from the start of a TCP stream.
public enum StreamDecodeResult: Sendable, Equatable {
    /// Not enough bytes yet.
    case needMore
    /// A message and how many stream bytes it used.
    case message(GossipMessage, consumed: Int)
}

/// TCP stream framing (net.go readStream/sendLocalState): `[type][msgpack...][raw]`, optionally
/// wrapped as `[10][u32 length][encrypted payload]` whose AAD is those first 5 bytes, and/or as
/// a `compress` message.
public enum StreamCodec {
    /// Frames one message for a stream, encrypting with the primary key when a keyring is given.
    public static func encode(_ message: GossipMessage, keyring: Keyring?, encryptionVersion: UInt8 = 1, label: String = "") throws -> [UInt8] {
        try frame(message.encode(), keyring: keyring, encryptionVersion: encryptionVersion, label: label)
    }

    static func frame(_ plain: [UInt8], keyring: Keyring?, encryptionVersion: UInt8 = 1, label: String) throws -> [UInt8] {
        let labelHeader = try LabelHeader.encode(label)
        guard let k = keyring else { return labelHeader + plain }
        let len = PayloadCrypto.encryptedLength(version: encryptionVersion, plaintextCount: plain.count)
        let header: [UInt8] = [MessageType.encrypt.rawValue, UInt8(truncatingIfNeeded: len >> 24), UInt8(truncatingIfNeeded: len >> 16), UInt8(truncatingIfNeeded: len >> 8), UInt8(truncatingIfNeeded: len)]
        return labelHeader + header + (try PayloadCrypto.encrypt(version: encryptionVersion, key: k.primary, plaintext: plain, aad: header + Array(label.utf8)))
    }

    /// Reads one message from the start of `bytes`. With a keyring, plaintext streams are refused
    /// unless `verifyIncoming` is false; encrypted streams without a keyring are refused.
    public static func decode(_ bytes: [UInt8], keyring: Keyring?, verifyIncoming: Bool = true, label: String = "", limits: WireLimits = .init()) throws -> StreamDecodeResult {
        guard !bytes.isEmpty, let (got, headerLength) = try LabelHeader.split(bytes) else { return .needMore }
        try LabelHeader.check(got, expected: label)
        if headerLength == 0 { return try decodeUnlabelled(bytes, keyring: keyring, verifyIncoming: verifyIncoming, label: label, limits: limits) }
        switch try decodeUnlabelled(Array(bytes[headerLength...]), keyring: keyring, verifyIncoming: verifyIncoming, label: label, limits: limits) {
        case .needMore: return .needMore
        case .message(let m, let used): return .message(m, consumed: used + headerLength)
        }
    }

    private static func decodeUnlabelled(_ bytes: [UInt8], keyring: Keyring?, verifyIncoming: Bool, label: String, limits: WireLimits) throws -> StreamDecodeResult {
        guard let first = bytes.first else { return .needMore }
        guard let type = MessageType(rawValue: first) else {
            throw GossipCodecError(.unknownMessage, "stream starts with unknown message type \(first)")
        }
        if type == .encrypt {
            guard let k = keyring else {
                throw GossipError(.unauthenticated, "remote stream is encrypted but no gossip key is configured")
            }
            guard bytes.count >= 5 else { return .needMore }
            let len = Int(bytes[1]) << 24 | Int(bytes[2]) << 16 | Int(bytes[3]) << 8 | Int(bytes[4])
            guard len <= limits.maxStreamBytes else {
                throw GossipCodecError(.tooLarge, "encrypted stream of \(len) bytes exceeds \(limits.maxStreamBytes)")
            }
            guard bytes.count >= 5 + len else { return .needMore }
            let plain = try PayloadCrypto.decrypt(keys: k.keys, payload: Array(bytes[5 ..< 5 + len]), aad: Array(bytes[0 ..< 5]) + Array(label.utf8))
            return .message(try decodeComplete(plain, limits: limits), consumed: 5 + len)
        }
        if keyring != nil, verifyIncoming {
            throw GossipError(.unauthenticated, "gossip encryption is configured but the remote stream is not encrypted")
        }
        guard bytes.count <= limits.maxStreamBytes + 5 else {
            throw GossipCodecError(.tooLarge, "stream message exceeds \(limits.maxStreamBytes) bytes")
        }
        if type == .compress {
            var r = MsgPackReader(bytes, offset: 1)
            let v: MsgPackValue
            do { v = try r.read() } catch let e as GossipCodecError where e.code == .truncated { return .needMore }
            let plain = try PacketCodec.decompress(MsgPack.encode(v), limits: limits)
            return .message(try decodeComplete(plain, limits: limits), consumed: r.offset)
        }
        var r = MsgPackReader(bytes, offset: 1)
        do {
            let m = try streamBody(type, &r, limits: limits)
            return .message(m, consumed: r.offset)
        } catch let e as GossipCodecError where e.code == .truncated {
            return .needMore
        }
    }

    private static func decodeComplete(_ plain: [UInt8], limits: WireLimits) throws -> GossipMessage {
        guard let first = plain.first, let type = MessageType(rawValue: first) else {
            throw GossipCodecError(.unknownMessage, "decrypted stream holds no known message type")
        }
        if type == .compress {
            return try decodeComplete(try PacketCodec.decompress(Array(plain.dropFirst()), limits: limits), limits: limits)
        }
        var r = MsgPackReader(plain, offset: 1)
        do {
            return try streamBody(type, &r, limits: limits)
        } catch let e as GossipCodecError where e.code == .truncated {
            throw GossipCodecError(.malformed, "stream message cut short: \(e.message)")
        }
    }

    private static func streamBody(_ type: MessageType, _ r: inout MsgPackReader, limits: WireLimits) throws -> GossipMessage {
        switch type {
        case .user:
            let g = try GoStruct(r.read(), "userMsgHeader")
            let n = try g.int("UserMsgLen")
            guard n >= 0, n <= limits.maxStreamBytes else { throw GossipCodecError(.tooLarge, "user message of \(n) bytes") }
            return .user(try r.readRaw(n))
        case .ping, .ack, .pushPull, .err, .nack:
            return try GossipMessage.decodeBody(type, &r, limits: limits)
        default:
            throw GossipCodecError(.unsupported, "\(type) is not a stream message")
        }
    }

    /// Encodes a user message for a stream (`userMsgHeader` then the bytes).
    public static func encodeUser(_ payload: [UInt8], keyring: Keyring?, label: String = "") throws -> [UInt8] {
        var plain: [UInt8] = [MessageType.user.rawValue]
        MsgPack.encode(.map([MsgPackPair(.string("UserMsgLen"), .int(Int64(payload.count)))]), into: &plain)
        plain += payload
        return try frame(plain, keyring: keyring, label: label)
    }
}
