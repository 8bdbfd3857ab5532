import Foundation
import IPsecKeys
import Netlink
import OverlayDriver
import OverlayModel
import OverlayTestKit
import Testing

@Suite("Encrypted networks (userspace ESP datapath) in the lab", .serialized)
struct EncryptedTests {
    @Test("the encrypted MTU is Docker's 1424 on 1500 (50 VXLAN + 26 ESP + padding to 4)")
    func encryptedMTU() {
        #expect(OverlayDriverConfiguration.encryptedMTU(underlayMTU: 1500) == 1424)
        #expect(OverlayDriverConfiguration.encryptedMTU(underlayMTU: 9000) == 8924)
        #expect(OverlayDriverConfiguration.encryptedMTU(underlayMTU: 1501) == 1424)
        #expect(OverlayDriverConfiguration.encryptedMTU(underlayMTU: 1504) == 1428)
        #expect(OverlayDriverConfiguration.encryptedMTU(underlayMTU: 100) == 0)
    }

    @Test("an encrypted and a plain network side by side: both ping; 1424-byte DF passes, 1425 is refused",
          arguments: [EndpointLink.macvlan, .vethBridge])
    func pingSideBySide(link: EndpointLink) throws {
        let keys = try testKeyring()
        let e = try EncryptedLab("ovlt-enc\(link.tag)", hosts: 2, link: link, keys: keys)
        defer { e.destroy() }
        #expect(e.secEndpoints[0].mtu == 1424)
        #expect(e.plainEndpoints[0].mtu == 1450)
        #expect(e.drivers[0].networks().first { $0.name == "sec" }?.encrypted == true)
        #expect(e.drivers[0].networks().first { $0.name == "plain" }?.encrypted == false)
        #expect(try e.drivers[0].encryptionStatus(network: "sec") == .ok)
        #expect(try e.drivers[0].encryptionStatus(network: "plain") == nil)
        let r = try e.pingSec(0, 1)
        #expect(r.status == 0, "\(r.output)")
        let p = try e.f.ping(e.plainEndpoints[1].address, from: e.plainContainers[0])
        #expect(p.status == 0, "\(p.output)")
        // 1424-byte IP packets: 1396 bytes of ICMP payload + 8 ICMP + 20 IP.
        let big = try e.pingSec(0, 1, count: 2, extra: ["-M", "do", "-s", "1396"])
        #expect(big.status == 0, "\(big.output)")
        let tooBig = try e.pingSec(0, 1, count: 1, extra: ["-M", "do", "-s", "1397"])
        #expect(tooBig.status != 0)
        let c = e.drivers[0].userspaceDatapath.counters
        print("encrypted ping (\(link)): \(c)")
        #expect(c.txFrames > 0 && c.rxFrames > 0)
        #expect(c.esp.sealedPackets > 0 && c.esp.openedPackets > 0)
    }
}
