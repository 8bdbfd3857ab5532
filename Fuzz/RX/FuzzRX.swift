// libFuzzer harness for the userspace datapath's frame handling (OverlayDriver): the receive path
// from a socket message to the TAP (raw ESP and ESP-in-UDP with UDP GRO, ESP open, the UDP and
// VXLAN checks, receive coalescing), and the transmit side's virtio-net header handling and TSO
// segmentation of what a container writes. See Documentation/Fuzzing.md.
//
// The first input byte picks what the rest is (mode = byte % 6):
//   0  a message from the raw ESP socket (an IPv4 packet)            ReceivePath, udp: false
//   1  two bytes of UDP GRO segment size (0: none), then a datagram  ReceivePath, udp: true
//   2  frames for the coalescer: [flags][length, 2 bytes][frame]...  TCPCoalescer.add / flush
//   3  a 10-byte virtio-net header, then a frame from the TAP         TXFrameOffload, TCPSegmentation
//   4  a receive control buffer                                      UDPOffload.groSegmentSize
//   5  a mutation (xor mask, then a length cut) of a packet sealed here: unless the mutation
//      changes nothing, nothing may reach the TAP
//
// Whatever reaches the TAP is checked: a single frame has an all-zero virtio-net header; a merged
// one a TSO header whose MSS re-segments the payload into exactly as many segments as were merged,
// and headers that parse. Bad input must be dropped and counted, never crash.
import Glibc
import IPsecKeys
import OverlayCrypto
import OverlayModel
import OverlayDriver

let vxlanPort: UInt16 = 4789
let vniWithHeader: UInt32 = 42      // a TAP with IFF_VNET_HDR (fd 3)
let vniPlain: UInt32 = 43           // one without (fd 4)

/// The SA every ESP input is opened with: Docker's from 192.168.0.2 to 192.168.0.3 under key
/// 00 01 ... 0f with tag 1 (the same as fuzz-esp's first SA).
let sa: ESPSecurityAssociation = {
    let key = try! IPsecKey(tag: 1, material: SecretKey(bytes: [UInt8](0..<16)))
    return try! ESPSecurityAssociation.derive(
        local: .v4(IPv4Address(192, 168, 0, 3)), remote: .v4(IPv4Address(192, 168, 0, 2)), key: key, extendedSequenceNumbers: false
    ).inbound
}()

// MARK: Building valid input (seeds, and mode 5's packet)

func be16(_ v: Int) -> [UInt8] { [UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }
func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }

func checksum(_ b: ArraySlice<UInt8>, _ initial: UInt32 = 0) -> UInt16 {
    var s = initial
    var i = b.startIndex
    while i < b.endIndex {
        s += UInt32(b[i]) << 8 | (i + 1 < b.endIndex ? UInt32(b[i + 1]) : 0)
        i += 2
    }
    while s > 0xFFFF { s = (s & 0xFFFF) + (s >> 16) }
    return ~UInt16(s)
}

/// Ethernet + IPv4 + TCP (ACK, or ACK|PSH) with right lengths and checksums.
func tcpFrame(seq: UInt32, payload: [UInt8], psh: Bool = false) -> [UInt8] {
    var f: [UInt8] = [0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00]
    let tcpLen = 20 + payload.count
    var ip: [UInt8] = [0x45, 0] + be16(20 + tcpLen) + [0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 70, 0, 2, 10, 70, 0, 3]
    let c = checksum(ip[...])
    ip[10] = UInt8(c >> 8)
    ip[11] = UInt8(c & 0xFF)
    f += ip
    var tcp: [UInt8] = be16(40000) + be16(5182) + be32(seq) + be32(0x0102_0304) + [0x50, psh ? 0x18 : 0x10] + be16(502) + [0, 0, 0, 0]
    tcp += payload
    let pseudo = UInt32(10 << 8 | 70) + 2 + UInt32(10 << 8 | 70) + 3 + 6 + UInt32(tcpLen)
    let t = checksum(tcp[...], pseudo)
    tcp[16] = UInt8(t >> 8)
    tcp[17] = UInt8(t & 0xFF)
    return f + tcp
}

/// UDP (to the VXLAN port; no checksum) + VXLAN (VNI) + `frame`: an ESP payload.
func vxlan(_ frame: [UInt8], vni: UInt32) -> [UInt8] {
    be16(50000) + be16(Int(vxlanPort)) + be16(16 + frame.count) + [0, 0] + [0x08, 0, 0, 0] + be32(vni << 8) + frame
}

func sealed(_ payloads: [[UInt8]], nextHeader: UInt8 = 17) -> [[UInt8]] {
    let sealer = try! ESPSealer(sa, ivMask: 0)
    return payloads.map { try! sealer.seal(payload: $0, nextHeader: nextHeader) }
}

func ipv4ESP(_ esp: [UInt8]) -> [UInt8] {
    var h: [UInt8] = [0x45, 0] + be16(20 + esp.count) + [0, 1, 0x40, 0, 64, 50, 0, 0, 192, 168, 0, 2, 192, 168, 0, 3]
    let c = checksum(h[...])
    h[10] = UInt8(c >> 8)
    h[11] = UInt8(c & 0xFF)
    return h + esp
}

/// Four in-order segments of one flow (1000 bytes each, the last 300 with PSH).
func flow() -> [[UInt8]] {
    (0..<4).map { (i: Int) -> [UInt8] in
        let seq = UInt32(1000 + i * 1000)
        let payload = [UInt8](repeating: UInt8(i + 1), count: i == 3 ? 300 : 1000)
        return tcpFrame(seq: seq, payload: payload, psh: i == 3)
    }
}

/// The seed inputs, one per mode and shape.
func seeds() -> [(String, [UInt8])] {
    let frames = flow()
    let esp = sealed(frames.map { vxlan($0, vni: vniWithHeader) } + [vxlan(frames[0], vni: vniPlain), vxlan(frames[0], vni: 99)])
    var out: [(String, [UInt8])] = []
    out.append(("raw-esp-tcp", [0] + ipv4ESP(esp[0])))
    out.append(("raw-esp-plain-tap", [0] + ipv4ESP(esp[4])))
    out.append(("raw-esp-unknown-vni", [0] + ipv4ESP(esp[5])))
    // Equal-size ESP packets back to back, as UDP GRO hands them over (the last may be shorter).
    let gro = esp[0] + esp[1] + esp[2]
    out.append(("udp-gro-three", [1] + be16(esp[0].count) + gro))
    out.append(("udp-gro-with-last", [1] + be16(esp[0].count) + esp[0] + esp[1] + esp[2] + esp[3]))
    out.append(("udp-single", [1, 0, 0] + esp[3]))
    out.append(("udp-keepalive", [1, 0, 0, 0xFF]))
    out.append(("udp-ike-marker", [1, 0, 0, 0, 0, 0, 0, 1, 2, 3]))
    var coalesce: [UInt8] = [2]
    for f in frames { coalesce += [1] + be16(f.count) + f }
    coalesce += [3] + be16(frames[0].count) + frames[0]
    out.append(("coalesce-flow", coalesce))
    // A TSO super-frame as the kernel writes it to the TAP: NEEDS_CSUM, GSO TCPv4, MSS 1000.
    var superFrame = tcpFrame(seq: 5000, payload: [UInt8](repeating: 7, count: 3500))
    superFrame[14 + 20 + 16] = 0
    superFrame[14 + 20 + 17] = 0
    let vnet: [UInt8] = [1, 1] + le16(54) + le16(1000) + le16(34) + le16(16)
    out.append(("tx-tso", [3] + vnet + superFrame))
    out.append(("tx-partial-checksum", [3, 1, 0] + le16(0) + le16(0) + le16(34) + le16(16) + frames[0]))
    out.append(("control-gro", [4] + le64(20) + le32(17) + le32(104) + le32(1400) + [0, 0, 0, 0]))
    out.append(("mutate-nothing", [5]))
    out.append(("mutate-one-bit", [5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40]))
    return out
}

func le16(_ v: Int) -> [UInt8] { [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF)] }
func le32(_ v: Int) -> [UInt8] { (0..<4).map { UInt8((v >> ($0 * 8)) & 0xFF) } }
func le64(_ v: Int) -> [UInt8] { (0..<8).map { UInt8((v >> ($0 * 8)) & 0xFF) } }

// MARK: Checking what reaches the TAP

/// Checks every write the coalescer makes and counts them.
final class TapSink {
    var writes = 0
    var frames = 0
    /// The bytes of the last single frame written (without its virtio-net header).
    var lastFrame: [UInt8] = []
    /// The shortest frame allowed through: Ethernet's 14 bytes behind the receive path (which
    /// refuses less); frames handed to the coalescer directly pass as they are.
    let minimumFrame: Int
    init(minimumFrame: Int) { self.minimumFrame = minimumFrame }
    func write(_ fd: Int32, _ iov: UnsafePointer<iovec>, _ n: Int32) -> Int {
        precondition(n >= 1 && Int(n) <= TCPCoalescer.maxSegments, "a write of \(n) pieces")
        var total = 0
        for i in 0..<Int(n) { total += iov[i].iov_len }
        writes += 1
        frames += Int(n)
        guard fd == 3 else {
            // The TAP without a virtio-net header gets single frames as they are.
            precondition(fd == 4 && n == 1, "fd \(fd), \(n) pieces")
            precondition(total >= minimumFrame, "a frame shorter than Ethernet")
            lastFrame = Array(UnsafeRawBufferPointer(start: iov[0].iov_base, count: iov[0].iov_len))
            return total
        }
        let first = iov[0]
        precondition(first.iov_len >= VirtioNetHeader.length + minimumFrame, "a frame shorter than Ethernet")
        let header = VirtioNetHeader(UnsafeRawPointer(first.iov_base!))
        let frame = UnsafeRawPointer(first.iov_base!) + VirtioNetHeader.length
        if n == 1 {
            precondition(header == VirtioNetHeader(), "a single frame with a non-zero header: \(header)")
            lastFrame = Array(UnsafeRawBufferPointer(start: frame, count: total - VirtioNetHeader.length))
            return total
        }
        // A merged frame: TSO header, headers that parse, and an MSS that cuts the payload into
        // exactly the segments that were merged.
        precondition(header.gsoType == VirtioNetHeader.gsoTCPv4 || header.gsoType == VirtioNetHeader.gsoTCPv6, "\(header)")
        let length = total - VirtioNetHeader.length
        var flat = [UInt8](repeating: 0, count: length)
        flat.withUnsafeMutableBytes { b in
            var off = 0
            for i in 0..<Int(n) {
                let src = i == 0 ? frame : UnsafeRawPointer(iov[i].iov_base!)
                let len = i == 0 ? iov[i].iov_len - VirtioNetHeader.length : iov[i].iov_len
                (b.baseAddress! + off).copyMemory(from: src, byteCount: len)
                off += len
            }
        }
        flat.withUnsafeBytes { b in
            guard let layout = TCPFrameLayout(frame: b.baseAddress!, length: length) else { preconditionFailure("merged headers do not parse") }
            precondition(layout.headerLength == Int(header.headerLength), "header length \(header.headerLength) vs \(layout.headerLength)")
            precondition(first.iov_len - VirtioNetHeader.length == layout.headerLength + Int(header.gsoSize), "the first segment is not one MSS")
            let count = TCPSegmentation.segmentCount(length: length, layout: layout, mss: Int(header.gsoSize))
            precondition(count == Int(n), "\(n) segments merged, \(count) by the MSS")
        }
        return total
    }
}

/// A buffer holding `bytes` with 16 bytes of headroom (the virtio-net header goes there).
func withHeadroom<R>(_ bytes: ArraySlice<UInt8>, _ body: (UnsafeMutableRawPointer) -> R) -> R {
    let p = UnsafeMutableRawPointer.allocate(byteCount: bytes.count + 16, alignment: 16)
    defer { p.deallocate() }
    bytes.withUnsafeBytes { if $0.count > 0 { (p + 16).copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
    return body(p + 16)
}

func tunnel(_ vni: UInt32) -> (fd: Int32, virtioNetHeader: Bool)? {
    vni == vniWithHeader ? (3, true) : vni == vniPlain ? (4, false) : nil
}

/// Runs `bytes` through the receive path; returns what reached the TAP and the drops counted.
func receive(_ bytes: ArraySlice<UInt8>, udp: Bool, groSegment: Int?) -> (sink: TapSink, drops: Int) {
    let sink = TapSink(minimumFrame: 14)
    let coalescer = TCPCoalescer(sink: sink.write)
    let path = ReceivePath(opener: try! ESPOpener([sa]), port: vxlanPort, coalescer: coalescer)
    var drops = 0
    withHeadroom(bytes) { p in
        path.receive(p, length: bytes.count, truncated: false, udp: udp, groSegment: groSegment, tunnel: tunnel, drop: { _ in drops += 1 })
        // While the buffer lives: the coalescer writes straight from it.
        coalescer.flush()
    }
    precondition(Int(coalescer.writtenFrames) == sink.frames && coalescer.failedFrames == 0)
    return (sink, drops)
}

func fuzzRX(_ input: [UInt8]) {
    guard let mode = input.first else { return }
    let rest = input.dropFirst()
    switch mode % 6 {
    case 0:
        _ = receive(rest, udp: false, groSegment: nil)
    case 1:
        guard rest.count >= 2 else { return }
        let size = Int(rest[rest.startIndex]) << 8 | Int(rest[rest.startIndex + 1])
        _ = receive(rest.dropFirst(2), udp: true, groSegment: size == 0 ? nil : size)
    case 2:
        let sink = TapSink(minimumFrame: 0)
        let coalescer = TCPCoalescer(sink: sink.write)
        var buffers: [UnsafeMutableRawPointer] = []
        defer { for b in buffers { b.deallocate() } }
        var i = rest.startIndex
        var added = 0
        while i + 3 <= rest.endIndex {
            let flags = rest[i]
            let len = min(Int(rest[i + 1]) << 8 | Int(rest[i + 2]), rest.endIndex - (i + 3))
            let frame = rest[(i + 3)..<(i + 3 + len)]
            i += 3 + len
            let p = UnsafeMutableRawPointer.allocate(byteCount: len + 16, alignment: 16)
            buffers.append(p)
            frame.withUnsafeBytes { if $0.count > 0 { (p + 16).copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
            let withHeader = flags & 1 != 0
            coalescer.add(fd: withHeader ? 3 : 4, virtioNetHeader: withHeader, frame: p + 16, length: len)
            added += 1
        }
        coalescer.flush()
        precondition(Int(coalescer.writtenFrames) == added && sink.frames == added, "\(added) frames in, \(coalescer.writtenFrames) out")
    case 3:
        guard rest.count >= VirtioNetHeader.length else { return }
        let maxFrame = 1518
        var header = VirtioNetHeader()
        rest.withUnsafeBytes { header = VirtioNetHeader($0.baseAddress!) }
        let frame = rest.dropFirst(VirtioNetHeader.length)
        withHeadroom(frame) { p in
            switch TXFrameOffload.prepare(header: header, frame: p, length: frame.count, maxFrame: maxFrame) {
            case .frame:
                precondition(frame.count <= maxFrame && frame.count >= 14)
            case .segments(let layout, let mss, let count):
                precondition(layout.headerLength + mss <= maxFrame && count >= 1)
                let dst = UnsafeMutableRawPointer.allocate(byteCount: layout.headerLength + mss, alignment: 16)
                defer { dst.deallocate() }
                var payload = 0
                for k in 0..<count {
                    let len = TCPSegmentation.writeSegment(k, of: p, length: frame.count, layout: layout, mss: mss, to: dst)
                    precondition(len <= maxFrame && len >= layout.headerLength)
                    precondition(TCPFrameLayout(frame: dst, length: len) != nil, "segment \(k) does not parse")
                    payload += len - layout.headerLength
                }
                precondition(payload == max(0, frame.count - layout.headerLength), "segments carry \(payload) of \(frame.count - layout.headerLength) bytes")
            case .badOffload, .badFrame:
                break
            }
        }
    case 4:
        let control = Array(rest)
        if let s = control.withUnsafeBytes({ UDPOffload.groSegmentSize($0.baseAddress ?? UnsafeRawPointer(bitPattern: 8)!, $0.count) }) {
            precondition(s > 0)
        }
    default:
        // A packet sealed here, changed by the input: an xor mask over its bytes, then (if the
        // input is longer than the packet) a cut to the length the next byte gives.
        let frame = flow()[0]
        let original = ipv4ESP(sealed([vxlan(frame, vni: vniWithHeader)])[0])
        var packet = original
        for (k, b) in rest.prefix(packet.count).enumerated() { packet[k] ^= b }
        if rest.count > packet.count { packet = Array(packet.prefix(Int(rest[rest.startIndex + packet.count]) * 8)) }
        let (sink, drops) = receive(packet[...], udp: false, groSegment: nil)
        if packet == original { precondition(sink.frames == 1 && drops == 0, "the untouched packet was not delivered") }
        precondition(sink.frames + drops == 1, "\(sink.frames) frames and \(drops) drops for one packet")
        if sink.frames == 1 {
            // Only the outer IPv4 header, which ESP does not cover, may differ; the ESP bytes the
            // path took (after the header, up to its total length) must be the sealed ones, and
            // the frame the container gets the one sealed.
            let ihl = Int(packet[0] & 0xF) * 4
            let total = Int(packet[2]) << 8 | Int(packet[3])
            precondition(Array(packet[ihl..<total]) == Array(original[20...]), "a changed ESP packet reached the TAP")
            precondition(sink.lastFrame == frame, "the frame delivered is not the frame sealed: \(sink.lastFrame.count) bytes, first difference at \(zip(sink.lastFrame, frame).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? -1) of \(frame.count)")
        }
    }
}

/// The libFuzzer entry point.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    fuzzRX(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

/// Under Scripts/fuzz.sh (-DFUZZING) runs libFuzzer; in a plain build replays the files named as
/// arguments through the same function, or with `--write-seeds DIR` writes the seed inputs.
@main struct Main {
    static func main() {
        #if FUZZING
        runLibFuzzer(fuzzOneInput)
        #else
        let args = CommandLine.arguments
        if args.count == 3 && args[1] == "--write-seeds" {
            for (name, bytes) in seeds() {
                let f = fopen("\(args[2])/\(name)", "wb")!
                _ = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, f) }
                fclose(f)
            }
            return
        }
        replayFiles(name: "fuzz-rx", fuzzRX)
        #endif
    }
}
