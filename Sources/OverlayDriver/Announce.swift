import Dispatch
import Glibc
import Netlink
import OverlayModel

/// Gratuitous ARP for a newly attached endpoint (what Docker's `advertise_addr_nmsgs` does): the
/// sandbox bridge learns which port the endpoint's MAC is behind, so the first frames to it are
/// not flooded to every port. The VXLAN device (proxy ARP) answers ARP locally and never carries it
/// to other hosts.
enum Announce {
    static let closer = DispatchQueue(label: "announce.close")

    /// Sends one gratuitous ARP request for `address`/`mac` out of `interface` in `namespace`.
    /// Best effort: returns false instead of throwing, since the endpoint works without it.
    @discardableResult
    static func gratuitousARP(_ address: IPv4Address, mac: MACAddress, interface: String, in namespace: NetworkNamespace) -> Bool {
        let frame = arpFrame(address, mac: mac)
        let sent = try? namespace.run { () -> Bool in
            let ifindex = if_nametoindex(interface)
            guard ifindex > 0 else { return false }
            let fd = socket(17 /* AF_PACKET */, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), Int32(UInt16(0x0806).bigEndian))
            guard fd >= 0 else { return false }
            // Closing a packet socket waits for an RCU grace period (about 15 ms here): done on a
            // queue of its own, off the attach's path.
            defer { closer.async { close(fd) } }
            // struct sockaddr_ll: family, protocol (BE), ifindex, hatype, pkttype, halen, addr[8].
            var sll = [UInt8](repeating: 0, count: 20)
            sll[0] = 17
            sll[2] = 0x08; sll[3] = 0x06
            withUnsafeBytes(of: Int32(ifindex)) { for (i, b) in $0.enumerated() { sll[4 + i] = b } }
            sll[11] = 6
            for (i, b) in MACAddress.broadcast.bytes.enumerated() { sll[12 + i] = b }
            let n = frame.withUnsafeBytes { f in
                sll.withUnsafeBytes { a in
                    sendto(fd, f.baseAddress, f.count, 0, a.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(a.count))
                }
            }
            return n == frame.count
        }
        return sent ?? false
    }

    /// An Ethernet broadcast carrying an ARP request whose sender and target are both `address`
    /// (RFC 5227 section 3's announcement).
    static func arpFrame(_ address: IPv4Address, mac: MACAddress) -> [UInt8] {
        var f: [UInt8] = []
        f += MACAddress.broadcast.bytes + mac.bytes + [0x08, 0x06]  // Ethernet: dst, src, type ARP
        f += [0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]              // Ethernet/IPv4, request
        f += mac.bytes + address.bytes                               // sender
        f += [UInt8](repeating: 0, count: 6) + address.bytes         // target: the same address
        return f
    }
}
