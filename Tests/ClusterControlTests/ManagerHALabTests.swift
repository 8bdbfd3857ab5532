import Foundation
import Glibc
import Testing
import OverlayTestKit

/// Several managers on one etcd (issue 16), with the real binaries: `lab up --hosts 5 --etcd 3`,
/// managers h1-h3 (each beside an etcd member), workers h4 and h5.
@Suite(.serialized) struct ManagerHALabTests {
    static let store = "etcd://198.18.0.1:2379,198.18.0.2:2379,198.18.0.3:2379"

    /// `node ls` on `host` as hostname -> manager status ("" for workers).
    func managerStatus(_ lab: CLILab, on host: String) throws -> [String: String] {
        var out: [String: String] = [:]
        for n in try jsonLines(try lab.must(host, ["node", "ls", "--format", "json"])) {
            out[n["hostname"] as! String] = n["managerStatus"] as? String ?? ""
        }
        return out
    }

    /// The leader's hostname as `host` sees it, if one leads.
    func leader(_ lab: CLILab, on host: String) -> String? {
        (try? managerStatus(lab, on: host))?.first { $0.value == "Leader" }?.key
    }

    /// Every address etcd holds allocations for (network/address keys).
    func allocations(_ lab: CLILab, from host: String) throws -> [String] {
        let r = try lab.sh(host, ["etcdctl", "--endpoints", Self.store.replacingOccurrences(of: "etcd://", with: "http://").replacingOccurrences(of: ",", with: ",http://"),
                                  "get", "--prefix", "/swift-overlay/swarm/allocation/", "--keys-only"])
        #expect(r.succeeded, "etcdctl: \(r.output)")
        return r.output.split(separator: "\n").map { String($0.split(separator: "/").suffix(2).joined(separator: "/")) }.filter { !$0.isEmpty }
    }

    /// After a failure: each host's peers in its network sandboxes (neighbour and FDB entries),
    /// its log lines that mention `words` or are warnings and errors, and a copy of the lab's
    /// state directory in /tmp.
    func keepLogs(_ lab: CLILab, _ hosts: [String], about words: [String]) {
        let copy = "/tmp/\(lab.name)-\(Int(Date().timeIntervalSince1970))"
        _ = try? Command.run(["cp", "-r", "/run/\(lab.name)", copy])
        for h in hosts {
            // The sandboxes' handles are mounts in the daemon's mount namespace.
            if let pid = try? lab.pid(h) {
                let peers = try? Command.run(["nsenter", "-t", "\(pid)", "-m", "--", "sh", "-c",
                    "for s in /run/\(lab.name)/\(h)/driver/netns/sb-*; do echo \"$s:\"; nsenter --net=$s ip neigh; nsenter --net=$s bridge fdb show | grep dst; done"])
                print("ManagerHALabTests: \(h)'s sandboxes:\n\(peers?.output ?? "?")")
            }
            let log = (try? String(contentsOfFile: "/run/\(lab.name)/\(h)/overlayd.log", encoding: .utf8)) ?? ""
            let lines = log.split(separator: "\n").filter { line in
                (words + [" warning ", " error ", "refused", "withdr", "Peer", "quarantin"]).contains { line.contains($0) }
            }
            print("ManagerHALabTests: \(h)'s log, \(lines.count) lines about \(words), warnings and errors (all in \(copy)):\n"
                  + lines.suffix(40).joined(separator: "\n"))
        }
    }

    @Test func threeManagersSurviveTheLeadersDeath() async throws {
        let lab = try CLILab.up("ovl-ha", hosts: 5, extra: ["--etcd", "3"])
        defer { lab.down() }
        let workerToken = try lab.initSwarm()
        let managerToken = try lab.must("h1", ["swarm", "join-token", "-q", "manager"])
        for h in ["h2", "h3"] {
            let out = try lab.must(h, ["swarm", "join", "--token", managerToken, "198.18.0.1:2377"])
            #expect(out.contains("manager"), "\(h): \(out)")
        }
        try lab.join(["h4", "h5"], token: workerToken)

        // Three managers, one leading; every manager serves the API, and a write made through
        // one is seen by the others.
        let statuses = try managerStatus(lab, on: "h2")
        #expect(statuses.filter { $0.value == "Leader" }.count == 1, "\(statuses)")
        #expect(statuses.filter { $0.value == "Reachable" }.count == 2, "\(statuses)")
        #expect(statuses["h4"] == "" && statuses["h5"] == "")
        _ = try lab.must("h2", ["network", "create", "-d", "overlay", "--attachable", "--subnet", "10.70.0.0/24", "net1"])
        let seen = try lab.retrying("h3", ["network", "inspect", "net1"], tries: 20, every: 100_000)
        #expect(seen.succeeded, "h3 does not see h2's network: \(seen.output)")
        for h in ["h1", "h4", "h5"] {
            _ = try lab.must(h, ["run", "-d", "--name", "c-\(h)", "--network", "net1", "--", "sleep", "100000"])
        }
        let ip1 = try lab.ip("h1", "c-h1", network: "net1")
        let ip4 = try lab.ip("h4", "c-h4", network: "net1"), ip5 = try lab.ip("h5", "c-h5", network: "net1")
        // Both ways the pings below take work before h1's daemon is killed: a daemon killed
        // before it has heard of an endpoint cannot program it (two CI runs under load killed h1
        // a second after c-h5 started, and c-h1's daemon had not yet, or c-h5's had not, heard of the other).
        #expect(try lab.pings("h4", "c-h4", ip5))
        #expect(try lab.pings("h5", "c-h5", ip1))
        _ = try lab.must("h3", ["service", "create", "--name", "web", "--replicas", "3", "--network", "net1", "--", "sleep", "100000"])

        // A worker runs and removes containers in a loop all along.
        let loopLog = "/run/ovl-ha/h5/loop.log"
        let loop = try Child.spawn([lab.bin + "/overlayctl", "lab", "exec", "--name", lab.name, "h5", "--", "sh", "-c", """
            for i in $(seq 1 30); do
              if overlayctl run -d --name l$i --network net1 -- sleep 1000 >/dev/null 2>&1; then echo run-ok; else echo run-failed; fi
              overlayctl rm -f l$i >/dev/null 2>&1 && echo rm-ok || echo rm-failed
            done
            echo done
            """], log: loopLog)
        defer { kill(-loop.pid, SIGKILL) }

        // Pings between the workers' containers all along (5 a second), while h1 (the leader, and
        // the manager the workers joined through) is killed.
        let pingLog = "/run/ovl-ha/h4/ping.log"
        let ping = try Child.spawn([lab.bin + "/overlayctl", "lab", "exec", "--name", lab.name, "h4", "--",
                                    "overlayctl", "exec", "c-h4", "--", "ping", "-i", "0.2", "-c", "100", "-W", "1", ip5], log: pingLog)
        defer { kill(-ping.pid, SIGKILL) }
        // ... and from h5's container to the one on h1, whose daemon is the one killed (until h1's
        // daemon starts again: a restart rebuilds its sandboxes, Operations.md's "Restarts").
        let pingLog1 = "/run/ovl-ha/h5/ping1.log"
        let ping1 = try Child.spawn([lab.bin + "/overlayctl", "lab", "exec", "--name", lab.name, "h5", "--",
                                     "overlayctl", "exec", "c-h5", "--", "ping", "-D", "-i", "0.2", "-c", "100", "-W", "1", ip1], log: pingLog1)
        defer { kill(-ping1.pid, SIGKILL) }
        let oldLeader = try #require(leader(lab, on: "h1"))
        #expect(oldLeader == "h1", "the first manager leads until it dies")
        let pid = try lab.pid("h1")
        let killedAt = ContinuousClock.now
        let killedAtWall = Date().timeIntervalSince1970
        kill(pid, SIGKILL)

        // A new leader within 5 s, and writes through any manager work again.
        var newLeader: String?
        while ContinuousClock.now - killedAt < .seconds(10) && newLeader == nil {
            newLeader = leader(lab, on: "h2").flatMap { $0 == "h1" ? nil : $0 }
            if newLeader == nil { usleep(100_000) }
        }
        let elected = ContinuousClock.now - killedAt
        #expect(newLeader != nil && elected < .seconds(5), "a new leader after \(elected): \(String(describing: newLeader))")
        print("ManagerHALabTests: \(newLeader ?? "no manager") leads \(elected) after the leader was killed")
        _ = try lab.must("h3", ["network", "create", "-d", "overlay", "net2"])
        _ = try lab.must("h2", ["network", "rm", "net2"])
        let status = try managerStatus(lab, on: "h3")
        #expect(status["h1"] == "Unreachable", "\(status)")

        // Workers fail over on their own: containers come and go on them through the others.
        for round in 0..<3 {
            for h in ["h4", "h5"] {
                let r = try lab.retrying(h, ["run", "-d", "--name", "t\(round)-\(h)", "--network", "net1", "--", "sleep", "100000"],
                                         tries: 20, every: 500_000)
                #expect(r.succeeded, "\(h) round \(round): \(r.output)")
                if round < 2 { _ = try lab.must(h, ["rm", "-f", "t\(round)-\(h)"]) }
            }
        }

        // The old leader comes back as a follower.
        kill(-ping1.pid, SIGINT)
        for _ in 0..<50 where ping1.isRunning { usleep(100_000) }
        let pinged1 = (try? String(contentsOfFile: pingLog1, encoding: .utf8)) ?? ""
        #expect(pinged1.contains(" 0% packet loss"), "pings to the killed manager's container until it restarts (h1 killed at \(killedAtWall)): \(pinged1.prefix(300)) ... \(pinged1.suffix(300))")
        if !pinged1.contains(" 0% packet loss") { keepLogs(lab, ["h5"], about: ["net1", ip1]) }
        try lab.startDaemon("h1", hostIndex: 1, args: ["--cluster-store", Self.store])
        var back = false
        for _ in 0..<50 where !back {
            let s = try? managerStatus(lab, on: "h1")
            back = s?["h1"] == "Reachable" && s?.values.filter({ $0 == "Leader" }).count == 1
            if !back { usleep(200_000) }
        }
        #expect(back, "h1 rejoined as a follower: \(String(describing: try? managerStatus(lab, on: "h1")))")
        #expect(leader(lab, on: "h1") == newLeader)

        // Nothing lost between the existing containers; no address handed out twice; the
        // networks, services, tasks and containers are all there.
        for _ in 0..<100 where ping.isRunning { usleep(200_000) }
        #expect(try lab.pings("h5", "c-h5", ip1), "h1's container after its daemon's restart")
        for _ in 0..<300 where loop.isRunning { usleep(200_000) }
        let looped = (try? String(contentsOfFile: loopLog, encoding: .utf8)) ?? ""
        #expect(looped.contains("done") && !looped.contains("failed"), "h5's run/rm loop across the failover: \(looped)")
        #expect(looped.components(separatedBy: "run-ok").count - 1 == 30, "\(looped)")
        let tasks = try jsonLines(try lab.must("h2", ["service", "ps", "web", "--format", "json"]))
        #expect(tasks.filter { ($0["DesiredState"] as? String) == "Running" }.count == 3, "\(tasks)")
        // Every manager hears every node's reports: each counts the three tasks running.
        for h in ["h1", "h2", "h3"] {
            var replicas = ""
            for _ in 0..<80 where replicas != "3/3" {
                replicas = (try? lab.must(h, ["service", "ls", "--format", "{{.Replicas}}"])) ?? ""
                if replicas != "3/3" { usleep(500_000) }
            }
            #expect(replicas == "3/3", "service ls on \(h): \(replicas)")
        }
        let pinged = (try? String(contentsOfFile: pingLog, encoding: .utf8)) ?? ""
        #expect(pinged.contains(" 0% packet loss"), "pings between existing containers: \(pinged.suffix(300))")
        let allocated = try allocations(lab, from: "h2")
        #expect(Set(allocated).count == allocated.count, "duplicated: \(allocated)")
        let containers = ["c-h1", "c-h4", "c-h5", "t2-h4", "t2-h5"]
        var ips: [String] = []
        for (h, c) in zip(["h1", "h4", "h5", "h4", "h5"], containers) { ips.append(try lab.ip(h, c, network: "net1")) }
        #expect(Set(ips).count == ips.count, "\(ips)")
        #expect(try lab.must("h2", ["network", "ls", "--format", "{{.Name}}"]).split(separator: "\n").sorted() == ["ingress", "net1"])
        #expect(try lab.pings("h5", "t2-h5", ip4))

        // A worker promoted becomes a manager (its containers untouched), and demoted again a
        // worker following another manager.
        let promoted = try lab.must("h2", ["node", "promote", "h4"])
        #expect(promoted == "Node h4 promoted to a manager in the swarm.")
        var h4Manages = false
        for _ in 0..<50 where !h4Manages {
            h4Manages = (try? lab.on("h4", ["service", "ls"]))?.succeeded == true && (try? managerStatus(lab, on: "h4"))?["h4"] == "Reachable"
            if !h4Manages { usleep(200_000) }
        }
        #expect(h4Manages, "h4 serves as a manager after its promotion")
        #expect(try lab.pings("h4", "c-h4", ip5, tries: 3))
        #expect(try lab.must("h4", ["node", "demote", "h4"]) == "Manager h4 demoted in the swarm.")
        var h4Works = false
        for _ in 0..<50 where !h4Works {
            h4Works = (try? lab.on("h4", ["service", "ls"]))?.output.contains("not a swarm manager") == true
            if !h4Works { usleep(200_000) }
        }
        #expect(h4Works, "h4 is a worker again")
        _ = try lab.must("h4", ["run", "-d", "--name", "after-demote", "--network", "net1", "--", "sleep", "100000"])
        #expect(try managerStatus(lab, on: "h2")["h4"] == "")
    }

    @Test func aManagerJoinThatCannotWorkIsOneLine() async throws {
        let lab = try CLILab.up("ovl-hb", hosts: 3, extra: ["--etcd", "1"])
        defer { lab.down() }
        _ = try lab.initSwarm()
        let managerToken = try lab.must("h1", ["swarm", "join-token", "-q", "manager"])
        // A node whose overlayd has no --cluster-store.
        try lab.stopDaemon("h3")
        try lab.startDaemon("h3", hostIndex: 3)
        let r = try lab.on("h3", ["swarm", "join", "--token", managerToken, "198.18.0.1:2377"])
        #expect(!r.succeeded)
        #expect(r.output.contains("--cluster-store") && r.output.split(separator: "\n").count == 1, "\(r.output)")
        let info = try JSONSerialization.jsonObject(with: Data(try lab.must("h3", ["info"]).utf8)) as? [String: Any]
        #expect(info?["swarm"] as? String == "inactive", "nothing changed on h3: \(String(describing: info))")
        // `swarm init` where the cluster store already holds a swarm: refused, nothing made, so
        // the node can still join it.
        let initAgain = try lab.on("h2", ["swarm", "init", "--advertise-addr", "198.18.0.2"])
        #expect(!initAgain.succeeded && initAgain.output.contains("already holds a swarm") && initAgain.output.split(separator: "\n").count == 1,
                "\(initAgain.output)")
        #expect(!FileManager.default.fileExists(atPath: "/run/\(lab.name)/h2/ca"), "a refused init made a CA")
        // A node already in the swarm.
        _ = try lab.must("h2", ["swarm", "join", "--token", managerToken, "198.18.0.1:2377"])
        let again = try lab.on("h2", ["swarm", "join", "--token", managerToken, "198.18.0.1:2377"])
        #expect(!again.succeeded && again.output.contains("already part of a swarm"), "\(again.output)")
        // Promoting a node whose overlayd has no cluster store; demoting the last manager.
        _ = try lab.must("h3", ["swarm", "join", "--token", try lab.must("h1", ["swarm", "join-token", "-q", "worker"]), "198.18.0.1:2377"])
        let promote = try lab.on("h1", ["node", "promote", "h3"])
        #expect(!promote.succeeded && promote.output.contains("--cluster-store") && promote.output.split(separator: "\n").count == 1,
                "\(promote.output)")
        _ = try lab.must("h1", ["node", "demote", "h2"])
        let last = try lab.on("h1", ["node", "demote", "h1"])
        #expect(!last.succeeded && last.output.contains("last manager"), "\(last.output)")
        let roles = try managerStatus(lab, on: "h1")
        #expect(roles["h1"] == "Leader" && roles["h2"] == "" && roles["h3"] == "", "nothing changed: \(roles)")
    }
}
