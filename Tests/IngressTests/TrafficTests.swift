import Foundation
import Glibc
import Ingress
import Netlink
import OverlayModel
import OverlayTestKit
import PacketFilter
import Testing

private func ip(_ s: String) -> IPv4Address { IPv4Address(s)! }

/// h1 client, h2 the LB namespace (VIPs as local addresses, SNAT to its own address 198.18.0.2),
/// h3...h5 backends: the LB namespace of one network, and with `.address` the ingress namespace.
@Suite(.serialized) struct TrafficThroughTheBalancer {
    static let vip = ip("198.18.1.100")
    static let emptyVIP = ip("198.18.1.101")
    static let lbAddress = ip("198.18.0.2")
    static let backends = [ip("198.18.0.3"), ip("198.18.0.4"), ip("198.18.0.5")]

    /// The lab with servers (tcp 80 and udp 53 and tcp 8080 on each backend, tagged b3...b5) and
    /// the balancer (not yet applied).
    private func makeLab() throws -> (LBLab, LoadBalancer) {
        let lab = try LBLab(hosts: 5)
        do {
            let lb = lab.host(2).namespace
            try lab.sh(lb, "ip", "addr", "add", "\(Self.vip)/32", "dev", "eth0")
            try lab.sh(lb, "ip", "addr", "add", "\(Self.emptyVIP)/32", "dev", "eth0")
            try lb.setSysctl("net.ipv4.ip_forward", to: "1")
            // The LB forwards out the interface a flow came in on; no redirects to the client.
            try lb.setSysctl("net.ipv4.conf.all.send_redirects", to: "0")
            try lb.setSysctl("net/ipv4/conf/eth0/send_redirects", to: "0")
            for i in 3...5 {
                let ns = lab.host(i).namespace
                try lab.startServer(in: ns, proto: "tcp", port: 80, tag: "b\(i)")
                try lab.startServer(in: ns, proto: "udp", port: 53, tag: "b\(i)")
                try lab.startServer(in: ns, proto: "tcp", port: 8080, tag: "b\(i)")
            }
            let balancer = LoadBalancer(
                namespace: lb, options: LoadBalancerOptions(tableName: "ovl_lb", portMatch: .address(Self.lbAddress), snat: Self.lbAddress))
            return (lab, balancer)
        } catch {
            lab.destroy()
            throw error
        }
    }

    @Test func tcpAndUDPVIPsReachEveryBackendWithSNATAndEmptyVIPIsRefused() throws {
        let (lab, balancer) = try makeLab()
        defer { lab.destroy() }
        let first = try balancer.apply(
            vips: [
                VIPEntry(service: "web", vip: Self.vip, backends: Self.backends),
                VIPEntry(service: "idle", vip: Self.emptyVIP, backends: []),
            ], ports: [])
        #expect(first.full)
        let client = lab.host(1).namespace
        var tcpTags: [String: Int] = [:]
        for _ in 0..<30 {
            let answer = tcpGreeting(from: client, Self.vip, 80)
            #expect(answer?.hasSuffix(" \(Self.lbAddress)") == true, "answer \(answer ?? "none") should show the SNAT address")
            if let answer { tcpTags[answer.tag, default: 0] += 1 }
        }
        #expect(Set(tcpTags.keys) == ["b3", "b4", "b5"], "tcp spread: \(tcpTags)")
        var udpTags: [String: Int] = [:]
        for _ in 0..<30 {
            if let answer = udpAsk(from: client, Self.vip, 53) {
                #expect(answer.hasSuffix(" \(Self.lbAddress)"))
                udpTags[answer.tag, default: 0] += 1
            }
        }
        #expect(Set(udpTags.keys) == ["b3", "b4", "b5"], "udp spread: \(udpTags)")
        #expect(udpTags.values.reduce(0, +) == 30)
        // The VIP without backends is not balanced: the LB namespace itself refuses.
        #expect(tcpGreeting(from: client, Self.emptyVIP, 80) == nil)
    }

    @Test func publishedPortGoesToTargetPortAndChangesApplyAsDiffs() throws {
        let (lab, balancer) = try makeLab()
        defer { lab.destroy() }
        let client = lab.host(1).namespace
        let targets = Self.backends.map { LBTarget($0, port: 8080) }
        try balancer.apply(vips: [], ports: [PortEntry(service: "web", protocol: .tcp, port: 9000, targets: targets)])
        var tags = Set<String>()
        for _ in 0..<30 {
            if let a = tcpGreeting(from: client, Self.lbAddress, 9000) { tags.insert(a.tag) }
        }
        #expect(tags == ["b3", "b4", "b5"])
        // The published port only exists at its address, and the target port itself is not open here.
        #expect(tcpGreeting(from: client, Self.lbAddress, 8080) == nil)
        // One target: a diff (not a full replace), and all new flows go there.
        let update = try balancer.apply(
            vips: [], ports: [PortEntry(service: "web", protocol: .tcp, port: 9000, targets: [LBTarget(Self.backends[1], port: 8080)])])
        #expect(!update.full)
        #expect(update.commands > 0)
        for _ in 0..<10 { #expect(tcpGreeting(from: client, Self.lbAddress, 9000)?.tag == "b4") }
        // Applying the same state again does nothing.
        let same = try balancer.apply(
            vips: [], ports: [PortEntry(service: "web", protocol: .tcp, port: 9000, targets: [LBTarget(Self.backends[1], port: 8080)])])
        #expect(same.commands == 0 && !same.full)
    }

    @Test func removingABackendKeepsItsOpenConnectionsButSendsNoNewFlowsThere() throws {
        let (lab, balancer) = try makeLab()
        defer { lab.destroy() }
        let client = lab.host(1).namespace
        try balancer.apply(vips: [VIPEntry(service: "web", vip: Self.vip, backends: Self.backends)], ports: [])
        // Open connections until one lands on b3.
        var open: [TCPClient] = []
        var onB3: TCPClient?
        for _ in 0..<60 where onB3 == nil {
            guard let c = TCPClient(from: client, to: Self.vip, port: 80), let greeting = c.readLine() else { continue }
            open.append(c)
            if greeting.tag == "b3" { onB3 = c }
        }
        let kept = try #require(onB3)
        let update = try balancer.apply(
            vips: [VIPEntry(service: "web", vip: Self.vip, backends: Array(Self.backends.dropFirst()))], ports: [])
        #expect(!update.full)
        #expect(kept.ask("still there")?.hasPrefix("b3 still there") == true)
        var tags: [String: Int] = [:]
        for _ in 0..<30 {
            if let a = tcpGreeting(from: client, Self.vip, 80) { tags[a.tag, default: 0] += 1 }
        }
        #expect(tags["b3"] == nil, "new flows reached the removed backend: \(tags)")
        #expect(tags.values.reduce(0, +) == 30)
        #expect(kept.ask("and again")?.hasPrefix("b3 and again") == true)
    }

    @Test func aRefusedDiffFallsBackToAFullReplaceAndRemoveIsIdempotent() throws {
        let (lab, balancer) = try makeLab()
        defer { lab.destroy() }
        let client = lab.host(1).namespace
        try balancer.apply(vips: [VIPEntry(service: "web", vip: Self.vip, backends: Self.backends)], ports: [])
        // Someone else deleted a map element behind our back: the diff's delete fails in the kernel.
        _ = try lab.host(2).namespace.run {
            try PacketFilter().run("delete element ip ovl_lb vip_slot0 { \(Self.vip) }")
        }
        let update = try balancer.apply(vips: [VIPEntry(service: "web", vip: Self.vip, backends: [Self.backends[2]])], ports: [])
        #expect(update.full)
        for _ in 0..<5 { #expect(tcpGreeting(from: client, Self.vip, 80)?.tag == "b5") }
        try balancer.remove()
        #expect(balancer.current == nil)
        try balancer.remove()
        let exists = try lab.host(2).namespace.run { try PacketFilter().tableExists(family: .ip, name: "ovl_lb") }
        #expect(!exists)
        #expect(tcpGreeting(from: client, Self.vip, 80) == nil)
    }

    /// Growing from one service to 2,000 (and back) rebuilds the table in one transaction instead
    /// of sending thousands of element commands, and the real service keeps answering after each.
    @Test func aLargeGrowthOrShrinkIsAFullReplace() throws {
        let (lab, balancer) = try makeLab()
        defer { lab.destroy() }
        let client = lab.host(1).namespace
        let web = VIPEntry(service: "web", vip: Self.vip, backends: Self.backends)
        try balancer.apply(vips: [web], ports: [])
        let many = (0..<2_000).map { i in
            VIPEntry(service: "s\(i)", vip: IPv4Address(0x0A64_0000 + UInt32(i)), backends: [IPv4Address(0x0AC8_0000 + UInt32(i))])
        }
        let grown = try balancer.apply(vips: [web] + many, ports: [])
        #expect(grown.full)
        let listed = try lab.host(2).namespace.run { try PacketFilter().listTable(family: .ip, name: "ovl_lb") }
        #expect(listed.contains("10.100.7.207"))  // the 2,000th VIP
        #expect(tcpGreeting(from: client, Self.vip, 80) != nil)
        let shrunk = try balancer.apply(vips: [web], ports: [])
        #expect(shrunk.full)
        #expect(tcpGreeting(from: client, Self.vip, 80) != nil)
        // A small change after that is a diff again.
        let small = try balancer.apply(vips: [VIPEntry(service: "web", vip: Self.vip, backends: [Self.backends[0]])], ports: [])
        #expect(!small.full)
        for _ in 0..<5 { #expect(tcpGreeting(from: client, Self.vip, 80)?.tag == "b3") }
    }

    /// Maps are made with room to double; a diff that would pass that is refused by the kernel and
    /// becomes a full replace with bigger maps, and nothing is lost on the way.
    @Test func aDiffPastTheMapsSizeBecomesAFullReplace() throws {
        let (lab, balancer) = try makeLab()
        defer { lab.destroy() }
        let client = lab.host(1).namespace
        let web = VIPEntry(service: "web", vip: Self.vip, backends: Self.backends)
        func many(_ count: Int, backends: Int) -> [VIPEntry] {
            (0..<count).map { i in
                VIPEntry(
                    service: "s\(i)", vip: IPv4Address(0x0A64_0000 + UInt32(i)),
                    backends: (0..<backends).map { IPv4Address(0x0AC8_0000 + UInt32(i * 16 + $0)) })
            }
        }
        try balancer.apply(vips: [web] + many(1_000, backends: 10), ports: [])
        let listing = { try lab.host(2).namespace.run { try PacketFilter().listTable(family: .ip, name: "ovl_lb") } }
        #expect(try listing().contains("size 2048"))
        // 1,100 more services of one backend: a diff of 2,200 element commands against an 11,000
        // element table, but 2,101 VIPs do not fit in maps of 2,048.
        var grown = [web] + many(1_000, backends: 10)
        grown += many(2_100, backends: 1).suffix(1_100)
        let update = try balancer.apply(vips: grown, ports: [])
        #expect(update.full)
        let after = try listing()
        #expect(after.contains("size 8192") && after.contains("10.100.8.51"))  // the 2,100th VIP
        for _ in 0..<3 { #expect(tcpGreeting(from: client, Self.vip, 80) != nil) }
        // Within the new size a change is a diff again.
        let small = try balancer.apply(vips: grown.dropLast(), ports: [])
        #expect(!small.full)
    }

    @Test func sctpInitToAPublishedPortArrivesDNATedAtTheTarget() throws {
        let (lab, balancer) = try makeLab()
        defer { lab.destroy() }
        let target = Self.backends[0]
        try balancer.apply(
            vips: [], ports: [PortEntry(service: "diameter", protocol: .sctp, port: 3868, targets: [LBTarget(target, port: 3869)])])
        // The backend counts SCTP packets for itself on port 3869 from the LB's address, and
        // (wrongly) to 3868, before anything else sees them.
        let backend = lab.host(3).namespace
        _ = try backend.run {
            try PacketFilter().run("""
                table ip ovlt_count {
                    counter dnated {}
                    counter undnated {}
                    chain pre {
                        type filter hook prerouting priority raw; policy accept;
                        ip saddr \(Self.lbAddress) ip daddr \(target) sctp dport 3869 counter name dnated
                        sctp dport 3868 counter name undnated
                    }
                }
                """)
        }
        let capture = try PacketCapture(namespace: backend, interface: "eth0")
        _ = capture.drain()
        try lab.host(1).namespace.run {
            let fd = socket(AF_INET, Int32(SOCK_RAW.rawValue), 132)
            guard fd >= 0 else { throw LabError("raw socket: \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            var sa = sockaddr_in.make(Self.lbAddress, 0)
            let packet = SCTP.initPacket(sourcePort: 40000, destinationPort: 3868, tag: 0x1234_5678)
            for _ in 0..<3 {
                let n = withUnsafePointer(to: &sa) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(fd, packet, packet.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
                guard n == packet.count else { throw LabError("sendto: \(String(cString: strerror(errno)))") }
            }
        }
        usleep(300_000)
        let counters = try backend.run { try PacketFilter().run("list counters table ip ovlt_count") }
        let dnated = packets(in: counters, counter: "dnated")
        #expect(dnated >= 1, "counters: \(counters)")
        #expect(packets(in: counters, counter: "undnated") == 0)
        // The captured frame: IPv4 to the target, SCTP to 3869, checksum still valid after NAT.
        let frames = capture.drain().filter { $0.count > 34 + 12 && $0[12] == 0x08 && $0[13] == 0x00 && $0[23] == 132 }
        let frame = try #require(frames.first)
        let ipHeader = Int(frame[14] & 0x0F) * 4
        let sctp = Array(frame[(14 + ipHeader)...])
        #expect(IPv4Address(bytes: frame[30..<34]) == target)
        #expect(UInt16(sctp[2]) << 8 | UInt16(sctp[3]) == 3869)
        #expect(SCTP.checksumIsValid(sctp))
    }

    private func packets(in text: String, counter: String) -> Int {
        // "counter dnated {\n packets 3 bytes 180\n }"
        guard let r = text.range(of: "counter \(counter) {") else { return -1 }
        let words = text[r.upperBound...].split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" })
        guard let i = words.firstIndex(of: "packets"), i + 1 < words.endIndex else { return -1 }
        return Int(words[i + 1]) ?? -1
    }
}

/// The host namespace: published ports on every local address, DNAT to a task behind the host,
/// no SNAT; locally made connections too (output hook), but not to 127.0.0.1.
@Suite(.serialized) struct HostModePublishing {
    @Test func localAddressesAreDNATedInPreroutingAndOutputButNotLoopback() throws {
        let lab = try LBLab(hosts: 2)
        defer { lab.destroy() }
        let host = lab.host(2).namespace
        let task = try lab.lab.makeNamespace("task")
        try NetlinkSocket(namespace: task).setUp("lo")
        try NetlinkSocket(namespace: host).createVeth(named: "vtask", peerName: "eth0", peerNamespace: task)
        try lab.sh(host, "ip", "addr", "add", "10.78.0.1/24", "dev", "vtask")
        try lab.sh(host, "ip", "link", "set", "vtask", "up")
        try lab.sh(task, "ip", "addr", "add", "10.78.0.2/24", "dev", "eth0")
        try lab.sh(task, "ip", "link", "set", "eth0", "up")
        try lab.sh(task, "ip", "route", "add", "default", "via", "10.78.0.1")
        try host.setSysctl("net.ipv4.ip_forward", to: "1")
        try lab.startServer(in: task, proto: "tcp", port: 80, tag: "task")
        try lab.startServer(in: task, proto: "udp", port: 5353, tag: "task")

        let balancer = LoadBalancer(namespace: host, options: LoadBalancerOptions(tableName: "ovl_host"))
        try balancer.apply(
            vips: [],
            ports: [
                PortEntry(service: "web", protocol: .tcp, port: 8080, targets: [LBTarget(ip("10.78.0.2"), port: 80)]),
                PortEntry(service: "dns", protocol: .udp, port: 53, targets: [LBTarget(ip("10.78.0.2"), port: 5353)]),
            ])
        let client = lab.host(1).namespace
        let hostAddress = lab.host(2).address
        // From outside: no SNAT, so the task sees the client's own address.
        #expect(tcpGreeting(from: client, hostAddress, 8080) == "task \(lab.host(1).address)")
        #expect(udpAsk(from: client, hostAddress, 53) == "task \(lab.host(1).address)")
        // A port that is not published is not forwarded.
        #expect(tcpGreeting(from: client, hostAddress, 8081) == nil)
        // From the host itself (output hook), to its own address and to the task-side address.
        #expect(tcpGreeting(from: host, hostAddress, 8080)?.tag == "task")
        #expect(tcpGreeting(from: host, ip("10.78.0.1"), 8080)?.tag == "task")
        // Loopback is left alone.
        #expect(tcpGreeting(from: host, ip("127.0.0.1"), 8080) == nil)
        try balancer.remove()
        #expect(tcpGreeting(from: client, hostAddress, 8080) == nil)
    }
}

/// SCTP packets built by hand (no SCTP sockets on this machine): RFC 9260.
enum SCTP {
    /// A common header (RFC 9260 section 3.1) and one INIT chunk (section 3.3.2), checksummed.
    static func initPacket(sourcePort: UInt16, destinationPort: UInt16, tag: UInt32) -> [UInt8] {
        var p: [UInt8] = []
        func u16(_ v: UInt16) { p += [UInt8(v >> 8), UInt8(v & 0xFF)] }
        func u32(_ v: UInt32) { p += [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }
        u16(sourcePort)
        u16(destinationPort)
        u32(0)  // verification tag: 0 in a packet carrying INIT
        u32(0)  // checksum, filled below
        p += [1, 0]  // chunk type INIT, flags
        u16(20)  // chunk length
        u32(tag)  // initiate tag
        u32(65536)  // advertised receiver window credit
        u16(1)  // outbound streams
        u16(1)  // inbound streams
        u32(1)  // initial TSN
        let crc = crc32c(p)
        // RFC 9260 appendix A: the CRC's bytes go on the wire least significant first.
        p[8] = UInt8(crc & 0xFF)
        p[9] = UInt8((crc >> 8) & 0xFF)
        p[10] = UInt8((crc >> 16) & 0xFF)
        p[11] = UInt8(crc >> 24)
        return p
    }

    /// Whether an SCTP packet's checksum matches its bytes.
    static func checksumIsValid(_ packet: [UInt8]) -> Bool {
        guard packet.count >= 12 else { return false }
        var zeroed = packet
        zeroed[8...11] = [0, 0, 0, 0]
        let crc = crc32c(zeroed)
        return packet[8] == UInt8(crc & 0xFF) && packet[9] == UInt8((crc >> 8) & 0xFF)
            && packet[10] == UInt8((crc >> 16) & 0xFF) && packet[11] == UInt8(crc >> 24)
    }

    /// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78).
    static func crc32c(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            crc ^= UInt32(b)
            for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        }
        return ~crc
    }
}

@Test func crc32cMatchesTheStandardCheckValue() {
    // The CRC-32C check value for "123456789" (RFC 3720 appendix B.4 family of vectors).
    #expect(SCTP.crc32c(Array("123456789".utf8)) == 0xE306_9283)
}
