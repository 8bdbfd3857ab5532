// `overlay-bench codec`: VXLAN encapsulation + decapsulation throughput on one core, against a plain
// memcpy of the same frame measured in the same run (STYLE.md point 12: a ratio, not a bare number).
import Foundation
import NIOCore
import OverlayModel
import VXLANCodec

/// Runs the codec benchmark for about `seconds` in total and returns the report, one line per string
/// (the caller prints them). Each case runs on the calling thread only: "per core" numbers.
///
/// Cases, all on a 1400-byte inner Ethernet/IPv4/UDP frame:
/// - memcpy: copy the frame into a reused buffer (the floor any encapsulation must pay once);
/// - UDP payload: `encapsulate` (VXLAN header + copy) then `decapsulate(udpPayload:)` (validate, slice);
/// - IPv4 packet: `encapsulatePacket` (flow hash, IPv4 header + checksum, UDP, VXLAN) then
///   `decapsulate(packet:)` (IPv4 checksum, lengths, port, VXLAN, VNI);
/// - IPv6 packet: the same over IPv6, where the UDP checksum over the whole datagram is mandatory both ways.
func runCodecBenchmark(seconds: Double) -> [String] {
    let innerSize = 1400
    let vni = try! VNI(4096)
    let frame = codecBenchFrame(size: innerSize)
    let enc = VXLANEncapsulator(vni: vni)
    let dec = VXLANDecapsulator(vni: vni)
    let perCase = max(0.2, seconds / 4)
    var sink = 0

    var memcpyCase = MemcpyCase(frame: frame)
    defer { memcpyCase.free() }
    let memcpyRate = measure(perCase, &memcpyCase, &sink)

    var udpCase = EncapDecapCase(frame: frame, enc: enc, dec: dec, outer: nil)
    let udpRate = measure(perCase, &udpCase, &sink)

    var v4Case = EncapDecapCase(frame: frame, enc: enc, dec: dec,
                                outer: (.v4(IPv4Address(198, 18, 0, 1)), .v4(IPv4Address(198, 18, 0, 2))))
    let v4Rate = measure(perCase, &v4Case, &sink)

    var v6Case = EncapDecapCase(frame: frame, enc: enc, dec: dec,
                                outer: (.v6(IPv6Address("2001:db8:18::1")!), .v6(IPv6Address("2001:db8:18::2")!)))
    let v6Rate = measure(perCase, &v6Case, &sink)

    func line(_ name: String, _ rate: Double) -> String {
        let gbit = rate * Double(innerSize * 8) / 1e9
        let pad = String(repeating: " ", count: max(1, 38 - name.count))
        return "  \(name)\(pad)\(fmt(rate / 1e3, 0)) k frames/s  \(fmt(gbit, 2)) Gbit/s  \(fmt(rate / memcpyRate * 100, 1))% of memcpy"
    }
    return [
        "codec: VXLAN encap+decap of \(innerSize)-byte inner frames, one core, \(fmt(perCase, 1)) s per case (Gbit/s = inner bytes * 8 / s)",
        line("memcpy baseline (same frame)", memcpyRate),
        line("encap+decap, UDP payload form", udpRate),
        line("encap+decap, full IPv4 packet", v4Rate),
        line("encap+decap, full IPv6 packet (csum)", v6Rate),
        "  target >= 10 Gbit/s-equivalent per core (about 900k encap+decap/s): "
            + [("UDP payload", udpRate), ("IPv4", v4Rate), ("IPv6", v6Rate)].map { name, rate in
                "\(name) \(rate * Double(innerSize * 8) / 1e9 >= 10 ? "meets" : "misses")"
            }.joined(separator: ", ") + " (sink \(sink & 1))",
    ]
}

/// One benchmark case: `run` does one operation and returns something to keep it from being optimised away.
private protocol BenchCase {
    mutating func run(_ i: Int) -> Int
}

/// The baseline: copy the frame's bytes between two fixed buffers.
private struct MemcpyCase: BenchCase {
    let size: Int
    let src: UnsafeMutableRawBufferPointer
    let dst: UnsafeMutableRawBufferPointer
    init(frame: ByteBuffer) {
        size = frame.readableBytes
        src = .allocate(byteCount: size, alignment: 64)
        dst = .allocate(byteCount: size + 64, alignment: 64)
        frame.withUnsafeReadableBytes { src.copyMemory(from: $0) }
    }
    func free() { src.deallocate(); dst.deallocate() }
    mutating func run(_ i: Int) -> Int {
        memcpy(dst.baseAddress! + 8, src.baseAddress!, size)
        return Int(dst[8 + (i & 1023)])
    }
}

/// Encapsulate into a reused buffer, then decapsulate it: UDP payload form when `outer` is nil,
/// otherwise the full packet form between the two outer addresses.
private struct EncapDecapCase: BenchCase {
    let frame: ByteBuffer
    let enc: VXLANEncapsulator
    let dec: VXLANDecapsulator
    let outer: (IPAddress, IPAddress)?
    var out: ByteBuffer
    init(frame: ByteBuffer, enc: VXLANEncapsulator, dec: VXLANDecapsulator, outer: (IPAddress, IPAddress)?) {
        self.frame = frame
        self.enc = enc
        self.dec = dec
        self.outer = outer
        out = ByteBufferAllocator().buffer(capacity: frame.readableBytes + 128)
    }
    mutating func run(_ i: Int) -> Int {
        out.clear()
        if let (s, d) = outer {
            try! enc.encapsulatePacket(frame, source: s, destination: d, identification: UInt16(truncatingIfNeeded: i), into: &out)
            let p = try! dec.decapsulate(packet: out)
            return p.innerFrame.readableBytes &+ Int(p.udp.sourcePort)
        }
        try! enc.encapsulate(frame, into: &out)
        return try! dec.decapsulate(udpPayload: out).innerFrame.readableBytes
    }
}

/// Operations per second of `c.run`, in batches until `duration` seconds have passed.
private func measure<C: BenchCase>(_ duration: Double, _ c: inout C, _ sink: inout Int) -> Double {
    for i in 0..<2000 { sink &+= c.run(i) }  // warm up
    let clock = ContinuousClock()
    let start = clock.now
    var n = 0
    var elapsed = 0.0
    repeat {
        for _ in 0..<4096 { sink &+= c.run(n); n += 1 }
        let d = clock.now - start
        elapsed = Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    } while elapsed < duration
    return Double(n) / elapsed
}

private func fmt(_ v: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", v) }

/// An Ethernet/IPv4/UDP frame of exactly `size` bytes.
private func codecBenchFrame(size: Int) -> ByteBuffer {
    let payload = ByteBuffer(bytes: (0..<(size - 14 - 20 - 8)).map { UInt8(truncatingIfNeeded: $0) })
    let frame = EthernetFrame(
        header: EthernetHeader(destination: MACAddress(0x0242_0A00_0003), source: MACAddress(0x0242_0A00_0002), etherType: .ipv4),
        payload: .ipv4(IPv4Packet(header: IPv4Header(source: IPv4Address(10, 0, 0, 2), destination: IPv4Address(10, 0, 0, 3), protocol: .udp),
                                  payload: .udp(UDPDatagram(sourcePort: 40000, destinationPort: 5201, payload: payload)))))
    var b = ByteBuffer()
    try! b.writeEthernetFrame(frame)
    precondition(b.readableBytes == size)
    return b
}
