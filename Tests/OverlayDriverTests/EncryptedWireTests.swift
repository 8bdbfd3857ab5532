import Foundation
import Glibc
import IPsecKeys
import Netlink
import OverlayCrypto
import OverlayDriver
import OverlayModel
import OverlayTestKit
import Testing

/// What crosses the underlay, replays, cleartext injection, keys and teardown.
@Suite("Encrypted networks on the wire", .serialized)
struct EncryptedWireTests {
    @Test("the underlay carries only ESP for the encrypted network, VXLAN for the plain one; tshark with the SA keys decodes VXLAN + ICMP")
    func underlayCapture() throws {
        let keys = try testKeyring()
        let e = try EncryptedLab("ovlt-encw", hosts: 2, keys: keys)
        defer { e.destroy() }
        let h0 = e.f.lab.hosts[0], h1 = e.f.lab.hosts[1]
        let cap = try PacketCapture(namespace: h0.namespace, interface: h0.interface)
        let r = try e.pingSec(0, 1, count: 3)
        #expect(r.status == 0, "\(r.output)")
        let p = try e.f.ping(e.plainEndpoints[1].address, from: e.plainContainers[0])
        #expect(p.status == 0, "\(p.output)")
        let frames = cap.drain()
        let packets = frames.compactMap(CapturedPacket.init)
        let esp = packets.filter { $0.proto == 50 }
        let vxlan = packets.filter { $0.proto == 17 && $0.udpDestination == 4789 }
        print("underlay capture: \(frames.count) frames, \(esp.count) ESP, \(vxlan.count) VXLAN (VNIs \(Set(vxlan.compactMap(\.vni))))")
        #expect(esp.count >= 6)
        #expect(!vxlan.contains { $0.vni == EncryptedLab.secVNI })
        #expect(vxlan.contains { $0.vni == EncryptedLab.plainVNI })

        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/tshark") else { return }
        let path = "/tmp/ovlt-encw-\(UInt32.random(in: 0...UInt32.max)).pcap"
        try writePcap(frames.filter(isESP), to: path)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let keyHex = keys.primary.material.withUnsafeBytes { $0.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined() }
        var args = ["-r", path, "-o", "esp.enable_encryption_decode:TRUE"]
        for (src, dst) in [(h0.address, h1.address), (h1.address, h0.address)] {
            let spi = SPI.derive(source: .v4(src), destination: .v4(dst), tag: keys.primary.tag)
            let salt = String(spi.rawValue, radix: 16)
            let hex = "0x" + keyHex + String(repeating: "0", count: 8 - salt.count) + salt
            args += ["-o", "uat:esp_sa:\"IPv4\",\"\(src)\",\"\(dst)\",\"\(spi)\",\"AES-GCM with 8 octet ICV [RFC4106]\",\"\(hex)\",\"NULL\",\"\""]
        }
        let out = try Command.run(["/usr/bin/tshark"] + args + ["-V"], timeout: 60)
        #expect(out.output.contains("VXLAN Network Identifier (VNI): \(EncryptedLab.secVNI)"), "\(out.output.prefix(3000))")
        #expect(out.output.contains("Internet Control Message Protocol"))
        #expect(out.output.contains("Echo (ping) request"))
    }

    @Test("a continuous ping across a key rotation applied on the hosts at different times loses nothing")
    func rotationLosesNothing() throws {
        let ring = try testKeyring()
        let e = try EncryptedLab("ovlt-encr", hosts: 2, keys: ring)
        defer { e.destroy() }
        #expect(try e.pingSec(0, 1).status == 0)
        let next = try ring.rotated(newKey: IPsecKey.random(tag: 4))
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var result: CommandResult?
        let lab = e.f.lab, target = e.secEndpoints[1].address.description, from = e.secContainers[0]
        DispatchQueue.global().async {
            result = try? lab.run(["ping", "-c", "80", "-i", "0.05", "-W", "1", target], in: from, timeout: 60)
            done.signal()
        }
        Thread.sleep(forTimeInterval: 1.0)
        e.drivers[0].setIPsecKeys(next)
        Thread.sleep(forTimeInterval: 0.5)
        e.drivers[1].setIPsecKeys(next)
        done.wait()
        let r = try #require(result)
        print("rotation ping: \(r.output.split(separator: "\n").suffix(2).joined(separator: " | "))")
        #expect(r.output.contains(" 0% packet loss"), "\(r.output)")
        #expect(e.drivers[0].userspaceDatapath.keyTags?.primary == 3)
        #expect(e.drivers[0].userspaceDatapath.keyTags?.tags == [2, 3, 4])
        let c = e.drivers[1].userspaceDatapath.counters
        #expect(c.esp.droppedOnOpen == 0, "\(c)")
        // A second rotation drops tag 2 on both; traffic goes on with tag 4.
        let third = try next.rotated(newKey: IPsecKey.random(tag: 5))
        e.drivers[1].setIPsecKeys(third)
        e.drivers[0].setIPsecKeys(third)
        #expect(try e.pingSec(0, 1).status == 0)
    }

    @Test("no keys: nothing is sent, the status and the log say why and drops are counted; keys arriving later open the network",
          arguments: [ESPEncapsulation.raw, .udp])
    func noKeysFailsClosed(mode: ESPEncapsulation) throws {
        let log = RecordedLog()
        let e = try EncryptedLab(mode == .raw ? "ovlt-encn" : "ovlt-encnu", hosts: 2, espEncapsulation: mode,
                                 logger: log.logger(), keys: nil)
        defer { e.destroy() }
        #expect(try e.drivers[0].encryptionStatus(network: "sec") == .noKeys)
        let h0 = e.f.lab.hosts[0]
        let cap = try PacketCapture(namespace: h0.namespace, interface: h0.interface)
        #expect(try e.pingSec(0, 1, count: 2).status != 0)
        // The plain network is unaffected.
        #expect(try e.f.ping(e.plainEndpoints[1].address, from: e.plainContainers[0]).status == 0)
        let c = e.drivers[0].userspaceDatapath.counters
        #expect(c.dropped(.noKeys) > 0, "\(c)")
        #expect(c.txFrames == 0)
        #expect(!cap.drain().contains(where: isESPAnyEncapsulation))
        #expect(log.all.contains { $0.contains("network sec: no IPsec keys yet, sending nothing") }, "\(log.all.suffix(10))")
        let ring = try testKeyring()
        for d in e.drivers { d.setIPsecKeys(ring) }
        #expect(try e.drivers[0].encryptionStatus(network: "sec") == .ok)
        #expect(try e.pingSec(0, 1).status == 0)
        // Keys withdrawn: closed again.
        e.drivers[0].setIPsecKeys(nil)
        #expect(try e.drivers[0].encryptionStatus(network: "sec") == .noKeys)
        #expect(try e.pingSec(0, 1, count: 1).status != 0)
    }

    @Test("a host with a wrong key gets nothing through; its drops are counted and it logs why", arguments: [ESPEncapsulation.raw, .udp])
    func wrongKey(mode: ESPEncapsulation) throws {
        let log = RecordedLog()
        let e = try EncryptedLab(mode == .raw ? "ovlt-encx" : "ovlt-encxu", hosts: 2, espEncapsulation: mode,
                                 logger: log.logger(), keys: nil)
        defer { e.destroy() }
        e.drivers[0].setIPsecKeys(try testKeyring())
        e.drivers[1].setIPsecKeys(try testKeyring())  // same tags, other key bytes
        #expect(try e.pingSec(0, 1, count: 2).status != 0)
        let c1 = e.drivers[1].userspaceDatapath.counters
        #expect(c1.dropped(.espAuthFailed) > 0, "\(c1)")
        #expect(c1.rxFrames == 0)
        // The receiving host says why, naming the sender.
        let sender = e.f.lab.hosts[0].address
        let why = log.all.filter { $0.contains("no IPsec key here opens") }
        #expect(why.contains { $0.contains("from=\(sender)") && $0.contains("authFailed=") }, "\(log.all.suffix(10))")
        // Other tags entirely: the SPIs are unknown.
        e.drivers[1].setIPsecKeys(try testKeyring(first: 10))
        #expect(try e.pingSec(0, 1, count: 1).status != 0)
        #expect(e.drivers[1].userspaceDatapath.counters.dropped(.espUnknownSPI) > 0)
    }

    @Test("a captured ESP packet sent again is dropped as a replay; cleartext VXLAN for the encrypted VNI is dropped by the nft rule")
    func replayAndCleartext() throws {
        let e = try EncryptedLab("ovlt-encp", hosts: 2, keys: try testKeyring())
        defer { e.destroy() }
        let h0 = e.f.lab.hosts[0], h1 = e.f.lab.hosts[1]
        let cap = try PacketCapture(namespace: h1.namespace, interface: h1.interface)
        #expect(try e.pingSec(0, 1).status == 0)
        let espFrames = cap.drain().filter { isESP($0) && Array($0[26..<30]) == h0.address.bytes }
        let frame = try #require(espFrames.last)
        let before = e.drivers[1].userspaceDatapath.counters
        let ihl = Int(frame[14] & 0xF) * 4
        let espBytes = Array(frame[(14 + ihl)...])
        try sendESP(espBytes, from: h0, to: h1)
        Thread.sleep(forTimeInterval: 0.3)
        let after = e.drivers[1].userspaceDatapath.counters
        #expect(after.dropped(.espReplayed) == before.dropped(.espReplayed) + 1, "\(after)")

        // Tampered: the same packet with a fresh sequence number (past the window) fails its ICV
        // (the sequence number is authenticated) and never reaches the container.
        var tampered = espBytes
        tampered[4] = tampered[4] &+ 0x10
        let forged = tampered
        try sendESP(forged, from: h0, to: h1)
        Thread.sleep(forTimeInterval: 0.3)
        let afterTamper = e.drivers[1].userspaceDatapath.counters
        #expect(afterTamper.dropped(.espAuthFailed) == after.dropped(.espAuthFailed) + 1, "\(afterTamper)")

        // Cleartext VXLAN with the encrypted VNI, from host 0 to host 1's data-path port.
        #expect(try e.drivers[1].cleartextDrops(network: "sec") == 0)
        var vxlan: [UInt8] = [0x08, 0, 0, 0, UInt8(EncryptedLab.secVNI >> 16), UInt8((EncryptedLab.secVNI >> 8) & 0xFF), UInt8(EncryptedLab.secVNI & 0xFF), 0]
        vxlan += e.secEndpoints[1].mac.bytes + e.secEndpoints[0].mac.bytes + [0x08, 0x00] + [UInt8](repeating: 0x45, count: 40)
        let payload = vxlan
        try h0.namespace.run { () throws in
            let s = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            guard s >= 0 else { throw LabError("udp socket: errno \(errno)") }
            defer { close(s) }
            for _ in 0..<3 { try sendTo(s, payload, h1.address, port: 4789) }
        }
        Thread.sleep(forTimeInterval: 0.3)
        #expect(try e.drivers[1].cleartextDrops(network: "sec") == 3)
        #expect(try e.drivers[1].cleartextDrops(network: "plain") == nil)
    }

    @Test("a peer VTEP released and retained (its last endpoint gone, then back) keeps its window: a packet captured before is refused")
    func windowKeptAcrossRelease() throws {
        let e = try EncryptedLab("ovlt-encw", hosts: 2, keys: try testKeyring(), bootIDs: true)
        defer { e.destroy() }
        let h0 = e.f.lab.hosts[0], h1 = e.f.lab.hosts[1]
        let cap = try PacketCapture(namespace: h1.namespace, interface: h1.interface)
        #expect(try e.pingSec(0, 1, count: 3).status == 0)
        let frame = try #require(cap.drain().filter { isESP($0) && Array($0[26..<30]) == h0.address.bytes }.first)
        // Host 1 loses its only peer on host 0 (the VTEP is released: its inbound SAs go), then
        // gets it back (retained: new inbound SAs).
        #expect(try e.drivers[1].removePeer(e.secEndpoints[0].peer, network: "sec"))
        try e.drivers[1].addPeer(e.secEndpoints[0].peer, network: "sec")
        let before = e.drivers[1].userspaceDatapath.counters
        let ihl = Int(frame[14] & 0xF) * 4
        let espBytes = Array(frame[(14 + ihl)...])
        try sendESP(espBytes, from: h0, to: h1)
        Thread.sleep(forTimeInterval: 0.3)
        let after = e.drivers[1].userspaceDatapath.counters
        // Refused, not opened again: behind the resumed window (with ESN, a sequence number that
        // far behind is taken for the next 2^32 epoch and fails its ICV, RFC 4303 A2).
        func refused(_ c: UserspaceDatapathCounters) -> UInt64 { c.dropped(.espReplayed) + c.dropped(.espOutsideWindow) + c.dropped(.espAuthFailed) }
        #expect(refused(after) == refused(before) + 1, "\(after)")
        // Host 0's traffic, its sequence numbers going on, still gets through.
        #expect(try e.pingSec(0, 1, count: 3).status == 0)
    }

    @Test("a peer host that restarts starts its sequence numbers again: dropped as replays until resetPeer gives fresh windows")
    func restartedPeer() throws {
        let ring = try testKeyring()
        let e = try EncryptedLab("ovlt-encs", hosts: 2, keys: ring)
        defer { e.destroy() }
        // Host 2's sequence numbers toward host 1 well past what the pings below can use.
        let warm = try e.f.lab.run(["ping", "-c", "100", "-i", "0.005", "-q", e.secEndpoints[0].address.description], in: e.secContainers[1])
        #expect(warm.status == 0, "\(warm.output)")
        // Host 2's daemon restarts: a new driver (start-up removes the old sandboxes), same endpoints.
        e.f.drivers[1].shutdown()
        let d1 = try e.f.makeDriver(1)
        e.f.drivers[1] = d1
        d1.setIPsecKeys(ring)
        try d1.createNetwork(OverlayNetworkSpec(name: "sec", subnet: "10.50.0.0/24", vni: EncryptedLab.secVNI, encrypted: true))
        try d1.attach(EndpointSpec(id: "s2", network: "sec", namespace: .path(e.secContainers[1].path!), address: ip("10.50.0.3")))
        try d1.addPeer(e.secEndpoints[0].peer, network: "sec")
        #expect(try e.pingSec(0, 1, count: 2).status != 0)
        let c0 = e.drivers[0].userspaceDatapath.counters
        // Sequence numbers far behind the window: with ESN the receiver infers the next 2^32 epoch
        // for them (RFC 4303 A2), so they fail the ICV; near the top they are replays.
        #expect(c0.dropped(.espReplayed) + c0.dropped(.espOutsideWindow) + c0.dropped(.espAuthFailed) > 0, "\(c0)")
        #expect(e.drivers[0].userspaceDatapath.resetPeer(.v4(e.f.lab.hosts[1].address)))
        #expect(try e.pingSec(0, 1, count: 2).status == 0)
    }

    @Test("detaching the last endpoint stops the threads and removes the TAP device and the nft table")
    func teardown() throws {
        let e = try EncryptedLab("ovlt-encd", hosts: 2, keys: try testKeyring())
        defer { e.destroy() }
        let d = e.drivers[0]
        let dp = d.userspaceDatapath
        #expect(try e.pingSec(0, 1).status == 0)
        #expect(dp.tunnelVNIs.map(\.value) == [EncryptedLab.secVNI])
        #expect(dp.isReceiving)
        #expect(dp.hasCleartextDropRule(vni: try VNI(EncryptedLab.secVNI)))
        // The datapath runs one TX thread per tunnel and one RX thread, named for `top -H`.
        let threads = dp.workerThreads
        #expect(Set(threads.map(\.name)) == ["ovl-tx-\(EncryptedLab.secVNI)", "ovl-esp-rx"], "\(threads)")
        for t in threads { #expect(threadName(t.tid) == t.name, "thread \(t.tid)") }
        try d.detach(endpoint: "s1")
        #expect(dp.tunnelVNIs.isEmpty)
        #expect(!dp.isReceiving)
        #expect(!dp.hasCleartextDropRule(vni: try VNI(EncryptedLab.secVNI)))
        #expect(d.sandboxPath(network: "sec") == nil)
        // Its threads are gone (joined; /proc lists a joined thread a moment longer), the other
        // host's run on.
        #expect(dp.workerThreads.isEmpty)
        for t in threads {
            for _ in 0..<100 where threadName(t.tid) == t.name { usleep(10_000) }
            #expect(threadName(t.tid) != t.name, "thread \(t.tid) (\(t.name)) still runs")
        }
        #expect(!e.drivers[1].userspaceDatapath.workerThreads.isEmpty)
        let hostLinks = try NetlinkSocket(namespace: e.f.lab.hosts[0].namespace).links().map(\.name)
        #expect(!hostLinks.contains { $0.hasPrefix(dp.linkPrefix) })
        // The plain network's sandbox is untouched; the network comes back on the next attach.
        #expect(d.sandboxPath(network: "plain") != nil)
        try d.attach(EndpointSpec(id: "s1", network: "sec", namespace: .path(e.secContainers[0].path!), address: ip("10.50.0.2")))
        #expect(try e.pingSec(0, 1).status == 0)
        try d.detach(endpoint: "s1")
        try d.removeNetwork(named: "sec")
        #expect(!dp.isReceiving)
    }
}

/// The name of this process's thread `tid` (`/proc/self/task/<tid>/comm`), nil if it has none.
func threadName(_ tid: Int32) -> String? {
    guard tid > 0, let comm = try? String(contentsOfFile: "/proc/self/task/\(tid)/comm", encoding: .utf8) else { return nil }
    return comm.trimmingCharacters(in: .newlines)
}

/// Sends `bytes` as a bare ESP packet (IP protocol 50) from host `from`'s namespace to host `to`.
func sendESP(_ bytes: [UInt8], from: Lab.Host, to: Lab.Host) throws {
    try from.namespace.run { () throws in
        let s = socket(AF_INET, Int32(SOCK_RAW.rawValue), 50)
        guard s >= 0 else { throw LabError("raw socket: errno \(errno)") }
        defer { close(s) }
        try sendTo(s, bytes, to.address, port: 0)
    }
}

func sendTo(_ s: Int32, _ bytes: [UInt8], _ dst: IPv4Address, port: UInt16) throws {
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = port.bigEndian
    addr.sin_addr.s_addr = dst.value.bigEndian
    let n = bytes.withUnsafeBytes { b in
        withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(s, b.baseAddress, b.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
    }
    guard n == bytes.count else { throw LabError("sendto \(dst): errno \(errno)") }
}
