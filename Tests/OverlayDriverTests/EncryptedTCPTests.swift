import Foundation
import Glibc
import IPsecKeys
import OverlayDriver
import OverlayModel
import OverlayTestKit
import Testing

extension EncryptedWireTests {
    @Test("a TCP stream crosses intact through TAP offloads: TSO super-frames segmented, segments merged on receive; tshark finds every inner checksum good")
    func tcpThroughOffloads() throws {
        let keys = try testKeyring()
        let e = try EncryptedLab("ovlt-enct", hosts: 2, keys: keys)
        defer { e.destroy() }
        #expect(e.drivers[0].userspaceDatapath.tapOffloads)
        #expect(try e.pingSec(0, 1).status == 0)
        let h0 = e.f.lab.hosts[0], h1 = e.f.lab.hosts[1]
        let cap = try PacketCapture(namespace: h0.namespace, interface: h0.interface)
        let bytes = 24 << 20
        let (sent, served) = try tcpTransfer(e.f.lab, from: e.secContainers[0], to: e.secContainers[1],
                                             address: "\(e.secEndpoints[1].address)", port: 5999, bytes: bytes, seed: 7)
        let frames = cap.drain()
        let received = try #require(served)
        #expect(sent.status == 0, "\(sent.output)")
        #expect(received.status == 0, "\(received.output)")
        let want = sent.output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(want.hasPrefix("\(bytes) "))
        #expect(received.output.trimmingCharacters(in: .whitespacesAndNewlines) == want)
        let tx = e.drivers[0].userspaceDatapath.counters, rx = e.drivers[1].userspaceDatapath.counters
        print("TCP through offloads: h1 \(tx)\n  h2 \(rx)")
        #expect(tx.txSuperFrames > 0)
        #expect(rx.rxMergedWrites > 0)
        #expect(rx.rxFrames > rx.rxMergedWrites)
        #expect(tx.dropped(.badOffload) == 0 && tx.dropped(.badFrame) == 0)
        #expect(rx.dropped(.tapWriteFailed) == 0)

        // What went over the wire decodes, and every inner IPv4 and TCP checksum is right.
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/tshark") else { return }
        let path = "/tmp/ovlt-enct-\(UInt32.random(in: 0...UInt32.max)).pcap"
        try writePcap(frames.filter(isESP), to: path)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let keyHex = keys.primary.material.withUnsafeBytes { $0.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined() }
        var args = ["-r", path, "-o", "esp.enable_encryption_decode:TRUE", "-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE"]
        for (src, dst) in [(h0.address, h1.address), (h1.address, h0.address)] {
            let spi = SPI.derive(source: .v4(src), destination: .v4(dst), tag: keys.primary.tag)
            let salt = String(spi.rawValue, radix: 16)
            let hex = "0x" + keyHex + String(repeating: "0", count: 8 - salt.count) + salt
            args += ["-o", "uat:esp_sa:\"IPv4\",\"\(src)\",\"\(dst)\",\"\(spi)\",\"AES-GCM with 8 octet ICV [RFC4106]\",\"\(hex)\",\"NULL\",\"\""]
        }
        let out = try Command.run(["/usr/bin/tshark"] + args + ["-Y", "tcp", "-T", "fields", "-e", "ip.checksum.status",
                                                                "-e", "tcp.checksum.status", "-e", "tcp.len"], timeout: 60)
        // Two IP layers per packet (outer, inner): each line lists both IP statuses, then TCP's.
        let rows = out.output.split(separator: "\n").map { $0.split(separator: "\t", omittingEmptySubsequences: false) }
            .filter { $0.count == 3 }
        let data = rows.filter { (Int($0[2]) ?? 0) > 1000 }
        print("tshark: \(rows.count) inner TCP segments decoded, \(data.count) with more than 1000 bytes")
        #expect(data.count >= 10, "\(out.output.prefix(2000))")
        #expect(rows.allSatisfy { $0[1] == "1" && !$0[0].contains("0") }, "\(rows.filter { $0[1] != "1" }.prefix(5))")
    }
}
