import Glibc

/// How the userspace datapath puts ESP packets on the underlay: inside UDP (RFC 3948, the
/// default), which lets the kernel batch a whole TSO super-frame's packets into one UDP GSO send
/// and merge them again with UDP GRO, or bare (IP protocol 50, what Docker's kernel IPsec sends),
/// one packet per send and per receive: about a third of the throughput (Performance.md).
public enum ESPEncapsulation: Hashable, Sendable, CustomStringConvertible {
    /// ESP directly in IPv4 (protocol 50) on a raw socket, one packet per send.
    case raw
    /// ESP in UDP to and from `port` (RFC 3948; 4500 is the usual port), sent with UDP GSO and
    /// received with UDP GRO where the kernel has them. Both hosts must use the same mode.
    case udp(port: UInt16)

    /// RFC 3948's port (IKE NAT traversal's).
    public static let defaultUDPPort: UInt16 = 4500

    /// ESP in UDP on ``defaultUDPPort``.
    public static var udp: ESPEncapsulation { .udp(port: defaultUDPPort) }

    /// Bytes this encapsulation adds to each ESP packet on the underlay (UDP's header, or none).
    public var overhead: UInt32 {
        switch self {
        case .raw: 0
        case .udp: 8
        }
    }

    /// The largest container MTU of an encrypted network on `underlayMTU` in this mode: Docker's
    /// arithmetic (``OverlayDriverConfiguration/encryptedMTU(underlayMTU:)``) on an underlay
    /// ``overhead`` bytes smaller: 1424 raw and 1416 in UDP on 1500 (1424 + 50 VXLAN + 26 ESP
    /// + 8 UDP = 1508 would not fit).
    public func containerMTU(underlayMTU: UInt32) -> UInt32 {
        guard underlayMTU > overhead else { return 0 }
        return OverlayDriverConfiguration.encryptedMTU(underlayMTU: underlayMTU - overhead)
    }

    public var description: String {
        switch self {
        case .raw: "esp"
        case .udp(let port): "esp-in-udp:\(port)"
        }
    }

    /// Parses `esp`/`raw`, `udp` or `udp:<port>` (what `OVERLAY_ESP_ENCAP` takes); nil otherwise.
    public init?(_ text: String) {
        let t = text.lowercased()
        if t == "esp" || t == "raw" || t == "" {
            self = .raw
        } else if t == "udp" || t == "esp-in-udp" {
            self = .udp
        } else if t.hasPrefix("udp:"), let p = UInt16(t.dropFirst(4)), p != 0 {
            self = .udp(port: p)
        } else {
            return nil
        }
    }
}

/// Linux's UDP socket options for segmentation offload (not in Swift's Glibc module).
package enum UDPOffload {
    package static let solUDP: Int32 = 17
    /// `UDP_SEGMENT`: the gso_size of a send (cmsg, uint16) or of every send (socket option).
    package static let segment: Int32 = 103
    /// `UDP_GRO`: deliver coalesced datagrams, with the segment size in a cmsg (int).
    package static let gro: Int32 = 104
    /// The most segments one GSO send may carry (`UDP_MAX_SEGMENTS` before Linux 6.2; later 128).
    package static let maxSegments = 64
    /// The most UDP payload one send may carry (an IPv4 datagram's 65535 less IP and UDP headers).
    package static let maxPayload = 65535 - 28
    /// `CMSG_SPACE(sizeof(uint16_t))` and `CMSG_LEN(sizeof(uint16_t))` on LP64.
    package static let segmentCmsgSpace = 24
    package static let segmentCmsgLen = 18
    /// A receive control buffer (room for the UDP_GRO cmsg and then some).
    package static let rxControlSize = 64

    /// Writes a `SOL_UDP`/`UDP_SEGMENT` cmsg carrying `size` at `p`.
    @inline(__always) static func storeSegmentCmsg(_ size: Int, _ p: UnsafeMutableRawPointer) {
        p.storeBytes(of: segmentCmsgLen, toByteOffset: 0, as: Int.self)
        p.storeBytes(of: solUDP, toByteOffset: 8, as: Int32.self)
        p.storeBytes(of: segment, toByteOffset: 12, as: Int32.self)
        p.storeBytes(of: UInt16(size), toByteOffset: 16, as: UInt16.self)
        p.storeBytes(of: UInt16(0), toByteOffset: 18, as: UInt16.self)
        p.storeBytes(of: UInt32(0), toByteOffset: 20, as: UInt32.self)
    }

    /// The segment size of a `UDP_GRO` cmsg among `length` control bytes at `p`, or nil.
    package static func groSegmentSize(_ p: UnsafeRawPointer, _ length: Int) -> Int? {
        var off = 0
        while off + 16 <= length {
            let len = p.loadUnaligned(fromByteOffset: off, as: Int.self)
            // `len <= length - off`, not `off + len <= length`: a length near Int.max must not
            // overflow (fuzz-rx found one: a trap, not a nil).
            guard len >= 16, len <= length - off else { return nil }
            if p.loadUnaligned(fromByteOffset: off + 8, as: Int32.self) == solUDP,
               p.loadUnaligned(fromByteOffset: off + 12, as: Int32.self) == gro, len >= 20 {
                let s = Int(p.loadUnaligned(fromByteOffset: off + 16, as: Int32.self))
                return s > 0 ? s : nil
            }
            off += (len + 7) & ~7
        }
        return nil
    }
}
