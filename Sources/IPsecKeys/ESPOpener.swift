import OverlayCrypto
import Synchronization

/// The RFC 4303 3.4.3 anti-replay window with extended-sequence-number inference (Appendix A2).
///
/// Bit `i` of the bitmap records whether sequence number `top - i` was received.
struct ReplayWindow: Sendable {
    let size: Int
    private(set) var top: UInt64 = 0
    private var words: [UInt64]

    init(size: Int, highestReceived: UInt64 = 0) {
        self.size = size
        top = highestReceived
        words = [UInt64](repeating: 0, count: (size + 63) / 64)
        if highestReceived > 0 { words[0] = 1 }
    }

    /// The full sequence number for a received low half (RFC 4303 A2.2), or nil when it would lie
    /// below sequence number space (before the SA's start).
    func infer(low: UInt32, extended: Bool) -> UInt64? {
        guard extended else { return UInt64(low) }
        let tl = UInt32(truncatingIfNeeded: top)
        let th = UInt32(truncatingIfNeeded: top >> 32)
        let w = UInt32(size)
        if tl >= w - 1 {
            // Case A: the window lies within one sequence-number subspace.
            if low >= tl - (w - 1) { return UInt64(th) << 32 | UInt64(low) }
            guard th < UInt32.max else { return nil }
            return UInt64(th + 1) << 32 | UInt64(low)
        } else {
            // Case B: the window spans two subspaces.
            let bl = tl &- w &+ 1
            if low >= bl {
                guard th > 0 else { return nil }
                return UInt64(th - 1) << 32 | UInt64(low)
            }
            return UInt64(th) << 32 | UInt64(low)
        }
    }

    enum Verdict { case fresh, replayed, outside }

    /// Whether `seq` may be accepted (checked before and after the ICV, updated only after).
    func check(_ seq: UInt64) -> Verdict {
        if seq == 0 { return .outside }  // never sent: the first packet is 1
        if seq > top { return .fresh }
        let d = top - seq
        if d >= UInt64(size) { return .outside }
        let i = Int(d)
        return words[i >> 6] & (1 << UInt64(i & 63)) != 0 ? .replayed : .fresh
    }

    /// Records `seq` as received, sliding the window when it is the newest.
    mutating func accept(_ seq: UInt64) {
        if seq > top {
            let d = seq - top
            if d >= UInt64(size) {
                for i in words.indices { words[i] = 0 }
            } else {
                let ws = Int(d) >> 6, bs = UInt64(d & 63)
                var w = words.count - 1
                while w >= 0 {
                    let src = w - ws
                    var v: UInt64 = src >= 0 ? words[src] << bs : 0
                    if bs > 0, src - 1 >= 0 { v |= words[src - 1] >> (64 - bs) }
                    words[w] = v
                    w -= 1
                }
            }
            top = seq
            words[0] |= 1
        } else {
            let i = Int(top - seq)
            words[i >> 6] |= 1 << UInt64(i & 63)
        }
    }
}

/// A packet the opener accepted: where its payload lies, and what carried it.
public struct ESPOpenedRange: Sendable, Equatable {
    /// The decrypted payload's place in the buffer that was opened.
    public var payload: Range<Int>
    /// The Next Header field (17 = UDP; 59 = a dummy TFC packet to drop, RFC 4303 2.6).
    public var nextHeader: UInt8
    /// The SA that authenticated it.
    public var spi: SPI
    /// Its full (inferred, with ESN) sequence number.
    public var sequenceNumber: UInt64
}

/// A packet the opener accepted, with its payload copied out.
public struct ESPOpenedPacket: Sendable, Equatable {
    /// The decrypted payload (for VXLAN: the UDP datagram).
    public var payload: [UInt8]
    /// The Next Header field (17 = UDP).
    public var nextHeader: UInt8
    /// The SA that authenticated it.
    public var spi: SPI
    /// Its full (inferred, with ESN) sequence number.
    public var sequenceNumber: UInt64
}

/// Opens ESP packets for the inbound SAs of one host (several at once while keys rotate), keyed by SPI.
///
/// Order of checks (RFC 4303 3.4): length, SPI lookup, sequence number against the anti-replay
/// window, ICV (AES-GCM), then the trailer; the window moves only for packets that pass all of
/// them, so a forged packet can neither replay nor push the window. Every refusal throws an
/// ``IPsecError`` with the reason's code and counts it in ``counters``.
///
/// SPIs are 32-bit hashes (Docker's derivation), so two peers' SAs to this host can collide;
/// `add` refuses a duplicate. A datapath that sees such a collision can keep one opener per peer
/// address (the outer source address picks it), which Linux cannot do.
///
/// Thread-safe behind a mutex; meant to be owned by one datapath queue.
public final class ESPOpener: Sendable {
    // `@unchecked Sendable`: instances live only in `state` and are read or changed only inside
    // `state.withLock`, so the window and the OpenSSL context never see two threads at once.
    private final class Inbound: @unchecked Sendable {
        let sa: ESPSecurityAssociation
        let engine: GCMEngine
        var window: ReplayWindow
        init(_ sa: ESPSecurityAssociation, highestReceived: UInt64) throws(IPsecError) {
            self.sa = sa
            engine = try GCMEngine(key: sa.key, encrypt: false)
            window = ReplayWindow(size: sa.replayWindowSize, highestReceived: highestReceived)
        }
    }

    private struct State {
        var sas: [UInt32: Inbound] = [:]
        var counters = ESPCounters()
    }

    private let state = Mutex(State())

    /// An opener with no SAs (every packet is `unknownSPI` until `add`).
    public init() {}

    /// An opener with `sas` installed.
    public convenience init(_ sas: [ESPSecurityAssociation]) throws(IPsecError) {
        self.init()
        for sa in sas { try add(sa) }
    }

    /// Installs an inbound SA; throws `.duplicateSPI` if its SPI is taken. The replay window
    /// starts empty, or, to resume an SA (and in tests), with `highestReceived` marked received:
    /// with ESN the high half of later sequence numbers is inferred from it (RFC 4303 A2).
    public func add(_ sa: ESPSecurityAssociation, highestReceived: UInt64 = 0) throws(IPsecError) {
        let inbound = try Inbound(sa, highestReceived: highestReceived)
        let added = state.withLock { st -> Bool in
            guard st.sas[sa.spi.rawValue] == nil else { return false }
            st.sas[sa.spi.rawValue] = inbound
            return true
        }
        guard added else {
            throw IPsecError(.duplicateSPI, "an inbound SA with SPI \(sa.spi) is already installed; remove it first or open this peer's packets with its own opener")
        }
    }

    /// Removes the inbound SA with `spi`; returns whether one was installed.
    @discardableResult
    public func remove(spi: SPI) -> Bool {
        state.withLock { $0.sas.removeValue(forKey: spi.rawValue) != nil }
    }

    /// The SPIs installed, ascending.
    public var spis: [SPI] { state.withLock { $0.sas.keys.compactMap { SPI(rawValue: $0) } }.sorted() }
    /// A snapshot of the counters.
    public var counters: ESPCounters { state.withLock { $0.counters } }
    /// The highest sequence number accepted on `spi` (0 before the first), or nil if not installed.
    public func highestSequenceNumber(spi: SPI) -> UInt64? { state.withLock { $0.sas[spi.rawValue]?.window.top } }

    /// Opens `packet` (the ESP header onwards) and returns the payload copied out.
    public func open(_ packet: [UInt8]) throws(IPsecError) -> ESPOpenedPacket {
        var copy = packet
        let result = copy.withUnsafeMutableBytes { b -> Result<ESPOpenedRange, IPsecError> in
            do throws(IPsecError) { return .success(try open(inPlace: b)) } catch { return .failure(error) }
        }
        let r = try result.get()
        return ESPOpenedPacket(payload: Array(copy[r.payload]), nextHeader: r.nextHeader, spi: r.spi, sequenceNumber: r.sequenceNumber)
    }

    /// Opens the ESP packet filling `buffer`, decrypting in place without allocating, and returns
    /// where the payload lies. On an ICV failure the decrypted bytes are wiped.
    public func open(inPlace buffer: UnsafeMutableRawBufferPointer) throws(IPsecError) -> ESPOpenedRange {
        enum Outcome {
            case ok(ESPOpenedRange)
            case fail(IPsecError.Code)
        }
        let outcome: Outcome = state.withLock { st -> Outcome in
            func fail(_ code: IPsecError.Code, _ bump: (inout ESPCounters) -> Void) -> Outcome {
                bump(&st.counters)
                return .fail(code)
            }
            guard let base = buffer.baseAddress, buffer.count >= 8 else { return fail(.tooShort) { $0.tooShort &+= 1 } }
            let spiValue = loadBE32(base, 0)
            guard let inbound = st.sas[spiValue], let spi = SPI(rawValue: spiValue) else {
                return fail(.unknownSPI) { $0.unknownSPI &+= 1 }
            }
            let sa = inbound.sa
            let icv = sa.icvLength.rawValue
            let ctLen = buffer.count - ESP.headerLength - icv
            guard ctLen >= ESP.trailerLength, ctLen <= Int(Int32.max) else { return fail(.tooShort) { $0.tooShort &+= 1 } }
            guard let seq = inbound.window.infer(low: loadBE32(base, 4), extended: sa.extendedSequenceNumbers) else {
                return fail(.outsideWindow) { $0.outsideWindow &+= 1 }
            }
            switch inbound.window.check(seq) {
            case .replayed: return fail(.replayed) { $0.replayed &+= 1 }
            case .outside: return fail(.outsideWindow) { $0.outsideWindow &+= 1 }
            case .fresh: break
            }
            let data = (base + ESP.headerLength).assumingMemoryBound(to: UInt8.self)
            let verified = withUnsafeTemporaryAllocation(byteCount: 32, alignment: 8) { scratch -> Bool in
                let s = scratch.baseAddress!
                storeBE32(sa.salt, s, 0)
                (s + 4).copyMemory(from: base + 8, byteCount: 8)
                let aad: UnsafeRawPointer
                let aadLen: Int
                if sa.extendedSequenceNumbers {
                    storeBE32(spiValue, s, 16)
                    storeBE64(seq, s, 20)
                    aad = UnsafeRawPointer(s + 16)
                    aadLen = 12
                } else {
                    aad = UnsafeRawPointer(base)
                    aadLen = 8
                }
                return inbound.engine.open(
                    nonce: UnsafeRawPointer(s).assumingMemoryBound(to: UInt8.self),
                    aad: aad.assumingMemoryBound(to: UInt8.self), aadLength: aadLen,
                    data: data, count: ctLen, tag: base + ESP.headerLength + ctLen, tagLength: icv)
            }
            guard verified else {
                (base + ESP.headerLength).initializeMemory(as: UInt8.self, repeating: 0, count: ctLen)
                return fail(.authFailed) { $0.authFailed &+= 1 }
            }
            // Trailer (RFC 4303 2.4-2.6): padding must be 1, 2, 3, ... and fit the ciphertext.
            let padLen = Int(data[ctLen - 2])
            let nextHeader = data[ctLen - 1]
            guard padLen + ESP.trailerLength <= ctLen else { return fail(.badPadding) { $0.badPadding &+= 1 } }
            let payloadLen = ctLen - ESP.trailerLength - padLen
            for i in 0..<padLen where data[payloadLen + i] != UInt8(truncatingIfNeeded: i + 1) {
                return fail(.badPadding) { $0.badPadding &+= 1 }
            }
            // Re-check (nothing else can run under the lock, so the verdict stands) and slide.
            inbound.window.accept(seq)
            st.counters.openedPackets &+= 1
            st.counters.openedBytes &+= UInt64(payloadLen)
            return .ok(ESPOpenedRange(
                payload: ESP.headerLength..<(ESP.headerLength + payloadLen), nextHeader: nextHeader, spi: spi, sequenceNumber: seq))
        }
        switch outcome {
        case .ok(let r): return r
        case .fail(let code): throw IPsecError(code, Self.message(code))
        }
    }

    private static func message(_ code: IPsecError.Code) -> String {
        switch code {
        case .tooShort: return "packet too short for ESP with this SA's IV and ICV; dropped"
        case .unknownSPI: return "no inbound SA has this SPI: the sender uses a key this host does not hold (check key distribution) or a stale SA"
        case .outsideWindow: return "sequence number older than the anti-replay window (or 0); dropped"
        case .replayed: return "sequence number already received: a replayed or duplicated packet; dropped"
        case .authFailed: return "ESP ICV did not verify: wrong key or salt on one side, or the packet was altered; dropped"
        case .badPadding: return "ESP trailer malformed after authentication (pad length or padding bytes); dropped"
        default: return "ESP packet refused"
        }
    }
}
