import Foundation
import NIOCore
import OverlayModel
import Testing
@testable import VXLANCodec

/// A seeded random-mutation fuzzer over built and kernel-captured packets: nothing may crash, and
/// whatever decodes must re-encode to something that decodes to the same value.
@Suite struct FuzzTests {
    /// SplitMix64: small, seeded, reproducible.
    struct SeededGenerator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static func corpus() throws -> [[UInt8]] {
        var out = Sample.packets.map { Array($0.1.readableBytesView) }
        let enc = VXLANEncapsulator(vni: Sample.vni)
        for (_, f) in Sample.frames { out.append(Array(try enc.encapsulate(Sample.encode(f)).readableBytesView)) }
        for file in ["vxlan-ipv4-underlay.pcap", "vxlan-ipv6-underlay.pcap"] {
            for r in try PcapFile.load(file).records { out.append(Array(r.data.readableBytesView.dropFirst(14))) }
        }
        return out
    }

    static func mutate(_ input: [UInt8], _ g: inout SeededGenerator) -> [UInt8] {
        var b = input
        let rounds = Int.random(in: 1...4, using: &g)
        for _ in 0..<rounds {
            guard !b.isEmpty else { b.append(UInt8.random(in: 0...255, using: &g)); continue }
            let i = Int.random(in: 0..<b.count, using: &g)
            switch Int.random(in: 0..<8, using: &g) {
            case 0: b[i] ^= 1 << UInt8.random(in: 0...7, using: &g)
            case 1: b[i] = UInt8.random(in: 0...255, using: &g)
            case 2: b.removeSubrange(Int.random(in: 0...b.count, using: &g)...)
            case 3: b.append(contentsOf: (0..<Int.random(in: 1...16, using: &g)).map { _ in UInt8.random(in: 0...255, using: &g) })
            case 4:  // an "interesting" 16-bit value at an even offset (length and checksum fields)
                let j = i & ~1
                if j + 1 < b.count {
                    let v = [0, 1, 7, 8, 13, 14, 0x7FFF, 0xFFFF, UInt16(b.count), UInt16(b.count - j)].randomElement(using: &g)!
                    b[j] = UInt8(v >> 8); b[j + 1] = UInt8(truncatingIfNeeded: v)
                }
            case 5: b[i] = [0x00, 0x08, 0x45, 0x46, 0x4F, 0x60, 0x81, 0xFF].randomElement(using: &g)!
            case 6: b.remove(at: i)
            default: b.insert(UInt8.random(in: 0...255, using: &g), at: i)
            }
        }
        return b
    }

    /// Decodes `bytes` every way the codec can; each success must survive encode -> decode unchanged.
    static func exercise(_ bytes: [UInt8]) {
        let buffer = ByteBuffer(bytes: bytes)
        let dec = VXLANDecapsulator(vni: nil, strictReservedBits: false, allowZeroIPv6UDPChecksum: true)
        if let p = try? dec.decapsulate(packet: buffer) {
            var out = ByteBuffer()
            switch p.outer {
            case .v4(let h): out.writeIPv4Header(h)
            case .v6(let h): out.writeIPv6Header(h)
            }
            out.writeUDPHeader(p.udp)
            out.writeVXLANHeader(p.header)
            out.writeImmutableBuffer(p.innerFrame)
            let again = try? dec.decapsulate(packet: out)
            #expect(again == p, "full packet re-encodes consistently: \(bytes)")
            exerciseFrame(p.innerFrame)
        }
        if let f = try? dec.decapsulate(udpPayload: buffer) {
            var out = ByteBuffer()
            out.writeVXLANHeader(f.header)
            out.writeImmutableBuffer(f.innerFrame)
            #expect(out == buffer, "UDP payload re-encodes byte for byte: \(bytes)")
            exerciseFrame(f.innerFrame)
        }
        var b4 = buffer
        if let p = try? b4.readIPv4Packet() {
            var out = ByteBuffer()
            do {
                try out.writeIPv4Packet(p)
                #expect(try out.readIPv4Packet() == p, "IPv4 packet re-encodes consistently: \(bytes)")
            } catch { Issue.record("re-encoding a decoded IPv4 packet threw \(error): \(bytes)") }
        }
        var b6 = buffer
        if let p = try? b6.readIPv6Packet() {
            var out = ByteBuffer()
            do {
                try out.writeIPv6Packet(p)
                #expect(try out.readIPv6Packet() == p, "IPv6 packet re-encodes consistently: \(bytes)")
            } catch { Issue.record("re-encoding a decoded IPv6 packet threw \(error): \(bytes)") }
        }
        exerciseFrame(buffer)
        _ = FlowHash.hash(innerFrame: buffer, seed: 1)
    }

    static func exerciseFrame(_ frame: ByteBuffer) {
        var b = frame
        guard let f = try? b.readEthernetFrame() else { return }
        var out = ByteBuffer()
        do {
            try out.writeEthernetFrame(f)
            #expect(out.readableBytes == frame.readableBytes, "frame re-encodes to the same length")
            #expect(try out.readEthernetFrame() == f, "frame re-encodes consistently: \(Array(frame.readableBytesView))")
        } catch { Issue.record("re-encoding a decoded frame threw \(error)") }
    }

    @Test func seededMutations() throws {
        let corpus = try Self.corpus()
        let iterations = ProcessInfo.processInfo.environment["VXLAN_FUZZ_ITERATIONS"].flatMap(Int.init) ?? 200_000
        var g = SeededGenerator(state: 0x0F1E_2D3C_4B5A_6978)
        var decodedFull = 0
        let dec = VXLANDecapsulator(vni: nil, strictReservedBits: false, allowZeroIPv6UDPChecksum: true)
        for n in 0..<iterations {
            let input = Self.mutate(corpus[n % corpus.count], &g)
            Self.exercise(input)
            if (try? dec.decapsulate(packet: ByteBuffer(bytes: input))) != nil { decodedFull += 1 }
        }
        // The mutations must leave a good share decodable, or the fuzzer only tests the first check.
        #expect(decodedFull > iterations / 20, "\(decodedFull) of \(iterations) mutated packets still decoded")
    }

    @Test func unmutatedCorpusDecodes() throws {
        // Every seed is valid: a whole IP packet or a VXLAN UDP payload, and it must decode as
        // one of them (a seed that no longer does would leave the mutations testing only the
        // first check), then re-encode consistently.
        let dec = VXLANDecapsulator(vni: nil, strictReservedBits: false, allowZeroIPv6UDPChecksum: true)
        let corpus = try Self.corpus()
        #expect(corpus.count >= 10)
        var packets = 0
        for (i, bytes) in corpus.enumerated() {
            let packet = (try? dec.decapsulate(packet: ByteBuffer(bytes: bytes))) != nil
            let payload = (try? dec.decapsulate(udpPayload: ByteBuffer(bytes: bytes))) != nil
            #expect(packet || payload, "seed \(i) decodes neither as a packet nor as a UDP payload: \(bytes)")
            if packet { packets += 1 }
            Self.exercise(bytes)
        }
        #expect(packets > 0 && packets < corpus.count)
    }
}
