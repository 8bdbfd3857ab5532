import Foundation
import OverlayTestKit

// `control-bench docker`: Docker containers on our overlay against Docker's own overlay (swarm
// mode), side by side on the same two lab hosts (`lab up --docker`: a dockerd and an overlayd on
// each; Docker's swarm on ports 2378 and VXLAN 4790, our gossip on 7947 so both run at once;
// dockerd without live restore, which swarm mode refuses):
//   1. iperf3 TCP, 1 and 4 streams, container to container across the hosts, and ping RTT (the
//      median of 200 pings), over the underlay, Docker's overlay and ours; median of N rounds,
//      the paths interleaved in each round;
//   2. `docker run` on h2 -> the new container answers a ping from a container on h1 (by its
//      --ip), median and p90 of N runs on each network; beside them `docker run --network none`
//      -> running (the floor: what runc and dockerd take with no network at all).
// iperf3 and ping run from the host, inside the containers' network namespaces (nsenter): the
// busybox image has no iperf3.

func dockerBench(ctl: String, rounds: Int, seconds: Int, runs: Int) throws {
    let lab = "ovlb-dk"
    func sh(_ a: [String], timeout: Double = 120) throws -> String {
        let r = try Command.run(a, timeout: timeout)
        guard r.succeeded else { throw LabError("\(a.joined(separator: " ")): \(r.output)") }
        return r.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }
    func on(_ h: String, _ a: [String], timeout: Double = 120) throws -> String {
        try sh([ctl, "lab", "exec", "--name", lab, h, "--"] + a, timeout: timeout)
    }
    func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }
    func p90(_ xs: [Double]) -> Double { let s = xs.sorted(); return s[min(s.count - 1, Int(Double(s.count) * 0.9))] }
    defer { _ = try? sh([ctl, "lab", "down", "--name", lab]) }
    _ = try sh([ctl, "lab", "up", "--name", lab, "--hosts", "2", "--docker", "--overlayd-arg", "--gossip-port=7947",
                "--dockerd-arg", "--live-restore=false"])

    // Our swarm, and Docker's beside it.
    _ = try on("h1", ["overlayctl", "swarm", "init", "--advertise-addr", "198.18.0.1"])
    let token = try on("h1", ["overlayctl", "swarm", "join-token", "-q", "worker"])
    _ = try on("h2", ["overlayctl", "swarm", "join", "--token", token, "198.18.0.1:2377"])
    _ = try on("h1", ["docker", "swarm", "init", "--advertise-addr", "198.18.0.1:2378", "--listen-addr", "198.18.0.1:2378",
                      "--data-path-port", "4790"])
    let dockerToken = try on("h1", ["docker", "swarm", "join-token", "-q", "worker"])
    _ = try on("h2", ["docker", "swarm", "join", "--token", dockerToken, "--advertise-addr", "198.18.0.2:2378",
                      "--listen-addr", "198.18.0.2:2378", "198.18.0.1:2378"])

    let docker = (net: "dover", prefix: "10.200.0.")
    let ours = (net: "ours", prefix: "10.201.0.")
    _ = try on("h1", ["docker", "network", "create", "-d", "overlay", "--attachable", "--subnet", "10.200.0.0/24", docker.net])
    _ = try on("h1", ["docker", "network", "create", "-d", "swift-overlay", "--ipam-driver", "swift-overlay", "--subnet", "10.201.0.0/24", ours.net])
    for _ in 0..<50 {
        if (try? on("h2", ["overlayctl", "network", "inspect", ours.net])) != nil { break }
        usleep(100_000)
    }
    _ = try on("h2", ["docker", "network", "create", "-d", "swift-overlay", "--ipam-driver", "swift-overlay", "--subnet", "10.201.0.0/24", ours.net])
    func run(_ h: String, _ name: String, _ net: String, _ ip: String) throws {
        _ = try on(h, ["docker", "run", "-d", "--name", name, "--network", net, "--ip", ip, "busybox:lab", "sleep", "1000000"])
    }
    func netns(_ h: String, _ name: String) throws -> String {
        "/proc/\(try on(h, ["docker", "inspect", "-f", "{{.State.Pid}}", name]))/ns/net"
    }
    for n in [docker, ours] {
        try run("h1", "\(n.net)-client", n.net, n.prefix + "10")
        try run("h2", "\(n.net)-server", n.net, n.prefix + "20")
    }
    struct Path { var name: String; var client: String; var server: String; var ip: String }
    let paths = [
        Path(name: "underlay (veth)", client: "/run/netns/\(lab)-h1", server: "/run/netns/\(lab)-h2", ip: "198.18.0.2"),
        Path(name: "Docker's overlay", client: try netns("h1", "dover-client"), server: try netns("h2", "dover-server"), ip: docker.prefix + "20"),
        Path(name: "swift-overlay", client: try netns("h1", "ours-client"), server: try netns("h2", "ours-server"), ip: ours.prefix + "20"),
    ]
    func iperf(_ p: Path, streams: Int) throws -> Double {
        let port = "\(5201 + streams)"
        _ = try sh(["nsenter", "--net=\(p.server)", "--", "iperf3", "-s", "-1", "-D", "-A", "1", "-p", port])
        usleep(200_000)
        let out = try sh(["nsenter", "--net=\(p.client)", "--", "iperf3", "-A", "0", "-c", p.ip, "-p", port, "-t", "\(seconds)",
                          "-P", "\(streams)", "-J"], timeout: Double(seconds) + 20)
        guard let json = try? JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any],
              let end = json["end"] as? [String: Any], let received = end["sum_received"] as? [String: Any],
              let bps = received["bits_per_second"] as? Double else { throw LabError("iperf3 to \(p.ip): \(out.prefix(300))") }
        return bps
    }
    func rtt(_ p: Path) throws -> Double {
        let out = try sh(["nsenter", "--net=\(p.client)", "--", "taskset", "-c", "0", "ping", "-n", "-c", "200", "-i", "0.01", "-W", "2", p.ip])
        let times = out.split(separator: "\n").compactMap { line -> Double? in
            guard let t = line.range(of: "time=") else { return nil }
            return Double(line[t.upperBound...].prefix { $0 == "." || $0.isNumber })
        }
        guard !times.isEmpty else { throw LabError("ping \(p.ip): \(out.prefix(300))") }
        return median(times)
    }
    for p in paths { _ = try sh(["nsenter", "--net=\(p.client)", "--", "ping", "-c", "3", "-i", "0.2", "-W", "2", p.ip]) }
    var t1 = Array(repeating: [Double](), count: paths.count), t4 = t1, ping = t1
    for round in 0..<rounds {
        let order = paths.indices.map { (round + $0) % paths.count }
        for i in order { t1[i].append(try iperf(paths[i], streams: 1)) }
        for i in order.reversed() { t4[i].append(try iperf(paths[i], streams: 4)) }
        for i in order { ping[i].append(try rtt(paths[i])) }
    }
    print("== Docker containers across two hosts: iperf3 TCP (\(seconds) s, median of \(rounds) rounds) and ping RTT (median of 200, median of rounds)")
    print("path                 TCP x1 Gbit/s  of underlay   TCP x4 Gbit/s  of underlay   RTT ms")
    for (i, p) in paths.enumerated() {
        let a = median(t1[i]), b = median(t4[i])
        print(String(format: "%-20@ %13.2f  %10.0f%%   %13.2f  %10.0f%%   %6.3f", p.name as NSString, a / 1e9, 100 * a / median(t1[0]),
                     b / 1e9, 100 * b / median(t4[0]), median(ping[i])))
    }
    print(String(format: "swift-overlay / Docker's overlay: TCP x1 %.2fx, TCP x4 %.2fx, RTT %.2fx",
                 median(t1[2]) / median(t1[1]), median(t4[2]) / median(t4[1]), median(ping[2]) / median(ping[1])))

    // 2. docker run -> reachable from another host.
    let pinger = [docker.net: paths[1].client, ours.net: paths[2].client]
    var times: [String: [Double]] = [:]
    func ms(_ d: Duration) -> Double { Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15 }
    for i in 0..<runs {
        let start = ContinuousClock.now
        _ = try on("h2", ["docker", "run", "-d", "--name", "floor\(i)", "--network", "none", "busybox:lab", "sleep", "1000000"])
        times["none", default: []].append(ms(ContinuousClock.now - start))
        _ = try on("h2", ["docker", "rm", "-f", "floor\(i)"])
    }
    for i in 0..<runs {
        for n in (i % 2 == 0 ? [docker, ours] : [ours, docker]) {
            let ip = n.prefix + "\(100 + i)"
            let start = ContinuousClock.now
            try run("h2", "r\(i)-\(n.net)", n.net, ip)
            var reached = false
            while !reached && ContinuousClock.now - start < .seconds(15) {
                reached = (try? Command.run(["nsenter", "--net=\(pinger[n.net]!)", "--", "ping", "-n", "-c", "1", "-W", "0.05", ip]))?.succeeded == true
            }
            let d = ContinuousClock.now - start
            guard reached else { throw LabError("\(ip) on \(n.net) did not answer within 15 s of docker run") }
            times[n.net, default: []].append(ms(d))
            _ = try on("h2", ["docker", "rm", "-f", "r\(i)-\(n.net)"])
        }
    }
    print("== docker run on h2 -> answers a ping from h1 (ms, \(runs) runs each)")
    for (key, label) in [("none", "--network none (floor)"), (docker.net, "Docker's overlay"), (ours.net, "swift-overlay")] {
        let xs = times[key]!
        print(String(format: "%-24@ median %6.0f   p90 %6.0f", label as NSString, median(xs), p90(xs)))
    }
    let floor = median(times["none"]!)
    print(String(format: "swift-overlay / Docker's overlay: run-to-reachable %.2fx; above the floor %.0f ms vs %.0f ms (%.2fx)",
                 median(times[ours.net]!) / median(times[docker.net]!), median(times[ours.net]!) - floor,
                 median(times[docker.net]!) - floor, (median(times[ours.net]!) - floor) / (median(times[docker.net]!) - floor)))
}
