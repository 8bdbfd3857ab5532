import Glibc
import IPsecKeys
import Logging
import OverlayCrypto
import OverlayModel
import Testing
@testable import OverlayDriver

// The receive path between the socket and the TAP as pure code (`ReceivePath`, which the RX
// thread runs on every message): what it lets through is exactly what was sealed, and everything
// else is dropped and counted by reason. `fuzz-rx` (Fuzz/RX) runs the same code on fuzzed input.

private let port: UInt16 = 4789

private let sa: ESPSecurityAssociation = {
    let key = try! IPsecKey(tag: 1, material: SecretKey(bytes: [UInt8](0..<16)))
    return try! ESPSecurityAssociation.derive(
        local: .v4(IPv4Address(192, 168, 0, 3)), remote: .v4(IPv4Address(192, 168, 0, 2)), key: key, extendedSequenceNumbers: false
    ).inbound
}()

private func be16(_ v: Int) -> [UInt8] { [UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }

private func sum(_ b: ArraySlice<UInt8>, _ initial: UInt32 = 0) -> UInt16 {
    var s = initial
    var i = b.startIndex
    while i < b.endIndex {
        s += UInt32(b[i]) << 8 | (i + 1 < b.endIndex ? UInt32(b[i + 1]) : 0)
        i += 2
    }
    while s > 0xFFFF { s = (s & 0xFFFF) + (s >> 16) }
    return ~UInt16(s)
}

/// Ethernet + IPv4 + TCP (ACK) with right checksums, `payload` bytes of `fill`.
private func tcpFrame(seq: UInt32, count: Int, fill: UInt8) -> [UInt8] {
    let tcpLen = 20 + count
    var ip: [UInt8] = [0x45, 0] + be16(20 + tcpLen) + [0, 1, 0x40, 0, 64, 6, 0, 0, 10, 70, 0, 2, 10, 70, 0, 3]
    let c = sum(ip[...])
    ip[10] = UInt8(c >> 8)
    ip[11] = UInt8(c & 0xFF)
    var tcp: [UInt8] = be16(40000) + be16(80) + be16(Int(seq >> 16)) + be16(Int(seq & 0xFFFF)) + [0, 0, 0, 1, 0x50, 0x10] + be16(502) + [0, 0, 0, 0]
    tcp += [UInt8](repeating: fill, count: count)
    let t = sum(tcp[...], UInt32(10 << 8 | 70) * 2 + 5 + 6 + UInt32(tcpLen))
    tcp[16] = UInt8(t >> 8)
    tcp[17] = UInt8(t & 0xFF)
    return [0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00] + ip + tcp
}

private func vxlan(_ frame: [UInt8], vni: UInt32, to dport: UInt16 = port, flags: UInt8 = 0x08) -> [UInt8] {
    be16(50000) + be16(Int(dport)) + be16(16 + frame.count) + [0, 0, flags, 0, 0, 0] + be16(Int(vni >> 8)) + [UInt8(vni & 0xFF), 0] + frame
}

private func ipv4(_ esp: [UInt8]) -> [UInt8] {
    [0x45, 0] + be16(20 + esp.count) + [0, 1, 0x40, 0, 64, 50, 0, 0, 192, 168, 0, 2, 192, 168, 0, 3] + esp
}

/// What reached the TAPs: one entry per write (fd, pieces, bytes after the virtio-net header).
private final class Tap {
    var writes: [(fd: Int32, pieces: Int, bytes: [UInt8])] = []
    func write(_ fd: Int32, _ iov: UnsafePointer<iovec>, _ n: Int32) -> Int {
        var out: [UInt8] = []
        for i in 0..<Int(n) { out += UnsafeRawBufferPointer(start: iov[i].iov_base, count: iov[i].iov_len) }
        writes.append((fd, Int(n), fd == 3 ? Array(out.dropFirst(VirtioNetHeader.length)) : out))
        return out.count
    }
}

/// Runs `messages` through one path (one opener: replays across messages are seen).
private func run(_ messages: [[UInt8]], udp: Bool = false, groSegment: Int? = nil) -> (Tap, [UserspaceDropReason]) {
    let tap = Tap()
    let coalescer = TCPCoalescer(sink: tap.write)
    let path = ReceivePath(opener: try! ESPOpener([sa]), port: port, coalescer: coalescer)
    var drops: [UserspaceDropReason] = []
    for m in messages {
        let p = UnsafeMutableRawPointer.allocate(byteCount: m.count + 16, alignment: 16)
        defer { p.deallocate() }
        m.withUnsafeBytes { if $0.count > 0 { (p + 16).copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
        path.receive(p + 16, length: m.count, truncated: false, udp: udp, groSegment: groSegment,
                     tunnel: { $0 == 42 ? (3, true) : $0 == 43 ? (4, false) : nil }, drop: { drops.append($0) })
        coalescer.flush()
    }
    return (tap, drops)
}

@Suite("The userspace receive path: ESP, UDP GRO, VXLAN checks, drops by reason")
struct ReceivePathTests {
    @Test("a sealed packet delivers exactly its frame; every one-bit change of its ESP bytes is dropped")
    func tamperedNeverReachesTheTap() throws {
        let frame = tcpFrame(seq: 1, count: 200, fill: 7)
        let sealer = try ESPSealer(sa, ivMask: 0)
        let esp = try sealer.seal(payload: vxlan(frame, vni: 42), nextHeader: 17)
        let (tap, drops) = run([ipv4(esp)])
        #expect(drops.isEmpty)
        #expect(tap.writes.count == 1 && tap.writes.first?.fd == 3 && tap.writes.first?.bytes == frame)
        for bit in stride(from: 0, to: esp.count * 8, by: 3) {
            var bad = esp
            bad[bit / 8] ^= 1 << (bit % 8)
            let (t, d) = run([ipv4(bad)])
            #expect(t.writes.isEmpty, "bit \(bit) flipped reached the TAP")
            #expect(d.count == 1 && [.espUnknownSPI, .espAuthFailed, .espOutsideWindow, .espTooShort].contains(d[0]), "bit \(bit): \(d)")
        }
        // Cut short at every length: dropped.
        for cut in 0..<esp.count {
            let (t, d) = run([ipv4(Array(esp.prefix(cut)))])
            #expect(t.writes.isEmpty && d.count == 1, "cut to \(cut)")
        }
    }

    @Test("replays, wrong ports, non-VXLAN, unknown VNIs, non-UDP payloads and non-ESP packets are counted")
    func dropsByReason() throws {
        let frame = tcpFrame(seq: 1, count: 100, fill: 1)
        let sealer = try ESPSealer(sa, ivMask: 0)
        let good = try sealer.seal(payload: vxlan(frame, vni: 43), nextHeader: 17)
        let cases: [([UInt8], UserspaceDropReason)] = [
            (try sealer.seal(payload: vxlan(frame, vni: 42, to: 4790), nextHeader: 17), .wrongPort),
            (try sealer.seal(payload: vxlan(frame, vni: 42, flags: 0), nextHeader: 17), .notVXLAN),
            (try sealer.seal(payload: vxlan(frame, vni: 7), nextHeader: 17), .unknownVNI),
            (try sealer.seal(payload: vxlan(frame, vni: 42), nextHeader: 6), .notUDP),
        ]
        let (tap, drops) = run([ipv4(good), ipv4(good)] + cases.map { ipv4($0.0) })
        #expect(tap.writes.count == 1 && tap.writes[0].fd == 4 && tap.writes[0].bytes == frame)
        #expect(drops == [.espReplayed] + cases.map(\.1))
        var notESP = ipv4(good)
        notESP[9] = 17
        #expect(run([notESP]).1 == [.notESP])
        #expect(run([Array(ipv4(good).prefix(19))]).1 == [.notESP])
    }

    @Test("a UDP GRO datagram is split at the segment size; its in-order TCP segments become one TSO write")
    func groDatagramsAreSplitAndMerged() throws {
        let sealer = try ESPSealer(sa, ivMask: 0)
        let frames = (0..<3).map { tcpFrame(seq: 1 + UInt32($0 * 1000), count: 1000, fill: UInt8($0 + 1)) }
        let esp = try frames.map { try sealer.seal(payload: vxlan($0, vni: 42), nextHeader: 17) }
        #expect(Set(esp.map(\.count)).count == 1)
        let (tap, drops) = run([esp.flatMap { $0 }], udp: true, groSegment: esp[0].count)
        #expect(drops.isEmpty)
        #expect(tap.writes.count == 1 && tap.writes.first?.pieces == 3)
        #expect(tap.writes.first?.bytes.count == frames[0].count + 2000)
        // Keep-alives and IKE's zero marker are not ESP; a datagram without GRO is one packet.
        let (_, markers) = run([[0xFF], [0, 0, 0, 0, 1, 2, 3, 4]], udp: true)
        #expect(markers == [.nonESPMarker, .nonESPMarker])
        let (single, none) = run([esp[0]], udp: true)
        #expect(none.isEmpty)
        #expect(single.writes.count == 1 && single.writes.first?.bytes == frames[0])
    }

    @Test("the UDP_GRO segment size is read from a control buffer; cmsg lengths past the buffer are refused")
    func groSegmentSizeIsReadSafely() {
        /// A cmsghdr on LP64: length (8), level (4), type (4), then the data, padded to 8.
        func cmsg(length: Int, level: Int32 = UDPOffload.solUDP, type: Int32 = UDPOffload.gro, value: Int32) -> [UInt8] {
            withUnsafeBytes(of: length) { Array($0) } + withUnsafeBytes(of: level) { Array($0) } + withUnsafeBytes(of: type) { Array($0) }
                + withUnsafeBytes(of: value) { Array($0) } + [0, 0, 0, 0]
        }
        func size(_ bytes: [UInt8]) -> Int? { bytes.withUnsafeBytes { UDPOffload.groSegmentSize($0.baseAddress!, $0.count) } }
        #expect(size(cmsg(length: 20, value: 1424)) == 1424)
        // After another option's message; a zero size and a short buffer give nil.
        #expect(size(cmsg(length: 20, level: 0, type: 8, value: 7) + cmsg(length: 20, value: 1416)) == 1416)
        #expect(size(cmsg(length: 20, value: 0)) == nil)
        #expect(size(Array(cmsg(length: 20, value: 1424).prefix(15))) == nil)
        // A length past the buffer, and one near Int.max after a first message (fuzz-rx,
        // 2026-12-07: `off + len` overflowed and trapped): nil, not a crash.
        #expect(size(cmsg(length: 64, value: 1424)) == nil)
        #expect(size(cmsg(length: 20, level: 0, type: 8, value: 7) + cmsg(length: Int.max - 1, value: 1424)) == nil)
    }

    @Test("ESP no key opens is logged once per interval, with the counts of every batch since the last line")
    func keyMismatchLogCountsBatches() {
        let log = RecordedLog()
        let logger = log.logger()
        let k = KeyMismatchLog()
        k.note(authFailed: 0, unknownSPI: 0, logger: logger)
        #expect(log.all.isEmpty)
        k.lastSource = 0xC612_0001  // 198.18.0.1
        k.note(authFailed: 3, unknownSPI: 1, logger: logger)
        #expect(log.all.count == 1)
        #expect(log.all.first?.contains("from=198.18.0.1") == true, "\(log.all)")
        #expect(log.all.first?.contains("authFailed=3") == true && log.all.first?.contains("unknownSPI=1") == true, "\(log.all)")
        // Within the interval: counted, not logged (the next line will carry 2 + 5).
        k.note(authFailed: 2, unknownSPI: 0, logger: logger)
        k.note(authFailed: 5, unknownSPI: 0, logger: logger)
        #expect(log.all.count == 1)
    }
}
