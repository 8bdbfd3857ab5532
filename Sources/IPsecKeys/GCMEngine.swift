import COpenSSL
import OverlayCrypto

/// One OpenSSL AES-GCM context with its key schedule set once, used in place for one direction
/// of one SA. Per packet only the nonce is set (`EVP_*Init_ex` with a nil cipher and key keeps
/// the expanded key), so sealing and opening allocate nothing.
///
/// `@unchecked Sendable`: every instance is owned by one ``ESPSealer`` or ``ESPOpener`` and only
/// used inside that owner's `Mutex.withLock`, so no two threads touch the OpenSSL context at once.
final class GCMEngine: @unchecked Sendable {
    private let ctx: OpaquePointer
    private let encrypt: Bool

    init(key: SecretKey, encrypt: Bool) throws(IPsecError) {
        let cipher: OpaquePointer?
        switch key.count {
        case 16: cipher = EVP_aes_128_gcm()
        case 24: cipher = EVP_aes_192_gcm()
        case 32: cipher = EVP_aes_256_gcm()
        default: throw IPsecError(.invalidKey, "AES-GCM key is \(key.count) bytes; use 16, 24 or 32")
        }
        guard let cipher, let c = EVP_CIPHER_CTX_new() else {
            throw IPsecError(.openssl, "OpenSSL has no AES-GCM context: \(Self.drainErrors())")
        }
        ctx = c
        self.encrypt = encrypt
        let ok: Bool = key.withUnsafeBytes { k in
            let kp = k.bindMemory(to: UInt8.self).baseAddress
            if encrypt {
                return EVP_EncryptInit_ex(c, cipher, nil, nil, nil) == 1
                    && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_IVLEN, 12, nil) == 1
                    && EVP_EncryptInit_ex(c, nil, nil, kp, nil) == 1
            } else {
                return EVP_DecryptInit_ex(c, cipher, nil, nil, nil) == 1
                    && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_IVLEN, 12, nil) == 1
                    && EVP_DecryptInit_ex(c, nil, nil, kp, nil) == 1
            }
        }
        guard ok else {
            EVP_CIPHER_CTX_free(c)
            throw IPsecError(.openssl, "setting up AES-GCM failed: \(Self.drainErrors())")
        }
    }

    deinit { EVP_CIPHER_CTX_free(ctx) }

    /// Encrypts `count` bytes at `data` in place, authenticating `aad`; writes `tagLength` tag bytes.
    func seal(nonce: UnsafePointer<UInt8>, aad: UnsafePointer<UInt8>, aadLength: Int,
              data: UnsafeMutablePointer<UInt8>, count: Int, tag: UnsafeMutableRawPointer, tagLength: Int) -> Bool {
        var len: Int32 = 0
        var scratch: UInt64 = 0
        guard EVP_EncryptInit_ex(ctx, nil, nil, nil, nonce) == 1,
              EVP_EncryptUpdate(ctx, nil, &len, aad, Int32(aadLength)) == 1,
              EVP_EncryptUpdate(ctx, data, &len, data, Int32(count)) == 1,
              withUnsafeMutableBytes(of: &scratch, { EVP_EncryptFinal_ex(ctx, $0.bindMemory(to: UInt8.self).baseAddress, &len) }) == 1,
              EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, Int32(tagLength), tag) == 1
        else {
            ERR_clear_error()
            return false
        }
        return true
    }

    /// Decrypts `count` bytes at `data` in place and verifies the `tagLength`-byte tag; false when
    /// it does not verify (the caller must then wipe `data`, which holds unauthenticated bytes).
    func open(nonce: UnsafePointer<UInt8>, aad: UnsafePointer<UInt8>, aadLength: Int,
              data: UnsafeMutablePointer<UInt8>, count: Int, tag: UnsafeMutableRawPointer, tagLength: Int) -> Bool {
        var len: Int32 = 0
        var scratch: UInt64 = 0
        guard EVP_DecryptInit_ex(ctx, nil, nil, nil, nonce) == 1,
              EVP_DecryptUpdate(ctx, nil, &len, aad, Int32(aadLength)) == 1,
              EVP_DecryptUpdate(ctx, data, &len, data, Int32(count)) == 1,
              EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, Int32(tagLength), tag) == 1,
              withUnsafeMutableBytes(of: &scratch, { EVP_DecryptFinal_ex(ctx, $0.bindMemory(to: UInt8.self).baseAddress, &len) }) == 1
        else {
            ERR_clear_error()
            return false
        }
        return true
    }

    static func drainErrors() -> String {
        var parts: [String] = []
        while true {
            let e = ERR_get_error()
            if e == 0 { break }
            var buf = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(e, &buf, buf.count)
            parts.append(String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return parts.isEmpty ? "no OpenSSL error queued" : parts.joined(separator: "; ")
    }
}
