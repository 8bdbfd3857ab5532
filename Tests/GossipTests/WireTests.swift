import Testing
import OverlayCrypto
import OverlayModel
import NIOCore
@testable import Gossip

@Suite struct SerfCaptureTests {
    let key = SecretKey(bytes: serfCaptureKey)

    @Test func everyPlainDatagramDecodes() throws {
        var seen: Set<MessageType> = []
        for d in serfPlainCapture where d.proto == "udp" {
            let p = try PacketCodec.decode(hex(d.hex), keyring: nil)
            #expect(!p.messages.isEmpty)
            #expect(p.malformedParts == 0 && p.truncatedParts == 0)
            for m in p.messages { seen.insert(m.type) }
        }
        // serf's join traffic holds at least pings, acks, alives and user messages.
        #expect(seen.isSuperset(of: [.ping, .ack, .alive, .user]))
    }

    @Test func aliveCompoundReencodesByteForByte() throws {
        // hasCrc + compound of two alive messages, serf -> serf.
        let original = hex(serfPlainCapture[1].hex)
        let p = try PacketCodec.decode(original, keyring: nil)
        #expect(p.hadCRC)
        guard p.messages.count == 2, case .alive(let a) = p.messages[0] else { Issue.record("expected two alives"); return }
        #expect(a.node == "sb")
        #expect(a.address == addr("127.0.0.3"))
        #expect(a.meta == [0xff, 0x80])  // serf tags: magic byte + empty msgpack map
        #expect(a.versions == .serfCompatible)
        let again = try PacketCodec.encode(p.messages.map { $0.encode() }, crc: true, keyring: nil)
        #expect(again == original)
    }

    @Test func serfUserMessagesMatchOurIntentEncoding() throws {
        // serf's join intent as captured: user message, serf type 1, {LTime: 1, Node: "sb"}.
        let p = try PacketCodec.decode(hex("0cab8c50ff080182a54c54696d6501a44e6f6465a27362"), keyring: nil)
        #expect(p.messages == [.user(SerfIntent.join(node: "sb", lamportTime: 1))])
        #expect(SerfTags.decode([0xff, 0x80]) == [:])
        #expect(SerfTags.decode(SerfTags.encode(["role": "overlay", "dc": "x"])) == ["role": "overlay", "dc": "x"])
        #expect(SerfTags.decode([0x41]) == nil)
    }

    @Test func pingReencodesByteForByte() throws {
        for d in serfPlainCapture where d.proto == "udp" && d.hex.hasPrefix("0085") {
            let bytes = hex(d.hex)
            let p = try PacketCodec.decode(bytes, keyring: nil)
            guard case .ping(let ping) = p.messages.first else { Issue.record("not a ping"); continue }
            #expect(ping.source?.port == 7946)
            #expect(GossipMessage.ping(ping).encode() == bytes)
        }
    }

    @Test func pushPullStreamsDecode() throws {
        var count = 0
        for d in serfPlainCapture where d.proto == "tcp" {
            let bytes = hex(d.hex)
            guard case .message(let m, let used) = try StreamCodec.decode(bytes, keyring: nil) else {
                Issue.record("stream incomplete"); continue
            }
            #expect(used == bytes.count)
            guard case .pushPull(let pp) = m else { Issue.record("not push-pull"); continue }
            #expect(!pp.nodes.isEmpty)
            #expect(pp.nodes.allSatisfy { ($0.name == "sa" && $0.address == addr("127.0.0.2")) || ($0.name == "sb" && $0.address == addr("127.0.0.3")) })
            #expect(pp.nodes.allSatisfy { $0.state == .alive && $0.versions == .serfCompatible })
            #expect(!pp.userState.isEmpty)
            count += 1
            // Every prefix of a (compressed) stream is "need more", never a crash or a wrong message.
            for cut in 0 ..< bytes.count { #expect(try StreamCodec.decode(Array(bytes[..<cut]), keyring: nil) == .needMore) }
        }
        #expect(count == 2)
    }

    @Test func encryptedCaptureDecodesWithTheKeyOnly() throws {
        let ring = try Keyring(primary: key)
        let wrong = try Keyring(primary: SecretKey(bytes: [UInt8](repeating: 7, count: 16)))
        var udp = 0, tcp = 0
        for d in serfEncryptedCapture {
            let bytes = hex(d.hex)
            if d.proto == "udp" {
                let p = try PacketCodec.decode(bytes, keyring: ring)
                #expect(p.wasEncrypted && !p.messages.isEmpty && p.malformedParts == 0)
                let e = #expect(throws: GossipError.self) { try PacketCodec.decode(bytes, keyring: wrong) }
                #expect(e?.code == .unauthenticated)
                udp += 1
            } else {
                guard case .message(.pushPull(let pp), let used) = try StreamCodec.decode(bytes, keyring: ring) else {
                    Issue.record("encrypted stream did not decode"); continue
                }
                #expect(used == bytes.count && !pp.nodes.isEmpty)
                #expect(throws: GossipError.self) { try StreamCodec.decode(bytes, keyring: wrong) }
                #expect(throws: GossipError.self) { try StreamCodec.decode(bytes, keyring: nil) }
                tcp += 1
            }
        }
        #expect(udp > 5 && tcp == 2)
    }

    @Test func everyPrefixAndMutationOfCapturedPacketsIsSafe() throws {
        var rng = SeededRNG(seed: 99)
        let ring = try Keyring(primary: key)
        var encryptedMutations = 0
        for (encrypted, captures) in [(false, serfPlainCapture), (true, serfEncryptedCapture)] {
            for d in captures where d.proto == "udp" {
                let bytes = hex(d.hex)
                // Decoding is total: the untouched packet decodes, and prefixes and mutations give a
                // result or an error, never a crash or a read past the end (the sanitizers' job).
                #expect(throws: Never.self) { try PacketCodec.decode(bytes, keyring: encrypted ? ring : nil) }
                for cut in 0 ..< bytes.count { _ = try? PacketCodec.decode(Array(bytes[..<cut]), keyring: nil) }
                for _ in 0 ..< 40 {
                    var m = bytes
                    for _ in 0 ..< Int.random(in: 1 ... 4, using: &rng) {
                        m[Int.random(in: 0 ..< m.count, using: &rng)] = UInt8.random(in: 0 ... 255, using: &rng)
                    }
                    _ = try? PacketCodec.decode(m, keyring: nil)
                    _ = try? StreamCodec.decode(m, keyring: nil)
                    // AES-GCM: any change to an encrypted packet is refused, never decoded.
                    if encrypted && m != bytes {
                        encryptedMutations += 1
                        #expect(throws: GossipError.self, "a mutated encrypted packet decoded") { try PacketCodec.decode(m, keyring: ring) }
                    } else {
                        _ = try? PacketCodec.decode(m, keyring: ring)
                    }
                }
            }
        }
        #expect(encryptedMutations > 100)
    }
}

@Suite struct WireFramingTests {
    let alive = GossipMessage.alive(AliveMessage(incarnation: 3, node: "n1", address: addr("10.0.0.1"), meta: [1, 2], versions: .serfCompatible))
    let ping = GossipMessage.ping(PingMessage(seqNo: 9, node: "n2", source: addr("10.0.0.1"), sourceNode: "n1"))

    @Test func compoundCrcAndEncryptionRoundTrip() throws {
        let ring = try Keyring(primary: SecretKey.random(byteCount: 32))
        for crc in [false, true] {
            for kr in [nil, ring] {
                let wire = try PacketCodec.encode([ping.encode(), alive.encode()], crc: crc, keyring: kr)
                let p = try PacketCodec.decode(wire, keyring: kr)
                #expect(p.messages == [ping, alive])
                #expect(p.hadCRC == crc)
            }
        }
    }

    @Test func crc32KnownValues() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)  // the CRC-32/IEEE check value
        #expect(CRC32.checksum([UInt8]()) == 0)
        #expect(CRC32.checksum(Array("xx123456789".utf8).dropFirst(2)) == 0xCBF4_3926)
    }

    @Test func crcMismatchIsRefused() throws {
        var wire = try PacketCodec.encode([ping.encode()], crc: true, keyring: nil)
        wire[wire.count - 1] ^= 0x40
        let e = #expect(throws: GossipCodecError.self) { try PacketCodec.decode(wire, keyring: nil) }
        #expect(e?.code == .malformed)
    }

    @Test func truncatedCompoundPartsAreCounted() throws {
        let wire = PacketCodec.compound([ping.encode(), alive.encode()])
        let p = try PacketCodec.decode(Array(wire.dropLast(3)), keyring: nil)
        #expect(p.messages == [ping])
        #expect(p.truncatedParts == 1)
    }

    @Test func keyRotation() throws {
        let k1 = try SecretKey.random(byteCount: 16), k2 = try SecretKey.random(byteCount: 24), k3 = try SecretKey.random(byteCount: 32)
        var ring = try Keyring(primary: k1)
        let old = try PacketCodec.encode([ping.encode()], crc: false, keyring: ring)
        try ring.install(k2)
        try ring.install(k3)
        try ring.use(k3)
        #expect(ring.primary == k3)
        #expect(try PacketCodec.decode(old, keyring: ring).messages == [ping])  // old key still accepted
        let new = try PacketCodec.encode([ping.encode()], crc: false, keyring: ring)
        #expect(try PayloadCrypto.decrypt(keys: [k3], payload: new) == ping.encode())  // sealed with primary
        #expect(throws: GossipError.self) { try ring.remove(k3) }  // primary cannot go
        try ring.remove(k1)
        #expect(throws: GossipError.self) { try PacketCodec.decode(old, keyring: ring) }
        #expect(throws: GossipError.self) { try ring.install(SecretKey(bytes: [1, 2, 3])) }
        #expect(throws: GossipError.self) { try ring.use(k1) }
    }

    @Test func version0PaddedEncryptionDecrypts() throws {
        let k = try SecretKey.random(byteCount: 16)
        for n in [0, 1, 15, 16, 17] {
            let plain = [UInt8](repeating: 0xab, count: n)
            let sealed = try PayloadCrypto.encrypt(version: 0, key: k, plaintext: plain)
            #expect(sealed.count == PayloadCrypto.encryptedLength(version: 0, plaintextCount: n))
            #expect(try PayloadCrypto.decrypt(keys: [k], payload: sealed) == plain)
        }
    }

    @Test func streamRoundTripAndPrefixes() throws {
        let pp = GossipMessage.pushPull(PushPullMessage(join: true, nodes: [
            PushNodeState(name: "a", address: addr("10.0.0.1"), meta: [], incarnation: 1, state: .alive, versions: .serfCompatible),
            PushNodeState(name: "b", address: addr("fd00::2", 8000), meta: [9], incarnation: 4, state: .suspect, versions: .serfCompatible),
        ], userState: [1, 2, 3]))
        let ring = try Keyring(primary: SecretKey.random(byteCount: 16))
        for kr in [nil, ring] {
            let bytes = try StreamCodec.encode(pp, keyring: kr)
            #expect(try StreamCodec.decode(bytes + [0xff], keyring: kr) == .message(pp, consumed: bytes.count))
            for cut in 0 ..< bytes.count { #expect(try StreamCodec.decode(Array(bytes[..<cut]), keyring: kr) == .needMore) }
        }
        // Plaintext is refused when a key is configured, and vice versa.
        #expect(throws: GossipError.self) { try StreamCodec.decode(StreamCodec.encode(pp, keyring: nil), keyring: ring) }
        let user = try StreamCodec.encodeUser([5, 6, 7], keyring: nil)
        #expect(try StreamCodec.decode(user, keyring: nil) == .message(.user([5, 6, 7]), consumed: user.count))
    }

    @Test func lzwRefusesGarbage() {
        #expect(throws: GossipCodecError.self) { try LZW.decode([], maxOutput: 100) }
        #expect(throws: GossipCodecError.self) { try LZW.decode([0xff, 0xff, 0xff, 0xff], maxOutput: 100) }
    }
}

@Suite struct LabelTests {
    let ping = GossipMessage.ping(PingMessage(seqNo: 1, node: "x"))

    @Test func labelledPacketsRoundTripAndMismatchesAreRefused() throws {
        let ring = try Keyring(primary: SecretKey.random(byteCount: 16))
        for kr in [nil, ring] {
            let wire = try PacketCodec.encode([ping.encode()], crc: true, keyring: kr, label: "cluster-a")
            #expect(Array(wire.prefix(11)) == [244, 9] + Array("cluster-a".utf8))
            #expect(try PacketCodec.decode(wire, keyring: kr, label: "cluster-a").messages == [ping])
            #expect(throws: GossipError.self) { try PacketCodec.decode(wire, keyring: kr, label: "cluster-b") }
            #expect(throws: GossipError.self) { try PacketCodec.decode(wire, keyring: kr) }
            let unlabelled = try PacketCodec.encode([ping.encode()], crc: true, keyring: kr)
            #expect(throws: GossipError.self) { try PacketCodec.decode(unlabelled, keyring: kr, label: "cluster-a") }
        }
        // The label is authenticated: swapping the header on an encrypted packet fails decryption.
        let sealed = try PacketCodec.encode([ping.encode()], crc: false, keyring: ring, label: "aaaa")
        let swapped = [244, 4] + Array("bbbb".utf8) + sealed.dropFirst(6)
        let e = #expect(throws: GossipError.self) { try PacketCodec.decode(swapped, keyring: ring, label: "bbbb") }
        #expect(e?.code == .unauthenticated)
    }

    @Test func labelledStreamsRoundTripWithPrefixes() throws {
        let ring = try Keyring(primary: SecretKey.random(byteCount: 32))
        for kr in [nil, ring] {
            let bytes = try StreamCodec.encode(ping, keyring: kr, label: "L")
            #expect(try StreamCodec.decode(bytes, keyring: kr, label: "L") == .message(ping, consumed: bytes.count))
            for cut in 0 ..< bytes.count { #expect(try StreamCodec.decode(Array(bytes[..<cut]), keyring: kr, label: "L") == .needMore) }
            #expect(throws: GossipError.self) { try StreamCodec.decode(bytes, keyring: kr, label: "M") }
        }
        #expect(throws: GossipCodecError.self) { try StreamCodec.decode([244, 0, 0], keyring: nil) }
    }
}

@Suite struct ByteBufferGossipTests {
    @Test func streamMessagesReadIncrementally() throws {
        let ring = try Keyring(primary: SecretKey.random(byteCount: 16))
        let ping = GossipMessage.ping(PingMessage(seqNo: 5, node: "n"))
        let one = try StreamCodec.encode(ping, keyring: ring)
        var buf = ByteBuffer()
        for (i, b) in one.enumerated() {
            buf.writeInteger(b)
            let before = buf.readerIndex
            let m = try buf.readGossipStreamMessage(keyring: ring)
            if i < one.count - 1 {
                #expect(m == nil)
                #expect(buf.readerIndex == before)
            } else {
                #expect(m == ping)
                #expect(buf.readableBytes == 0)
            }
        }
        var packet = ByteBuffer(bytes: try PacketCodec.encode([ping.encode()], crc: true, keyring: nil))
        #expect(try packet.readGossipPacket(keyring: nil).messages == [ping])
        #expect(packet.readableBytes == 0)
    }
}
