// control-bench: how fast the control plane makes things usable, through the real binaries in a
// 3-host lab (overlayd in each host namespace, driven over each daemon's API socket):
//   1. `network create` on the manager -> the network is known on both workers (inspect answers);
//   2. `run` on a worker -> the new container answers a ping from a container on the manager's host.
// Median (and p90) of N rounds. Docker's figure for (2), measured on this machine with 3 dockerd
// hosts in namespaces (docker run to reachable by name), is printed beside ours: 478 ms. This machine
// kind has no Docker engine now, so that baseline is the recorded one, not re-run.
// Usage: control-bench [--rounds N] [--normal-gossip]   (needs root; overlayd and overlayctl next to it)
//        control-bench metrics [--rounds N] [--interval S] (what serving metrics costs the data plane)
//        control-bench cni [--count N] [--parallel N]   (the CNI plugin's ADD/DEL latency against bridge+host-local)
//        control-bench ha [--rounds N] [--agents N]     (managers on etcd: writes SQLite vs etcd, failover, agents; HABench.swift)
//        control-bench docker [--rounds N] [--seconds S] [--runs N]   (Docker containers: ours vs Docker's overlay; DockerBench.swift)

import ClusterControl
import Foundation
import NIOPosix
import OverlayTestKit

var rounds = 20
var normalGossip = false
var args = Array(CommandLine.arguments.dropFirst())
/// The value after `flag` in `args` (removed from them), if given.
@MainActor func option(_ flag: String) -> String? {
    guard let i = args.firstIndex(of: flag), i + 1 < args.count else { return nil }
    defer { args.removeSubrange(i...(i + 1)) }
    return args[i + 1]
}
// `control-bench ha-agents ...`: the simulated agents' process that `control-bench ha` starts in a lab host.
if args.first == "ha-agents" {
    args.removeFirst()
    guard let token = option("--token"), let count = option("--count").flatMap(Int.init), let managers = option("--managers"),
          let seconds = option("--seconds").flatMap(Int.init), let out = option("--out") else {
        print("usage: control-bench ha-agents --token T --count N --managers A:P,... --seconds S --out FILE")
        exit(2)
    }
    do { try await haAgents(token: token, count: count, managers: managers.split(separator: ",").map(String.init), seconds: seconds, out: out) } catch {
        _ = FileManager.default.createFile(atPath: out, contents: Data("failed: \(error)\n".utf8))
        exit(1)
    }
    exit(0)
}
let haMode = args.first == "ha"
var haAgentCount = 1000
if haMode {
    args.removeFirst()
    rounds = 10
    if let v = option("--agents").flatMap(Int.init), v >= 0 { haAgentCount = v }
}
// `control-bench docker [--rounds N] [--seconds S] [--runs N]` (DockerBench.swift).
let dockerMode = args.first == "docker"
var dockerSeconds = 5
var dockerRuns = 20
if dockerMode {
    args.removeFirst()
    rounds = 3
    if let v = option("--seconds").flatMap(Int.init), v > 0 { dockerSeconds = v }
    if let v = option("--runs").flatMap(Int.init), v > 0 { dockerRuns = v }
}
// `control-bench cni [--count N] [--parallel N]`: the CNI plugin's ADD/DEL latency (CNIBench.swift).
let cniMode = args.first == "cni"
var cniCount = 200
var cniParallel = 100
if cniMode {
    args.removeFirst()
    for (flag, target) in [("--count", 0), ("--parallel", 1)] {
        if let i = args.firstIndex(of: flag), i + 1 < args.count, let v = Int(args[i + 1]), v > 0 {
            if target == 0 { cniCount = v } else { cniParallel = v }
            args.removeSubrange(i...(i + 1))
        }
    }
}
// `control-bench metrics [--rounds N]`: what serving metrics costs the data plane (MetricsOverhead.swift).
let metricsMode = args.first == "metrics"
var scrapeInterval = 0.1
if metricsMode {
    args.removeFirst()
    rounds = 8
    if let i = args.firstIndex(of: "--interval"), i + 1 < args.count, let v = Double(args[i + 1]), v > 0 {
        scrapeInterval = v
        args.removeSubrange(i...(i + 1))
    }
}
while let a = args.first {
    args.removeFirst()
    switch a {
    case "--rounds":
        guard let v = args.first.flatMap(Int.init), v > 0 else { print("--rounds needs a positive number"); exit(2) }
        rounds = v
        args.removeFirst()
    case "--normal-gossip": normalGossip = true
    case "-h", "--help":
        print("usage: control-bench [--rounds N] [--normal-gossip]\n       control-bench metrics [--rounds N] [--interval SECONDS]\n       control-bench cni [--count N] [--parallel N]\n       control-bench ha [--rounds N] [--agents N]\n       control-bench docker [--rounds N] [--seconds S] [--runs N]")
        exit(0)
    default:
        print("control-bench: unknown argument \(a)")
        exit(2)
    }
}
guard getuid() == 0 else {
    print("control-bench: skipped, needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
    exit(0)
}
let bin = ((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]) as NSString
let dir = bin.deletingLastPathComponent
let ctl = dir + "/overlayctl"
guard FileManager.default.isExecutableFile(atPath: ctl), FileManager.default.isExecutableFile(atPath: dir + "/overlayd") else {
    print("control-bench: build overlayd and overlayctl next to it first (swift build -c release --product overlayd ...)")
    exit(2)
}
if cniMode {
    guard FileManager.default.isExecutableFile(atPath: dir + "/overlay-cni"), FileManager.default.isExecutableFile(atPath: "/usr/lib/cni/bridge") else {
        print("control-bench cni: needs overlay-cni next to it and Debian's containernetworking-plugins (make deps)")
        exit(2)
    }
    do { try cniBench(ctl: ctl, dir: dir, count: cniCount, parallel: cniParallel) } catch {
        print("control-bench cni: failed: \(error)")
        exit(1)
    }
    exit(0)
}
if dockerMode {
    guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/dockerd") else {
        print("control-bench docker: needs dockerd (Debian's docker.io; make deps)")
        exit(2)
    }
    do { try dockerBench(ctl: ctl, rounds: rounds, seconds: dockerSeconds, runs: dockerRuns) } catch {
        print("control-bench docker: failed: \(error)")
        exit(1)
    }
    exit(0)
}
if haMode {
    guard FileManager.default.isExecutableFile(atPath: "/usr/bin/etcd") else {
        print("control-bench ha: needs etcd (Debian's etcd-server; make deps)")
        exit(2)
    }
    do { try await haBench(ctl: ctl, dir: dir, rounds: rounds, agents: haAgentCount) } catch {
        print("control-bench ha: failed: \(error)")
        exit(1)
    }
    exit(0)
}
if metricsMode {
    do { try metricsOverhead(ctl: ctl, rounds: rounds, interval: scrapeInterval) } catch {
        print("control-bench metrics: failed: \(error)")
        exit(1)
    }
    exit(0)
}
let labName = "ovlb-cp"

func sh(_ a: [String], timeout: Double = 60) throws -> String {
    let r = try Command.run(a, timeout: timeout)
    guard r.succeeded else { throw LabError("\(a.joined(separator: " ")): \(r.output)") }
    return r.output.trimmingCharacters(in: .whitespacesAndNewlines)
}

func on(_ h: String, _ a: [String]) throws -> String {
    try sh([ctl, "lab", "exec", "--name", labName, h, "--", "overlayctl"] + a)
}

func api(_ h: String) -> APIClient { APIClient(endpoint: .unix("/run/\(labName)/\(h)/overlayd.sock"), timeout: .seconds(30)) }
let group = MultiThreadedEventLoopGroup.singleton

func ms(_ start: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6 }
func stats(_ xs: [Double]) -> (Double, Double) {
    let s = xs.sorted()
    return (s[s.count / 2], s[min(s.count - 1, Int(Double(s.count) * 0.9))])
}

do {
    defer { _ = try? sh([ctl, "lab", "down", "--name", labName]) }
    _ = try sh([ctl, "lab", "up", "--name", labName, "--hosts", "3"] + (normalGossip ? ["--normal-gossip"] : []))
    _ = try on("h1", ["swarm", "init", "--advertise-addr", "198.18.0.1"])
    let token = try on("h1", ["swarm", "join-token", "-q", "worker"])
    for h in ["h2", "h3"] { _ = try on(h, ["swarm", "join", "--token", token, "198.18.0.1:2377"]) }

    // 1. network create -> known on every node.
    var netTimes: [Double] = []
    for i in 0..<rounds {
        var req = NetworkCreateRequest(name: "bench\(i)")
        req.attachable = true
        let t0 = DispatchTime.now().uptimeNanoseconds
        _ = try await api("h1").call(LocalAPI.createNetwork, body: req, group: group)
        for h in ["h2", "h3"] {
            while (try? await api(h).call(LocalAPI.inspectNetwork, "bench\(i)", group: group)) == nil {
                try await Task.sleep(for: .milliseconds(2))
            }
        }
        netTimes.append(ms(t0))
    }

    // 2. run on h2 -> reachable by IP from a container on h1.
    let prober = ContainerCreateRequest(name: "probe", networks: ["bench0"], command: ["sleep", "infinity"], detach: true)
    let p = try await api("h1").call(LocalAPI.runContainer, body: prober, group: group)
    let probeNS = "/proc/\(p.DaemonPid)/root\(p.NetworkSettings.SandboxKey)"
    var runTimes: [Double] = []
    var callTimes: [Double] = []
    for i in 0..<rounds {
        let req = ContainerCreateRequest(name: "r\(i)", networks: ["bench0"], command: ["sleep", "infinity"], detach: true)
        let t0 = DispatchTime.now().uptimeNanoseconds
        let c = try await api("h2").call(LocalAPI.runContainer, body: req, group: group)
        callTimes.append(ms(t0))
        let ip = c.NetworkSettings.Networks["bench0"]!.IPAddress
        // ping sends every 2 ms and exits at the first reply.
        _ = try sh(["nsenter", "--net=\(probeNS)", "--", "ping", "-q", "-n", "-c", "1", "-i", "0.002", "-w", "5", ip], timeout: 10)
        runTimes.append(ms(t0))
    }
    let (nm, n90) = stats(netTimes)
    let (rm, r90) = stats(runTimes)
    let (cm, c90) = stats(callTimes)
    print("control plane, 3-host lab, \(rounds) rounds, \(normalGossip ? "Docker's gossip intervals" : "lab gossip intervals (200 ms probes)"):")
    print(String(format: "  network create -> known on 2 workers:      median %7.1f ms  p90 %7.1f ms   (aim < 1000 ms)", nm, n90))
    print(String(format: "  run on h2 -> pingable from a container on h1: median %7.1f ms  p90 %7.1f ms   (aim < 200 ms; < 50 ms with an immediate push)", rm, r90))
    print(String(format: "    of which the run call itself (namespace, address from the manager, attach, gateway, process): median %7.1f ms  p90 %7.1f ms", cm, c90))
    print(String(format: "  Docker, same lab shape, recorded: 478 ms run-to-reachable by name; ours is %.2fx of it", rm / 478))
} catch {
    print("control-bench: failed: \(error)")
    exit(1)
}
