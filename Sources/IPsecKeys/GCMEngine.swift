import COpenSSL
import OverlayCrypto

/// One AES-GCM context with its key schedule set once, for one direction of one SA. Per packet
/// only the nonce is set, so sealing and opening allocate nothing.
///
/// The context is the default provider's own AES-GCM context, driven through the provider's
/// functions (see `overlay_gcm_run` in the COpenSSL shim): OpenSSL 3's EVP layer costs about
/// 230 ns per call whatever the packet's size, this path about 130 ns, for the same cipher code.
/// When EVP would take the cipher from another provider (a FIPS-only configuration, say), or the
/// provider's context cannot be made, the engine uses EVP instead; ``usesProviderDirectly`` says which.
///
/// `@unchecked Sendable`: every instance is owned by one ``ESPSealer`` or ``ESPOpener`` and only
/// used inside that owner's `Mutex.withLock`, so no two threads touch the OpenSSL context at once.
final class GCMEngine: @unchecked Sendable {
    private enum Context {
        case provider(UnsafePointer<overlay_gcm_impl>, UnsafeMutableRawPointer)
        case evp(OpaquePointer)
    }

    private let context: Context
    private let encrypt: Bool

    /// Function tables that never change once looked up (and are never freed): safe to share.
    private struct Implementations: @unchecked Sendable {
        var byKeyLength: [Int: UnsafePointer<overlay_gcm_impl>] = [:]
    }

    /// The default provider's AES-GCM functions by key length (16, 24, 32), looked up once.
    private static let implementations: Implementations = {
        var found = Implementations()
        ERR_set_mark()  // a failed lookup's errors are dropped; the caller's queued ones are kept
        defer { ERR_pop_to_mark() }
        for (bytes, name) in [(16, "AES-128-GCM"), (24, "AES-192-GCM"), (32, "AES-256-GCM")] {
            let impl = UnsafeMutablePointer<overlay_gcm_impl>.allocate(capacity: 1)  // kept for the process
            if overlay_gcm_lookup(name, impl) == 1 {
                found.byKeyLength[bytes] = UnsafePointer(impl)
            } else {
                impl.deallocate()
            }
        }
        return found
    }()

    /// Whether this engine calls the provider directly (false: through EVP).
    var usesProviderDirectly: Bool {
        if case .provider = context { return true }
        return false
    }

    /// An engine for `key`; `viaEVP` forces the EVP path (tests compare the two).
    init(key: SecretKey, encrypt: Bool, viaEVP: Bool = false) throws(IPsecError) {
        guard [16, 24, 32].contains(key.count) else {
            throw IPsecError(.invalidKey, "AES-GCM key is \(key.count) bytes; use 16, 24 or 32")
        }
        self.encrypt = encrypt
        if !viaEVP, let impl = Self.implementations.byKeyLength[key.count] {
            let ctx = key.withUnsafeBytes { k in
                overlay_gcm_new(impl, k.bindMemory(to: UInt8.self).baseAddress, k.count, encrypt ? 1 : 0)
            }
            if let ctx {
                context = .provider(impl, ctx)
                return
            }
            ERR_clear_error()  // EVP below reports its own failure, if it fails too
        }
        context = .evp(try Self.evpContext(key: key, encrypt: encrypt))
    }

    private static func evpContext(key: SecretKey, encrypt: Bool) throws(IPsecError) -> OpaquePointer {
        let cipher: OpaquePointer?
        switch key.count {
        case 16: cipher = EVP_aes_128_gcm()
        case 24: cipher = EVP_aes_192_gcm()
        default: cipher = EVP_aes_256_gcm()
        }
        guard let cipher, let c = EVP_CIPHER_CTX_new() else {
            throw IPsecError(.openssl, "OpenSSL has no AES-GCM context: \(Self.drainErrors())")
        }
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
        return c
    }

    deinit {
        switch context {
        case .provider(let impl, let ctx): impl.pointee.freectx(ctx)
        case .evp(let c): EVP_CIPHER_CTX_free(c)
        }
    }

    /// Encrypts a text laid out in three pieces into `out`: `head` bytes already at `out` (in
    /// place), then `mid` bytes read from `from` and written after them, then `tail` bytes in place
    /// after those; authenticates `aad` and writes `tagLength` tag bytes. The pieces are one GCM
    /// message, as if the text were contiguous at `out`.
    func seal(nonce: UnsafePointer<UInt8>, aad: UnsafePointer<UInt8>, aadLength: Int,
              out: UnsafeMutablePointer<UInt8>, head: Int, from: UnsafePointer<UInt8>?, mid: Int, tail: Int,
              tag: UnsafeMutableRawPointer, tagLength: Int) -> Bool {
        precondition(encrypt)
        switch context {
        case .provider(let impl, let ctx):
            let ok = overlay_gcm_run(impl, ctx, 1, nonce, aad, aadLength, out, head, from, mid, tail,
                                     tag.assumingMemoryBound(to: UInt8.self), tagLength) == 1
            if !ok { ERR_clear_error() }
            return ok
        case .evp(let ctx):
            var len: Int32 = 0
            var scratch: UInt64 = 0
            let ok = EVP_EncryptInit_ex(ctx, nil, nil, nil, nonce) == 1
                && EVP_EncryptUpdate(ctx, nil, &len, aad, Int32(aadLength)) == 1
                && (head == 0 || EVP_EncryptUpdate(ctx, out, &len, out, Int32(head)) == 1)
                && (mid == 0 || EVP_EncryptUpdate(ctx, out + head, &len, from, Int32(mid)) == 1)
                && (tail == 0 || EVP_EncryptUpdate(ctx, out + head + mid, &len, out + head + mid, Int32(tail)) == 1)
                && withUnsafeMutableBytes(of: &scratch, { EVP_EncryptFinal_ex(ctx, $0.bindMemory(to: UInt8.self).baseAddress, &len) }) == 1
                && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, Int32(tagLength), tag) == 1
            if !ok { ERR_clear_error() }
            return ok
        }
    }

    /// Decrypts `count` bytes at `data` in place and verifies the `tagLength`-byte tag; false when
    /// it does not verify (the caller must then wipe `data`, which holds unauthenticated bytes).
    func open(nonce: UnsafePointer<UInt8>, aad: UnsafePointer<UInt8>, aadLength: Int,
              data: UnsafeMutablePointer<UInt8>, count: Int, tag: UnsafeMutableRawPointer, tagLength: Int) -> Bool {
        precondition(!encrypt)
        switch context {
        case .provider(let impl, let ctx):
            let ok = overlay_gcm_run(impl, ctx, 0, nonce, aad, aadLength, data, count, nil, 0, 0,
                                     tag.assumingMemoryBound(to: UInt8.self), tagLength) == 1
            if !ok { ERR_clear_error() }
            return ok
        case .evp(let ctx):
            var len: Int32 = 0
            var scratch: UInt64 = 0
            let ok = EVP_DecryptInit_ex(ctx, nil, nil, nil, nonce) == 1
                && EVP_DecryptUpdate(ctx, nil, &len, aad, Int32(aadLength)) == 1
                && EVP_DecryptUpdate(ctx, data, &len, data, Int32(count)) == 1
                && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, Int32(tagLength), tag) == 1
                && withUnsafeMutableBytes(of: &scratch, { EVP_DecryptFinal_ex(ctx, $0.bindMemory(to: UInt8.self).baseAddress, &len) }) == 1
            if !ok { ERR_clear_error() }
            return ok
        }
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
