import OverlayModel
import PacketFilter

/// The nftables tables a gateway bridge owns, rendered from its state. Pure: the same state always
/// gives the same text, and every change re-renders and replaces the whole thing in one transaction.
///
/// - `ip <table>`: masquerade of the subnet leaving through any other interface (when enabled),
///   hairpin masquerade for published ports reached from the bridge itself, and DNAT of published
///   ports for traffic arriving from outside (prerouting) and made by the host for its own
///   addresses (output; loopback excluded, as Docker does without its userland proxy).
/// - `bridge <table>`: with ICC off, frames forwarded from one attached port to another are
///   dropped (one rule per port, so a frame hairpinned back out of its own port passes). This is the bridge family's forward hook, so traffic to the gateway (the bridge
///   device itself) and routed traffic are untouched.
///
/// Where `br_netfilter` is active (Docker loads it; `net.bridge.bridge-nf-call-iptables=1`), a
/// container reaching a published port (its own host's address, the routing mesh included) is
/// not routed back out of the bridge: the IP hooks run on the bridged frame, and once DNAT points
/// it at another port of the same bridge the kernel bridges it there, through the ICC rule. So
/// the `ip` table marks packets of DNAT'd connections, both ways (``hairpinMark``, one bit of the
/// packet mark, the others kept), and the ICC rule lets marked frames pass.
public struct GatewayRuleset: Hashable, Sendable {
    /// The packet mark bit that tells the bridge's ICC rule a frame belongs to a DNAT'd
    /// connection (a published port reached from the bridge itself).
    public static let hairpinMark: UInt32 = 0x0010_0000

    /// The bridge's name.
    public var bridgeName: String
    /// The bridge's subnet.
    public var subnet: CIDR
    /// The owned tables' name.
    public var tableName: String
    /// Inter-container communication.
    public var icc: Bool
    /// Egress masquerade.
    public var ipMasquerade: Bool
    /// The host-side names of the attached veth ports (for the ICC rule).
    public var ports: Set<String>
    /// The published ports.
    public var published: [PortMapping]

    /// Makes a ruleset description.
    public init(
        bridgeName: String, subnet: CIDR, tableName: String, icc: Bool, ipMasquerade: Bool, ports: Set<String>,
        published: [PortMapping]
    ) {
        self.bridgeName = bridgeName
        self.subnet = subnet
        self.tableName = tableName
        self.icc = icc
        self.ipMasquerade = ipMasquerade
        self.ports = ports
        self.published = published
    }

    /// The two tables, ready for `PacketFilter.replaceTables`.
    public var tables: [NFTTable] {
        let br = quoted(bridgeName)
        let mark = "0x" + String(Self.hairpinMark, radix: 16)
        var nat = """
            chain postrouting {
                type nat hook postrouting priority srcnat; policy accept;
                oifname \(br) ip saddr \(subnet) ct status dnat masquerade

            """
        if ipMasquerade { nat += "        ip saddr \(subnet) oifname != \(br) masquerade\n" }
        nat += """
                }
                chain prerouting {
                    type nat hook prerouting priority dstnat; policy accept;
                    fib daddr type local jump published
                }
                chain output {
                    type nat hook output priority -100; policy accept;
                    ip daddr != 127.0.0.0/8 fib daddr type local jump published
                }
                chain hairpin {
                    type filter hook prerouting priority filter; policy accept;
                    iifname \(br) ct status dnat meta mark set meta mark | \(mark)
                }
                chain published {

            """
        for m in published.sorted(by: { ($0.protocol.rawValue, $0.hostPort) < ($1.protocol.rawValue, $1.hostPort) }) {
            let match = m.hostAddress.map { "ip daddr \($0) " } ?? ""
            nat += "        \(match)\(m.protocol.rawValue) dport \(m.hostPort) dnat to \(m.containerAddress):\(m.containerPort)\n"
        }
        nat += "    }"

        // ICC off: a frame from one attached port to another is dropped; a frame sent back out
        // the port it came in on (hairpin, a container reaching its own published port) is not.
        var bridge = ""
        let isolate = !icc && !ports.isEmpty
        if isolate {
            bridge += """
                set ports {
                    type ifname
                    elements = { \(ports.sorted().map(quoted).joined(separator: ", ")) }
                }

                """
        }
        bridge += """
                chain forward {
                    type filter hook forward priority filter; policy accept;

            """
        if isolate {
            bridge += "        meta mark & \(mark) == \(mark) accept\n"
            for port in ports.sorted() {
                bridge += "        iifname \(quoted(port)) oifname != \(quoted(port)) oifname @ports drop\n"
            }
        }
        bridge += "    }"
        return [
            NFTTable(family: .ip, name: tableName, body: nat),
            NFTTable(family: .bridge, name: tableName, body: bridge),
        ]
    }

    private func quoted(_ name: String) -> String { "\"\(name)\"" }
}
