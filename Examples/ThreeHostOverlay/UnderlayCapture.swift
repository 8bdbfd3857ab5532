import NIOCore
import OverlayTestKit
import VXLANCodec

/// Describes the VXLAN frames among `frames` (raw underlay Ethernet frames), one line each,
/// decoding them with VXLANCodec. Frames that are not VXLAN (IPv6 neighbour discovery on the
/// underlay, say) are skipped.
func describeVXLAN(_ frames: [[UInt8]]) -> [String] {
    frames.compactMap { raw in
        var buffer = ByteBuffer(bytes: raw)
        guard let eth = try? buffer.readEthernetHeader(), eth.etherType == .ipv4 || eth.etherType == .ipv6 else { return nil }
        // Captured on a veth, the outer UDP checksum is still the offload's partial sum.
        guard let packet = try? VXLANDecapsulator(vni: nil, verifyUDPChecksum: false).decapsulate(packet: buffer) else { return nil }
        var inner = packet.innerFrame
        let what: String
        switch try? inner.readEthernetFrame()?.payload {
        case .ipv4(let ip)?:
            if case .icmp(let icmp) = ip.payload {
                what = "\(ip.header.source) -> \(ip.header.destination) ICMP \(icmp.type == 8 ? "echo request" : icmp.type == 0 ? "echo reply" : "type \(icmp.type)")"
            } else {
                what = "\(ip.header.source) -> \(ip.header.destination) IP protocol \(ip.header.protocol)"
            }
        case .arp(let arp)?: what = "ARP \(arp.senderIP) -> \(arp.targetIP)"
        default: what = "an inner frame of \(packet.innerFrame.readableBytes) bytes"
        }
        return "VTEP \(packet.outer.source):\(packet.udp.sourcePort) -> \(packet.outer.destination):\(packet.udp.destinationPort) VNI \(packet.vni): \(what)"
    }
}
