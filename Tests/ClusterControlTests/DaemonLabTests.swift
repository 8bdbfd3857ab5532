import Foundation
import Glibc
import Testing
import OverlayTestKit

/// The real binaries in a lab: `overlayctl lab up` starts one overlayd per host namespace, and
/// every step goes through `overlayctl lab exec HOST -- overlayctl ...`, as a user would type it.
/// The objects of `--format json` output: one JSON object per line.
func jsonLines(_ output: String) throws -> [[String: Any]] {
    try output.split(separator: "\n").map { line in
        guard let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            throw LabError("not a JSON object: \(line)")
        }
        return o
    }
}

struct CLILab {
    let name: String
    let bin: String

    static func binDirectory() -> String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = (exe as NSString).deletingLastPathComponent
        // swift-overlayPackageTests.xctest/... lives in the same folder as the products.
        while !FileManager.default.isExecutableFile(atPath: dir + "/overlayctl") && dir.count > 1 {
            dir = (dir as NSString).deletingLastPathComponent
        }
        return dir
    }

    static func up(_ name: String, hosts: Int, extra: [String] = []) throws -> CLILab {
        let lab = CLILab(name: name, bin: binDirectory())
        let r = try lab.ctl(["lab", "up", "--name", name, "--hosts", "\(hosts)"] + extra, timeout: 60)
        guard r.succeeded else { throw LabError("lab up: \(r.output)") }
        return lab
    }

    func ctl(_ args: [String], timeout: Double = 30) throws -> CommandResult {
        try Command.run([bin + "/overlayctl"] + args, timeout: timeout)
    }

    /// `overlayctl lab exec HOST -- overlayctl ARGS`.
    func on(_ host: String, _ args: [String], timeout: Double = 30) throws -> CommandResult {
        try ctl(["lab", "exec", "--name", name, host, "--", "overlayctl"] + args, timeout: timeout)
    }

    /// `overlayctl lab exec HOST -- CMD` (any command in the host's namespace).
    func sh(_ host: String, _ args: [String], timeout: Double = 30) throws -> CommandResult {
        try ctl(["lab", "exec", "--name", name, host, "--"] + args, timeout: timeout)
    }

    func must(_ host: String, _ args: [String], timeout: Double = 30) throws -> String {
        let r = try on(host, args, timeout: timeout)
        guard r.succeeded else { throw LabError("\(host): overlayctl \(args.joined(separator: " ")): \(r.output)") }
        return r.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func down() { _ = try? ctl(["lab", "down", "--name", name], timeout: 60) }

    /// `overlayctl ARGS` on `host` until it succeeds, at most `tries` times `every` apart; the last result.
    func retrying(_ host: String, _ args: [String], tries: Int, every: useconds_t) throws -> CommandResult {
        var r = try on(host, args)
        for _ in 1..<max(tries, 1) where !r.succeeded {
            usleep(every)
            r = try on(host, args)
        }
        return r
    }

    /// How many addresses of `network` the manager (h1, a lab up with `--metrics`) has handed
    /// out, by its `overlay_ipam_addresses_allocated` metric.
    func allocated(_ network: String) throws -> Int {
        let text = try sh("h1", ["curl", "-sf", "-m", "3", "http://198.18.0.1:9323/metrics"]).output
        for line in text.split(separator: "\n") where line.hasPrefix("overlay_ipam_addresses_allocated{") && line.contains("network=\"\(network)\"") {
            if let v = line.split(separator: " ").last, let n = Double(v) { return Int(n) }
        }
        throw LabError("no overlay_ipam_addresses_allocated for \(network) in h1's metrics")
    }

    func ip(_ host: String, _ container: String, network: String) throws -> String {
        let out = try must(host, ["inspect", container])
        let json = try JSONSerialization.jsonObject(with: Data(out.utf8)) as! [[String: Any]]
        let nets = (json[0]["NetworkSettings"] as! [String: Any])["Networks"] as! [String: Any]
        return (nets[network] as! [String: Any])["IPAddress"] as! String
    }

    /// The hostnames `node ls` shows on `host`, sorted.
    func hostnames(_ host: String) throws -> [String] {
        let json = try jsonLines(try must(host, ["node", "ls", "--format", "json"]))
        return json.map { $0["hostname"] as! String }.sorted()
    }

    func pid(_ host: String) throws -> Int32 {
        let out = try must(host, ["info"])
        let json = try JSONSerialization.jsonObject(with: Data(out.utf8)) as! [String: Any]
        return Int32(json["pid"] as! Int)
    }

    /// Stops the host's daemon (SIGTERM) and starts it again the way `lab up` does.
    func restartDaemon(_ host: String, hostIndex: Int) throws {
        try stopDaemon(host)
        try startDaemon(host, hostIndex: hostIndex)
    }

    /// Stops the host's daemon (SIGTERM) and waits until it is gone.
    func stopDaemon(_ host: String) throws {
        let pid = try pid(host)
        kill(pid, SIGTERM)
        for _ in 0..<100 where kill(pid, 0) == 0 { usleep(100_000) }
    }

    /// Starts overlayd on `host` the way `lab up` does, with `env` and `args` added; waits until
    /// it answers.
    func startDaemon(_ host: String, hostIndex: Int, env: [String] = [], args: [String] = [], binary: String? = nil) throws {
        let dir = "/run/\(name)/\(host)"
        // In the host's cgroup, as lab up started it: the words before the daemon's own in the
        // argv lab up kept (a shell that joins the cgroup, then execs the rest), if it has them.
        let kept = FileManager.default.contents(atPath: dir + "/overlayd.argv").flatMap { try? JSONDecoder().decode([String].self, from: $0) } ?? []
        let cgroup = kept.first == "/bin/sh" && kept.count > 4 ? Array(kept.prefix(4)) : []
        // setsid forks (Command.start already made it a session leader) and its parent exits at
        // once: the daemon is init's child, reaped when it dies, so `kill(pid, 0)` sees it go.
        _ = try Child.spawn(cgroup + ["/usr/bin/setsid", "ip", "netns", "exec", "\(name)-\(host)", "/usr/bin/env"] + env
            + [binary ?? bin + "/overlayd"] + (args.contains("--config-file") ? [] : ["--config-file", dir + "/daemon.json"]) + ["--state-dir", dir, "--socket", dir + "/overlayd.sock", "--hostname", host,
               "--advertise-addr", "198.18.0.\(hostIndex)", "--fast-gossip"] + args, log: dir + "/overlayd.log")
        for _ in 0..<100 {
            if (try? on(host, ["info"]))?.succeeded == true { return }
            usleep(100_000)
        }
        throw LabError("overlayd on \(host) did not come back")
    }

    /// `swarm init` on h1 (the manager, 198.18.0.1); returns the worker join token.
    func initSwarm() throws -> String {
        _ = try must("h1", ["swarm", "init", "--advertise-addr", "198.18.0.1"])
        return try must("h1", ["swarm", "join-token", "-q", "worker"])
    }

    /// `swarm join` of each of `hosts` with `token`.
    func join(_ hosts: [String], token: String) throws {
        for h in hosts { _ = try must(h, ["swarm", "join", "--token", token, "198.18.0.1:2377"]) }
    }

    /// Whether `container` on `host` gets a ping answer from `ip` within `tries` one-second tries.
    func pings(_ host: String, _ container: String, _ ip: String, tries: Int = 30) throws -> Bool {
        for _ in 0..<tries where try on(host, ["exec", container, "--", "ping", "-c", "1", "-W", "1", ip]).succeeded { return true }
        return false
    }
}

@Suite(.serialized) struct DaemonLabTests {
    @Test func swarmNetworksAndContainersAcrossThreeHosts() async throws {
        guard getuid() == 0 else {
            Issue.record("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
            return
        }
        let lab = try CLILab.up("ovlt-dl", hosts: 3)
        defer { lab.down() }

        // init; tokens; a wrong token and a malformed one are refused with one clear line.
        #expect(try lab.must("h1", ["swarm", "init", "--advertise-addr", "198.18.0.1"]).contains("is now a manager"))
        let token = try lab.must("h1", ["swarm", "join-token", "-q", "worker"])
        #expect(token.hasPrefix("SWMTKN-1-"))
        let wrong = String(token.dropLast(25)) + String(repeating: "a", count: 25)
        let refused = try lab.on("h2", ["swarm", "join", "--token", wrong, "198.18.0.1:2377"])
        #expect(!refused.succeeded)
        #expect(refused.output.contains("invalid join token"))
        #expect(refused.output.split(separator: "\n").count == 1)
        let malformed = try lab.on("h2", ["swarm", "join", "--token", "SWMTKN-1-abc", "198.18.0.1:2377"])
        #expect(!malformed.succeeded && malformed.output.contains("invalid join token"))
        // A token naming another CA (a different digest): the manager's chain does not match it.
        let digest = token.split(separator: "-")[2]
        let otherCA = token.replacingOccurrences(of: String(digest), with: String(repeating: "z", count: 50))
        let foreign = try lab.on("h2", ["swarm", "join", "--token", otherCA, "198.18.0.1:2377"])
        #expect(!foreign.succeeded && foreign.output.contains("does not match the join token"), "\(foreign.output)")
        // A second manager is refused with the reason (the manager keeps the swarm in its own file).
        let managerToken = try lab.must("h1", ["swarm", "join-token", "-q", "manager"])
        let asManager = try lab.on("h2", ["swarm", "join", "--token", managerToken, "198.18.0.1:2377"])
        #expect(!asManager.succeeded && asManager.output.contains("needs a cluster store the managers share"), "\(asManager.output)")
        for h in ["h2", "h3"] {
            #expect(try lab.must(h, ["swarm", "join", "--token", token, "198.18.0.1:2377"]).contains("joined"))
        }
        // 2377 without a client certificate: only the join call; everything else is refused.
        let anonymous = try lab.sh("h3", ["curl", "-sk", "https://198.18.0.1:2377/v1/state"])
        #expect(anonymous.output.contains("client certificate is required"), "\(anonymous.output)")
        #expect(try lab.hostnames("h1") == ["h1", "h2", "h3"])

        // A network created on the manager is usable on every node within a second.
        let created = Date()
        _ = try lab.must("h1", ["network", "create", "-d", "overlay", "--attachable", "--subnet", "10.20.0.0/24", "web"])
        for h in ["h2", "h3"] {
            var seen = false
            while !seen && Date().timeIntervalSince(created) < 1.0 {
                seen = (try lab.on(h, ["network", "inspect", "web"])).succeeded
                if !seen { usleep(20_000) }
            }
            #expect(seen, "network web not on \(h) within 1 s")
        }
        // Workers can't create networks; duplicates and overlaps are refused.
        let onWorker = try lab.on("h2", ["network", "create", "-d", "overlay", "x"])
        #expect(!onWorker.succeeded && onWorker.output.contains("not a swarm manager"))
        let dup = try lab.on("h1", ["network", "create", "-d", "overlay", "web"])
        #expect(!dup.succeeded && dup.output.contains("already exists"))
        let overlap = try lab.on("h1", ["network", "create", "-d", "overlay", "--subnet", "10.20.0.128/25", "web2"])
        #expect(!overlap.succeeded && overlap.output.contains("overlap"))

        // One container per host; everyone reaches everyone by IP.
        for (i, h) in ["h1", "h2", "h3"].enumerated() {
            _ = try lab.must(h, ["run", "-d", "--name", "c\(i + 1)", "--network", "web", "--", "sleep", "infinity"])
        }
        let ips = try (1...3).map { try lab.ip("h\($0)", "c\($0)", network: "web") }
        #expect(Set(ips).count == 3)
        for from in 1...3 {
            for to in 1...3 where to != from {
                let r = try lab.on("h\(from)", ["exec", "c\(from)", "--", "ping", "-c", "1", "-W", "3", ips[to - 1]])
                #expect(r.succeeded, "c\(from) -> c\(to) (\(ips[to - 1])): \(r.output)")
            }
        }
        // network rm is refused while endpoints are attached, naming them.
        let busy = try lab.on("h1", ["network", "rm", "web"])
        #expect(!busy.succeeded && busy.output.contains("c2 on h2"))

        // An agent restart keeps its container, address and reachability.
        try lab.restartDaemon("h2", hostIndex: 2)
        #expect(try lab.ip("h2", "c2", network: "web") == ips[1])
        var back = false
        for _ in 0..<30 where !back {
            back = (try lab.on("h1", ["exec", "c1", "--", "ping", "-c", "1", "-W", "1", ips[1]])).succeeded
        }
        #expect(back, "c1 cannot reach c2 after h2's daemon restarted")

        // A manager restart keeps networks and allocations: a new container gets a new address.
        try lab.restartDaemon("h1", hostIndex: 1)
        _ = try lab.must("h3", ["run", "-d", "--name", "c4", "--network", "web", "--", "sleep", "infinity"])
        let ip4 = try lab.ip("h3", "c4", network: "web")
        #expect(!ips.contains(ip4), "address \(ip4) given twice")

        // Gossip key rotation: every node keeps every other, and new endpoints still propagate.
        _ = try lab.must("h1", ["swarm", "rotate-keys"])
        _ = try lab.must("h1", ["swarm", "rotate-keys"])
        usleep(1_500_000)
        let afterRotation = try lab.must("h3", ["node", "ls", "--format", "json"])
        #expect(!afterRotation.contains("\"down\""), "\(afterRotation)")
        _ = try lab.must("h2", ["run", "-d", "--name", "c5", "--network", "web", "--", "sleep", "infinity"])
        let ip5 = try lab.ip("h2", "c5", network: "web")
        var reached = false
        for _ in 0..<30 where !reached {
            reached = (try lab.on("h3", ["exec", "c3", "--", "ping", "-c", "1", "-W", "1", ip5])).succeeded
        }
        #expect(reached, "c3 cannot reach c5 after two key rotations")
        _ = try lab.must("h2", ["rm", "-f", "c5"])

        // Leave and rejoin: h3 leaves (its container goes), joins again, and is reachable again.
        // Its membership's loops end with the leave and are as many after the rejoin, not twice.
        func loops(_ host: String) throws -> Int {
            (try JSONSerialization.jsonObject(with: Data(try lab.must(host, ["info"]).utf8)) as? [String: Any])?["membershipLoops"] as? Int ?? -1
        }
        let loopsBefore = try loops("h3")
        #expect(loopsBefore == 5, "a worker runs 5 membership loops, h3 runs \(loopsBefore)")
        let leaveBusy = try lab.on("h3", ["swarm", "leave"])
        #expect(!leaveBusy.succeeded && leaveBusy.output.contains("c3"))
        _ = try lab.must("h3", ["rm", "-f", "c4"])
        _ = try lab.must("h3", ["rm", "-f", "c3"])
        _ = try lab.must("h3", ["swarm", "leave"])
        #expect(try !lab.hostnames("h1").contains("h3"))
        #expect(try loops("h3") == 0)
        _ = try lab.must("h3", ["swarm", "join", "--token", token, "198.18.0.1:2377"])
        usleep(500_000)
        #expect(try loops("h3") == loopsBefore)
        _ = try lab.must("h3", ["run", "-d", "--name", "c3", "--network", "web", "--", "sleep", "infinity"])
        let ip3 = try lab.ip("h3", "c3", network: "web")
        var rejoined = false
        for _ in 0..<30 where !rejoined {
            rejoined = (try lab.on("h1", ["exec", "c1", "--", "ping", "-c", "1", "-W", "1", ip3])).succeeded
        }
        #expect(rejoined, "c1 cannot reach c3 after h3 rejoined")

        // Removing containers frees the network; then it can go.
        for (h, c) in [("h1", "c1"), ("h2", "c2"), ("h3", "c3")] { _ = try lab.must(h, ["rm", "-f", c]) }
        _ = try lab.must("h1", ["network", "rm", "web"])
        let gone = try lab.on("h2", ["network", "inspect", "web"])
        #expect(!gone.succeeded && gone.output.contains("not found"))
    }

    @Test func gatewayBridgeEgressInternalAndPublishedPorts() async throws {
        guard getuid() == 0 else {
            Issue.record("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
            return
        }
        let lab = try CLILab.up("ovlt-dg", hosts: 2)
        defer { lab.down() }
        // h2 customises its gateway bridge before joining, as SEED.md describes for docker_gwbridge.
        _ = try lab.must("h2", ["network", "create", "-d", "bridge", "--subnet", "10.99.0.0/24",
                                "--opt", "com.docker.network.bridge.name=ovl_gwbridge",
                                "--opt", "com.docker.network.bridge.enable_icc=false",
                                "--opt", "com.docker.network.bridge.enable_ip_masquerade=true", "ovl_gwbridge"])
        let other = try lab.on("h2", ["network", "create", "-d", "bridge", "mybridge"])
        #expect(!other.succeeded && other.output.contains("only the gateway bridge"))
        _ = try lab.must("h1", ["swarm", "init", "--advertise-addr", "198.18.0.1"])
        let token = try lab.must("h1", ["swarm", "join-token", "-q", "worker"])
        _ = try lab.must("h2", ["swarm", "join", "--token", token, "198.18.0.1:2377"])
        _ = try lab.must("h1", ["network", "create", "--attachable", "--subnet", "10.40.0.0/24", "pub"])
        _ = try lab.must("h1", ["network", "create", "--attachable", "--internal", "--subnet", "10.41.0.0/24", "priv"])
        usleep(300_000)
        _ = try lab.must("h2", ["run", "-d", "--name", "web", "-p", "8080:80", "--network", "pub", "--",
                                "python3", "-m", "http.server", "80"])
        _ = try lab.must("h2", ["run", "-d", "--name", "hidden", "--network", "priv", "--", "sleep", "infinity"])
        // The gateway bridge made by hand was reused as it is: the container's address is in its subnet.
        let inspect = try lab.must("h2", ["inspect", "web"])
        #expect(inspect.contains("\"GatewayBridgeAddress\" : \"10.99.0."), "\(inspect)")
        // -p reaches the container from another host and from the host itself.
        var served = false
        for _ in 0..<30 where !served {
            served = (try lab.sh("h1", ["curl", "-s", "-m", "2", "-o", "/dev/null", "http://198.18.0.2:8080/"])).succeeded
            if !served { usleep(200_000) }
        }
        #expect(served, "http://198.18.0.2:8080 did not answer from h1")
        #expect(try lab.sh("h2", ["curl", "-s", "-m", "2", "-o", "/dev/null", "http://198.18.0.2:8080/"]).succeeded)
        // Egress to a lab host outside the overlay through the gateway bridge; --internal has none.
        #expect(try lab.on("h2", ["exec", "web", "--", "ping", "-c", "1", "-W", "2", "198.18.0.1"]).succeeded)
        let blocked = try lab.on("h2", ["exec", "hidden", "--", "ping", "-c", "1", "-W", "2", "198.18.0.1"])
        #expect(!blocked.succeeded)
        // A second container can't take the same host port; nothing of it is left.
        let clash = try lab.on("h2", ["run", "-d", "--name", "web2", "-p", "8080:80", "--network", "pub", "--", "sleep", "infinity"])
        #expect(!clash.succeeded && clash.output.contains("8080"), "\(clash.output)")
        #expect(!(try lab.must("h2", ["ps"])).contains("web2"))
        // rm takes the published port away.
        _ = try lab.must("h2", ["rm", "-f", "web"])
        #expect(!(try lab.sh("h1", ["curl", "-s", "-m", "2", "-o", "/dev/null", "http://198.18.0.2:8080/"])).succeeded)
    }

    @Test func dataPathAddressIsTheVXLANSource() async throws {
        guard getuid() == 0 else {
            Issue.record("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
            return
        }
        let lab = try CLILab.up("ovlt-dd", hosts: 2)
        defer { lab.down() }
        // h2 carries overlay traffic on a second address of its own; h1 does not.
        #expect(try lab.sh("h2", ["ip", "addr", "add", "198.18.1.2/15", "dev", "eth0"]).succeeded)
        _ = try lab.must("h1", ["swarm", "init", "--advertise-addr", "198.18.0.1"])
        let token = try lab.must("h1", ["swarm", "join-token", "-q", "worker"])
        let notMine = try lab.on("h2", ["swarm", "join", "--token", token, "--data-path-addr", "198.18.7.7", "198.18.0.1:2377"])
        #expect(!notMine.succeeded && notMine.output.contains("not an address of this host"))
        _ = try lab.must("h2", ["swarm", "join", "--token", token, "--data-path-addr", "198.18.1.2", "198.18.0.1:2377"])
        _ = try lab.must("h1", ["network", "create", "--attachable", "--subnet", "10.50.0.0/24", "dp"])
        usleep(300_000)
        _ = try lab.must("h1", ["run", "-d", "--name", "a", "--network", "dp", "--", "sleep", "infinity"])
        _ = try lab.must("h2", ["run", "-d", "--name", "b", "--network", "dp", "--", "sleep", "infinity"])
        let ipA = try lab.ip("h1", "a", network: "dp")
        // Capture on h1 what arrives from h2 while b pings a.
        let pcap = "/tmp/ovlt-dd-\(getpid()).txt"
        defer { unlink(pcap) }
        let dump = try Child.capture(["ip", "netns", "exec", "ovlt-dd-h1", "tcpdump", "-n", "-l", "-c", "4", "-i", "eth0",
                                      "udp", "port", "4789"], log: pcap)
        var reached = false
        for _ in 0..<20 where !reached {
            reached = (try lab.on("h2", ["exec", "b", "--", "ping", "-c", "1", "-W", "1", ipA])).succeeded
        }
        #expect(reached)
        _ = try lab.on("h2", ["exec", "b", "--", "ping", "-c", "3", "-i", "0.2", ipA])
        usleep(500_000)
        kill(dump.pid, SIGTERM)
        var status: Int32 = 0
        waitpid(dump.pid, &status, 0)
        let seen = (try? String(contentsOfFile: pcap, encoding: .utf8)) ?? ""
        #expect(seen.contains("198.18.1.2."), "VXLAN from h2 did not come from its data-path address: \(seen)")
        #expect(!seen.contains("198.18.0.2."), "VXLAN from h2 left from its advertise address: \(seen)")
        #expect(seen.contains("198.18.0.1."), "h1's VXLAN should leave from its advertise address: \(seen)")
    }

    @Test func badInputGetsOneClearLine() async throws {
        guard getuid() == 0 else {
            Issue.record("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
            return
        }
        let lab = try CLILab.up("ovlt-db", hosts: 1)
        defer { lab.down() }
        // Before init: a clear line, not a hang.
        let early = try lab.on("h1", ["network", "ls"])
        #expect(early.succeeded)
        let noSwarm = try lab.on("h1", ["run", "--network", "x", "--", "true"])
        #expect(!noSwarm.succeeded && noSwarm.output.contains("not part of a swarm"))
        _ = try lab.must("h1", ["swarm", "init", "--advertise-addr", "198.18.0.1"])
        let cases: [([String], String)] = [
            (["network", "inspect", "nope"], "not found"),
            (["network", "create", "-d", "overlay", "--subnet", "10.1.0.0/33", "n"], "invalid --subnet"),
            (["network", "create", "-d", "overlay", "--opt", "com.docker.network.driver.overlay.vxlanid_list=99999999", "n"], "not a VNI"),
            (["network", "create", "-d", "bogus", "n"], "not available"),
            (["network", "create", "-d", "overlay", "--gateway", "10.1.0.1", "n"], "needs a --subnet"),
            (["network", "create", "-d", "overlay", "bad name"], "invalid network name"),
            (["run", "--network", "ingress", "--", "true"], "ingress"),
            (["run", "--network", "nope", "--", "true"], "not found"),
            (["rm", "nope"], "no such container"),
            (["network", "create", "--bogus-flag", "n"], "Unknown option"),
            (["swarm", "join-token", "admin"], "unknown role"),
            (["swarm", "init"], "already part of a swarm"),
            (["network", "create", "-d", "overlay", "--opt", "encrypted=maybe", "n"], "without a value"),
            (["network", "create", "-d", "overlay", "--opt", "com.docker.network.driver.mtu=20", "n"], "MTU"),
            (["exec", "nope", "--", "true"], "no such container"),
        ]
        for (args, expected) in cases {
            let r = try lab.on("h1", args)
            #expect(!r.succeeded, "\(args) succeeded")
            #expect(r.output.contains(expected), "\(args): \(r.output)")
            #expect(r.output.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").count == 1, "\(args): \(r.output)")
        }
        // Not attachable: refused, and nothing is left behind (no container, no address taken).
        _ = try lab.must("h1", ["network", "create", "-d", "overlay", "--subnet", "10.30.0.0/24", "plain"])
        let notAttachable = try lab.on("h1", ["run", "--name", "x", "--network", "plain", "--", "true"])
        #expect(!notAttachable.succeeded && notAttachable.output.contains("not attachable"))
        #expect(!(try lab.must("h1", ["ps"])).contains(" x "))
        // A duplicate name and a duplicate --ip are refused and change nothing.
        _ = try lab.must("h1", ["network", "create", "-d", "overlay", "--attachable", "--subnet", "10.31.0.0/24", "att"])
        _ = try lab.must("h1", ["run", "-d", "--name", "a", "--network", "att", "--ip", "10.31.0.9", "--", "sleep", "infinity"])
        let dupName = try lab.on("h1", ["run", "-d", "--name", "a", "--network", "att", "--", "sleep", "infinity"])
        #expect(!dupName.succeeded && dupName.output.contains("already in use"))
        let dupIP = try lab.on("h1", ["run", "-d", "--name", "b", "--network", "att", "--ip", "10.31.0.9", "--", "sleep", "infinity"])
        #expect(!dupIP.succeeded && dupIP.output.contains("10.31.0.9"))
        let ps = try lab.must("h1", ["ps"])
        #expect(ps.contains("a ") && !ps.contains(" b "))
        // Every network option shows in inspect under Docker's names.
        _ = try lab.must("h1", ["network", "create", "-d", "overlay", "--attachable", "--subnet", "10.32.0.0/24",
                                "--gateway", "10.32.0.254", "--ip-range", "10.32.0.128/25", "--aux-address", "router=10.32.0.200",
                                "--opt", "com.docker.network.driver.mtu=1400",
                                "--opt", "com.docker.network.driver.overlay.vxlanid_list=5000", "--label", "team=blue", "full"])
        let full = try lab.must("h1", ["network", "inspect", "full"])
        for piece in ["\"Gateway\" : \"10.32.0.254\"", "\"IPRange\" : \"10.32.0.128/25\"", "\"router\" : \"10.32.0.200\"",
                      "\"com.docker.network.driver.mtu\" : \"1400\"", "\"com.docker.network.driver.overlay.vxlanid_list\" : \"5000\"",
                      "\"team\" : \"blue\"", "\"Attachable\" : true"] {
            #expect(full.contains(piece), "\(piece) not in \(full)")
        }
        let sameVNI = try lab.on("h1", ["network", "create", "-d", "overlay", "--opt", "com.docker.network.driver.overlay.vxlanid_list=5000", "again"])
        #expect(!sameVNI.succeeded && sameVNI.output.contains("VNI 5000 is already in use by network full"))
        // Addresses come from the --ip-range; the container's MTU is the network's.
        _ = try lab.must("h1", ["run", "-d", "--name", "f", "--network", "full", "--", "sleep", "infinity"])
        let fip = try lab.ip("h1", "f", network: "full")
        #expect(fip.hasPrefix("10.32.0.") && Int(fip.split(separator: ".")[3])! >= 128, "\(fip)")
        #expect(try lab.must("h1", ["exec", "f", "--", "ip", "-o", "link", "show", "eth0"]).contains(" mtu 1400 "))
        // Another runtime's container: attach its namespace by path, and one by PID.
        #expect(try Command.run(["ip", "netns", "add", "ovlt-db-other"]).succeeded)
        defer { _ = try? Command.run(["ip", "netns", "del", "ovlt-db-other"]) }
        _ = try lab.must("h1", ["network", "connect", "--netns", "/run/netns/ovlt-db-other", "att", "other"])
        #expect(try Command.run(["ip", "netns", "exec", "ovlt-db-other", "ping", "-c", "1", "-W", "2", "10.31.0.9"]).succeeded)
        let missing = try lab.on("h1", ["network", "connect", "--pid", "999999", "att", "ghost"])
        #expect(!missing.succeeded && missing.output.contains("not a network namespace"))
        let sleeper = try Child.spawn(["unshare", "-n", "sleep", "60"], log: "/dev/null")
        defer { kill(sleeper.pid, SIGKILL); var st: Int32 = 0; waitpid(sleeper.pid, &st, 0) }
        usleep(300_000)
        _ = try lab.must("h1", ["network", "connect", "--pid", "\(sleeper.pid)", "full", "bypid"])
        #expect(try Command.run(["nsenter", "--net=/proc/\(sleeper.pid)/ns/net", "ping", "-c", "1", "-W", "2", fip]).succeeded)
        _ = try lab.must("h1", ["rm", "bypid"])
        _ = try lab.must("h1", ["rm", "other"])
        // Rotating the worker token: the old one stops working.
        let oldToken = try lab.must("h1", ["swarm", "join-token", "-q", "worker"])
        let newToken = try lab.must("h1", ["swarm", "join-token", "--rotate", "-q", "worker"])
        #expect(oldToken != newToken && oldToken.prefix(60) == newToken.prefix(60))
        // Malformed JSON straight to the API socket: a 400 with a message, and the daemon lives on.
        let sock = "/run/ovlt-db/h1/overlayd.sock"
        let raw = try Command.run(["curl", "-s", "-o", "-", "-w", " %{http_code}", "--unix-socket", sock, "-X", "POST",
                                   "-H", "Content-Type: application/json", "-d", "{\"name\": 5", "http://x/v1/networks"])
        #expect(raw.output.hasSuffix(" 400"), "\(raw.output)")
        #expect(raw.output.contains("malformed JSON"))
        #expect((try lab.on("h1", ["info"])).succeeded)
    }
}
