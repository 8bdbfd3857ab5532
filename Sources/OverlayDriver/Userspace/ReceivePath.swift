import Glibc
import IPsecKeys

/// The receive path between the socket and the TAP, without the system calls: a raw IPv4 ESP
/// packet, or an ESP-in-UDP datagram (several ESP packets of one size when UDP GRO coalesced
/// them), is opened, checked as UDP to the data-path port carrying VXLAN for a known VNI, and its
/// inner frame handed to the coalescer. Everything refused is counted by reason and goes no
/// further. The RX thread runs it on every message; `fuzz-rx` (Fuzz/RX) runs it on fuzzed bytes.
package struct ReceivePath {
    package let opener: ESPOpener
    /// The data-path (VXLAN) port the inner UDP header must name.
    package let port: UInt16
    package let coalescer: TCPCoalescer

    /// A receive path opening with `opener`, checking `port`, handing frames to `coalescer`.
    package init(opener: ESPOpener, port: UInt16, coalescer: TCPCoalescer) {
        self.opener = opener
        self.port = port
        self.coalescer = coalescer
    }

    /// Handles one received message of `length` bytes at `p` (decrypted in place). `udp`: the
    /// socket is ESP-in-UDP and `groSegment` is the UDP GRO segment size if the kernel coalesced
    /// datagrams; otherwise `p` is an IPv4 packet from the raw ESP socket. `tunnel` gives the TAP
    /// (descriptor, and whether it takes a virtio-net header) of a VNI.
    @inline(__always)
    package func receive(_ p: UnsafeMutableRawPointer, length got: Int, truncated: Bool, udp: Bool, groSegment: Int?,
                 tunnel: (UInt32) -> (fd: Int32, virtioNetHeader: Bool)?, drop: (UserspaceDropReason) -> Void) {
        if udp {
            guard got > 0, !truncated else { drop(.notESP); return }
            let segment = max(1, groSegment ?? got)
            var off = 0
            while off < got {
                let len = min(segment, got - off)
                let esp = p + off
                off += len
                // RFC 3948 2.2/2.3: a zero SPI marks IKE, one 0xFF byte a NAT keep-alive.
                if len == 1 && esp.load(as: UInt8.self) == 0xFF { drop(.nonESPMarker); continue }
                if len >= 4 && esp.loadUnaligned(as: UInt32.self) == 0 { drop(.nonESPMarker); continue }
                deliver(esp, len, tunnel: tunnel, drop: drop)
            }
            return
        }
        guard got >= 20, !truncated else { drop(.notESP); return }
        let vihl = p.load(as: UInt8.self)
        let ihl = Int(vihl & 0xF) * 4
        let total = Int(loadBE16(p, 2))
        guard vihl >> 4 == 4, ihl >= 20, total <= got, total > ihl + ESP.headerLength,
              p.load(fromByteOffset: 9, as: UInt8.self) == ESP.ipProtocol
        else { drop(.notESP); return }
        deliver(p + ihl, total - ihl, tunnel: tunnel, drop: drop)
    }

    /// Opens the ESP packet of `length` bytes at `esp` and hands its frame to the coalescer.
    @inline(__always)
    private func deliver(_ esp: UnsafeMutableRawPointer, _ length: Int,
                         tunnel: (UInt32) -> (fd: Int32, virtioNetHeader: Bool)?, drop: (UserspaceDropReason) -> Void) {
        let opened: ESPOpenedRange
        do throws(IPsecError) {
            opened = try opener.open(inPlace: UnsafeMutableRawBufferPointer(start: esp, count: length))
        } catch {
            switch error.code {
            case .unknownSPI: drop(.espUnknownSPI)
            case .authFailed: drop(.espAuthFailed)
            case .replayed: drop(.espReplayed)
            case .outsideWindow: drop(.espOutsideWindow)
            case .badPadding: drop(.espBadPadding)
            default: drop(.espTooShort)
            }
            return
        }
        let udp = esp + opened.payload.lowerBound
        let plen = opened.payload.count
        guard opened.nextHeader == 17, plen >= 16 + 14 else { drop(.notUDP); return }
        guard loadBE16(udp, 2) == port else { drop(.wrongPort); return }
        guard udp.load(fromByteOffset: 8, as: UInt8.self) & 0x08 != 0 else { drop(.notVXLAN); return }
        let vni = loadBE32(udp, 12) >> 8
        guard let t = tunnel(vni) else { drop(.unknownVNI); return }
        // The UDP and VXLAN headers before the frame are free now: the virtio-net header goes there.
        coalescer.add(fd: t.fd, virtioNetHeader: t.virtioNetHeader, frame: udp + 16, length: plen - 16)
    }
}
