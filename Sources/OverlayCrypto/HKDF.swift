import COpenSSL

/// SHA-256, HMAC-SHA256 (RFC 2104) and HKDF-SHA256 (RFC 5869) over OpenSSL, for deriving keys and
/// identifiers (e.g. ESP keys and SPIs) from a shared secret.
public enum SHA256 {
    /// Digest length in bytes.
    public static let byteCount = 32

    /// The SHA-256 digest of `data`.
    public static func hash(_ data: [UInt8]) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: byteCount)
        var len: UInt32 = 0
        let rc = data.withUnsafeBytes { d in
            out.withUnsafeMutableBufferPointer { o in
                EVP_Digest(d.baseAddress ?? UnsafeRawPointer(bitPattern: 1), d.count, o.baseAddress, &len, EVP_sha256(), nil)
            }
        }
        guard rc == 1, len == UInt32(byteCount) else { throw CryptoError(.openssl, "EVP_Digest(SHA-256) failed: \(OpenSSLErrors.drain())") }
        return out
    }

    /// HMAC-SHA256 of `data` under `key`.
    public static func hmac(key: SecretKey, _ data: [UInt8]) throws -> [UInt8] {
        try key.withUnsafeBytes { try hmac(rawKey: $0, data) }
    }

    static func hmac(rawKey: UnsafeRawBufferPointer, _ data: [UInt8]) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: byteCount)
        var outLen = 0
        let keyPtr = rawKey.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!
        let r = data.withUnsafeBufferPointer { d in
            out.withUnsafeMutableBufferPointer { o in
                EVP_Q_mac(nil, "HMAC", nil, "SHA256", nil, keyPtr, rawKey.count,
                          d.baseAddress ?? UnsafePointer(bitPattern: 1), d.count, o.baseAddress, byteCount, &outLen)
            }
        }
        guard r != nil, outLen == byteCount else { throw CryptoError(.openssl, "HMAC-SHA256 failed: \(OpenSSLErrors.drain())") }
        return out
    }
}

/// HKDF with SHA-256 (RFC 5869): extract a pseudorandom key from input keying material, then
/// expand it into as many bytes as needed, bound to `info`.
public enum HKDF {
    /// Derives `outputByteCount` bytes (at most 255 * 32) from `inputKey`, `salt` and `info`.
    public static func deriveKey(inputKey: SecretKey, salt: [UInt8] = [], info: [UInt8] = [], outputByteCount: Int) throws -> SecretKey {
        guard outputByteCount >= 0, outputByteCount <= 255 * SHA256.byteCount else {
            throw CryptoError(.tooLarge, "HKDF-SHA256 can derive at most \(255 * SHA256.byteCount) bytes; asked for \(outputByteCount)")
        }
        // RFC 5869 2.2: PRK = HMAC-Hash(salt, IKM); an empty salt is HashLen zero bytes.
        let saltKey = SecretKey(bytes: salt.isEmpty ? [UInt8](repeating: 0, count: SHA256.byteCount) : salt)
        var prk = try inputKey.withUnsafeBytes { ikm in try SHA256.hmac(key: saltKey, Array(ikm)) }
        defer { prk.withUnsafeMutableBytes { if let b = $0.baseAddress { OPENSSL_cleanse(b, $0.count) } } }
        // RFC 5869 2.3: T(i) = HMAC-Hash(PRK, T(i-1) | info | i).
        var okm: [UInt8] = []
        var t: [UInt8] = []
        var counter: UInt8 = 1
        while okm.count < outputByteCount {
            t = try prk.withUnsafeBytes { try SHA256.hmac(rawKey: $0, t + info + [counter]) }
            okm += t
            counter &+= 1
        }
        defer {
            okm.withUnsafeMutableBytes { if let b = $0.baseAddress, $0.count > 0 { OPENSSL_cleanse(b, $0.count) } }
            t.withUnsafeMutableBytes { if let b = $0.baseAddress, $0.count > 0 { OPENSSL_cleanse(b, $0.count) } }
        }
        return SecretKey(bytes: okm.prefix(outputByteCount))
    }
}
