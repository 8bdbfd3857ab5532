import Foundation
import Glibc
import IPsecKeys
import Netlink
import OverlayDriver
import OverlayModel
import OverlayTestKit
import Testing

/// Two lab hosts whose drivers carry encrypted networks as ESP in UDP (RFC 3948, port 4500):
/// network `sec` (10.52.0.0/24, VNI 5201, MTU 1416) with a container on each host.
final class EncryptedUDPLab: @unchecked Sendable {
    // @unchecked: a test owns it.
    let lab: Lab
    let stateRoot: String
    var drivers: [OverlayDriver] = []
    var endpoints: [OverlayEndpoint] = []
    var containers: [NetworkNamespace] = []
    static let vni: UInt32 = 5201

    init(_ name: String, keys: IPsecKeyring) throws {
        stateRoot = "/run/\(name)-state"
        try? FileManager.default.removeItem(atPath: stateRoot)
        lab = try Lab.create(name: name, hosts: 2)
        do {
            for (i, h) in lab.hosts.enumerated() {
                let tag = String(h.name.lowercased().filter { $0.isLetter || $0.isNumber }.prefix(6))
                let dp = UserspaceDatapath(host: try NetlinkSocket(namespace: h.namespace), nodeTag: tag, espEncapsulation: .udp)
                let d = try OverlayDriver(configuration: OverlayDriverConfiguration(
                    nodeID: h.name, stateDirectory: "\(stateRoot)/\(h.name)", hostNamespacePath: h.namespace.path,
                    dataPathAddress: .v4(h.address)), datapath: dp)
                drivers.append(d)
                d.setIPsecKeys(keys)
                let mtu = ESPEncapsulation.udp.containerMTU(underlayMTU: 1500)
                try d.createNetwork(OverlayNetworkSpec(name: "sec", subnet: "10.52.0.0/24", vni: Self.vni, mtu: mtu, encrypted: true))
                let c = try lab.makeNamespace("u\(i + 1)")
                try NetlinkSocket(namespace: c).setUp("lo")
                containers.append(c)
                endpoints.append(try d.attach(EndpointSpec(id: "u\(i + 1)", network: "sec", namespace: .path(c.path!), address: ip("10.52.0.\(i + 2)"))))
            }
            try drivers[0].addPeer(endpoints[1].peer, network: "sec")
            try drivers[1].addPeer(endpoints[0].peer, network: "sec")
        } catch {
            destroy()
            throw error
        }
    }

    func destroy() {
        for d in drivers { d.shutdown() }
        drivers = []
        lab.destroy()
        try? FileManager.default.removeItem(atPath: stateRoot)
    }

    func ping(_ from: Int, _ to: Int, count: Int = 2, extra: [String] = []) throws -> CommandResult {
        try lab.run(["ping", "-c", "\(count)", "-i", "0.2", "-W", "2"] + extra + [endpoints[to].address.description], in: containers[from])
    }
}

/// The UDP payload of a captured IPv4/UDP frame to `port`, or nil.
func udpPayload(_ frame: [UInt8], port: UInt16) -> [UInt8]? {
    guard let p = CapturedPacket(frame), p.proto == 17, p.udpDestination == port else { return nil }
    let l4 = 14 + Int(frame[14] & 0xF) * 4
    return Array(frame[(l4 + 8)...])
}

@Suite("Encrypted networks, ESP in UDP (RFC 3948)", .serialized)
struct EncryptedUDPTests {
    @Test("ESP in UDP: the MTU is 8 lower; modes parse")
    func mtuAndParsing() {
        #expect(ESPEncapsulation.raw.containerMTU(underlayMTU: 1500) == 1424)
        #expect(ESPEncapsulation.udp.containerMTU(underlayMTU: 1500) == 1416)
        #expect(ESPEncapsulation.udp(port: 4500).overhead == 8)
        // 1416 + Ethernet 14 + VXLAN 8 + UDP 8 + ESP 16 + trailer 2 + ICV 8 + UDP 8 + IP 20 = 1500.
        let payload: Int = 1416 + 14 + 8 + 8
        let esp: Int = 16 + payload + 2 + 8
        let onWire: Int = esp + 8 + 20
        #expect(onWire == 1500)
        #expect(ESPEncapsulation("udp") == .udp(port: 4500))
        #expect(ESPEncapsulation("udp:4501") == .udp(port: 4501))
        #expect(ESPEncapsulation("esp") == .raw)
        #expect(ESPEncapsulation("udp:0") == nil)
        #expect(ESPEncapsulation("tcp") == nil)
    }

    @Test("ESP in UDP is the userspace datapath's default",
          .enabled(if: ProcessInfo.processInfo.environment["OVERLAY_ESP_ENCAP"] == nil, "OVERLAY_ESP_ENCAP is set: it overrides the default"))
    func defaultMode() throws {
        let dp = UserspaceDatapath(host: try NetlinkSocket(namespace: try .current()), nodeTag: "dflt")
        #expect(dp.espEncapsulation == .udp(port: 4500))
        #expect(dp.espEncapsulation.containerMTU(underlayMTU: 1500) == 1416)
    }

    @Test("ESP in UDP: hosts reach each other; tshark decodes ESP-in-UDP and VXLAN; a TCP stream arrives intact through UDP GSO/GRO; replays, IKE markers and cleartext VXLAN are dropped")
    func endToEnd() throws {
        let keys = try testKeyring()
        let e = try EncryptedUDPLab("ovlt-encu", keys: keys)
        defer { e.destroy() }
        let h0 = e.lab.hosts[0], h1 = e.lab.hosts[1]
        let dp0 = e.drivers[0].userspaceDatapath, dp1 = e.drivers[1].userspaceDatapath
        #expect(dp0.espEncapsulation == .udp(port: 4500))
        print("UDP offloads: \(dp0.udpOffloads)")
        let cap = try PacketCapture(namespace: h1.namespace, interface: h1.interface)
        let r = try e.ping(0, 1, count: 3)
        #expect(r.status == 0, "\(r.output)")
        // Full-size frames fit: 1416-byte packets with DF set cross.
        let big = try e.ping(0, 1, count: 2, extra: ["-M", "do", "-s", "\(1416 - 28)"])
        #expect(big.status == 0, "\(big.output)")
        let frames = cap.drain()
        let packets = frames.compactMap(CapturedPacket.init)
        #expect(!packets.contains { $0.proto == 50 })
        let inUDP = frames.filter { udpPayload($0, port: 4500) != nil }
        #expect(inUDP.count >= 6)

        // Replay: the last ESP packet from host 0, sent again; then the IKE marker and a keep-alive.
        let fromH0 = frames.filter { Array($0[26..<30]) == h0.address.bytes }.compactMap { udpPayload($0, port: 4500) }
        let esp = try #require(fromH0.last)
        let before = dp1.counters
        try h0.namespace.run { () throws in
            let s = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            guard s >= 0 else { throw LabError("udp socket: errno \(errno)") }
            defer { close(s) }
            try sendTo(s, esp, h1.address, port: 4500)
            try sendTo(s, [0, 0, 0, 0] + [UInt8](repeating: 7, count: 40), h1.address, port: 4500)
            try sendTo(s, [0xFF], h1.address, port: 4500)
        }
        Thread.sleep(forTimeInterval: 0.3)
        let after = dp1.counters
        #expect(after.dropped(.espReplayed) == before.dropped(.espReplayed) + 1, "\(after)")
        #expect(after.dropped(.nonESPMarker) == before.dropped(.nonESPMarker) + 2, "\(after)")

        // Cleartext VXLAN with the encrypted VNI to host 1's data-path port: the nft rule drops it.
        #expect(try e.drivers[1].cleartextDrops(network: "sec") == 0)
        var vxlan: [UInt8] = [0x08, 0, 0, 0, UInt8(EncryptedUDPLab.vni >> 16), UInt8((EncryptedUDPLab.vni >> 8) & 0xFF), UInt8(EncryptedUDPLab.vni & 0xFF), 0]
        vxlan += e.endpoints[1].mac.bytes + e.endpoints[0].mac.bytes + [0x08, 0x00] + [UInt8](repeating: 0x45, count: 40)
        let payload = vxlan
        try h0.namespace.run { () throws in
            let s = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            guard s >= 0 else { throw LabError("udp socket: errno \(errno)") }
            defer { close(s) }
            for _ in 0..<3 { try sendTo(s, payload, h1.address, port: 4789) }
        }
        Thread.sleep(forTimeInterval: 0.3)
        #expect(try e.drivers[1].cleartextDrops(network: "sec") == 3)

        // Docker's bare-ESP MTU (1424) does not fit ESP in UDP on 1500: refused when the network is
        // made (the driver knows its datapath's encapsulation), with the MTU to use.
        let refused = #expect(throws: OverlayDriverError.self) {
            try e.drivers[0].createNetwork(OverlayNetworkSpec(name: "big", subnet: "10.53.0.0/24", vni: 5301, mtu: 1424, encrypted: true))
        }
        #expect(refused?.code == .invalidMTU && refused?.message.contains("68...1416") == true, "\(String(describing: refused))")

        // A TCP stream: super-frames sealed into GSO runs, coalesced on receipt, same SHA-256.
        let bytes = 24 << 20
        let (sent, served) = try tcpTransfer(e.lab, from: e.containers[0], to: e.containers[1],
                                             address: "\(e.endpoints[1].address)", port: 5998, bytes: bytes, seed: 11)
        let received = try #require(served)
        #expect(sent.status == 0, "\(sent.output)")
        #expect(received.status == 0, "\(received.output)")
        let want = sent.output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(want.hasPrefix("\(bytes) "))
        #expect(received.output.trimmingCharacters(in: .whitespacesAndNewlines) == want)
        let tx = dp0.counters, rx = dp1.counters
        print("ESP in UDP TCP: h1 \(tx)\n  h2 \(rx)")
        #expect(tx.txSuperFrames > 0)
        #expect(tx.dropped(.sendFailed) == 0)
        #expect(rx.dropped(.espAuthFailed) == 0 && rx.dropped(.notESP) == 0)

        // tshark with the SA keys decodes the captured ping packets as ESP in UDP, then VXLAN.
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/tshark") else { return }
        let path = "/tmp/ovlt-encu-\(UInt32.random(in: 0...UInt32.max)).pcap"
        try writePcap(inUDP, to: path)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let keyHex = keys.primary.material.withUnsafeBytes { $0.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined() }
        var args = ["-r", path, "-d", "udp.port==4500,udpencap", "-o", "esp.enable_encryption_decode:TRUE"]
        for (src, dst) in [(h0.address, h1.address), (h1.address, h0.address)] {
            let spi = SPI.derive(source: .v4(src), destination: .v4(dst), tag: keys.primary.tag)
            let salt = String(spi.rawValue, radix: 16)
            let hex = "0x" + keyHex + String(repeating: "0", count: 8 - salt.count) + salt
            args += ["-o", "uat:esp_sa:\"IPv4\",\"\(src)\",\"\(dst)\",\"\(spi)\",\"AES-GCM with 8 octet ICV [RFC4106]\",\"\(hex)\",\"NULL\",\"\""]
        }
        let out = try Command.run(["/usr/bin/tshark"] + args + ["-V"], timeout: 60)
        #expect(out.output.contains("Encapsulating Security Payload"), "\(out.output.prefix(3000))")
        #expect(out.output.contains("VXLAN Network Identifier (VNI): \(EncryptedUDPLab.vni)"), "\(out.output.prefix(3000))")
        #expect(out.output.contains("Echo (ping) request"))
    }
}
