import NIOCore

/// The flow hash a VTEP uses to pick the outer UDP source port, modelled on Linux's
/// `skb_get_hash` + `udp_flow_src_port`: inner IPv4/IPv6 addresses, protocol and L4 ports (the echo
/// identifier for ICMP echo), ordered so that both directions of a flow hash alike; frames without an
/// IP header hash their Ethernet addresses and EtherType. Linux's exact values depend on a per-boot
/// random seed, so only the structure is reproduced, not the numbers.
public enum FlowHash {
    /// The 32-bit hash of an inner Ethernet frame (read, not consumed). Never fails: what cannot be
    /// parsed is hashed as far as it goes.
    public static func hash(innerFrame f: ByteBuffer, seed: UInt32) -> UInt32 {
        f.withUnsafeReadableBytes { hash(RawBytes($0), seed: seed) }
    }

    static func hash(_ f: RawBytes, seed: UInt32) -> UInt32 {
        var h = Mixer(seed: seed)
        guard var type = f.u16(12) else { return hashBytes(f, seed: seed) }
        var l3 = 14
        if type == 0x8100 || type == 0x88A8, let t = f.u16(16) {
            type = t
            l3 = 18
        }
        var proto: UInt8 = 0
        var l4 = -1
        var swapPorts = false
        switch type {
        case 0x0800:
            guard let vihl = f.u8(l3), vihl >> 4 == 4, let frag = f.u16(l3 + 6), let p = f.u8(l3 + 9),
                  let s = f.u32(l3 + 12), let d = f.u32(l3 + 16)
            else { return ethernetHash(f, seed: seed) }
            h.mix(min(s, d)); h.mix(max(s, d))
            proto = p
            if frag & 0x3FFF == 0 { l4 = l3 + Int(vihl & 0xF) * 4 }
            swapPorts = s > d
        case 0x86DD:
            guard let p = f.u8(l3 + 6), let sh = f.u64(l3 + 8), let sl = f.u64(l3 + 16),
                  let dh = f.u64(l3 + 24), let dl = f.u64(l3 + 32)
            else { return ethernetHash(f, seed: seed) }
            let srcFirst = (sh, sl) <= (dh, dl)
            let (ah, al, bh, bl) = srcFirst ? (sh, sl, dh, dl) : (dh, dl, sh, sl)
            h.mix(ah); h.mix(al); h.mix(bh); h.mix(bl)
            proto = p
            l4 = l3 + 40
            swapPorts = !srcFirst
        default:
            return ethernetHash(f, seed: seed)
        }
        var ports: UInt32 = 0
        if l4 >= 0 {
            switch proto {
            case 6, 17, 132, 136:  // TCP, UDP, SCTP, UDP-Lite: source and destination ports
                if let sp = f.u16(l4), let dp = f.u16(l4 + 2) {
                    let (a, b) = swapPorts ? (dp, sp) : (sp, dp)
                    ports = UInt32(a) << 16 | UInt32(b)
                }
            case 1, 58:  // ICMP / ICMPv6 echo: the identifier, so requests and replies stay together
                if let t = f.u8(l4), t == 0 || t == 8 || t == 128 || t == 129, let id = f.u16(l4 + 4) {
                    ports = UInt32(id)
                }
            default:
                break
            }
        }
        h.mix(ports)
        h.mix(UInt32(proto))
        return h.finish()
    }

    /// Maps a 32-bit hash into `range` like Linux's `reciprocal_scale`: `((UInt64(hash) * UInt64(max - min)) >> 32) + min`.
    public static func scale(_ hash: UInt32, into range: ClosedRange<UInt16>) -> UInt16 {
        let span = UInt64(range.upperBound - range.lowerBound)
        return UInt16((UInt64(hash) &* span) >> 32) + range.lowerBound
    }

    static func ethernetHash(_ f: RawBytes, seed: UInt32) -> UInt32 {
        // Linux: jhash(eth->h_dest, 2 * ETH_ALEN, eth->h_proto) when the frame has no flow hash.
        var h = Mixer(seed: seed)
        for k in 0..<3 { h.mix(f.u32(4 * k) ?? 0) }
        h.mix(UInt32(f.u16(12) ?? 0))
        return h.finish()
    }

    static func hashBytes(_ f: RawBytes, seed: UInt32) -> UInt32 {
        var h = Mixer(seed: seed)
        for i in 0..<f.count { h.mix(UInt32(f.u8(i)!)) }
        return h.finish()
    }

    /// A small 32-bit mixing hash (MurmurHash3-style rounds and finaliser).
    struct Mixer {
        var state: UInt32
        var count: UInt32 = 0
        init(seed: UInt32) { state = seed }
        mutating func mix(_ w: UInt64) {
            mix(UInt32(truncatingIfNeeded: w >> 32))
            mix(UInt32(truncatingIfNeeded: w))
        }
        mutating func mix(_ w: UInt32) {
            var k = w &* 0xCC9E_2D51
            k = (k << 15) | (k >> 17)
            k = k &* 0x1B87_3593
            state ^= k
            state = (state << 13) | (state >> 19)
            state = state &* 5 &+ 0xE654_6B64
            count &+= 4
        }
        func finish() -> UInt32 {
            var h = state ^ count
            h ^= h >> 16
            h = h &* 0x85EB_CA6B
            h ^= h >> 13
            h = h &* 0xC2B2_AE35
            h ^= h >> 16
            return h
        }
    }
}
