import Foundation
import IPsecKeys
import OverlayCrypto
import OverlayModel
import Testing

private func sa(
    spi: UInt32 = 0x1a2b_3c4d, salt: UInt32? = nil, icv: ESPICVLength = .eight, esn: Bool = false, window: Int = 64,
    rekeyAfter: UInt64? = nil
) -> ESPSecurityAssociation {
    try! ESPSecurityAssociation(
        spi: SPI(rawValue: spi)!, key: SecretKey(bytes: vectorKeyBytes), salt: salt ?? spi, icvLength: icv,
        extendedSequenceNumbers: esn, replayWindowSize: window, rekeyAfterPackets: rekeyAfter)
}

/// 20 bytes: a UDP header and 12 bytes of data.
private let payload20 = hex("12b512b5001c0000") + Array("hello, esp!!".utf8)

/// Known-answer vectors. Expected bytes computed with Python `cryptography` 48.0.0
/// (`AESGCM(key).encrypt(nonce, plaintext, aad)`, full tag truncated to the ICV length) over the
/// layout of RFC 4303 2 / RFC 4106: nonce = salt || IV, AAD = SPI || seq (ESN: SPI || seq-hi ||
/// seq-lo), plaintext = payload || 01 02 ... || pad length || next header, IV = seq (mask 0).
/// The Docker-SA vector was also fed to tshark 4.0.17 (as a raw-IPv4 pcap, `esp_sa` UAT with
/// "AES-GCM with 8 octet ICV [RFC4106]" and key || SPI as the 20-byte key), which decrypted it
/// to UDP / VXLAN VNI 4096 / ICMP echo.
@Suite struct ESPVectorTests {
    struct Vector: Sendable, CustomTestStringConvertible {
        let name: String
        let sa: ESPSecurityAssociation
        let lastSequence: UInt64
        let payload: [UInt8]
        let packet: String
        var testDescription: String { name }
    }

    static let vectors: [Vector] = [
        Vector(name: "no ESN, 8-byte ICV, seq 1, pad 2", sa: sa(), lastSequence: 0, payload: payload20,
               packet: "1a2b3c4d000000010000000000000001478bbaf43279eb9fa6dd2612846a3cb0ed9ca71a51a6cb4c7c8b771c776de1fc"),
        Vector(name: "no ESN, other salt, seq 2, pad 1", sa: sa(salt: 0xcafe_f00d), lastSequence: 1, payload: payload20 + [0x78],
               packet: "1a2b3c4d00000002000000000000000290bff0d3d95490b3dcdb73378a6b3748adab778fd135aea3115553fd635de778"),
        Vector(name: "ESN, 16-byte ICV, seq 5<<32|7", sa: sa(icv: .sixteen, esn: true), lastSequence: 5 << 32 | 6, payload: payload20,
               packet: "1a2b3c4d0000000700000005000000071051d769ff59dde177c24d2b64a6127c6541af40e46b9b0882d93122244a2145d93bf66915fd67c6"),
        Vector(name: "Docker SA 192.168.0.2->.3 tag 1, VXLAN ICMP", sa: try! ESPSecurityAssociation.derive(
                   local: ip("192.168.0.2"), remote: ip("192.168.0.3"), key: key(1), extendedSequenceNumbers: false).outbound,
               lastSequence: 0, payload: vxlanICMPDatagram,
               packet: "9f86597d00000001000000000000000178df0c558b0d02d318ab3afacb119b4b2c6986cd8dd26d47ee337b8c26de7e6bd8ea65a769bfa41acdee5383658a170067bb4449ca9d193af5aca5bd7e6efc0c7f572705ad1b3b220497b6b4478d3257"),
    ]

    @Test(arguments: vectors)
    func sealMatchesVector(_ v: Vector) throws {
        let sealer = try ESPSealer(v.sa, ivMask: 0, lastSequenceNumber: v.lastSequence)
        let out = try sealer.seal(payload: v.payload, nextHeader: 17)
        #expect(hexString(out) == v.packet)
        #expect(out.count == sealer.sealedLength(payloadLength: v.payload.count))
    }

    @Test(arguments: vectors)
    func openMatchesVector(_ v: Vector) throws {
        let opener = ESPOpener()
        // An ESN receiver infers the unsent high half from its window, so start it next to the vector.
        try opener.add(v.sa, highestReceived: v.lastSequence)
        let r = try opener.open(hex(v.packet))
        #expect(r.payload == v.payload)
        #expect(r.nextHeader == 17)
        #expect(r.spi == v.sa.spi)
        #expect(r.sequenceNumber == v.lastSequence + 1)
    }

    @Test func ivIsSequenceXorMask() throws {
        let sealer = try ESPSealer(sa(), ivMask: 0x0102_0304_0506_0708)
        let p = try sealer.seal(payload: [], nextHeader: 59)
        #expect(Array(p[8..<16]) == [1, 2, 3, 4, 5, 6, 7, 9])
        #expect(p.count == 16 + 4 + 8)  // empty payload: 2 bytes of padding, trailer, ICV
        let random = try ESPSealer(sa())
        let q = try random.seal(payload: [], nextHeader: 59)
        #expect(Array(q[0..<8]) == Array(p[0..<8]))
    }
}

@Suite struct ESPBehaviourTests {
    @Test(arguments: [false, true], [ESPICVLength.eight, .sixteen])
    func roundTripsEveryLength(esn: Bool, icv: ESPICVLength) throws {
        let s = sa(icv: icv, esn: esn)
        let sealer = try ESPSealer(s)
        let opener = try ESPOpener([s])
        for n in 0...70 {
            let payload = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ n) }
            let p = try sealer.seal(payload: payload, nextHeader: 17)
            #expect(p.count % 4 == 0)
            #expect((p.count - 16 - icv.rawValue) % 4 == 0)
            let r = try opener.open(p)
            #expect(r.payload == payload)
            #expect(r.sequenceNumber == UInt64(n + 1))
        }
        #expect(sealer.counters.sealedPackets == 71)
        #expect(opener.counters.openedPackets == 71)
    }

    @Test func inPlaceSealAndOpenUseTheCallersBuffer() throws {
        let s = sa()
        let sealer = try ESPSealer(s, ivMask: 0)
        let opener = try ESPOpener([s])
        var buf = [UInt8](repeating: 0xEE, count: 2048)
        let n = try buf.withUnsafeMutableBytes { b in
            for (i, x) in payload20.enumerated() { b[ESP.headerLength + i] = x }
            return try sealer.seal(into: b, payloadLength: payload20.count, nextHeader: 17)
        }
        #expect(hexString(Array(buf[..<n])) == ESPVectorTests.vectors[0].packet)
        let r = try buf.withUnsafeMutableBytes { b in try opener.open(inPlace: UnsafeMutableRawBufferPointer(rebasing: b[..<n])) }
        #expect(r.payload == 16..<36)
        #expect(Array(buf[r.payload]) == payload20)
        var small = [UInt8](repeating: 0, count: 40)
        #expect(errorCode { _ = try small.withUnsafeMutableBytes { try sealer.seal(into: $0, payloadLength: 20, nextHeader: 17) } } == .bufferTooSmall)
        for bad in [-1, Int.max, Int(Int32.max)] {
            #expect(errorCode { _ = try buf.withUnsafeMutableBytes { try sealer.seal(into: $0, payloadLength: bad, nextHeader: 17) } } == .bufferTooSmall)
        }
        #expect(sealer.lastSequenceNumber == 1)  // a refused seal uses no sequence number
    }

    @Test(arguments: [ESPICVLength.eight, .sixteen])
    func aPayloadSealedFromTwoPartsIsTheSamePacket(icv: ESPICVLength) throws {
        let whole = try ESPSealer(sa(icv: icv), ivMask: 0)
        let parts = try ESPSealer(sa(icv: icv), ivMask: 0)
        let opener = try ESPOpener([sa(icv: icv)])
        var rng = SplitMix(state: 0x5EA1)
        for (head, rest) in [(16, 0), (86, 1360), (70, 1376), (0, 1), (16, 1), (33, 300)] {
            let payload = (0..<(head + rest)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let expected = try whole.seal(payload: payload, nextHeader: 17)
            // The head sits in the buffer; the rest is read from elsewhere, as the TX thread reads
            // a segment's data from the TSO super-frame.
            var buf = [UInt8](repeating: 0xEE, count: expected.count + 7)
            let tailBytes = Array(payload[head...])
            let n = try buf.withUnsafeMutableBytes { b in
                for i in 0..<head { b[ESP.headerLength + i] = payload[i] }
                return try tailBytes.withUnsafeBytes { r in try parts.seal(into: b, headLength: head, rest: r, nextHeader: 17) }
            }
            #expect(Array(buf[..<n]) == expected, "head \(head), rest \(rest)")
            #expect(try opener.open(Array(buf[..<n])).payload == payload)
        }
        // The rest may not overlap the buffer it is sealed into; a refusal uses no sequence number.
        var buf = [UInt8](repeating: 0, count: 2048)
        let before = parts.lastSequenceNumber
        let total = ESP.sealedLength(payloadLength: 16 + 100, icvLength: icv)
        for (restStart, allowed) in [(900, true), (901, false), (1000 + total - 1, false), (1000 + total, true)] {
            let code = errorCode {
                _ = try buf.withUnsafeMutableBytes { b in
                    try parts.seal(into: UnsafeMutableRawBufferPointer(rebasing: b[1000..<1600]), headLength: 16,
                                   rest: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(b)[restStart..<(restStart + 100)]), nextHeader: 17)
                }
            }
            #expect(allowed ? code == nil : code == .invalidParameter, "rest at \(restStart)")
        }
        let afterAllowed = parts.lastSequenceNumber
        #expect(afterAllowed == before + 2)
        #expect(errorCode {
            _ = try buf.withUnsafeMutableBytes { b in
                try parts.seal(into: b, headLength: 16, rest: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(b)[100..<600]), nextHeader: 17)
            }
        } == .invalidParameter)
        #expect(errorCode {
            _ = try buf.withUnsafeMutableBytes { b in
                try parts.seal(into: UnsafeMutableRawBufferPointer(rebasing: b[..<100]), headLength: 16, rest: UnsafeRawBufferPointer(b), nextHeader: 17)
            }
        } == .bufferTooSmall)
        let other = [UInt8](repeating: 1, count: 8)
        for (head, restBytes) in [(Int.max, 8), (Int(Int32.max) - 64, 8), (-1, 8)] {
            #expect(errorCode {
                _ = try buf.withUnsafeMutableBytes { b in
                    try other.withUnsafeBytes { r in
                        try parts.seal(into: b, headLength: head, rest: UnsafeRawBufferPointer(rebasing: r[..<restBytes]), nextHeader: 17)
                    }
                }
            } == .bufferTooSmall)
        }
        #expect(parts.lastSequenceNumber == afterAllowed)
    }

    @Test func esnInferenceAcrossTwoToThe32() throws {
        let s = sa(esn: true)
        let start: UInt64 = (1 << 32) - 4
        let sealer = try ESPSealer(s, lastSequenceNumber: start)
        let packets = try (0..<8).map { _ in try sealer.seal(payload: [9, 9], nextHeader: 17) }
        let opener = try ESPOpener([s])
        // A receiver that has seen traffic since sequence 1: its window is far below 2^32, high half 0.
        _ = try opener.open(ESPSealer(s, lastSequenceNumber: 1 << 31).seal(payload: [], nextHeader: 59))
        // Window top before the boundary, then in order across it.
        for (i, p) in packets.enumerated().prefix(5) {
            #expect(try opener.open(p).sequenceNumber == start + UInt64(i) + 1)
        }
        #expect(opener.highestSequenceNumber(spi: s.spi) == (1 << 32) + 1)
        // Out of order across the boundary: newest first (high half 1), then the older ones (high half 0).
        #expect(try opener.open(packets[7]).sequenceNumber == (1 << 32) + 4)
        #expect(try opener.open(packets[5]).sequenceNumber == (1 << 32) + 2)
        #expect(errorCode { _ = try opener.open(packets[1]) } == .replayed)
        #expect(try opener.open(packets[6]).sequenceNumber == (1 << 32) + 3)
        // Without ESN the same wire bytes would be sequence numbers around 0 and fail the ICV.
        #expect(packets[5][4..<8] == [0, 0, 0, 2])
    }

    @Test func esnWindowSpanningTheBoundaryFromAbove() throws {
        let s = sa(esn: true, window: 64)
        let sealer = try ESPSealer(s, lastSequenceNumber: (1 << 32) - 40)
        let packets = try (0..<60).map { _ in try sealer.seal(payload: [1], nextHeader: 17) }  // (2^32-39) ... (2^32+20)
        let opener = try ESPOpener([s])
        _ = try opener.open(ESPSealer(s, lastSequenceNumber: (1 << 32) - 1000).seal(payload: [], nextHeader: 59))
        _ = try opener.open(packets[59])  // top = 2^32 + 20: window spans both halves (case B)
        #expect(try opener.open(packets[0]).sequenceNumber == (1 << 32) - 39)  // low half, inferred high 0
        #expect(try opener.open(packets[45]).sequenceNumber == (1 << 32) + 6)
    }

    @Test func replayIsRejectedCountedAndTheWindowSlides() throws {
        let s = sa(window: 64)
        let sealer = try ESPSealer(s)
        let opener = try ESPOpener([s])
        let packets = try (0..<200).map { _ in try sealer.seal(payload: [7], nextHeader: 17) }  // seq i+1
        _ = try opener.open(packets[0])
        #expect(errorCode { _ = try opener.open(packets[0]) } == .replayed)
        _ = try opener.open(packets[99])  // seq 100
        #expect(errorCode { _ = try opener.open(packets[35]) } == .outsideWindow)  // seq 36: 64 behind
        #expect(try opener.open(packets[36]).sequenceNumber == 37)  // 63 behind: last slot
        #expect(errorCode { _ = try opener.open(packets[36]) } == .replayed)
        #expect(errorCode { _ = try opener.open(packets[99]) } == .replayed)
        _ = try opener.open(packets[199])  // jump by 100: everything older than 137 leaves
        #expect(errorCode { _ = try opener.open(packets[98]) } == .outsideWindow)
        #expect(try opener.open(packets[150]).sequenceNumber == 151)
        let c = opener.counters
        #expect(c.replayed == 3)
        #expect(c.outsideWindow == 2)
        #expect(c.openedPackets == 5)
        #expect(c.droppedOnOpen == 5)
    }

    @Test func largeWindowAndShiftsOfEveryDistance() throws {
        let s = sa(window: 1024)
        let sealer = try ESPSealer(s)
        let opener = try ESPOpener([s])
        let packets = try (0..<3000).map { _ in try sealer.seal(payload: [], nextHeader: 59) }
        _ = try opener.open(packets[1999])  // seq 2000
        #expect(try opener.open(packets[976]).sequenceNumber == 977)  // 1023 behind
        #expect(errorCode { _ = try opener.open(packets[975]) } == .outsideWindow)
        // Receive seq 2001...2999 with gaps, then check each remembered one is a replay.
        var accepted: [Int] = []
        var step = 1
        var i = 2000
        while i < 3000 {
            _ = try opener.open(packets[i])
            accepted.append(i)
            i += step
            step = step % 130 + 1
        }
        let top = accepted.last! + 1
        for j in accepted where top - (j + 1) < 1024 {
            #expect(errorCode { _ = try opener.open(packets[j]) } == .replayed)
        }
        for j in (top - 1023)..<top where !accepted.contains(j - 1) && j - 1 >= 976 && j - 1 != 1999 && j - 1 != 976 {
            #expect(try opener.open(packets[j - 1]).sequenceNumber == UInt64(j))
        }
    }

    @Test func tamperedByteAnywhereFailsAndLeavesTheWindow() throws {
        for esn in [false, true] {
            let s = sa(esn: esn)
            let sealer = try ESPSealer(s)
            let opener = try ESPOpener([s])
            _ = try opener.open(sealer.seal(payload: [1, 2, 3], nextHeader: 17))
            let good = try sealer.seal(payload: vxlanICMPDatagram, nextHeader: 17)  // seq 2
            for i in good.indices {
                for bit in [0, 7] {
                    var bad = good
                    bad[i] ^= 1 << UInt8(bit)
                    let code = errorCode { _ = try opener.open(bad) }
                    switch i {
                    case 0..<4: #expect(code == .unknownSPI)
                    case 4..<8: #expect(code == .authFailed || code == .outsideWindow || code == .replayed, "byte \(i): \(String(describing: code))")
                    default: #expect(code == .authFailed, "byte \(i) bit \(bit): \(String(describing: code))")
                    }
                    #expect(opener.highestSequenceNumber(spi: s.spi) == 1)
                }
            }
            #expect(opener.counters.authFailed >= UInt64(2 * (good.count - 8)))
            #expect(opener.counters.openedPackets == 1)
            #expect(try opener.open(good).payload == vxlanICMPDatagram)
        }
    }

    @Test func unknownSPITooShortAndWrongKey() throws {
        let s = sa()
        let opener = try ESPOpener([s])
        let other = try ESPSealer(sa(spi: 0x5555_5555))
        #expect(errorCode { _ = try opener.open(other.seal(payload: [1], nextHeader: 17)) } == .unknownSPI)
        #expect(errorCode { _ = try opener.open([0x1a, 0x2b, 0x3c]) } == .tooShort)
        #expect(errorCode { _ = try opener.open([]) } == .tooShort)
        #expect(errorCode { _ = try opener.open(hex("1a2b3c4d00000001") + [UInt8](repeating: 0, count: 17)) } == .tooShort)
        let wrongKey = try ESPSealer(ESPSecurityAssociation(spi: s.spi, key: SecretKey(bytes: [UInt8](repeating: 1, count: 16)), salt: s.salt,
                                                             extendedSequenceNumbers: false))
        #expect(errorCode { _ = try opener.open(wrongKey.seal(payload: [1], nextHeader: 17)) } == .authFailed)
        let wrongSalt = try ESPSealer(sa(salt: 1234))
        #expect(errorCode { _ = try opener.open(wrongSalt.seal(payload: [1], nextHeader: 17)) } == .authFailed)
        let c = opener.counters
        #expect(c.unknownSPI == 1 && c.tooShort == 3 && c.authFailed == 2)
        let e = try #require(throws: IPsecError.self) { _ = try opener.open(other.seal(payload: [1], nextHeader: 17)) }
        #expect(e.message.contains("key"))
    }

    @Test func badPaddingIsRefusedAfterAuthentication() throws {
        // Seal a "payload" whose last bytes forge a wrong trailer inside correctly authenticated
        // ciphertext: build the plaintext by hand through a sealer with an empty trailer slot.
        let s = sa()
        let sealer = try ESPSealer(s, ivMask: 0)
        let opener = try ESPOpener([s])
        // Payload of 2 bytes -> ciphertext 4: [p0 p1 padLen nh] with padLen 0. Make the real payload
        // end in bytes that, read as a trailer of a *shorter* packet, are wrong: instead check the
        // two cases the opener can see, padLen too large and padding bytes not 1, 2, 3.
        func forged(_ plaintext: [UInt8]) throws -> [UInt8] {
            // Seal plaintext[0 ..< count-2] with next header = last byte, then patch the pad length
            // byte by re-sealing: easiest is to seal (plaintext minus trailer) and then overwrite the
            // trailer before encryption via the in-place API.
            var buf = [UInt8](repeating: 0, count: 256)
            let payloadLen = plaintext.count - 2
            let n = try buf.withUnsafeMutableBytes { b -> Int in
                for (i, x) in plaintext.prefix(payloadLen).enumerated() { b[16 + i] = x }
                return try sealer.seal(into: b, payloadLength: payloadLen, nextHeader: plaintext.last!)
            }
            return Array(buf[..<n])
        }
        _ = try forged([1, 2, 0, 17])
        // The sealer always writes a correct trailer, so forge with the raw GCM primitive instead.
        func rawSeal(_ plaintext: [UInt8], seq: UInt32) throws -> [UInt8] {
            var header = hex("1a2b3c4d")
            header += [UInt8(seq >> 24), UInt8(truncatingIfNeeded: seq >> 16), UInt8(truncatingIfNeeded: seq >> 8), UInt8(truncatingIfNeeded: seq)]
            let iv: [UInt8] = [0, 0, 0, 0] + Array(header[4..<8])
            let nonce = hex("1a2b3c4d") + iv
            let box = try AESGCM.seal(plaintext, key: SecretKey(bytes: vectorKeyBytes), nonce: nonce, aad: header)
            return header + iv + box.ciphertext + Array(box.tag.prefix(8))
        }
        #expect(try opener.open(rawSeal([9, 9, 1, 2, 2, 17], seq: 10)).payload == [9, 9])  // control: good padding
        #expect(errorCode { _ = try opener.open(rawSeal([9, 9, 1, 3, 2, 17], seq: 11)) } == .badPadding)
        #expect(errorCode { _ = try opener.open(rawSeal([9, 9, 9, 17], seq: 12)) } == .badPadding)
        #expect(opener.counters.badPadding == 2)
        #expect(opener.highestSequenceNumber(spi: s.spi) == 10)  // refused packets do not move the window
    }

    @Test func noSilentWrapAndRekeySignal() throws {
        let s = sa()  // no ESN: last allowed sequence number 2^32 - 1
        let sealer = try ESPSealer(s, lastSequenceNumber: UInt64(UInt32.max) - 1)
        #expect(sealer.needsRekey)
        _ = try sealer.seal(payload: [1], nextHeader: 17)
        #expect(sealer.lastSequenceNumber == UInt64(UInt32.max))
        #expect(errorCode { _ = try sealer.seal(payload: [1], nextHeader: 17) } == .sequenceExhausted)
        #expect(errorCode { _ = try sealer.seal(payload: [1], nextHeader: 17) } == .sequenceExhausted)
        #expect(sealer.counters.sequenceExhausted == 2)
        #expect(sealer.lastSequenceNumber == UInt64(UInt32.max))

        let soft: UInt64 = (1 << 32) - (1 << 20)
        let fresh = try ESPSealer(s, lastSequenceNumber: soft - 1)
        #expect(!fresh.needsRekey)
        _ = try fresh.seal(payload: [], nextHeader: 59)
        #expect(fresh.needsRekey)

        let custom = try ESPSealer(sa(esn: true, rekeyAfter: 3))
        _ = try custom.seal(payload: [], nextHeader: 59)
        _ = try custom.seal(payload: [], nextHeader: 59)
        #expect(!custom.needsRekey)
        _ = try custom.seal(payload: [], nextHeader: 59)
        #expect(custom.needsRekey)

        let esn = try ESPSealer(sa(esn: true), lastSequenceNumber: UInt64(UInt32.max))
        #expect(!esn.needsRekey)
        #expect(try esn.seal(payload: [], nextHeader: 59)[4..<8] == [0, 0, 0, 0])  // 2^32 goes out with low half 0
        let last = try ESPSealer(sa(esn: true), lastSequenceNumber: UInt64.max)
        #expect(errorCode { _ = try last.seal(payload: [], nextHeader: 59) } == .sequenceExhausted)

        #expect(errorCode { _ = try ESPSecurityAssociation(spi: s.spi, key: s.key, salt: 1, extendedSequenceNumbers: false,
                                                           rekeyAfterPackets: 1 << 33) } == .invalidParameter)
        #expect(errorCode { _ = try ESPSecurityAssociation(spi: s.spi, key: s.key, salt: 1, replayWindowSize: 2000) } == .invalidParameter)
    }

    @Test func sequenceZeroIsNeverAccepted() throws {
        let s = sa()
        let opener = try ESPOpener([s])
        let forgedZero = hex("1a2b3c4d00000000") + [UInt8](repeating: 0, count: 20)
        #expect(errorCode { _ = try opener.open(forgedZero) } == .outsideWindow)
    }

    @Test func openerManagesSeveralSAs() throws {
        let a = sa(spi: 0x1000), b = sa(spi: 0x2000, esn: true)
        let opener = try ESPOpener([a, b])
        #expect(opener.spis.map(\.rawValue) == [0x1000, 0x2000])
        #expect(errorCode { try opener.add(a) } == .duplicateSPI)
        #expect(try opener.open(ESPSealer(a).seal(payload: [1], nextHeader: 17)).spi == a.spi)
        #expect(try opener.open(ESPSealer(b).seal(payload: [2], nextHeader: 17)).spi == b.spi)
        #expect(opener.remove(spi: a.spi))
        #expect(!opener.remove(spi: a.spi))
        #expect(errorCode { _ = try opener.open(ESPSealer(a).seal(payload: [1], nextHeader: 17)) } == .unknownSPI)
    }

    @Test func randomCorruptionNeverCrashesOrOpens() throws {
        var rng = SplitMix(state: 0x0DDC_0FFE)
        for esn in [false, true] {
            let s = sa(icv: esn ? .sixteen : .eight, esn: esn)
            let sealer = try ESPSealer(s)
            let opener = try ESPOpener([s, sa(spi: 0x7777_7777)])
            var opened = 0
            for round in 0..<3000 {
                let len = Int.random(in: 0...200, using: &rng)
                let payload = (0..<len).map { _ in UInt8.random(in: 0...255, using: &rng) }
                let original = try sealer.seal(payload: payload, nextHeader: 17)
                var p = original
                switch round % 4 {
                case 0:  // flip 1-4 random bits
                    for _ in 0..<Int.random(in: 1...4, using: &rng) {
                        p[Int.random(in: 0..<p.count, using: &rng)] ^= 1 << UInt8.random(in: 0...7, using: &rng)
                    }
                case 1:  // truncate
                    p.removeLast(Int.random(in: 1...p.count, using: &rng))
                case 2:  // random bytes behind a valid SPI
                    p = Array(p[0..<4]) + (0..<Int.random(in: 0...80, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                default:  // extend
                    p += (0..<Int.random(in: 1...9, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                }
                if p == original { p[0] ^= 0x80 }  // two flips of one bit undo each other
                if let r = try? opener.open(p) {
                    opened += 1
                    Issue.record("a corrupted packet opened: \(r.sequenceNumber)")
                }
            }
            #expect(opened == 0)
            #expect(opener.counters.droppedOnOpen == 3000)
            #expect(opener.counters.openedPackets == 0)
        }
    }
}

/// Two hosts pinging each other across a rotation that reaches them at different times.
@Suite struct RotationTests {
    /// One host's SAs toward one peer, changed only through rotation plans.
    final class Host {
        let me: IPAddress, peer: IPAddress
        var ring: IPsecKeyring?
        var sealer: ESPSealer?
        let opener = ESPOpener()
        init(_ me: String, _ peer: String) { self.me = ip(me); self.peer = ip(peer) }

        func apply(_ new: IPsecKeyring) throws {
            for step in IPsecRotationPlan(from: ring, to: new).steps {
                switch step {
                case .addRx(let k): try opener.add(ESPSecurityAssociation.derive(local: me, remote: peer, key: k).inbound)
                case .setPrimaryTx(let k): sealer = try ESPSealer(ESPSecurityAssociation.derive(local: me, remote: peer, key: k).outbound)
                case .removeTx: break  // the new sealer replaced the old one
                case .removeRx(let tag): opener.remove(spi: SPI.derive(source: peer, destination: me, tag: tag))
                }
            }
            ring = new
        }
        func send(_ payload: [UInt8]) throws -> [UInt8] { try sealer!.seal(payload: payload, nextHeader: 17) }
    }

    @Test func continuousPingAcrossRotationLosesNothing() throws {
        let a = Host("192.168.0.2", "192.168.0.3"), b = Host("192.168.0.3", "192.168.0.2")
        var ring = try IPsecKeyring(keys: [key(1, fill: 1), key(2, fill: 2), key(3, fill: 3)])
        try a.apply(ring)
        try b.apply(ring)
        var lost = 0
        var inFlight: [[UInt8]] = []  // A -> B packets sealed before a switch, delivered after it
        func ping(_ i: Int) {
            do {
                let req = try a.send([UInt8(truncatingIfNeeded: i)])
                inFlight.append(req)
                if inFlight.count > 3 { _ = try b.opener.open(inFlight.removeFirst()) }
                let rep = try b.send([UInt8(truncatingIfNeeded: i)])
                _ = try a.opener.open(rep)
            } catch { lost += 1 }
        }
        for round in 0..<3 {
            for i in 0..<50 { ping(i) }
            let next = try ring.rotated(newKey: key(UInt32(4 + round), fill: UInt8(4 + round)))
            try a.apply(next)  // A hears of the rotation first and switches its primary...
            for i in 50..<100 { ping(i) }  // ...B still sends with the old primary and receives A's new one
            try b.apply(next)
            for i in 100..<150 { ping(i) }
            ring = next
            #expect(a.sealer!.spi == SPI.derive(source: a.me, destination: a.peer, tag: ring.primary.tag))
            #expect(a.opener.spis.count == 3)
        }
        for p in inFlight { do { _ = try b.opener.open(p) } catch { lost += 1 } }
        #expect(lost == 0)
        #expect(b.opener.counters.openedPackets == 450)
        #expect(a.opener.counters.droppedOnOpen == 0)
    }

    @Test func removingBeforeAddingWouldLosePackets() throws {
        // The control: if B dropped the key A now transmits with, A's packets would fail. Shows
        // the plan's order is what the test above depends on.
        let a = Host("192.168.0.2", "192.168.0.3"), b = Host("192.168.0.3", "192.168.0.2")
        let ring = try IPsecKeyring(keys: [key(1, fill: 1), key(2, fill: 2), key(3, fill: 3)])
        try a.apply(ring)
        try b.apply(ring)
        try a.apply(ring.rotated(newKey: key(4, fill: 4)))
        b.opener.remove(spi: SPI.derive(source: a.me, destination: b.me, tag: 3))
        #expect(errorCode { _ = try b.opener.open(a.send([1])) } == .unknownSPI)
    }
}

/// Hands a sealed packet to tshark with the SA's key: proves the wire format is what Wireshark
/// (and so Linux xfrm) expects. Skipped where tshark is not installed.
@Suite struct TsharkInteropTests {
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/tshark")))
    func tsharkDecryptsOurESP() throws {
        let k = try IPsecKey(tag: 0x2a, material: SecretKey(bytes: (0..<16).map { UInt8($0 * 3 + 1) }))
        let src = ip("192.168.7.2"), dst = ip("192.168.7.3")
        let out = try ESPSecurityAssociation.derive(local: src, remote: dst, key: k, extendedSequenceNumbers: false).outbound
        let sealer = try ESPSealer(out)
        _ = try sealer.seal(payload: [0], nextHeader: 59)
        let esp = try sealer.seal(payload: vxlanICMPDatagram, nextHeader: 17)
        var ipHeader: [UInt8] = [0x45, 0, UInt8((20 + esp.count) >> 8), UInt8((20 + esp.count) & 0xFF), 0, 1, 0, 0, 64, 50, 0, 0]
            + src.bytes + dst.bytes
        var sum: UInt32 = 0
        for i in stride(from: 0, to: 20, by: 2) { sum += UInt32(ipHeader[i]) << 8 | UInt32(ipHeader[i + 1]) }
        while sum >> 16 != 0 { sum = (sum & 0xFFFF) + (sum >> 16) }
        ipHeader[10] = UInt8((~sum >> 8) & 0xFF)
        ipHeader[11] = UInt8(~sum & 0xFF)
        let frame = ipHeader + esp
        func le32(_ v: UInt32) -> [UInt8] { [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF), UInt8((v >> 16) & 0xFF), UInt8(v >> 24)] }
        var pcap = le32(0xa1b2_c3d4) + [2, 0, 4, 0] + le32(0) + le32(0) + le32(65535) + le32(228)  // LINKTYPE_IPV4
        pcap += le32(0) + le32(0) + le32(UInt32(frame.count)) + le32(UInt32(frame.count)) + frame
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ovlt-esp-\(UInt32.random(in: 0...UInt32.max)).pcap")
        try Data(pcap).write(to: path)
        defer { try? FileManager.default.removeItem(at: path) }
        let keyHex = "0x" + k.material.withUnsafeBytes { hexString(Array($0)) } + String(out.salt, radix: 16).leftPadded(8)
        let uat = "uat:esp_sa:\"IPv4\",\"\(src)\",\"\(dst)\",\"\(out.spi)\",\"AES-GCM with 8 octet ICV [RFC4106]\",\"\(keyHex)\",\"NULL\",\"\""
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/tshark")
        p.arguments = ["-r", path.path, "-o", "esp.enable_encryption_decode:TRUE", "-o", uat, "-V"]
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = FileHandle.nullDevice
        try p.run()
        let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(text.contains("ESP Sequence: 2"))
        #expect(text.contains("VXLAN Network Identifier (VNI): 4096"))
        #expect(text.contains("Internet Control Message Protocol"))
        #expect(text.contains("Next header: UDP (0x11)"))
    }
}

extension String {
    fileprivate func leftPadded(_ n: Int) -> String { String(repeating: "0", count: max(0, n - count)) + self }
}

/// Prints seal+open throughput for 1400-byte payloads through the in-place path (print only:
/// numbers depend on the machine and its load).
@Suite struct ESPThroughputPrint {
    @Test func sealOpenMicroBenchmark() throws {
        let k = key(1)
        for (name, s) in [("8-byte ICV, ESN", try ESPSecurityAssociation.derive(local: ip("10.0.0.1"), remote: ip("10.0.0.2"), key: k).outbound)] {
            let sealer = try ESPSealer(s)
            let opener = try ESPOpener([s])
            let payload = 1400, count = 20_000
            var buf = [UInt8](repeating: 0x5A, count: 2048)
            let clock = ContinuousClock()
            var sealTime = Duration.zero, openTime = Duration.zero
            try buf.withUnsafeMutableBytes { b in
                for _ in 0..<count {
                    let t0 = clock.now
                    let n = try sealer.seal(into: b, payloadLength: payload, nextHeader: 17)
                    let t1 = clock.now
                    _ = try opener.open(inPlace: UnsafeMutableRawBufferPointer(rebasing: b[..<n]))
                    openTime += clock.now - t1
                    sealTime += t1 - t0
                }
            }
            func mbps(_ d: Duration) -> Int {
                let s = Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
                return Int(Double(payload * count) / s / 1e6)
            }
            let both = sealTime + openTime
            print("ESP \(name), \(payload)-byte payloads x \(count): seal \(mbps(sealTime)) MB/s, open \(mbps(openTime)) MB/s, "
                + "seal+open \(mbps(both)) MB/s (\(mbps(both) * 8) Mbit/s per core for one direction each)")
            #expect(opener.counters.openedPackets == UInt64(count))
        }
    }
}

/// Keys bound to the sender's boot: what a restarted host sends can be opened only with its new
/// boot's keys, and what it sent before, only with the old.
@Suite struct BootBoundSATests {
    let a = IPAddress("198.18.0.1")!, b = IPAddress("198.18.0.2")!
    let key = try! IPsecKey(tag: 7, material: SecretKey(bytes: [UInt8](0..<16)))
    let bootA: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8], bootB1: [UInt8] = [9, 9, 9, 9, 9, 9, 9, 1], bootB2: [UInt8] = [9, 9, 9, 9, 9, 9, 9, 2]

    @Test func eachDirectionIsBoundToItsSendersBootAndSPIsStayDockers() throws {
        let plain = try ESPSecurityAssociation.derive(local: b, remote: a, key: key)
        let fromB1 = try ESPSecurityAssociation.derive(local: b, remote: a, key: key, localBoot: bootB1, remoteBoot: bootA)
        let atA1 = try ESPSecurityAssociation.derive(local: a, remote: b, key: key, localBoot: bootA, remoteBoot: bootB1)
        // The wire stays Docker's: same SPIs with or without boots.
        #expect(fromB1.outbound.spi == plain.outbound.spi && atA1.inbound.spi == plain.outbound.spi)
        // B (boot 1) seals, A (knowing boot 1) opens; the unbound key does not.
        let sealer = try ESPSealer(fromB1.outbound)
        let packet = try sealer.seal(payload: [1, 2, 3], nextHeader: 17)
        #expect(try ESPOpener([atA1.inbound]).open(packet).payload == [1, 2, 3])
        #expect(throws: IPsecError.self) { try ESPOpener([try ESPSecurityAssociation.derive(local: a, remote: b, key: key).inbound]).open(packet) }
        // After B restarts (boot 2), A's SA for boot 2 refuses boot 1's packet: a replay fails
        // authentication, it never reaches the replay window.
        let atA2 = try ESPSecurityAssociation.derive(local: a, remote: b, key: key, localBoot: bootA, remoteBoot: bootB2)
        let opener = try ESPOpener([atA2.inbound])
        let e = #expect(throws: IPsecError.self) { try opener.open(packet) }
        #expect(e?.code == .authFailed)
        #expect(opener.counters.authFailed == 1 && opener.counters.replayed == 0)
        // Boot 2's own packets, from sequence number 1 again, open.
        let again = try ESPSealer(try ESPSecurityAssociation.derive(local: b, remote: a, key: key, localBoot: bootB2, remoteBoot: bootA).outbound)
        #expect(try opener.open(try again.seal(payload: [4], nextHeader: 17)).sequenceNumber == 1)
    }

    @Test func boundKeysAreDeterministicPerBootAndRefuseAnEmptyBoot() throws {
        let k1 = try ESPSecurityAssociation.boundKey(key, boot: bootB1)
        #expect(k1 == (try ESPSecurityAssociation.boundKey(key, boot: bootB1)))
        #expect(k1 != (try ESPSecurityAssociation.boundKey(key, boot: bootB2)))
        #expect(k1 != key.material && k1.count == key.material.count)
        #expect(throws: IPsecError.self) { try ESPSecurityAssociation.boundKey(key, boot: []) }
    }
}
