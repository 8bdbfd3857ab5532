import Testing
import OverlayCrypto

func hex(_ s: String) -> [UInt8] {
    var out: [UInt8] = []
    var it = s.filter { !$0.isWhitespace }.makeIterator()
    while let a = it.next(), let b = it.next() { out.append(UInt8(String([a, b]), radix: 16)!) }
    return out
}

/// Test cases from McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", appendix B
/// (the vectors NIST's GCM validation uses).
struct GCMVector: Sendable, CustomTestStringConvertible {
    let name: String, key: String, iv: String, plaintext: String, aad: String, ciphertext: String, tag: String
    var testDescription: String { name }
}

let p3 = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
let p4 = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
let k3 = "feffe9928665731c6d6a8f9467308308"
let gcmVectors: [GCMVector] = [
    GCMVector(name: "TC1 AES-128 empty", key: String(repeating: "00", count: 16), iv: String(repeating: "00", count: 12),
              plaintext: "", aad: "", ciphertext: "", tag: "58e2fccefa7e3061367f1d57a4e7455a"),
    GCMVector(name: "TC2 AES-128 zero block", key: String(repeating: "00", count: 16), iv: String(repeating: "00", count: 12),
              plaintext: String(repeating: "00", count: 16), aad: "",
              ciphertext: "0388dace60b6a392f328c2b971b2fe78", tag: "ab6e47d42cec13bdf53a67b21257bddf"),
    GCMVector(name: "TC3 AES-128", key: k3, iv: "cafebabefacedbaddecaf888", plaintext: p3, aad: "",
              ciphertext: "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985",
              tag: "4d5c2af327cd64a62cf35abd2ba6fab4"),
    GCMVector(name: "TC4 AES-128 with AAD", key: k3, iv: "cafebabefacedbaddecaf888", plaintext: p4,
              aad: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
              ciphertext: "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
              tag: "5bc94fbc3221a5db94fae95ae7121a47"),
    GCMVector(name: "TC7 AES-192 empty", key: String(repeating: "00", count: 24), iv: String(repeating: "00", count: 12),
              plaintext: "", aad: "", ciphertext: "", tag: "cd33b28ac773f74ba00ed1f312572435"),
    GCMVector(name: "TC8 AES-192 zero block", key: String(repeating: "00", count: 24), iv: String(repeating: "00", count: 12),
              plaintext: String(repeating: "00", count: 16), aad: "",
              ciphertext: "98e7247c07f0fe411c267e4384b0f600", tag: "2ff58d80033927ab8ef4d4587514f0fb"),
    GCMVector(name: "TC13 AES-256 empty", key: String(repeating: "00", count: 32), iv: String(repeating: "00", count: 12),
              plaintext: "", aad: "", ciphertext: "", tag: "530f8afbc74536b9a963b4f1c4cb738b"),
    GCMVector(name: "TC14 AES-256 zero block", key: String(repeating: "00", count: 32), iv: String(repeating: "00", count: 12),
              plaintext: String(repeating: "00", count: 16), aad: "",
              ciphertext: "cea7403d4d606b6e074ec5d3baf39d18", tag: "d0d1c8a799996bf0265b98b5d48ab919"),
]

@Suite struct AESGCMTests {
    @Test(arguments: gcmVectors)
    func vector(_ v: GCMVector) throws {
        let key = SecretKey(bytes: hex(v.key))
        let box = try AESGCM.seal(hex(v.plaintext), key: key, nonce: hex(v.iv), aad: hex(v.aad))
        #expect(box.ciphertext == hex(v.ciphertext))
        #expect(box.tag == hex(v.tag))
        let plain = try AESGCM.open(ciphertext: box.ciphertext, tag: box.tag, key: key, nonce: hex(v.iv), aad: hex(v.aad))
        #expect(plain == hex(v.plaintext))
        #expect(try AESGCM.openCombined(box.combined, key: key, nonce: hex(v.iv), aad: hex(v.aad)) == hex(v.plaintext))
    }

    @Test func tamperedInputIsRefused() throws {
        let key = try SecretKey.random(byteCount: 32)
        let nonce = try SecureRandom.bytes(count: 12)
        let sealed = try AESGCM.sealCombined(Array("hello gossip".utf8), key: key, nonce: nonce, aad: [1, 2, 3])
        for i in sealed.indices {
            var bad = sealed
            bad[i] ^= 0x01
            #expect(throws: CryptoError.self) { try AESGCM.openCombined(bad, key: key, nonce: nonce, aad: [1, 2, 3]) }
        }
        let err = #expect(throws: CryptoError.self) { try AESGCM.openCombined(sealed, key: key, nonce: nonce, aad: [1, 2, 4]) }
        #expect(err?.code == .authenticationFailed)
        let other = try SecretKey.random(byteCount: 32)
        #expect(throws: CryptoError.self) { try AESGCM.openCombined(sealed, key: other, nonce: nonce, aad: [1, 2, 3]) }
        #expect(try AESGCM.openCombined(sealed, key: key, nonce: nonce, aad: [1, 2, 3]) == Array("hello gossip".utf8))
    }

    @Test func badLengthsThrowTypedErrors() {
        let e1 = #expect(throws: CryptoError.self) { try AESGCM.seal([1], key: SecretKey(bytes: [UInt8](repeating: 0, count: 15)), nonce: [UInt8](repeating: 0, count: 12)) }
        #expect(e1?.code == .invalidKeyLength)
        let e2 = #expect(throws: CryptoError.self) { try AESGCM.seal([1], key: SecretKey(bytes: [UInt8](repeating: 0, count: 16)), nonce: [0]) }
        #expect(e2?.code == .invalidNonceLength)
        let e3 = #expect(throws: CryptoError.self) { try AESGCM.openCombined([1, 2], key: SecretKey(bytes: [UInt8](repeating: 0, count: 16)), nonce: [UInt8](repeating: 0, count: 12)) }
        #expect(e3?.code == .truncatedInput)
    }
}

@Suite struct SecretKeyTests {
    @Test func equalityIsByValueAndLength() {
        let a = SecretKey(bytes: [1, 2, 3, 4])
        #expect(a == SecretKey(bytes: [1, 2, 3, 4]))
        #expect(a != SecretKey(bytes: [1, 2, 3, 5]))
        #expect(a != SecretKey(bytes: [1, 2, 3]))
        #expect(SecretKey(bytes: []) == SecretKey(bytes: []))
    }

    @Test func neverPrinted() {
        let k = SecretKey(bytes: Array("supersecretvalue".utf8))
        for text in [k.description, "\(k)", String(reflecting: k), "\([k])"] {
            #expect(!text.contains("supersecret"))
            #expect(!text.contains("115"))  // 's' as a decimal byte
            #expect(text.contains("redacted"))
        }
    }

    @Test func randomKeysDiffer() throws {
        let a = try SecretKey.random(byteCount: 32), b = try SecretKey.random(byteCount: 32)
        #expect(a.count == 32)
        #expect(a != b)
        #expect(try SecureRandom.bytes(count: 0).isEmpty)
        #expect(try SecureRandom.bytes(count: 64).count == 64)
        #expect(throws: CryptoError.self) { try SecureRandom.bytes(count: -1) }
    }

    @Test func bytesAreReadable() {
        let k = SecretKey(bytes: [9, 8, 7])
        #expect(k.withUnsafeBytes { Array($0) } == [9, 8, 7])
    }
}
