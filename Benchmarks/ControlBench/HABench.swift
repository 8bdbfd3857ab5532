import ClusterManager
import Foundation
import NIOCore
import NIOPosix
import OverlayAPI
import OverlayTestKit
import Synchronization

// `control-bench ha`: the managers on etcd (issue 16), through the real binaries in labs.
//   1. writes per second, SQLite vs etcd: `network create` and `run` on a single manager, one lab
//      with the manager's own file, one with a 3-member etcd (side by side, same calls);
//   2. failover: 3 managers on a 3-member etcd; the leader killed (SIGKILL) -> a new leader, and
//      -> the first successful `network create` on another manager; median of N, the killed
//      manager started again between rounds;
//   3. agents: N simulated agents (a node identity each, joined with the worker token, then a
//      report and long polls of the state, as a worker's overlayd does) spread over 3 managers;
//      a network made every 10 s; each manager's CPU and memory over 60 s.
// The simulated agents run in a process of their own inside a lab host's namespace
// (`control-bench ha-agents ...`, started by `ha`).

func haBench(ctl: String, dir: String, rounds: Int, agents: Int) async throws {
    func sh(_ a: [String], timeout: Double = 120) throws -> String {
        let r = try Command.run(a, timeout: timeout)
        guard r.succeeded else { throw LabError("\(a.joined(separator: " ")): \(r.output)") }
        return r.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }
    let group = MultiThreadedEventLoopGroup.singleton
    func api(_ lab: String, _ h: String, timeout: TimeAmount = .seconds(30)) -> APIClient {
        APIClient(endpoint: .unix("/run/\(lab)/\(h)/overlayd.sock"), timeout: timeout)
    }
    func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
    func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }
    func p90(_ xs: [Double]) -> Double { let s = xs.sorted(); return s[min(s.count - 1, Int(Double(s.count) * 0.9))] }

    // 1. Writes per second, SQLite vs etcd.
    var rates: [String: (networks: Double, runs: Double)] = [:]
    for (kind, extra) in [("SQLite", [String]()), ("etcd", ["--etcd", "3"])] {
        let lab = "ovlb-ha-w"
        defer { _ = try? sh([ctl, "lab", "down", "--name", lab]) }
        _ = try sh([ctl, "lab", "up", "--name", lab, "--hosts", "3"] + extra)
        _ = try sh([ctl, "lab", "exec", "--name", lab, "h1", "--", "overlayctl", "swarm", "init", "--advertise-addr", "198.18.0.1"])
        let count = 50
        let t0 = ContinuousClock.now
        for i in 0..<count {
            var req = NetworkCreateRequest(name: "w\(i)")
            req.attachable = true
            _ = try await api(lab, "h1").call(LocalAPI.createNetwork, body: req, group: group)
        }
        let networks = Double(count) / seconds(ContinuousClock.now - t0)
        let t1 = ContinuousClock.now
        for i in 0..<count {
            let req = ContainerCreateRequest(name: "c\(i)", networks: ["w0"], command: ["sleep", "infinity"], detach: true)
            _ = try await api(lab, "h1").call(LocalAPI.runContainer, body: req, group: group)
        }
        let runs = Double(count) / seconds(ContinuousClock.now - t1)
        rates[kind] = (networks, runs)
    }

    // 2 and 3: three managers on etcd.
    let lab = "ovlb-ha"
    defer { _ = try? sh([ctl, "lab", "down", "--name", lab]) }
    _ = try sh([ctl, "lab", "up", "--name", lab, "--hosts", "4", "--etcd", "3"])
    let store = "etcd://198.18.0.1:2379,198.18.0.2:2379,198.18.0.3:2379"
    func on(_ h: String, _ a: [String]) throws -> String { try sh([ctl, "lab", "exec", "--name", lab, h, "--", "overlayctl"] + a) }
    _ = try on("h1", ["swarm", "init", "--advertise-addr", "198.18.0.1"])
    let managerToken = try on("h1", ["swarm", "join-token", "-q", "manager"])
    let workerToken = try on("h1", ["swarm", "join-token", "-q", "worker"])
    for h in ["h2", "h3"] { _ = try on(h, ["swarm", "join", "--token", managerToken, "198.18.0.1:2377"]) }
    let managers = ["h1", "h2", "h3"]
    func leader(among hosts: [String]) async -> String? {
        for h in hosts {
            guard let nodes = try? await api(lab, h, timeout: .seconds(2)).call(LocalAPI.nodes, group: group) else { continue }
            if let l = nodes.first(where: { $0.managerStatus == "Leader" }) { return l.hostname }
        }
        return nil
    }
    func startDaemon(_ h: String) throws {
        let i = Int(h.dropFirst())!
        let d = "/run/\(lab)/\(h)"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/setsid")
        p.arguments = ["ip", "netns", "exec", "\(lab)-\(h)", dir + "/overlayd", "--config-file", d + "/daemon.json", "--state-dir", d,
                       "--socket", d + "/overlayd.sock", "--hostname", h, "--advertise-addr", "198.18.0.\(i)", "--fast-gossip",
                       "--cluster-store", store]
        let log = FileHandle(forWritingAtPath: d + "/overlayd.log")!
        log.seekToEndOfFile()
        p.standardOutput = log
        p.standardError = log
        p.standardInput = FileHandle.nullDevice
        try p.run()
    }
    // The simulated agents all come from one address: the managers take that many connections
    // from it (overlayd's per-source limit is 64 by default).
    if agents > 0 {
        for h in managers {
            let info = try await api(lab, h).call(LocalAPI.info, group: group)
            kill(info.pid, SIGTERM)
            for _ in 0..<100 where kill(info.pid, 0) == 0 { try await Task.sleep(for: .milliseconds(100)) }
            try Data(#"{"manager-max-connections-per-source": \#(agents + 64)}"#.utf8).write(to: URL(fileURLWithPath: "/run/\(lab)/\(h)/daemon.json"))
            try startDaemon(h)
        }
        for h in managers {
            var up = false
            for _ in 0..<100 where !up {
                up = (try? await api(lab, h, timeout: .seconds(2)).call(LocalAPI.nodes, group: group))?.count == 3
                if !up { try await Task.sleep(for: .milliseconds(100)) }
            }
            guard up else { throw LabError("\(h) did not come back with the higher connection limit") }
        }
    }


    var elections: [Double] = [], writes: [Double] = []
    for round in 0..<rounds {
        guard let old = await leader(among: managers) else { throw LabError("round \(round): no leader") }
        let info = try await api(lab, old).call(LocalAPI.info, group: group)
        let others = managers.filter { $0 != old }
        let killed = ContinuousClock.now
        kill(info.pid, SIGKILL)
        var elected: Double?, written: Double?
        while (elected == nil || written == nil) && ContinuousClock.now - killed < .seconds(30) {
            if written == nil {
                for h in others {
                    var req = NetworkCreateRequest(name: "fo\(round)-\(h)")
                    req.attachable = true
                    if (try? await api(lab, h, timeout: .seconds(2)).call(LocalAPI.createNetwork, body: req, group: group)) != nil {
                        written = seconds(ContinuousClock.now - killed)
                        break
                    }
                }
            }
            if elected == nil, let l = await leader(among: others), l != old { elected = seconds(ContinuousClock.now - killed) }
            try await Task.sleep(for: .milliseconds(20))
        }
        guard let elected, let written else { throw LabError("round \(round): no new leader or no write within 30 s") }
        elections.append(elected)
        writes.append(written)
        // The killed manager back as a follower before the next round.
        for _ in 0..<50 where kill(info.pid, 0) == 0 { try await Task.sleep(for: .milliseconds(100)) }
        try startDaemon(old)
        var back = false
        for _ in 0..<100 where !back {
            try await Task.sleep(for: .milliseconds(200))
            let nodes = try? await api(lab, old, timeout: .seconds(2)).call(LocalAPI.nodes, group: group)
            back = nodes?.first(where: { $0.hostname == old })?.managerStatus == "Reachable"
        }
        guard back else { throw LabError("round \(round): \(old) did not come back as a follower") }
    }

    // 3. Simulated agents, from h4's namespace, spread over the three managers.
    var cpu: [String: Double] = [:], rss: [String: Int] = [:]
    var agentSummary = ""
    if agents > 0 {
        let out = "/run/\(lab)/agents.out"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        p.arguments = ["netns", "exec", "\(lab)-h4", dir + "/control-bench", "ha-agents", "--token", workerToken, "--count", "\(agents)",
                       "--managers", "198.18.0.1:2377,198.18.0.2:2377,198.18.0.3:2377", "--seconds", "75", "--out", out]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        // Joined and polling: the agents' process writes "polling" once every agent has joined.
        for _ in 0..<1200 where !(((try? String(contentsOfFile: out, encoding: .utf8)) ?? "").contains("polling")) {
            try await Task.sleep(for: .milliseconds(500))
        }
        try await Task.sleep(for: .seconds(5))
        var pids: [String: Int32] = [:]
        for h in managers { pids[h] = try await api(lab, h).call(LocalAPI.info, group: group).pid }
        func ticks(_ pid: Int32) -> Double {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return 0 }
            let f = stat[stat.index(after: close)...].split(separator: " ")
            return (Double(f[11]) ?? 0) + (Double(f[12]) ?? 0)
        }
        let hz = Double(sysconf(Int32(_SC_CLK_TCK)))
        let before = pids.mapValues(ticks)
        let start = ContinuousClock.now
        for i in 0..<6 {
            var req = NetworkCreateRequest(name: "agents\(i)")
            req.attachable = true
            _ = try await api(lab, managers[i % 3]).call(LocalAPI.createNetwork, body: req, group: group)
            try await Task.sleep(for: .seconds(10))
        }
        let window = seconds(ContinuousClock.now - start)
        for (h, pid) in pids {
            cpu[h] = (ticks(pid) - before[h]!) / hz / window
            let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
            rss[h] = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }
                .flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") } ?? 0
        }
        p.waitUntilExit()
        agentSummary = ((try? String(contentsOfFile: out, encoding: .utf8)) ?? "").split(separator: "\n").joined(separator: "; ")
    }

    let s = rates["SQLite"]!, e = rates["etcd"]!
    print("managers on etcd (lab, real binaries, etcd 3.4, 3 members on tmpfs):")
    print(String(format: "  network create per second:  SQLite %6.1f   etcd %6.1f   (etcd/SQLite %.2fx)", s.networks, e.networks, e.networks / s.networks))
    print(String(format: "  run per second:             SQLite %6.1f   etcd %6.1f   (etcd/SQLite %.2fx)", s.runs, e.runs, e.runs / s.runs))
    print(String(format: "  leader killed -> new leader:                       median %.2f s  p90 %.2f s  (%d rounds; aim < 5 s; Docker's Raft defaults: about 10 s)",
                 median(elections), p90(elections), rounds))
    print(String(format: "  leader killed -> network create on another manager: median %.2f s  p90 %.2f s", median(writes), p90(writes)))
    if agents > 0 {
        for h in managers {
            print(String(format: "  %d agents over 3 managers, a network every 10 s: %@ %.1f%% of a core, %d MiB resident", agents, h, (cpu[h] ?? 0) * 100, (rss[h] ?? 0) / 1024))
        }
        print("  agents: \(agentSummary)")
    }
}

/// `control-bench ha-agents`: `count` simulated agents (run inside a lab host's namespace). Each
/// joins with the worker token (its own key and certificate), then reports once and long-polls
/// the state of its manager (agents spread over `managers` in turn) until `seconds` have passed.
/// Writes "polling" to `out` once all have joined, and a summary line at the end.
func haAgents(token: String, count: Int, managers: [String], seconds: Int, out: String) async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    let parsed = try JoinToken.parse(token)
    let bootstrap = try ClusterTLS.Client.bootstrap(token: parsed)
    func write(_ line: String) {
        if let h = FileHandle(forWritingAtPath: out) { h.seekToEndOfFile(); h.write(Data((line + "\n").utf8)); try? h.close() } else {
            _ = FileManager.default.createFile(atPath: out, contents: Data((line + "\n").utf8))
        }
    }
    let tally = AgentTally()
    // Joins, 16 at a time.
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        for i in 0..<count {
            if i >= 16 { try await tasks.next() }
            tasks.addTask {
                let (host, port) = managers[i % managers.count].split(separator: ":").map(String.init).splitPair()
                let request = try NodeIdentity.Request()
                let join = JoinRequest(token: token, hostname: "agent\(i)", advertiseAddr: "198.18.1.\(i % 250 + 1)",
                                       dataPathAddr: "198.18.1.\(i % 250 + 1)", gossipPort: 7946, csr: request.csrPEM)
                let boot = APIClient(endpoint: .tcp(host: host, port: port), tls: { try bootstrap.addHandlers(to: $0) }, timeout: .seconds(60))
                let reply: JoinReply
                do { reply = try await boot.call(ManagerAPI.join, body: join, group: group) } catch {
                    // Counted, not fatal: the summary says how many joins failed, and why the last did.
                    tally.joinFailures.add(1, ordering: .relaxed)
                    tally.lastJoinError.withLock { $0 = "\(error)" }
                    return
                }
                let identity = try NodeIdentity(request: request, certificatePEM: reply.certificate ?? "", caCertificatePEM: reply.ca ?? "")
                let tls = try ClusterTLS.Client.mutual(identity: identity)
                let client = APIClient(endpoint: .tcp(host: host, port: port), tls: { try tls.addHandlers(to: $0) }, timeout: .seconds(60),
                                       pool: APIConnectionPool())
                tally.joined.withLock { $0.append(AgentTally.Agent(client: client, nodeID: reply.nodeID)) }
            }
        }
        try await tasks.waitForAll()
    }
    let all = tally.joined.withLock { $0 }
    write("polling \(all.count) (\(tally.joinFailures.load(ordering: .relaxed)) joins failed\(tally.lastJoinError.withLock { $0.map { ", the last: \($0)" } ?? "" }))")
    let deadline = ContinuousClock.now + .seconds(seconds)
    await withTaskGroup(of: Void.self) { tasks in
        for agent in all {
            tasks.addTask {
                _ = try? await agent.client.call(ManagerAPI.report, body: NodeReport(nodeID: agent.nodeID), group: group)
                var since: UInt64 = 0
                while ContinuousClock.now < deadline {
                    do {
                        let state = try await agent.client.call(ManagerAPI.state, query: [("since", "\(since)"), ("wait", "25")], group: group)
                        since = state.version
                        tally.answers.add(1, ordering: .relaxed)
                    } catch {
                        tally.failures.add(1, ordering: .relaxed)
                        try? await Task.sleep(for: .seconds(1))
                    }
                }
            }
        }
    }
    write("\(all.count) agents joined (\(tally.joinFailures.load(ordering: .relaxed)) joins failed); \(tally.answers.load(ordering: .relaxed)) state answers, \(tally.failures.load(ordering: .relaxed)) failed polls in \(seconds) s")
    try? await group.shutdownGracefully()
}

/// What the simulated agents share: who joined, and the counts.
final class AgentTally: Sendable {
    struct Agent: Sendable {
        let client: APIClient
        let nodeID: String
    }
    let joined = Mutex<[Agent]>([])
    let answers = Atomic<Int>(0)
    let failures = Atomic<Int>(0)
    let joinFailures = Atomic<Int>(0)
    let lastJoinError = Mutex<String?>(nil)
}

extension Array where Element == String {
    fileprivate func splitPair() -> (String, Int) { (self[0], Int(self[1]) ?? 2377) }
}
