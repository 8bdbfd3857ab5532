import Foundation
import Glibc
import IPsecKeys
import Netlink
import OverlayDriver
import OverlayModel
import OverlayTestKit
import Testing

@Suite("Encrypted networks, three hosts and throughput", .serialized)
struct EncryptedThreeHostTests {
    @Test("three hosts: every container pings every other; a broadcast is sealed once per remote VTEP")
    func threeHostsAndFlood() throws {
        let e = try EncryptedLab("ovlt-enc3", hosts: 3, keys: try testKeyring())
        defer { e.destroy() }
        for i in 0..<3 {
            for j in 0..<3 where j != i {
                let r = try e.pingSec(i, j, count: 1)
                #expect(r.status == 0, "s\(i + 1) -> s\(j + 1): \(r.output)")
            }
        }
        Thread.sleep(forTimeInterval: 0.2)
        let before = e.drivers.map { $0.userspaceDatapath.counters }
        // A broadcast ping: the frame goes to both other hosts (their containers ignore it).
        _ = try e.f.lab.run(["ping", "-b", "-c", "1", "-W", "1", "10.50.0.255"], in: e.secContainers[0])
        Thread.sleep(forTimeInterval: 0.3)
        let after = e.drivers.map { $0.userspaceDatapath.counters }
        #expect(after[0].txFrames >= before[0].txFrames + 2, "\(after[0])")
        #expect(after[1].rxFrames > before[1].rxFrames)
        #expect(after[2].rxFrames > before[2].rxFrames)
    }

    @Test("iperf3 between two containers: encrypted vs plain (print only)",
          .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/iperf3")))
    func iperf() throws {
        let e = try EncryptedLab("ovlt-enci", hosts: 2, keys: try testKeyring())
        defer { e.destroy() }
        let lab = e.f.lab
        func run(_ server: NetworkNamespace, _ client: NetworkNamespace, _ address: IPAddress) throws -> String {
            let done = DispatchSemaphore(value: 0)
            DispatchQueue.global().async {
                _ = try? lab.run(["iperf3", "-s", "-1"], in: server, timeout: 30)
                done.signal()
            }
            // The server may take a moment to listen (a refused connect returns at once): retry.
            var r: CommandResult?
            for _ in 0..<10 {
                Thread.sleep(forTimeInterval: 0.5)
                r = try lab.run(["iperf3", "-c", address.description, "-t", "3", "-f", "m"], in: client, timeout: 30)
                if r?.status == 0 { break }
            }
            done.wait()
            let out = r?.output ?? ""
            if r?.status != 0 { print("iperf3 client to \(address) failed: \(out)") }
            return out.split(separator: "\n").filter { $0.contains("receiver") || $0.contains("sender") }.joined(separator: " | ")
        }
        func cpuSeconds() -> Double {
            var u = rusage()
            getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &u)
            return Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6
        }
        let cpu0 = cpuSeconds(), bytes0 = e.drivers[0].userspaceDatapath.counters.txBytes
        let sec = try run(e.secContainers[1], e.secContainers[0], e.secEndpoints[1].address)
        let cpu = cpuSeconds() - cpu0
        let gbit = Double(e.drivers[0].userspaceDatapath.counters.txBytes - bytes0) * 8 / 1e9
        print(String(format: "iperf3 encrypted: datapath threads (both hosts, this process) used %.2f CPU-s for %.2f Gbit = %.2f CPU-s per Gbit", cpu, gbit, cpu / max(gbit, 0.001)))
        let plain = try run(e.plainContainers[1], e.plainContainers[0], e.plainEndpoints[1].address)
        let h0 = lab.hosts[0], h1 = lab.hosts[1]
        let underlay = try run(h1.namespace, h0.namespace, .v4(h1.address))
        print("iperf3 underlay (host to host):   \(underlay)")
        print("iperf3 encrypted (userspace ESP): \(sec)")
        print("iperf3 plain (kernel VXLAN):      \(plain)")
        print("iperf3 counters: \(e.drivers[0].userspaceDatapath.counters)")
        #expect(!sec.isEmpty)
    }
}
