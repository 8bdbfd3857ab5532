import COpenSSL
@testable import IPsecKeys
import OverlayCrypto
import Testing

/// The engine's two ways into OpenSSL (the default provider's functions directly, and EVP) must
/// give the same bytes, and a text sealed in pieces must equal the same text sealed whole.
@Suite struct GCMEngineTests {
    private func engines(keyBytes: Int, seed: UInt8) throws -> (direct: GCMEngine, evp: GCMEngine, directOpen: GCMEngine, evpOpen: GCMEngine) {
        let key = SecretKey(bytes: (0..<keyBytes).map { UInt8(truncatingIfNeeded: $0 &* 29 &+ Int(seed)) })
        return (try GCMEngine(key: key, encrypt: true), try GCMEngine(key: key, encrypt: true, viaEVP: true),
                try GCMEngine(key: key, encrypt: false), try GCMEngine(key: key, encrypt: false, viaEVP: true))
    }

    @Test(arguments: [16, 24, 32])
    func theProviderPathAndEVPAgreeAndOpenEachOther(keyBytes: Int) throws {
        let e = try engines(keyBytes: keyBytes, seed: UInt8(keyBytes))
        #expect(e.direct.usesProviderDirectly)
        #expect(!e.evp.usesProviderDirectly)
        var rng = SplitMix(state: UInt64(keyBytes))
        for length in [0, 1, 15, 16, 17, 64, 287, 288, 289, 1400, 1446, 4000] {
            for tagLength in [8, 16] {
                let nonce = (0..<12).map { _ in UInt8.random(in: 0...255, using: &rng) }
                let aad = (0..<(length % 2 == 0 ? 8 : 12)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                let plain = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
                var a = plain, b = plain
                var tagA = [UInt8](repeating: 0, count: tagLength), tagB = tagA
                #expect(seal(e.direct, nonce, aad, &a, &tagA))
                #expect(seal(e.evp, nonce, aad, &b, &tagB))
                #expect(a == b && tagA == tagB, "length \(length), tag \(tagLength)")
                if length > 0 { #expect(a != plain) }
                // Each opens the other's packet; a flipped tag or text bit fails on both.
                var openedA = a, openedB = b
                #expect(open(e.evpOpen, nonce, aad, &openedA, tagA))
                #expect(open(e.directOpen, nonce, aad, &openedB, tagB))
                #expect(openedA == plain && openedB == plain)
                var badTag = tagA
                badTag[tagLength - 1] ^= 0x40
                for engine in [e.directOpen, e.evpOpen] {
                    var text = a
                    #expect(!open(engine, nonce, aad, &text, badTag))
                    if length > 0 {
                        text = a
                        text[length / 2] ^= 1
                        #expect(!open(engine, nonce, aad, &text, tagA))
                    }
                    // A failure leaves no OpenSSL error queued and the context usable for the next packet.
                    #expect(ERR_peek_error() == 0)
                    text = a
                    #expect(open(engine, nonce, aad, &text, tagA))
                }
            }
        }
    }

    @Test func aTextSealedInThreePiecesEqualsItSealedWhole() throws {
        for engine in [try engines(keyBytes: 16, seed: 3).direct, try engines(keyBytes: 16, seed: 3).evp] {
            var rng = SplitMix(state: 7)
            for (head, mid, tail) in [(0, 0, 0), (70, 1376, 4), (86, 1360, 3), (16, 0, 2), (0, 1400, 0), (1, 1, 1), (33, 300, 17)] {
              for tagLength in [8, 16] {
                let nonce = (0..<12).map { _ in UInt8.random(in: 0...255, using: &rng) }
                let aad = (0..<8).map { _ in UInt8.random(in: 0...255, using: &rng) }
                let text = (0..<(head + mid + tail)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                var whole = text
                var tagWhole = [UInt8](repeating: 0, count: tagLength)
                #expect(seal(engine, nonce, aad, &whole, &tagWhole))
                // The middle piece comes from elsewhere; the buffer holds only the head and tail.
                let middle = Array(text[head..<(head + mid)])
                var pieces = text
                for i in head..<(head + mid) { pieces[i] = 0xA5 }
                var tagPieces = [UInt8](repeating: 0, count: tagLength)
                let ok = nonce.withUnsafeBufferPointer { n in aad.withUnsafeBufferPointer { a in
                    pieces.withUnsafeMutableBufferPointer { o in middle.withUnsafeBufferPointer { m in tagPieces.withUnsafeMutableBytes { t in
                        engine.seal(nonce: n.baseAddress!, aad: a.baseAddress!, aadLength: a.count, out: o.baseAddress ?? UnsafeMutablePointer(bitPattern: 16)!,
                                    head: head, from: m.baseAddress, mid: mid, tail: tail, tag: t.baseAddress!, tagLength: tagLength)
                    } } }
                } }
                #expect(ok)
                #expect(pieces == whole && tagPieces == tagWhole, "pieces \(head)+\(mid)+\(tail), tag \(tagLength)")
              }
            }
        }
    }

    private func seal(_ e: GCMEngine, _ nonce: [UInt8], _ aad: [UInt8], _ text: inout [UInt8], _ tag: inout [UInt8]) -> Bool {
        let count = text.count, tagLength = tag.count
        return nonce.withUnsafeBufferPointer { n in aad.withUnsafeBufferPointer { a in
            text.withUnsafeMutableBufferPointer { d in tag.withUnsafeMutableBytes { t in
                e.seal(nonce: n.baseAddress!, aad: a.baseAddress!, aadLength: a.count, out: d.baseAddress ?? UnsafeMutablePointer(bitPattern: 16)!,
                       head: count, from: nil, mid: 0, tail: 0, tag: t.baseAddress!, tagLength: tagLength)
            } }
        } }
    }

    private func open(_ e: GCMEngine, _ nonce: [UInt8], _ aad: [UInt8], _ text: inout [UInt8], _ tag: [UInt8]) -> Bool {
        var tag = tag
        let count = text.count, tagLength = tag.count
        return nonce.withUnsafeBufferPointer { n in aad.withUnsafeBufferPointer { a in
            text.withUnsafeMutableBufferPointer { d in tag.withUnsafeMutableBytes { t in
                e.open(nonce: n.baseAddress!, aad: a.baseAddress!, aadLength: a.count, data: d.baseAddress ?? UnsafeMutablePointer(bitPattern: 16)!,
                       count: count, tag: t.baseAddress!, tagLength: tagLength)
            } }
        } }
    }
}
