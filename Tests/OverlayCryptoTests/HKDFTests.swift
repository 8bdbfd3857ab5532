import Testing
import OverlayCrypto

@Suite struct HKDFTests {
    /// RFC 5869 appendix A, test cases 1-3 (SHA-256).
    @Test func rfc5869Vectors() throws {
        let c1 = try HKDF.deriveKey(inputKey: SecretKey(bytes: hex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b")),
                                    salt: hex("000102030405060708090a0b0c"), info: hex("f0f1f2f3f4f5f6f7f8f9"), outputByteCount: 42)
        #expect(c1 == SecretKey(bytes: hex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")))
        let c2 = try HKDF.deriveKey(
            inputKey: SecretKey(bytes: hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f")),
            salt: hex("606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeaf"),
            info: hex("b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"),
            outputByteCount: 82)
        #expect(c2 == SecretKey(bytes: hex("b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87")))
        let c3 = try HKDF.deriveKey(inputKey: SecretKey(bytes: hex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b")), outputByteCount: 42)
        #expect(c3 == SecretKey(bytes: hex("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8")))
        #expect(throws: CryptoError.self) { try HKDF.deriveKey(inputKey: c3, outputByteCount: 255 * 32 + 1) }
    }

    /// RFC 4231 test case 2 and the SHA-256 of "abc" (FIPS 180-2).
    @Test func hmacAndDigestVectors() throws {
        #expect(try SHA256.hmac(key: SecretKey(bytes: Array("Jefe".utf8)), Array("what do ya want for nothing?".utf8))
            == hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"))
        #expect(try SHA256.hash(Array("abc".utf8)) == hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"))
        #expect(try SHA256.hash([]) == hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"))
    }
}
