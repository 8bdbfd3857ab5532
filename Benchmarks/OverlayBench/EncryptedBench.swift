import Foundation
import IPsecKeys
import Netlink
import OverlayDriver
import OverlayModel
import OverlayTestKit

// The encrypted network benchmark: iperf3 TCP (one stream) between two lab hosts' containers, side
// by side in one run over (1) the underlay veth, (2) a plain overlay network (kernel VXLAN) and
// (3) an encrypted overlay network over bare ESP (IP protocol 50, Docker's wire format) and (4)
// the same over ESP in UDP (RFC 3948, UDP GSO/GRO, the default; a second lab), with the whole machine's CPU time
// per Gbit moved on each path (from /proc/stat: every process, softirqs included).

/// Busy and total jiffies of all CPUs.
private func cpuJiffies() -> (busy: Double, total: Double) {
    guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
          let line = text.split(separator: "\n").first(where: { $0.hasPrefix("cpu ") }) else { return (0, 0) }
    let v = line.split(separator: " ").dropFirst().compactMap { Double($0) }
    guard v.count >= 5 else { return (0, 0) }
    let idle = v[3] + v[4]
    let total = v.reduce(0, +)
    return (total - idle, total)
}

private struct EncryptedResult {
    var name: String
    var bps: Double
    var cpuSecondsPerGbit: Double
    var retransmits: Int = 0
}

private func iperfOnce(client: String, server: String, serverIP: String, seconds: Int) throws -> EncryptedResult {
    let port = "5310"
    let s = try Command.run(["nsenter", "--net=\(server)", "--", "iperf3", "-s", "-1", "-D", "-p", port])
    guard s.succeeded else { throw LabError("iperf3 server: \(s.output)") }
    usleep(200_000)
    let hz = Double(sysconf(Int32(_SC_CLK_TCK)))
    let before = cpuJiffies()
    let r = try Command.run(["nsenter", "--net=\(client)", "--", "iperf3", "-c", serverIP, "-p", port, "-t", "\(seconds)", "-J"] + congestionArguments(),
                            timeout: Double(seconds) + 30)
    let after = cpuJiffies()
    guard r.succeeded,
          let json = try? JSONSerialization.jsonObject(with: Data(r.output.utf8)) as? [String: Any],
          let end = json["end"] as? [String: Any],
          let received = end["sum_received"] as? [String: Any],
          let bps = received["bits_per_second"] as? Double, let bytes = received["bytes"] as? Double
    else { throw LabError("iperf3 client to \(serverIP): \(r.output.prefix(400))") }
    let cpuSeconds = (after.busy - before.busy) / hz
    let retransmits = ((end["sum_sent"] as? [String: Any])?["retransmits"] as? Int) ?? 0
    return EncryptedResult(name: "", bps: bps, cpuSecondsPerGbit: cpuSeconds / max(bytes * 8 / 1e9, 1e-9), retransmits: retransmits)
}

func runEncryptedBenchmark(seconds: Int, rounds: Int) throws {
    guard getuid() == 0 else {
        print("encrypted: skipped, needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
        return
    }
    let stateRoot = "/run/ovlb-enc-state"
    try? FileManager.default.removeItem(atPath: stateRoot)
    let udpStateRoot = "/run/ovlb-encu-state"
    try? FileManager.default.removeItem(atPath: udpStateRoot)
    let lab = try Lab.create(name: "ovlb-enc", hosts: 2)
    var drivers: [OverlayDriver] = []
    var udpLab: Lab?
    var udpDrivers: [OverlayDriver] = []
    defer {
        for d in drivers + udpDrivers { d.shutdown() }
        lab.destroy()
        udpLab?.destroy()
        try? FileManager.default.removeItem(atPath: stateRoot)
        try? FileManager.default.removeItem(atPath: udpStateRoot)
    }
    let ring = try IPsecKeyring(keys: [IPsecKey.random(tag: 1), IPsecKey.random(tag: 2), IPsecKey.random(tag: 3)])
    var sec: [(NetworkNamespace, OverlayEndpoint)] = []
    var plain: [(NetworkNamespace, OverlayEndpoint)] = []
    for (i, h) in lab.hosts.enumerated() {
        var configuration = OverlayDriverConfiguration(
            nodeID: h.name, stateDirectory: "\(stateRoot)/\(h.name)", hostNamespacePath: h.namespace.path,
            dataPathAddress: .v4(h.address))
        configuration.espEncapsulation = .raw   // bare ESP here; the second lab has the default
        let d = try OverlayDriver(configuration: configuration)
        drivers.append(d)
        d.setIPsecKeys(ring)
        try d.createNetwork(OverlayNetworkSpec(name: "sec", subnet: "10.70.0.0/24", vni: 7001, encrypted: true))
        try d.createNetwork(OverlayNetworkSpec(name: "plain", subnet: "10.71.0.0/24", vni: 7002))
        for (net, prefix) in [("sec", "10.70.0."), ("plain", "10.71.0.")] {
            let ns = try lab.makeNamespace("\(net)\(i + 1)")
            try NetlinkSocket(namespace: ns).setUp("lo")
            let ep = try d.attach(EndpointSpec(id: "\(net)\(i + 1)", network: net, namespace: .path(ns.path!),
                                               address: IPAddress("\(prefix)\(i + 2)")!))
            if net == "sec" { sec.append((ns, ep)) } else { plain.append((ns, ep)) }
        }
    }
    for (i, d) in drivers.enumerated() {
        let j = 1 - i
        try d.addPeer(sec[j].1.peer, network: "sec")
        try d.addPeer(plain[j].1.peer, network: "plain")
    }
    // ESP in UDP, the default: a second lab whose drivers' userspace datapath encapsulates in UDP
    // (MTU 8 lower).
    let ulab = try Lab.create(name: "ovlb-encu", hosts: 2)
    udpLab = ulab
    var usec: [(NetworkNamespace, OverlayEndpoint)] = []
    for (i, h) in ulab.hosts.enumerated() {
        let tag = String(h.name.lowercased().filter { $0.isLetter || $0.isNumber }.prefix(6))
        let dp = UserspaceDatapath(host: try NetlinkSocket(namespace: h.namespace), nodeTag: tag, espEncapsulation: .udp)
        let d = try OverlayDriver(configuration: OverlayDriverConfiguration(
            nodeID: h.name, stateDirectory: "\(udpStateRoot)/\(h.name)", hostNamespacePath: h.namespace.path,
            dataPathAddress: .v4(h.address)), datapath: dp)
        udpDrivers.append(d)
        d.setIPsecKeys(ring)
        try d.createNetwork(OverlayNetworkSpec(name: "sec", subnet: "10.72.0.0/24", vni: 7003,
                                               mtu: ESPEncapsulation.udp.containerMTU(underlayMTU: 1500), encrypted: true))
        let ns = try ulab.makeNamespace("usec\(i + 1)")
        try NetlinkSocket(namespace: ns).setUp("lo")
        usec.append((ns, try d.attach(EndpointSpec(id: "usec\(i + 1)", network: "sec", namespace: .path(ns.path!),
                                                   address: IPAddress("10.72.0.\(i + 2)")!))))
    }
    try udpDrivers[0].addPeer(usec[1].1.peer, network: "sec")
    try udpDrivers[1].addPeer(usec[0].1.peer, network: "sec")
    let paths: [(String, String, String, String)] = [
        ("underlay veth", lab.hosts[0].namespace.path!, lab.hosts[1].namespace.path!, lab.hosts[1].address.description),
        ("plain overlay (kernel VXLAN)", plain[0].0.path!, plain[1].0.path!, plain[1].1.address.description),
        ("encrypted, bare ESP (Docker's)", sec[0].0.path!, sec[1].0.path!, sec[1].1.address.description),
        ("encrypted, ESP in UDP (the default)", usec[0].0.path!, usec[1].0.path!, usec[1].1.address.description),
    ]
    for p in paths {   // ARP and caches
        let r = try Command.run(["nsenter", "--net=\(p.1)", "--", "ping", "-c", "3", "-i", "0.2", "-W", "2", p.3], timeout: 20)
        guard r.succeeded else { throw LabError("\(p.0): \(p.3) does not answer: \(r.output.suffix(200))") }
    }
    // OVERLAY_BENCH_PATHS=1,3 measures only those rows (0-based), e.g. under `perf record`.
    let selected = ProcessInfo.processInfo.environment["OVERLAY_BENCH_PATHS"].map {
        $0.split(separator: ",").compactMap { Int($0) }.filter { paths.indices.contains($0) }
    }
    let rows = (selected?.isEmpty ?? true) ? Array(paths.indices) : Array(Set(selected!)).sorted()
    // Paired rounds: every round measures each row once, the order rotating (A B C D, B C D A, ...)
    // so no row always runs first or after the same neighbour, and a ratio is taken within a round,
    // where both rows saw the same machine.
    var samples: [[EncryptedResult]] = Array(repeating: [], count: paths.count)
    for round in 0..<rounds {
        for k in rows.indices {
            let i = rows[(round + k) % rows.count]
            let p = paths[i]
            var r = try iperfOnce(client: p.1, server: p.2, serverIP: p.3, seconds: seconds)
            r.name = p.0
            samples[i].append(r)
        }
    }
    print("iperf3 TCP, 1 stream, \(seconds) s x \(rounds) paired rounds; CPU = the whole machine's busy seconds per Gbit moved")
    print(congestionLine())
    print("Gbit/s per round:")
    for i in rows {
        print("  " + paths[i].0.padding(toLength: 36, withPad: " ", startingAt: 0)
              + samples[i].map { String(format: "%.2f", $0.bps / 1e9) }.joined(separator: " "))
    }
    print("row                                   Gbit/s (median, quartiles)   CPU-s/Gbit (median, quartiles)   retransmits (median)")
    for i in rows {
        let g = quantiles(samples[i].map { $0.bps / 1e9 }), c = quantiles(samples[i].map(\.cpuSecondsPerGbit))
        print("  " + paths[i].0.padding(toLength: 36, withPad: " ", startingAt: 0)
              + String(format: "%5.2f (%.2f-%.2f)", g.median, g.low, g.high).padding(toLength: 29, withPad: " ", startingAt: 0)
              + String(format: "%5.2f (%.2f-%.2f)", c.median, c.low, c.high).padding(toLength: 33, withPad: " ", startingAt: 0)
              + String(format: "%.0f", median(samples[i].map { Double($0.retransmits) })))
    }
    // The aims: each encrypted row against the plain overlay (row 1) in the same round.
    if rows.contains(1) {
        for (i, label) in [(2, "bare ESP / plain overlay:  "), (3, "ESP in UDP / plain overlay:")] where rows.contains(i) {
            print("  " + label + " " + ratioSummary(zip(samples[i], samples[1]).map { $0.bps / $1.bps }))
        }
    }
    // Both ends' counters: h1 sends the data and receives the ACKs, h2 the other way round (its
    // merged writes against its frames give the segments per super-frame its container gets).
    if rows.contains(2) {
        for (h, d) in drivers.enumerated() { print("  h\(h + 1) bare-ESP datapath: \(d.userspaceDatapath.counters)") }
    }
    if rows.contains(3) {
        for (h, d) in udpDrivers.enumerated() {
            let u = d.userspaceDatapath
            print("  h\(h + 1) ESP-in-UDP datapath (offloads \(u.udpOffloads)): \(u.counters)")
        }
    }
}
