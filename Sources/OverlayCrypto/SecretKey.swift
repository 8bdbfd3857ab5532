import COpenSSL

/// Key bytes kept in their own allocation, zeroed with `OPENSSL_cleanse` when released, compared
/// in constant time, and never printed.
public struct SecretKey: Sendable, Equatable, Hashable, CustomStringConvertible, CustomDebugStringConvertible {
    // Sendable: `Storage` is immutable after init (the bytes are written once in `init` and only
    // read afterwards), so sharing it across threads is safe.
    private final class Storage: @unchecked Sendable {
        let pointer: UnsafeMutableRawBufferPointer

        init(count: Int) {
            pointer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(count, 1), alignment: 16)
            if count == 0 {
                // Keep a zero-length view over a 1-byte allocation so base addresses are never nil.
                pointer[0] = 0
            }
        }

        deinit {
            if let base = pointer.baseAddress { OPENSSL_cleanse(base, pointer.count) }
            pointer.deallocate()
        }
    }

    private let storage: Storage
    /// Number of key bytes.
    public let count: Int

    /// Copies `bytes` into zeroizing storage.
    public init<Bytes: Sequence>(bytes: Bytes) where Bytes.Element == UInt8 {
        var copy = Array(bytes)
        storage = Storage(count: copy.count)
        count = copy.count
        copy.withUnsafeBytes { src in
            if let s = src.baseAddress, let d = storage.pointer.baseAddress, src.count > 0 {
                d.copyMemory(from: s, byteCount: src.count)
            }
        }
        copy.withUnsafeMutableBytes { tmp in
            if let b = tmp.baseAddress, tmp.count > 0 { OPENSSL_cleanse(b, tmp.count) }
        }
    }

    /// A new key of `byteCount` random bytes from OpenSSL's CSPRNG.
    public static func random(byteCount: Int) throws -> SecretKey {
        var bytes = try SecureRandom.bytes(count: byteCount)
        defer { bytes.withUnsafeMutableBytes { if let b = $0.baseAddress, $0.count > 0 { OPENSSL_cleanse(b, $0.count) } } }
        return SecretKey(bytes: bytes)
    }

    /// Calls `body` with the key bytes; the pointer must not escape.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(rebasing: storage.pointer[0..<count]))
    }

    /// Constant-time equality (`CRYPTO_memcmp`); keys of different lengths are unequal.
    public static func == (lhs: SecretKey, rhs: SecretKey) -> Bool {
        guard lhs.count == rhs.count else { return false }
        if lhs.count == 0 { return true }
        return CRYPTO_memcmp(lhs.storage.pointer.baseAddress!, rhs.storage.pointer.baseAddress!, lhs.count) == 0
    }

    /// Hashes only the length, so key bytes never feed a hash table's observable behaviour.
    public func hash(into hasher: inout Hasher) { hasher.combine(count) }

    /// Always redacted: `SecretKey(<redacted>, 16 bytes)`.
    public var description: String { "SecretKey(<redacted>, \(count) bytes)" }
    /// Always redacted, like `description`.
    public var debugDescription: String { description }
}

/// Random bytes from OpenSSL's CSPRNG (`RAND_bytes`).
public enum SecureRandom {
    /// Returns `count` cryptographically secure random bytes, or throws if OpenSSL cannot provide them.
    public static func bytes(count: Int) throws -> [UInt8] {
        guard count >= 0, count <= Int(Int32.max) else {
            throw CryptoError(.tooLarge, "cannot draw \(count) random bytes; ask for 0...\(Int32.max)")
        }
        var out = [UInt8](repeating: 0, count: count)
        if count == 0 { return out }
        let rc = out.withUnsafeMutableBufferPointer { RAND_bytes($0.baseAddress, Int32(count)) }
        guard rc == 1 else { throw CryptoError(.openssl, "RAND_bytes failed: \(OpenSSLErrors.drain())") }
        return out
    }
}

enum OpenSSLErrors {
    /// Drains OpenSSL's thread error queue into one line.
    static func drain() -> String {
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
