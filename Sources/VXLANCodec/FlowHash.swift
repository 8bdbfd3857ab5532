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
        let i = f.readerIndex
        var h = Mixer(seed: seed)
        guard var type = f.getInteger(at: i + 12, as: UInt16.self) else {
            return hashBytes(f, seed: seed)
        }
        var l3 = i + 14
        if type == 0x8100 || type == 0x88A8, let t = f.getInteger(at: i + 16, as: UInt16.self) {
            type = t
            l3 = i + 18
        }
        var proto: UInt8 = 0
        var l4 = -1
        switch type {
        case 0x0800:
            guard let vihl = f.getInteger(at: l3, as: UInt8.self), vihl >> 4 == 4,
                  let frag = f.getInteger(at: l3 + 6, as: UInt16.self), let p = f.getInteger(at: l3 + 9, as: UInt8.self),
                  let s = f.getInteger(at: l3 + 12, as: UInt32.self), let d = f.getInteger(at: l3 + 16, as: UInt32.self)
            else { return ethernetHash(f, seed: seed) }
            let (a, b) = s <= d ? (s, d) : (d, s)
            h.mix(a); h.mix(b)
            proto = p
            if frag & 0x3FFF == 0 { l4 = l3 + Int(vihl & 0xF) * 4 }
            h.swapPorts = s > d
        case 0x86DD:
            guard let p = f.getInteger(at: l3 + 6, as: UInt8.self),
                  let sh = f.getInteger(at: l3 + 8, as: UInt64.self), let sl = f.getInteger(at: l3 + 16, as: UInt64.self),
                  let dh = f.getInteger(at: l3 + 24, as: UInt64.self), let dl = f.getInteger(at: l3 + 32, as: UInt64.self)
            else { return ethernetHash(f, seed: seed) }
            let srcFirst = (sh, sl) <= (dh, dl)
            let (ah, al, bh, bl) = srcFirst ? (sh, sl, dh, dl) : (dh, dl, sh, sl)
            for w in [ah, al, bh, bl] { h.mix(UInt32(truncatingIfNeeded: w >> 32)); h.mix(UInt32(truncatingIfNeeded: w)) }
            if let flow = f.getInteger(at: l3, as: UInt32.self) { h.mix(flow & 0xF_FFFF) }
            proto = p
            l4 = l3 + 40
            h.swapPorts = !srcFirst
        default:
            return ethernetHash(f, seed: seed)
        }
        var ports: UInt32 = 0
        if l4 >= 0 {
            switch proto {
            case 6, 17, 132, 136:  // TCP, UDP, SCTP, UDP-Lite: source and destination ports
                if let sp = f.getInteger(at: l4, as: UInt16.self), let dp = f.getInteger(at: l4 + 2, as: UInt16.self) {
                    let (a, b) = h.swapPorts ? (dp, sp) : (sp, dp)
                    ports = UInt32(a) << 16 | UInt32(b)
                }
            case 1, 58:  // ICMP / ICMPv6 echo: the identifier, so requests and replies stay together
                if let t = f.getInteger(at: l4, as: UInt8.self), [0, 8, 128, 129].contains(t),
                   let id = f.getInteger(at: l4 + 4, as: UInt16.self) {
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

    static func ethernetHash(_ f: ByteBuffer, seed: UInt32) -> UInt32 {
        // Linux: jhash(eth->h_dest, 2 * ETH_ALEN, eth->h_proto) when the frame has no flow hash.
        var h = Mixer(seed: seed)
        let i = f.readerIndex
        for k in 0..<3 { h.mix(f.getInteger(at: i + 4 * k, as: UInt32.self) ?? 0) }
        h.mix(UInt32(f.getInteger(at: i + 12, as: UInt16.self) ?? 0))
        return h.finish()
    }

    static func hashBytes(_ f: ByteBuffer, seed: UInt32) -> UInt32 {
        var h = Mixer(seed: seed)
        f.withUnsafeReadableBytes { for b in $0 { h.mix(UInt32(b)) } }
        return h.finish()
    }

    /// A small 32-bit mixing hash (MurmurHash3-style rounds and finaliser).
    struct Mixer {
        var state: UInt32
        var count: UInt32 = 0
        var swapPorts = false
        init(seed: UInt32) { state = seed }
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
