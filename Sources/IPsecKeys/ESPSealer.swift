import OverlayCrypto
import Synchronization

/// ESP wire layout (RFC 4303 2, RFC 4106 3) shared by the sealer and the opener.
public enum ESP {
    /// IP protocol number of ESP.
    public static let ipProtocol: UInt8 = 50
    /// SPI (4) + sequence number (4) + explicit IV (8): the bytes before the ciphertext.
    public static let headerLength = 16
    /// Pad Length + Next Header.
    static let trailerLength = 2

    /// Ciphertext length for a payload: payload, padding, pad length and next header, padded to a
    /// multiple of 4 (RFC 4303 2.4; GCM's block size is 1, so 4-byte alignment is all that is needed,
    /// as Linux's esp4 does).
    public static func ciphertextLength(payloadLength: Int) -> Int { (payloadLength + trailerLength + 3) & ~3 }

    /// The whole ESP packet's length (header, ciphertext, ICV) for a payload.
    public static func sealedLength(payloadLength: Int, icvLength: ESPICVLength) -> Int {
        headerLength + ciphertextLength(payloadLength: payloadLength) + icvLength.rawValue
    }

    /// The most bytes ESP adds to a payload: header, up to 3 padding bytes, trailer, ICV
    /// (Docker's MTU arithmetic counts 26 with an 8-byte ICV and leaves the padding to alignment).
    public static func maximumOverhead(icvLength: ESPICVLength) -> Int { headerLength + 3 + trailerLength + icvLength.rawValue }
}

@inline(__always) func storeBE32(_ v: UInt32, _ p: UnsafeMutableRawPointer, _ at: Int) {
    p.storeBytes(of: v.bigEndian, toByteOffset: at, as: UInt32.self)
}

@inline(__always) func storeBE64(_ v: UInt64, _ p: UnsafeMutableRawPointer, _ at: Int) {
    p.storeBytes(of: v.bigEndian, toByteOffset: at, as: UInt64.self)
}

@inline(__always) func loadBE32(_ p: UnsafeRawPointer, _ at: Int) -> UInt32 {
    UInt32(bigEndian: p.loadUnaligned(fromByteOffset: at, as: UInt32.self))
}

/// Seals payloads into ESP packets for one outbound SA (transport mode, AES-GCM, RFC 4303/4106).
///
/// Output: `SPI | seq (low 32 bits) | IV (8) | ciphertext of payload, padding 1,2,3..., pad
/// length, next header | ICV (8 or 16)`, the layout Linux xfrm produces for the same SA. The
/// sequence number starts at 1 and never wraps: past the SA's hard limit sealing throws
/// `.sequenceExhausted` (counted) and ``needsRekey`` turns true well before.
///
/// The explicit IV is `seq XOR ivMask` (big-endian), the construction of Linux's `seqiv` (which
/// xfrm uses for rfc4106): unique per packet within the SA, and, with a random mask, not the
/// same sequence across SAs. Docker's salt is the SPI and one key serves every host pair, so two
/// pairs whose 32-bit SPIs collide share key and salt; a plain counter IV would then repeat
/// nonces (fatal for GCM), the random mask makes that a 2^-32 event instead.
///
/// Thread-safe (the counter and the OpenSSL context sit behind a mutex); meant to be owned by one
/// datapath queue. Do not make two sealers for one SA: they would reuse sequence numbers.
public final class ESPSealer: Sendable {
    private struct State {
        let engine: GCMEngine
        var lastSequence: UInt64
        var counters = ESPCounters()
    }

    /// The SA this sealer sends with.
    public let securityAssociation: ESPSecurityAssociation
    private let ivMask: UInt64
    private let state: Mutex<State>

    /// A sealer for `sa`. `ivMask` nil draws a random one (pass 0 only in tests, for IV = seq);
    /// `lastSequenceNumber` is the number already used (0 for a new SA; tests start near 2^32).
    public init(_ sa: ESPSecurityAssociation, ivMask: UInt64? = nil, lastSequenceNumber: UInt64 = 0) throws(IPsecError) {
        securityAssociation = sa
        if let m = ivMask {
            self.ivMask = m
        } else {
            let r: [UInt8]
            do { r = try SecureRandom.bytes(count: 8) } catch { throw IPsecError(.openssl, "cannot draw an ESP IV mask: \(error)") }
            self.ivMask = r.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        }
        state = Mutex(State(engine: try GCMEngine(key: sa.key, encrypt: true), lastSequence: lastSequenceNumber))
    }

    /// The SA's SPI.
    public var spi: SPI { securityAssociation.spi }
    /// The sequence number of the last packet sealed (0 before the first).
    public var lastSequenceNumber: UInt64 { state.withLock { $0.lastSequence } }
    /// True once the sequence number reached the SA's soft limit: ask the managers for a new key
    /// (or a new SA) now, before the hard limit stops all traffic.
    public var needsRekey: Bool { state.withLock { $0.lastSequence } >= securityAssociation.softSequenceLimit }
    /// A snapshot of this sealer's counters.
    public var counters: ESPCounters { state.withLock { $0.counters } }

    /// The sealed packet length for a payload of `payloadLength` bytes under this SA.
    public func sealedLength(payloadLength: Int) -> Int {
        ESP.sealedLength(payloadLength: payloadLength, icvLength: securityAssociation.icvLength)
    }

    /// Seals `payload` (for VXLAN: the whole UDP datagram) with `nextHeader` (17 for UDP) and
    /// returns the ESP packet (what follows the outer IP header).
    public func seal(payload: [UInt8], nextHeader: UInt8) throws(IPsecError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: sealedLength(payloadLength: payload.count))
        let result = out.withUnsafeMutableBytes { b -> Result<Int, IPsecError> in
            payload.withUnsafeBytes { p in
                if let s = p.baseAddress, p.count > 0 { (b.baseAddress! + ESP.headerLength).copyMemory(from: s, byteCount: p.count) }
            }
            do throws(IPsecError) { return .success(try seal(into: b, payloadLength: payload.count, nextHeader: nextHeader)) } catch {
                return .failure(error)
            }
        }
        let n = try result.get()
        precondition(n == out.count)
        return out
    }

    /// Seals in place without allocating: the payload must already sit at
    /// `buffer[ESP.headerLength ..< ESP.headerLength + payloadLength]`, and `buffer` must hold
    /// ``sealedLength(payloadLength:)`` bytes. Writes the header before the payload and the
    /// trailer and ICV after it, encrypts, and returns the packet's length (from `buffer[0]`).
    public func seal(into buffer: UnsafeMutableRawBufferPointer, payloadLength: Int, nextHeader: UInt8) throws(IPsecError) -> Int {
        try seal(into: buffer, headLength: payloadLength, rest: nil, restLength: 0, nextHeader: nextHeader)
    }

    /// Seals a payload in two parts without copying the second: its first `headLength` bytes
    /// already sit at `buffer[ESP.headerLength...]`, the other `rest.count` bytes are read from
    /// `rest` (say, a TCP segment's data still in the super-frame it was cut from) and encrypted
    /// straight into the buffer after the head. The packet is the one ``seal(into:payloadLength:nextHeader:)``
    /// makes of the two parts laid end to end; `buffer` must hold ``sealedLength(payloadLength:)``
    /// bytes for the whole payload, and `rest` must not overlap it.
    public func seal(into buffer: UnsafeMutableRawBufferPointer, headLength: Int, rest: UnsafeRawBufferPointer,
                     nextHeader: UInt8) throws(IPsecError) -> Int {
        try seal(into: buffer, headLength: headLength, rest: rest.baseAddress, restLength: rest.count, nextHeader: nextHeader)
    }

    private func seal(into buffer: UnsafeMutableRawBufferPointer, headLength: Int, rest: UnsafeRawPointer?, restLength: Int,
                      nextHeader: UInt8) throws(IPsecError) -> Int {
        let sa = securityAssociation
        let limit = Int(Int32.max) - 64
        guard (0...limit).contains(headLength), (0...(limit - headLength)).contains(restLength), rest != nil || restLength == 0 else {
            throw IPsecError(.bufferTooSmall, "an ESP payload must be 0...\(limit) bytes, got \(headLength) + \(restLength)")
        }
        let payloadLength = headLength + restLength
        let ctLen = ESP.ciphertextLength(payloadLength: payloadLength)
        let total = ESP.headerLength + ctLen + sa.icvLength.rawValue
        guard let base = buffer.baseAddress, buffer.count >= total else {
            throw IPsecError(.bufferTooSmall, "an ESP packet for a \(payloadLength)-byte payload needs \(total) bytes; the buffer has \(buffer.count)")
        }
        if let rest, restLength > 0 {
            let start = UnsafeRawPointer(base)
            guard rest + restLength <= start || rest >= start + total else {
                throw IPsecError(.invalidParameter, "the second part of an ESP payload overlaps the buffer it is sealed into")
            }
        }
        // Trailer (RFC 4303 2.4, 2.5, 2.6): padding 1, 2, 3, ..., pad length, next header.
        let padLen = ctLen - payloadLength - ESP.trailerLength
        let tail = base + ESP.headerLength + payloadLength
        for i in 0..<padLen { tail.storeBytes(of: UInt8(i + 1), toByteOffset: i, as: UInt8.self) }
        tail.storeBytes(of: UInt8(padLen), toByteOffset: padLen, as: UInt8.self)
        tail.storeBytes(of: nextHeader, toByteOffset: padLen + 1, as: UInt8.self)

        let ok: Bool? = state.withLock { st -> Bool? in
            guard st.lastSequence < sa.hardSequenceLimit else {
                st.counters.sequenceExhausted &+= 1
                return nil
            }
            st.lastSequence += 1
            let seq = st.lastSequence
            // Header (RFC 4303 2.1, 2.2; RFC 4106 3.1): SPI, low 32 bits of seq, explicit IV.
            storeBE32(sa.spi.rawValue, base, 0)
            storeBE32(UInt32(truncatingIfNeeded: seq), base, 4)
            storeBE64(seq ^ ivMask, base, 8)
            return withUnsafeTemporaryAllocation(byteCount: 32, alignment: 8) { scratch -> Bool in
                let s = scratch.baseAddress!
                // Nonce (RFC 4106 4): salt || explicit IV.
                storeBE32(sa.salt, s, 0)
                (s + 4).copyMemory(from: base + 8, byteCount: 8)
                // AAD (RFC 4106 5): SPI || seq, or SPI || seq-hi || seq-lo with ESN.
                let aad: UnsafeRawPointer
                let aadLen: Int
                if sa.extendedSequenceNumbers {
                    storeBE32(sa.spi.rawValue, s, 16)
                    storeBE64(seq, s, 20)
                    aad = UnsafeRawPointer(s + 16)
                    aadLen = 12
                } else {
                    aad = UnsafeRawPointer(base)
                    aadLen = 8
                }
                let ok = st.engine.seal(
                    nonce: UnsafeRawPointer(s).assumingMemoryBound(to: UInt8.self),
                    aad: aad.assumingMemoryBound(to: UInt8.self), aadLength: aadLen,
                    out: (base + ESP.headerLength).assumingMemoryBound(to: UInt8.self), head: headLength,
                    from: rest?.assumingMemoryBound(to: UInt8.self), mid: restLength, tail: ctLen - payloadLength,
                    tag: base + ESP.headerLength + ctLen, tagLength: sa.icvLength.rawValue)
                if ok {
                    st.counters.sealedPackets &+= 1
                    st.counters.sealedBytes &+= UInt64(payloadLength)
                }
                return ok
            }
        }
        switch ok {
        case .none:
            throw IPsecError(.sequenceExhausted, "ESP SA \(sa.spi) has sent its last sequence number; rotate the key (a new SA) to send again")
        case .some(false):
            throw IPsecError(.openssl, "AES-GCM encryption failed in OpenSSL")
        case .some(true):
            return total
        }
    }
}
