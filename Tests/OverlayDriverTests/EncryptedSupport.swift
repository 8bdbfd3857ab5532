import Foundation
import Logging
import IPsecKeys
import Netlink
import OverlayDriver
import OverlayModel
import OverlayTestKit
import Testing

/// A keyring of three random keys with tags `first`, `first + 1`, `first + 2`.
func testKeyring(first: UInt32 = 1) throws -> IPsecKeyring {
    try IPsecKeyring(keys: [IPsecKey.random(tag: first), IPsecKey.random(tag: first + 1), IPsecKey.random(tag: first + 2)])
}

/// Two or three lab hosts, each with an encrypted network `sec` (10.50.0.0/24, VNI 5001) and a
/// plain network `plain` (10.60.0.0/24, VNI 6001), a container on each host on each network
/// (`s<i>` at 10.50.0.<i+1>, `p<i>` at 10.60.0.<i+1>), and every host's peers added on every other.
final class EncryptedLab: @unchecked Sendable {
    // @unchecked: a test owns it.
    let f: Fixture
    var secEndpoints: [OverlayEndpoint] = []
    var plainEndpoints: [OverlayEndpoint] = []
    var secContainers: [NetworkNamespace] = []
    var plainContainers: [NetworkNamespace] = []
    static let secVNI: UInt32 = 5001
    static let plainVNI: UInt32 = 6001

    init(_ name: String, hosts: Int, link: EndpointLink = .auto, espEncapsulation: ESPEncapsulation = .raw,
         logger: Logger? = nil, keys: IPsecKeyring?, bootIDs: Bool = false) throws {
        f = try Fixture(name, hosts: hosts, link: link, espEncapsulation: espEncapsulation, logger: logger, bootIDs: bootIDs)
        do {
            // Each host learns the others' boot IDs (the daemon has them from gossip metadata).
            if let boots = f.bootIDs {
                for (i, d) in f.drivers.enumerated() {
                    for j in f.drivers.indices where j != i { d.userspaceDatapath.setPeerBootID(.v4(f.lab.hosts[j].address), boots[j]) }
                }
            }
            for (i, d) in f.drivers.enumerated() {
                if let keys { d.setIPsecKeys(keys) }
                try d.createNetwork(OverlayNetworkSpec(name: "sec", subnet: "10.50.0.0/24", vni: Self.secVNI, encrypted: true))
                try d.createNetwork(OverlayNetworkSpec(name: "plain", subnet: "10.60.0.0/24", vni: Self.plainVNI))
                let sc = try f.container("s\(i + 1)")
                let pc = try f.container("p\(i + 1)")
                secContainers.append(sc)
                plainContainers.append(pc)
                secEndpoints.append(try d.attach(EndpointSpec(id: "s\(i + 1)", network: "sec", namespace: .path(sc.path!), address: ip("10.50.0.\(i + 2)"))))
                plainEndpoints.append(try d.attach(EndpointSpec(id: "p\(i + 1)", network: "plain", namespace: .path(pc.path!), address: ip("10.60.0.\(i + 2)"))))
            }
            for (i, d) in f.drivers.enumerated() {
                for j in f.drivers.indices where j != i {
                    try d.addPeer(secEndpoints[j].peer, network: "sec")
                    try d.addPeer(plainEndpoints[j].peer, network: "plain")
                }
            }
        } catch {
            f.destroy()
            throw error
        }
    }

    var drivers: [OverlayDriver] { f.drivers }
    func destroy() { f.destroy() }

    /// `ping -c count -i interval` from container `from` (encrypted network) to host `to`'s container.
    func pingSec(_ from: Int, _ to: Int, count: Int = 2, extra: [String] = []) throws -> CommandResult {
        try f.lab.run(["ping", "-c", "\(count)", "-i", "0.2", "-W", "2"] + extra + [secEndpoints[to].address.description], in: secContainers[from])
    }
}

/// The IP protocol of a captured Ethernet frame carrying IPv4, and for UDP its destination port
/// and (if VXLAN-sized) the VNI.
struct CapturedPacket {
    let proto: UInt8
    let udpDestination: UInt16?
    let vni: UInt32?

    init?(_ frame: [UInt8]) {
        guard frame.count >= 34, frame[12] == 0x08, frame[13] == 0x00 else { return nil }
        proto = frame[23]
        let l4 = 14 + Int(frame[14] & 0xF) * 4
        if proto == 17, frame.count >= l4 + 16 {
            udpDestination = UInt16(frame[l4 + 2]) << 8 | UInt16(frame[l4 + 3])
            vni = UInt32(frame[l4 + 12]) << 16 | UInt32(frame[l4 + 13]) << 8 | UInt32(frame[l4 + 14])
        } else {
            udpDestination = nil
            vni = nil
        }
    }
}

/// Whether a captured Ethernet frame is IPv4 carrying ESP (protocol 50).
func isESP(_ frame: [UInt8]) -> Bool {
    frame.count >= 34 && frame[12] == 0x08 && frame[13] == 0x00 && frame[23] == 50
}

/// Whether an Ethernet frame is IPv4 carrying ESP, bare or in UDP to or from port 4500 (RFC 3948).
func isESPAnyEncapsulation(_ frame: [UInt8]) -> Bool {
    guard !isESP(frame) else { return true }
    guard frame.count >= 42, frame[12] == 0x08, frame[13] == 0x00, frame[23] == 17 else { return false }
    let ihl = Int(frame[14] & 0x0F) * 4
    guard frame.count >= 14 + ihl + 8 else { return false }
    let sport = UInt16(frame[14 + ihl]) << 8 | UInt16(frame[15 + ihl])
    let dport = UInt16(frame[16 + ihl]) << 8 | UInt16(frame[17 + ihl])
    return sport == 4500 || dport == 4500
}

/// Writes captured Ethernet frames as a pcap file (LINKTYPE_ETHERNET).
func writePcap(_ frames: [[UInt8]], to path: String) throws {
    func le32(_ v: UInt32) -> [UInt8] { [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF), UInt8((v >> 16) & 0xFF), UInt8(v >> 24)] }
    var pcap = le32(0xa1b2_c3d4) + [2, 0, 4, 0] + le32(0) + le32(0) + le32(65535) + le32(1)
    for f in frames { pcap += le32(0) + le32(0) + le32(UInt32(f.count)) + le32(UInt32(f.count)) + f }
    try Data(pcap).write(to: URL(fileURLWithPath: path))
}

/// Sends `bytes` seeded random bytes over one TCP connection from `client` to a server in
/// `server` listening on `address:port`; both sides print "<length> <sha256>". Returns what each
/// printed (the server's nil if it did not finish).
func tcpTransfer(_ lab: Lab, from client: NetworkNamespace, to server: NetworkNamespace, address: String, port: Int,
                 bytes: Int, seed: Int) throws -> (sent: CommandResult, received: CommandResult?) {
    let serverScript = """
        import hashlib, socket
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", \(port))); s.listen(1); s.settimeout(30)
        c, _ = s.accept(); c.settimeout(30); h = hashlib.sha256(); n = 0
        while True:
            d = c.recv(1 << 20)
            if not d: break
            h.update(d); n += len(d)
        print(n, h.hexdigest())
        """
    let clientScript = """
        import hashlib, random, socket, time
        data = random.Random(\(seed)).randbytes(\(bytes))
        for _ in range(50):
            try:
                c = socket.create_connection(("\(address)", \(port)), timeout=5); break
            except OSError: time.sleep(0.1)
        c.sendall(data); c.close()
        print(len(data), hashlib.sha256(data).hexdigest())
        """
    let done = DispatchSemaphore(value: 0)
    nonisolated(unsafe) var served: CommandResult?
    DispatchQueue.global().async {
        served = try? lab.run(["python3", "-c", serverScript], in: server, timeout: 60)
        done.signal()
    }
    let sent = try lab.run(["python3", "-c", clientScript], in: client, timeout: 60)
    done.wait()
    return (sent, served)
}
