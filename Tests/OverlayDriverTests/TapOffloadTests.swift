import Glibc
import Testing
@testable import OverlayDriver

// The userspace datapath's TAP offloads as pure code: the Internet checksum against a plain
// RFC 1071 reference, TSO segmentation and receive coalescing checked segment by segment against
// independently built frames, and bad virtio-net headers and frames that never crash.

/// RFC 1071 the slow way: big-endian 16-bit words, a trailing odd byte padded with zero.
private func referenceSum(_ bytes: ArraySlice<UInt8>, _ initial: UInt32 = 0) -> UInt32 {
    var s = initial
    var i = bytes.startIndex
    while i < bytes.endIndex {
        let hi = UInt32(bytes[i])
        let lo = i + 1 < bytes.endIndex ? UInt32(bytes[i + 1]) : 0
        s += hi << 8 | lo
        i += 2
    }
    return s
}

private func referenceFold(_ s: UInt32) -> UInt16 {
    var x = s
    while x > 0xFFFF { x = (x & 0xFFFF) + (x >> 16) }
    return UInt16(x)
}

/// Whether the TCP checksum of an Ethernet/IPv4-or-IPv6/TCP frame verifies (reference code).
private func tcpChecksumOK(_ f: [UInt8], l3: Int, v6: Bool) -> Bool {
    let l4 = v6 ? l3 + 40 : l3 + Int(f[l3] & 0xF) * 4
    let tcpLen = f.count - l4
    var pseudo: UInt32
    if v6 {
        pseudo = referenceSum(f[(l3 + 8)..<(l3 + 40)]) + UInt32(tcpLen >> 16) + UInt32(tcpLen & 0xFFFF) + 6
    } else {
        pseudo = referenceSum(f[(l3 + 12)..<(l3 + 20)]) + UInt32(tcpLen) + 6
    }
    return referenceFold(referenceSum(f[l4...], pseudo)) == 0xFFFF
}

private func ipv4HeaderOK(_ f: [UInt8], l3: Int) -> Bool {
    referenceFold(referenceSum(f[l3..<(l3 + Int(f[l3] & 0xF) * 4)])) == 0xFFFF
}

private func be16(_ f: [UInt8], _ at: Int) -> Int { Int(f[at]) << 8 | Int(f[at + 1]) }
private func be32(_ f: [UInt8], _ at: Int) -> UInt32 {
    UInt32(f[at]) << 24 | UInt32(f[at + 1]) << 16 | UInt32(f[at + 2]) << 8 | UInt32(f[at + 3])
}

private struct LCG {
    var state: UInt64
    mutating func next() -> UInt64 {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return state >> 11
    }
    mutating func byte() -> UInt8 { UInt8(truncatingIfNeeded: next()) }
    mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in byte() } }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(n, 1))) }
}

/// Builds an Ethernet + IPv4/IPv6 + TCP (12 bytes of timestamp options) frame with correct
/// lengths and checksums (reference code), sequence `seq`, IPv4 ID `id`, flags, payload.
private func tcpFrame(v6: Bool, seq: UInt32, id: UInt16 = 0x1234, flags: UInt8 = 0x10, payload: [UInt8],
                      srcPort: UInt16 = 40000, ack: UInt32 = 0x0102_0304, window: UInt16 = 502, vlan: Bool = false) -> [UInt8] {
    var f: [UInt8] = [0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1]
    if vlan { f += [0x81, 0x00, 0x00, 0x07] }
    f += v6 ? [0x86, 0xDD] : [0x08, 0x00]
    let l3 = f.count
    let tcpLen = 32 + payload.count
    if v6 {
        f += [0x60, 0, 0, 0, UInt8(tcpLen >> 8), UInt8(tcpLen & 0xFF), 6, 64]
        f += [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]
        f += [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]
    } else {
        let total = 20 + tcpLen
        f += [0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), UInt8(id >> 8), UInt8(id & 0xFF), 0x40, 0, 64, 6, 0, 0,
              10, 70, 0, 2, 10, 70, 0, 3]
        let c = ~referenceFold(referenceSum(f[l3..<(l3 + 20)]))
        f[l3 + 10] = UInt8(c >> 8)
        f[l3 + 11] = UInt8(c & 0xFF)
    }
    let l4 = f.count
    f += [UInt8(srcPort >> 8), UInt8(srcPort & 0xFF), 0x14, 0x3E]
    f += [UInt8(seq >> 24), UInt8((seq >> 16) & 0xFF), UInt8((seq >> 8) & 0xFF), UInt8(seq & 0xFF)]
    f += [UInt8(ack >> 24), UInt8((ack >> 16) & 0xFF), UInt8((ack >> 8) & 0xFF), UInt8(ack & 0xFF)]
    f += [0x80, flags, UInt8(window >> 8), UInt8(window & 0xFF), 0, 0, 0, 0]
    f += [1, 1, 8, 10, 0, 0, 0x10, 0, 0, 0, 0x20, 0]   // NOP NOP timestamps
    f += payload
    let pseudo: UInt32 = v6
        ? referenceSum(f[(l3 + 8)..<(l3 + 40)]) + UInt32(tcpLen) + 6
        : referenceSum(f[(l3 + 12)..<(l3 + 20)]) + UInt32(tcpLen) + 6
    let c = ~referenceFold(referenceSum(f[l4...], pseudo))
    f[l4 + 16] = UInt8(c >> 8)
    f[l4 + 17] = UInt8(c & 0xFF)
    return f
}

/// A buffer with `headroom` bytes before the frame (the coalescer writes its header there).
private final class Frames {
    let headroom = 16
    var storage: [UnsafeMutableRawPointer] = []
    func place(_ f: [UInt8]) -> UnsafeMutableRawPointer {
        let p = UnsafeMutableRawPointer.allocate(byteCount: f.count + headroom, alignment: 8)
        p.initializeMemory(as: UInt8.self, repeating: 0xEE, count: headroom)
        f.withUnsafeBytes { (p + headroom).copyMemory(from: $0.baseAddress!, byteCount: f.count) }
        storage.append(p)
        return p + headroom
    }
    deinit { for p in storage { p.deallocate() } }
}

/// What a coalescer wrote: every write's bytes (header included).
private final class Sink {
    var writes: [[UInt8]] = []
    var fail = false
    func callAsFunction(_ fd: Int32, _ iov: UnsafePointer<iovec>, _ n: Int32) -> Int {
        var out: [UInt8] = []
        for i in 0..<Int(n) {
            out += UnsafeRawBufferPointer(start: iov[i].iov_base, count: iov[i].iov_len)
        }
        writes.append(out)
        return fail ? -1 : out.count
    }
}

/// Segments `frame` (a super-frame, as the kernel would hand it over) with `mss`.
private func segment(_ frame: [UInt8], mss: Int) -> [[UInt8]]? {
    var f = frame
    return f.withUnsafeMutableBytes { b -> [[UInt8]]? in
        guard let layout = TCPFrameLayout(frame: b.baseAddress!, length: b.count) else { return nil }
        let n = TCPSegmentation.segmentCount(length: b.count, layout: layout, mss: mss)
        let dst = UnsafeMutableRawPointer.allocate(byteCount: layout.headerLength + mss, alignment: 8)
        defer { dst.deallocate() }
        return (0..<n).map { i in
            let len = TCPSegmentation.writeSegment(i, of: b.baseAddress!, length: b.count, layout: layout, mss: mss, to: dst)
            return Array(UnsafeRawBufferPointer(start: dst, count: len))
        }
    }
}

@Suite("TAP offloads: checksums, TSO segmentation, receive coalescing")
struct TapOffloadTests {
    @Test("the native-order Internet checksum equals RFC 1071's at every length and alignment")
    func checksumMatchesReference() {
        var rng = LCG(state: 1)
        let data = rng.bytes(2100)
        data.withUnsafeBytes { b in
            for _ in 0..<400 {
                let start = rng.below(64)
                let count = rng.below(2000)
                let ours = InternetChecksum.fold(InternetChecksum.add(b.baseAddress! + start, count))
                let reference = referenceFold(referenceSum(data[start..<(start + count)]))
                // ours is in memory byte order: read it back as the two bytes it would be stored as.
                #expect(UInt16(bigEndian: ours) == reference)
            }
        }
        // A fixed vector: RFC 1071 3's example bytes sum to 0xddf2.
        let v: [UInt8] = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]
        v.withUnsafeBytes { #expect(UInt16(bigEndian: InternetChecksum.fold(InternetChecksum.add($0.baseAddress!, 8))) == 0xddf2) }
    }

    @Test("a partial checksum is completed: the frame then verifies; offsets outside are refused",
          arguments: [false, true])
    func completePartialChecksum(v6: Bool) {
        var f = tcpFrame(v6: v6, seq: 7, flags: 0x18, payload: Array(repeating: 0x5A, count: 333))
        let l4 = v6 ? 54 : 34
        #expect(tcpChecksumOK(f, l3: 14, v6: v6))
        // What the kernel hands over with NEEDS_CSUM: the field holds the folded pseudo-header sum.
        let tcpLen = f.count - l4
        let pseudo: UInt32 = v6 ? referenceSum(f[22..<54]) + UInt32(tcpLen) + 6 : referenceSum(f[26..<34]) + UInt32(tcpLen) + 6
        let seed = referenceFold(pseudo)
        f[l4 + 16] = UInt8(seed >> 8)
        f[l4 + 17] = UInt8(seed & 0xFF)
        #expect(!tcpChecksumOK(f, l3: 14, v6: v6))
        let n = f.count
        let result = f.withUnsafeMutableBytes { b in
            TXFrameOffload.prepare(header: VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, checksumStart: UInt16(l4), checksumOffset: 16),
                                   frame: b.baseAddress!, length: n, maxFrame: 1600)
        }
        #expect(result == .frame)
        #expect(tcpChecksumOK(f, l3: 14, v6: v6))
        for (start, offset) in [(n, 0), (n - 1, 0), (n - 2, 1), (l4, n), (-1, 0), (0, -2)] {
            let ok = f.withUnsafeMutableBytes { InternetChecksum.complete($0.baseAddress!, length: n, start: start, offset: offset) }
            #expect(!ok, "start \(start) offset \(offset)")
        }
    }

    @Test("a TSO super-frame becomes MSS segments equal to independently built ones",
          arguments: [(false, false), (true, false), (false, true)])
    func segmentation(v6: Bool, vlan: Bool) throws {
        var rng = LCG(state: 2)
        let mss = 1360
        let payload = rng.bytes(mss * 7 + 555)
        // FIN|PSH|ACK|CWR on the super-frame: CWR only on the first segment, FIN and PSH on the last.
        let superFrame = tcpFrame(v6: v6, seq: 0xFFFF_F000, id: 0xFFFE, flags: 0x99, payload: payload, vlan: vlan)
        let segs = try #require(segment(superFrame, mss: mss))
        #expect(segs.count == 8)
        let l3 = vlan ? 18 : 14
        for (i, s) in segs.enumerated() {
            let chunk = Array(payload[(i * mss)..<min(payload.count, (i + 1) * mss)])
            var flags: UInt8 = 0x10
            if i == 0 { flags |= 0x80 }
            if i == segs.count - 1 { flags |= 0x09 }
            let expected = tcpFrame(v6: v6, seq: 0xFFFF_F000 &+ UInt32(i * mss), id: 0xFFFE &+ UInt16(i), flags: flags,
                                    payload: chunk, vlan: vlan)
            #expect(s == expected, "segment \(i)")
            #expect(tcpChecksumOK(s, l3: l3, v6: v6))
            if !v6 { #expect(ipv4HeaderOK(s, l3: l3)) }
        }
        // What the TX thread decides for it.
        var f = superFrame
        let n = f.count
        let decision = f.withUnsafeMutableBytes { b in
            TXFrameOffload.prepare(header: VirtioNetHeader(flags: 1, gsoType: v6 ? 4 : 1, headerLength: 66, gsoSize: UInt16(mss)),
                                   frame: b.baseAddress!, length: n, maxFrame: 1518)
        }
        guard case .segments(_, let m, let count) = decision else {
            Issue.record("not segmented: \(decision)")
            return
        }
        #expect(m == mss && count == 8)
    }

    @Test("consecutive segments are merged into one TSO write that re-segments to the same bytes",
          arguments: [false, true])
    func coalescingRoundTrip(v6: Bool) throws {
        var rng = LCG(state: 3)
        let mss = 1372
        let frames = Frames()
        let sink = Sink()
        let c = TCPCoalescer(sink: sink.callAsFunction)
        var originals: [[UInt8]] = []
        for i in 0..<20 {
            let last = i == 19
            let f = tcpFrame(v6: v6, seq: 1000 &+ UInt32(i * mss), id: UInt16(500 + i), flags: last ? 0x18 : 0x10,
                             payload: rng.bytes(last ? 100 : mss))
            originals.append(f)
            c.add(fd: 9, virtioNetHeader: true, frame: frames.place(f), length: f.count)
        }
        c.flush()
        #expect(sink.writes.count == 1)
        #expect(c.writtenFrames == 20 && c.mergedWrites == 1 && c.failedFrames == 0)
        #expect(c.writtenBytes == UInt64(originals.reduce(0) { $0 + $1.count }))
        let w = try #require(sink.writes.first)
        let hdr = w.withUnsafeBytes { VirtioNetHeader($0.baseAddress!) }
        let l4 = v6 ? 54 : 34
        #expect(hdr == VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, gsoType: v6 ? 4 : 1, headerLength: UInt16(l4 + 32),
                                       gsoSize: UInt16(mss), checksumStart: UInt16(l4), checksumOffset: 16))
        var merged = Array(w[10...])
        #expect(merged.count == l4 + 32 + 19 * mss + 100)
        if !v6 {
            #expect(be16(merged, 16) == merged.count - 14)
            #expect(ipv4HeaderOK(merged, l3: 14))
        } else {
            #expect(be16(merged, 18) == merged.count - 54)
        }
        #expect(merged[l4 + 13] == 0x18)   // PSH from the last segment
        // Complete the partial checksum as the kernel would, then cut it again with the MSS.
        let n = merged.count
        #expect(merged.withUnsafeMutableBytes { InternetChecksum.complete($0.baseAddress!, length: n, start: l4, offset: 16) })
        #expect(tcpChecksumOK(merged, l3: 14, v6: v6))
        let again = try #require(segment(merged, mss: mss))
        #expect(again == originals)
    }

    @Test("what is not merged: gaps, other flows, bad checksums, other flags, larger segments, after a short one")
    func coalescingBoundaries() {
        let mss = 1000
        let p = [UInt8](repeating: 7, count: mss)
        func run(_ list: [[UInt8]], vnet: Bool = true, fds: [Int32]? = nil) -> (Sink, TCPCoalescer) {
            let frames = Frames()
            let sink = Sink()
            let c = TCPCoalescer(sink: sink.callAsFunction)
            for (i, f) in list.enumerated() {
                c.add(fd: fds?[i] ?? 3, virtioNetHeader: vnet, frame: frames.place(f), length: f.count)
            }
            c.flush()
            return (sink, c)
        }
        let a0 = tcpFrame(v6: false, seq: 0, payload: p)
        let a1 = tcpFrame(v6: false, seq: 1000, payload: p)
        let a2 = tcpFrame(v6: false, seq: 2000, payload: p)
        // In order: one write.
        #expect(run([a0, a1, a2]).0.writes.count == 1)
        // A gap in sequence numbers.
        #expect(run([a0, a2]).0.writes.count == 2)
        // Another flow (source port), another ACK number, another window, another device.
        #expect(run([a0, tcpFrame(v6: false, seq: 1000, payload: p, srcPort: 40001)]).0.writes.count == 2)
        #expect(run([a0, tcpFrame(v6: false, seq: 1000, payload: p, ack: 9)]).0.writes.count == 2)
        #expect(run([a0, tcpFrame(v6: false, seq: 1000, payload: p, window: 9)]).0.writes.count == 2)
        #expect(run([a0, a1], fds: [3, 4]).0.writes.count == 2)
        // A corrupted TCP checksum: written alone with an all-zero header, for the kernel to drop.
        var bad = a1
        bad[60] ^= 0xFF
        let (s, _) = run([a0, bad, a2])
        #expect(s.writes.count == 3)
        #expect(s.writes[1] == [UInt8](repeating: 0, count: 10) + bad)
        // SYN/FIN/RST/URG/ECE/CWR are never merged; neither is a pure ACK.
        for flags: UInt8 in [0x11, 0x12, 0x14, 0x30, 0x50, 0x90] {
            #expect(run([a0, tcpFrame(v6: false, seq: 1000, flags: flags, payload: p)]).0.writes.count == 2, "flags \(flags)")
        }
        #expect(run([a0, tcpFrame(v6: false, seq: 1000, payload: [])]).0.writes.count == 2)
        // A larger segment than the first cannot follow; nothing follows a short or a PSH one.
        #expect(run([tcpFrame(v6: false, seq: 0, payload: Array(p[..<500])), tcpFrame(v6: false, seq: 500, payload: p)]).0.writes.count == 2)
        #expect(run([a0, tcpFrame(v6: false, seq: 1000, payload: Array(p[..<10])), tcpFrame(v6: false, seq: 1010, payload: p)]).0.writes.count == 2)
        #expect(run([a0, tcpFrame(v6: false, seq: 1000, flags: 0x18, payload: p), a2]).0.writes.count == 2)
        // IPv4 and IPv6 segments of "one" flow stay apart; a non-TCP frame flushes the run.
        #expect(run([a0, tcpFrame(v6: true, seq: 1000, payload: p)]).0.writes.count == 2)
        let arp = [UInt8](repeating: 0xFF, count: 6) + [2, 0, 0, 0, 0, 1, 0x08, 0x06] + [UInt8](repeating: 0, count: 28)
        let (s2, _) = run([a0, arp, a1])
        #expect(s2.writes.count == 3)
        #expect(s2.writes[1] == [UInt8](repeating: 0, count: 10) + arp)
        // Without a virtio-net header: every frame as it is.
        let (s3, c3) = run([a0, a1, a2], vnet: false)
        #expect(s3.writes == [a0, a1, a2])
        #expect(c3.writtenFrames == 3 && c3.mergedWrites == 0)
        // At most 64 KiB of IP per merged frame: 66 segments of 1000 need two writes.
        let many = (0..<66).map { tcpFrame(v6: false, seq: UInt32($0 * 1000), payload: p) }
        let (s4, c4) = run(many)
        #expect(s4.writes.count == 2)
        #expect(s4.writes.allSatisfy { $0.count - 24 <= 65535 })
        #expect(c4.writtenFrames == 66)
        // A failed write counts its segments.
        let frames = Frames()
        let sink = Sink()
        sink.fail = true
        let c = TCPCoalescer(sink: sink.callAsFunction)
        for f in [a0, a1, a2] { c.add(fd: 3, virtioNetHeader: true, frame: frames.place(f), length: f.count) }
        c.flush()
        #expect(c.failedFrames == 3 && c.writtenFrames == 0)
    }

    @Test("random and truncated frames and virtio-net headers never crash and never exceed the slot")
    func badInputNeverCrashes() {
        var rng = LCG(state: 4)
        let good4 = tcpFrame(v6: false, seq: 1, flags: 0x18, payload: rng.bytes(5000))
        let good6 = tcpFrame(v6: true, seq: 1, flags: 0x18, payload: rng.bytes(5000), vlan: true)
        let maxFrame = 1438
        let dst = UnsafeMutableRawPointer.allocate(byteCount: 70_000, alignment: 8)
        defer { dst.deallocate() }
        var inputs: [[UInt8]] = []
        for g in [good4, good6] {
            for cut in stride(from: 0, through: 120, by: 1) { inputs.append(Array(g.prefix(cut))) }
            inputs.append(g)
        }
        for _ in 0..<300 {
            var f = rng.below(2) == 0 ? good4 : good6
            f = Array(f.prefix(rng.below(f.count + 1)))
            for _ in 0..<rng.below(6) where !f.isEmpty { f[rng.below(f.count)] = rng.byte() }
            inputs.append(f)
        }
        var segmented = 0
        for f0 in inputs {
            for _ in 0..<4 {
                var f = f0
                let header = VirtioNetHeader(flags: rng.byte() & 3, gsoType: [0, 1, 3, 4, 5, 0x81, rng.byte()][rng.below(7)],
                                             headerLength: UInt16(truncatingIfNeeded: rng.next()),
                                             gsoSize: [0, 1, 536, 1372, 1400, UInt16(truncatingIfNeeded: rng.next())][rng.below(6)],
                                             checksumStart: UInt16(rng.below(140)), checksumOffset: UInt16(rng.below(40)))
                let n = f.count
                f.withUnsafeMutableBytes { b in
                    guard let base = b.baseAddress else { return }
                    switch TXFrameOffload.prepare(header: header, frame: base, length: n, maxFrame: maxFrame) {
                    case .segments(let layout, let mss, let count):
                        segmented += 1
                        for i in 0..<count {
                            let len = TCPSegmentation.writeSegment(i, of: base, length: n, layout: layout, mss: mss, to: dst)
                            #expect(len <= maxFrame && len >= layout.headerLength)
                        }
                    case .frame:
                        #expect(n <= maxFrame && n >= 14)
                    case .badFrame, .badOffload:
                        break
                    }
                    _ = TCPCoalescer.mergeable(base, n)
                }
            }
            // Through the coalescer, in a run with good segments.
            let frames = Frames()
            let sink = Sink()
            let c = TCPCoalescer(sink: sink.callAsFunction)
            for f in [good4, f0, good4] where !f.isEmpty { c.add(fd: 1, virtioNetHeader: true, frame: frames.place(f), length: f.count) }
            c.flush()
        }
        #expect(segmented > 0)
    }
}
