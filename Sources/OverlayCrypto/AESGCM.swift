import COpenSSL

/// AES-GCM (NIST SP 800-38D) with 128/192/256-bit keys, a 12-byte nonce and a 16-byte tag, over
/// OpenSSL's EVP interface.
public enum AESGCM {
    /// Nonce length in bytes.
    public static let nonceByteCount = 12
    /// Tag length in bytes.
    public static let tagByteCount = 16

    /// Ciphertext and tag kept apart (as ESP wants them).
    public struct SealedBox: Sendable, Equatable {
        /// Encrypted bytes, as long as the plaintext.
        public var ciphertext: [UInt8]
        /// The 16-byte authentication tag.
        public var tag: [UInt8]
        /// `ciphertext || tag`, the layout Go's `cipher.AEAD.Seal` produces.
        public var combined: [UInt8] { ciphertext + tag }
        /// Wraps a ciphertext and its tag.
        public init(ciphertext: [UInt8], tag: [UInt8]) {
            self.ciphertext = ciphertext
            self.tag = tag
        }
    }

    /// Encrypts and authenticates `plaintext`, also authenticating `aad`.
    public static func seal(
        _ plaintext: [UInt8], key: SecretKey, nonce: [UInt8], aad: [UInt8] = []
    ) throws -> SealedBox {
        let cipher = try cipherFor(key)
        try checkNonce(nonce)
        guard plaintext.count <= Int(Int32.max), aad.count <= Int(Int32.max) else {
            throw CryptoError(.tooLarge, "AES-GCM input over 2 GiB; split it")
        }
        let ctx = try Context()
        var out = [UInt8](repeating: 0, count: plaintext.count)
        var tag = [UInt8](repeating: 0, count: tagByteCount)
        try key.withUnsafeBytes { k in
            try nonce.withUnsafeBufferPointer { n in
                try ctx.check(EVP_EncryptInit_ex(ctx.raw, cipher, nil, nil, nil), "EVP_EncryptInit_ex")
                try ctx.check(EVP_CIPHER_CTX_ctrl(ctx.raw, EVP_CTRL_AEAD_SET_IVLEN, Int32(nonceByteCount), nil), "set IV length")
                try ctx.check(EVP_EncryptInit_ex(ctx.raw, nil, nil, k.bindMemory(to: UInt8.self).baseAddress, n.baseAddress), "set key/IV")
            }
        }
        var len: Int32 = 0
        if !aad.isEmpty {
            try aad.withUnsafeBufferPointer { a in
                try ctx.check(EVP_EncryptUpdate(ctx.raw, nil, &len, a.baseAddress, Int32(a.count)), "AAD")
            }
        }
        if !plaintext.isEmpty {
            try plaintext.withUnsafeBufferPointer { p in
                try out.withUnsafeMutableBufferPointer { o in
                    try ctx.check(EVP_EncryptUpdate(ctx.raw, o.baseAddress, &len, p.baseAddress, Int32(p.count)), "encrypt")
                }
            }
        }
        var scratch = [UInt8](repeating: 0, count: 16)
        try ctx.check(EVP_EncryptFinal_ex(ctx.raw, &scratch, &len), "EVP_EncryptFinal_ex")
        try tag.withUnsafeMutableBytes { t in
            try ctx.check(EVP_CIPHER_CTX_ctrl(ctx.raw, EVP_CTRL_AEAD_GET_TAG, Int32(tagByteCount), t.baseAddress), "get tag")
        }
        return SealedBox(ciphertext: out, tag: tag)
    }

    /// Verifies `tag` over `ciphertext` and `aad`, then decrypts; throws `.authenticationFailed` on mismatch.
    public static func open(
        ciphertext: [UInt8], tag: [UInt8], key: SecretKey, nonce: [UInt8], aad: [UInt8] = []
    ) throws -> [UInt8] {
        let cipher = try cipherFor(key)
        try checkNonce(nonce)
        guard tag.count == tagByteCount else {
            throw CryptoError(.truncatedInput, "AES-GCM tag is \(tag.count) bytes; it must be \(tagByteCount)")
        }
        guard ciphertext.count <= Int(Int32.max), aad.count <= Int(Int32.max) else {
            throw CryptoError(.tooLarge, "AES-GCM input over 2 GiB; split it")
        }
        let ctx = try Context()
        var out = [UInt8](repeating: 0, count: ciphertext.count)
        try key.withUnsafeBytes { k in
            try nonce.withUnsafeBufferPointer { n in
                try ctx.check(EVP_DecryptInit_ex(ctx.raw, cipher, nil, nil, nil), "EVP_DecryptInit_ex")
                try ctx.check(EVP_CIPHER_CTX_ctrl(ctx.raw, EVP_CTRL_AEAD_SET_IVLEN, Int32(nonceByteCount), nil), "set IV length")
                try ctx.check(EVP_DecryptInit_ex(ctx.raw, nil, nil, k.bindMemory(to: UInt8.self).baseAddress, n.baseAddress), "set key/IV")
            }
        }
        var len: Int32 = 0
        if !aad.isEmpty {
            try aad.withUnsafeBufferPointer { a in
                try ctx.check(EVP_DecryptUpdate(ctx.raw, nil, &len, a.baseAddress, Int32(a.count)), "AAD")
            }
        }
        if !ciphertext.isEmpty {
            try ciphertext.withUnsafeBufferPointer { c in
                try out.withUnsafeMutableBufferPointer { o in
                    try ctx.check(EVP_DecryptUpdate(ctx.raw, o.baseAddress, &len, c.baseAddress, Int32(c.count)), "decrypt")
                }
            }
        }
        var tagCopy = tag
        try tagCopy.withUnsafeMutableBytes { t in
            try ctx.check(EVP_CIPHER_CTX_ctrl(ctx.raw, EVP_CTRL_AEAD_SET_TAG, Int32(tagByteCount), t.baseAddress), "set tag")
        }
        var scratch = [UInt8](repeating: 0, count: 16)
        guard EVP_DecryptFinal_ex(ctx.raw, &scratch, &len) == 1 else {
            ERR_clear_error()
            out.withUnsafeMutableBytes { if let b = $0.baseAddress, $0.count > 0 { OPENSSL_cleanse(b, $0.count) } }
            throw CryptoError(.authenticationFailed, "AES-GCM tag mismatch: wrong key, wrong AAD, or the bytes were altered")
        }
        return out
    }

    /// Seals and returns `ciphertext || tag` (Go's `gcm.Seal` layout).
    public static func sealCombined(_ plaintext: [UInt8], key: SecretKey, nonce: [UInt8], aad: [UInt8] = []) throws -> [UInt8] {
        try seal(plaintext, key: key, nonce: nonce, aad: aad).combined
    }

    /// Opens `ciphertext || tag` (Go's `gcm.Open` layout).
    public static func openCombined(_ sealed: [UInt8], key: SecretKey, nonce: [UInt8], aad: [UInt8] = []) throws -> [UInt8] {
        guard sealed.count >= tagByteCount else {
            throw CryptoError(.truncatedInput, "AES-GCM input is \(sealed.count) bytes, shorter than the \(tagByteCount)-byte tag")
        }
        let split = sealed.count - tagByteCount
        return try open(ciphertext: Array(sealed[..<split]), tag: Array(sealed[split...]), key: key, nonce: nonce, aad: aad)
    }

    private static func cipherFor(_ key: SecretKey) throws -> OpaquePointer {
        let c: OpaquePointer?
        switch key.count {
        case 16: c = EVP_aes_128_gcm()
        case 24: c = EVP_aes_192_gcm()
        case 32: c = EVP_aes_256_gcm()
        default:
            throw CryptoError(.invalidKeyLength, "AES-GCM key is \(key.count) bytes; use 16, 24 or 32")
        }
        guard let cipher = c else { throw CryptoError(.openssl, "OpenSSL has no AES-GCM cipher: \(OpenSSLErrors.drain())") }
        return cipher
    }

    private static func checkNonce(_ nonce: [UInt8]) throws {
        guard nonce.count == nonceByteCount else {
            throw CryptoError(.invalidNonceLength, "AES-GCM nonce is \(nonce.count) bytes; use \(nonceByteCount)")
        }
    }

    /// Owns one `EVP_CIPHER_CTX`, freed in `deinit`.
    private final class Context {
        let raw: OpaquePointer
        init() throws {
            guard let c = EVP_CIPHER_CTX_new() else {
                throw CryptoError(.openssl, "EVP_CIPHER_CTX_new failed: \(OpenSSLErrors.drain())")
            }
            raw = c
        }
        deinit { EVP_CIPHER_CTX_free(raw) }
        func check(_ rc: Int32, _ what: String) throws {
            guard rc == 1 else { throw CryptoError(.openssl, "\(what) failed: \(OpenSSLErrors.drain())") }
        }
    }
}
