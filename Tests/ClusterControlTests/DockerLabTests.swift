import Foundation
import Glibc
import Testing
import OverlayTestKit

/// Real dockerd 20.10 (with its containerd and runc) on three lab hosts, its containers on our
/// overlay networks through overlayd's network and IPAM plugin (`-d swift-overlay --ipam-driver
/// swift-overlay`): across hosts by address and by name, with an `overlayctl run` container and
/// a service VIP, `-o encrypted` carrying only ESP, connect/disconnect/rm giving addresses back,
/// dockerd and overlayd restarted under running containers, and Docker's one line for bad input.
@Suite(.serialized) struct DockerLabTests {
    func docker(_ lab: CLILab, _ host: String, _ args: [String], timeout: Double = 60) throws -> CommandResult {
        try lab.sh(host, ["docker"] + args, timeout: timeout)
    }

    @discardableResult
    func mustDocker(_ lab: CLILab, _ host: String, _ args: [String]) throws -> String {
        let r = try docker(lab, host, args)
        guard r.succeeded else { throw LabError("\(host): docker \(args.joined(separator: " ")): \(r.output)") }
        return r.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// `docker exec CONTAINER ping` of `target` (an address or a name), one try a second.
    func pings(_ lab: CLILab, _ host: String, _ container: String, _ target: String, tries: Int = 10) throws -> Bool {
        for _ in 0..<tries where try docker(lab, host, ["exec", container, "ping", "-c", "1", "-W", "1", target]).succeeded { return true }
        return false
    }

    func address(_ lab: CLILab, _ host: String, _ container: String, _ network: String) throws -> String {
        try mustDocker(lab, host, ["inspect", "--format", "{{(index .NetworkSettings.Networks \"\(network)\").IPAddress}}", container])
    }

    /// The names `docker network ls` shows on `host`.
    func dockerNetworks(_ lab: CLILab, _ host: String) throws -> [String] {
        try mustDocker(lab, host, ["network", "ls", "--format", "{{.Name}}"]).split(separator: "\n").map(String.init)
    }

    func clusterNetworks(_ lab: CLILab, _ host: String) throws -> [String] {
        try jsonLines(try lab.must(host, ["network", "ls", "--format", "json"])).compactMap { $0["Name"] as? String ?? $0["name"] as? String }
    }

    /// Waits until `network`'s allocated addresses on the manager are `count`.
    func allocated(_ lab: CLILab, _ network: String, is count: Int) throws -> Bool {
        for _ in 0..<50 {
            if try lab.allocated(network) == count { return true }
            usleep(100_000)
        }
        return false
    }

    @Test func dockerContainersOnOurOverlayAcrossHosts() async throws {
        guard getuid() == 0 else {
            Issue.record("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
            return
        }
        let lab = try CLILab.up("ovlt-dock", hosts: 3, extra: ["--docker", "--metrics"])
        defer { if ProcessInfo.processInfo.environment["KEEP_LAB"] == nil { lab.down() } }
        let plugin = ["-d", "swift-overlay", "--ipam-driver", "swift-overlay"]

        // Not in a swarm yet: one line, and no Docker network is left.
        let early = try docker(lab, "h1", ["network", "create"] + plugin + ["web"])
        #expect(!early.succeeded && early.output.contains("remote: this host is not in a swarm"), "\(early.output)")
        #expect(!(try dockerNetworks(lab, "h1")).contains("web"))

        let token = try lab.initSwarm()
        try lab.join(["h2", "h3"], token: token)

        // A manager makes the cluster network of the name; the other hosts join it by its subnet.
        try mustDocker(lab, "h1", ["network", "create"] + plugin + ["web"])
        // The cluster network is made once dockerd can say the name: right after create returns.
        let made = try lab.retrying("h1", ["network", "inspect", "web"], tries: 50, every: 100_000)
        let inspect = try JSONSerialization.jsonObject(with: Data(made.output.utf8))
        let web = try #require(((inspect as? [[String: Any]])?.first?["IPAM"] as? [String: Any])?["Config"] as? [[String: Any]])
        let subnet = try #require(web.first?["Subnet"] as? String)
        let onWorker = try docker(lab, "h2", ["network", "create"] + plugin + ["web"])
        #expect(!onWorker.succeeded && onWorker.output.contains("on a worker, give --subnet"), "\(onWorker.output)")
        for h in ["h2", "h3"] {
            _ = try lab.retrying(h, ["network", "inspect", "web"], tries: 50, every: 100_000)
            try mustDocker(lab, h, ["network", "create"] + plugin + ["--subnet", subnet, "web"])
        }
        #expect(try clusterNetworks(lab, "h1").filter { $0 == "web" }.count == 1)

        let before = try lab.allocated("web")
        try mustDocker(lab, "h1", ["run", "-d", "--name", "c1", "--network", "web", "busybox:lab", "sleep", "100000"])
        try mustDocker(lab, "h2", ["run", "-d", "--name", "c2", "--network", "web", "--network-alias", "api", "busybox:lab",
                                   "sh", "-c", "echo hello-from-c2 > /tmp/index.html; exec httpd -f -p 80 -h /tmp"])
        _ = try lab.must("h3", ["run", "-d", "--name", "o3", "--network", "web", "--", "sleep", "infinity"])
        let ip1 = try address(lab, "h1", "c1", "web"), ip2 = try address(lab, "h2", "c2", "web")
        let o3 = try lab.ip("h3", "o3", network: "web")
        #expect(ip1.hasPrefix(subnet.split(separator: ".").prefix(3).joined(separator: ".")) && ip1 != ip2, "c1 \(ip1), c2 \(ip2) in \(subnet)")
        #expect(try allocated(lab, "web", is: before + 3), "3 addresses expected on web")

        // By address and by name, both ways, and with the overlayctl container.
        #expect(try pings(lab, "h1", "c1", ip2), "c1 cannot ping c2 at \(ip2)")
        #expect(try pings(lab, "h2", "c2", "c1"), "c2 cannot ping c1 by name")
        #expect(try pings(lab, "h1", "c1", "c2"), "c1 cannot ping c2 by name")
        #expect(try pings(lab, "h1", "c1", "api"), "c1 cannot ping c2 by its alias")
        #expect(try pings(lab, "h1", "c1", "o3"), "c1 cannot ping o3 by name")
        #expect(try pings(lab, "h2", "c2", o3), "c2 cannot ping o3 at \(o3)")
        #expect(try lab.on("h3", ["exec", "o3", "--", "ping", "-c", "1", "-W", "2", "c1"]).succeeded, "o3 cannot ping c1 by name")
        // overlayd lists the host's Docker containers on the network, as Docker's inspect would.
        let listed = try lab.must("h2", ["network", "inspect", "web"])
        #expect(listed.contains("\"Name\" : \"c2\"") && listed.contains(ip2 + "/"), "h2's network inspect web: \(listed.prefix(600))")
        let page = try docker(lab, "h1", ["exec", "c1", "sh", "-c", "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 3 api 80"])
        #expect(page.output.contains("hello-from-c2"), "c1 fetched \(page.output)")

        // A service's VIP answers a Docker container.
        _ = try lab.must("h1", ["service", "create", "--name", "echo", "--network", "web", "--replicas", "2", "--",
                                "/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/etc"])
        var viaVIP = ""
        for _ in 0..<50 where !viaVIP.contains("200 OK") {
            viaVIP = try docker(lab, "h2", ["exec", "c2", "sh", "-c", "printf 'GET /hostname HTTP/1.0\\r\\n\\r\\n' | nc -w 2 echo 80"]).output
            if !viaVIP.contains("200 OK") { usleep(200_000) }
        }
        #expect(viaVIP.contains("200 OK"), "the service VIP answered c2 '\(viaVIP.suffix(200))'")

        // -o encrypted: only ESP (in UDP 4500, the swarm's default) on the underlay.
        try mustDocker(lab, "h1", ["network", "create"] + plugin + ["-o", "encrypted", "sec"])
        let secMade = try lab.retrying("h1", ["network", "inspect", "sec"], tries: 50, every: 100_000)
        let secInspect = try JSONSerialization.jsonObject(with: Data(secMade.output.utf8)) as? [[String: Any]]
        let secSubnet = try #require(((secInspect?.first?["IPAM"] as? [String: Any])?["Config"] as? [[String: Any]])?.first?["Subnet"] as? String)
        _ = try lab.retrying("h2", ["network", "inspect", "sec"], tries: 50, every: 100_000)
        let plain = try docker(lab, "h2", ["network", "create"] + plugin + ["--subnet", secSubnet, "sec"])
        let plainRun = plain.succeeded ? try docker(lab, "h2", ["run", "--rm", "--network", "sec", "busybox:lab", "true"]) : nil
        #expect(plainRun?.succeeded != true, "a plain Docker network was bound to encrypted sec: \(plainRun?.output ?? "")")
        #expect(plainRun == nil || plainRun!.output.contains("is encrypted"), "\(plainRun?.output ?? "")")
        if plain.succeeded { try mustDocker(lab, "h2", ["network", "rm", "sec"]) }
        try mustDocker(lab, "h2", ["network", "create"] + plugin + ["-o", "encrypted", "--subnet", secSubnet, "sec"])
        try mustDocker(lab, "h1", ["run", "-d", "--name", "s1", "--network", "sec", "busybox:lab", "sleep", "100000"])
        try mustDocker(lab, "h2", ["run", "-d", "--name", "s2", "--network", "sec", "busybox:lab", "sleep", "100000"])
        #expect(try pings(lab, "h1", "s1", "s2"), "s1 cannot ping s2 on the encrypted network")
        let capture = "/run/\(lab.name)/h2-underlay.pcap"
        let dump = try Child.capture(["ip", "netns", "exec", "\(lab.name)-h2", "tcpdump", "-i", "eth0", "-n", "-U", "-w", capture,
                                      "esp or udp port 4789 or udp port 4500"], log: "/run/\(lab.name)/tcpdump.log")
        let s2 = try address(lab, "h2", "s2", "sec")
        _ = try docker(lab, "h1", ["exec", "s1", "ping", "-c", "5", "-i", "0.2", "-W", "1", s2])
        dump.finishCapture()
        let esp = try Command.run(["tcpdump", "-n", "-r", capture, "udp port 4500"], timeout: 20).output
        // sec's VNI in plain VXLAN would be its traffic in the clear.
        let options = try #require(secInspect?.first?["Options"] as? [String: String])
        let vni = try #require(options["com.docker.network.driver.overlay.vxlanid_list"].flatMap { UInt32($0) })
        let vxlan = try Command.run(["tcpdump", "-n", "-r", capture, "udp port 4789 and udp[12:4] = \(vni << 8)"], timeout: 20).output
        #expect(esp.contains(" IP "), "no ESP in UDP on the underlay: \(esp.suffix(300))")
        #expect(!vxlan.contains(" IP "), "sec's VXLAN (VNI \(vni)) in the clear on the underlay: \(vxlan.suffix(300))")

        // connect and disconnect: another network's address comes and goes back.
        try mustDocker(lab, "h1", ["network", "create"] + plugin + ["db"])
        _ = try lab.retrying("h1", ["network", "inspect", "db"], tries: 50, every: 100_000)
        let dbBefore = try lab.allocated("db")
        try mustDocker(lab, "h1", ["network", "connect", "db", "c1"])
        let onDB = try address(lab, "h1", "c1", "db")
        #expect(try allocated(lab, "db", is: dbBefore + 1), "network connect took no address on db")
        #expect(try mustDocker(lab, "h1", ["exec", "c1", "ip", "-o", "-4", "addr"]).contains(onDB + "/"))
        try mustDocker(lab, "h1", ["network", "disconnect", "db", "c1"])
        #expect(try allocated(lab, "db", is: dbBefore), "network disconnect did not give the db address back")
        #expect(!(try mustDocker(lab, "h1", ["exec", "c1", "ip", "-o", "-4", "addr"])).contains(onDB + "/"))

        // Restarts: dockerd (live restore), then overlayd, under the running containers.
        let restarted = try lab.ctl(["lab", "restart", "--name", lab.name, "h2", "--dockerd"], timeout: 60)
        #expect(restarted.succeeded, "\(restarted.output)")
        #expect(try pings(lab, "h1", "c1", "c2"), "c1 cannot ping c2 after h2's dockerd restarted")
        #expect(try pings(lab, "h2", "c2", "c1"), "c2 cannot ping c1 after h2's dockerd restarted")
        let again = try lab.ctl(["lab", "restart", "--name", lab.name, "h2"], timeout: 60)
        #expect(again.succeeded, "\(again.output)")
        #expect(try pings(lab, "h1", "c1", "c2"), "c1 cannot ping c2 after h2's overlayd restarted")
        #expect(try pings(lab, "h2", "c2", "c1"), "c2 cannot ping c1 after h2's overlayd restarted")
        #expect(try pings(lab, "h1", "c1", "api"), "c2's alias is gone after h2's overlayd restarted")
        // A container made after both restarts works too.
        try mustDocker(lab, "h2", ["run", "-d", "--name", "c4", "--network", "web", "busybox:lab", "sleep", "100000"])
        #expect(try pings(lab, "h1", "c1", "c4"), "c1 cannot ping c4 (made after the restarts)")

        // docker rm gives the addresses back.
        let held = try lab.allocated("web")
        try mustDocker(lab, "h2", ["rm", "-f", "c2", "c4"])
        #expect(try allocated(lab, "web", is: held - 2), "docker rm did not give c2's and c4's addresses back")

        // A container gone as soon as it ran (--rm) leaves no record and holds no address.
        let beforeShort = try lab.allocated("web")
        try mustDocker(lab, "h1", ["run", "--rm", "--network", "web", "busybox:lab", "true"])
        #expect(try allocated(lab, "web", is: beforeShort), "docker run --rm kept an address")
        usleep(500_000)
        let h1web = try JSONSerialization.jsonObject(with: Data(try lab.must("h1", ["network", "inspect", "web"]).utf8)) as? [[String: Any]]
        let names = ((h1web?.first?["Containers"] as? [String: [String: Any]]) ?? [:]).values.compactMap { $0["Name"] as? String }
            .filter { !$0.hasPrefix("echo.") }   // the service's tasks
        #expect(names == ["c1"], "h1 lists \(names) on web")

        // An internal cluster network is not joined by a Docker network that is not.
        _ = try lab.must("h1", ["network", "create", "--attachable", "--internal", "--subnet", "10.77.0.0/24", "quiet"])
        _ = try lab.retrying("h3", ["network", "inspect", "quiet"], tries: 50, every: 100_000)
        try mustDocker(lab, "h3", ["network", "create"] + plugin + ["--subnet", "10.77.0.0/24", "quiet"])
        let leaky = try docker(lab, "h3", ["run", "--rm", "--network", "quiet", "busybox:lab", "true"])
        #expect(!leaky.succeeded && leaky.output.contains("is internal"), "\(leaky.output)")

        // Leaving the swarm under a Docker container is refused without --force.
        let leave = try lab.on("h2", ["swarm", "leave"])
        #expect(!leave.succeeded && leave.output.contains("Docker containers still use swift-overlay networks here (s2)"), "\(leave.output)")

        // Bad input: one line from Docker, nothing half-made.
        let unknown = try docker(lab, "h1", ["network", "create"] + plugin + ["-o", "mtu=9000", "bad1"])
        #expect(!unknown.succeeded && unknown.output.contains("remote: unknown driver option 'mtu'"), "\(unknown.output)")
        let overlap = try docker(lab, "h1", ["network", "create"] + plugin + ["--subnet", subnet.split(separator: ".").prefix(2).joined(separator: ".") + ".0.0/16", "bad2"])
        #expect(!overlap.succeeded && overlap.output.contains("overlaps cluster network"), "\(overlap.output)")
        let noIPAM = try docker(lab, "h1", ["network", "create", "-d", "swift-overlay", "bad3"])
        #expect(!noIPAM.succeeded && noIPAM.output.contains("need --ipam-driver swift-overlay"), "\(noIPAM.output)")
        for n in ["bad1", "bad2", "bad3"] {
            #expect(!(try dockerNetworks(lab, "h1")).contains(n), "Docker kept \(n)")
            #expect(!(try clusterNetworks(lab, "h1")).contains(n), "the cluster has \(n)")
        }
        let malformed = try lab.sh("h1", ["curl", "-s", "--unix-socket", "/run/docker/plugins/swift-overlay.sock", "-X", "POST",
                                          "-d", "{\"NetworkID\":", "http://plugin/NetworkDriver.CreateNetwork"])
        #expect(malformed.output.contains("not the JSON Docker sends"), "\(malformed.output)")

        // The plugin socket's limits, crossed: a 1 GiB body is refused after a few megabytes,
        // connections past 256 are closed at accept, a client that stops mid-request is cut off
        // after 10 s; dockerd's calls are answered throughout.
        let script = "/run/\(lab.name)/plugin-limits.py"
        try Self.pluginLimits.write(toFile: script, atomically: true, encoding: .utf8)
        let limits = try lab.sh("h1", ["python3", script, "/run/docker/plugins/swift-overlay.sock"], timeout: 60)
        #expect(limits.succeeded, "\(limits.output)")
        let report = limits.output.split(separator: "\n").last.map(String.init) ?? ""
        let numbers = Dictionary(uniqueKeysWithValues: report.split(separator: " ").compactMap { pair -> (String, Int)? in
            let kv = pair.split(separator: "=")
            return kv.count == 2 ? (String(kv[0]), Int(kv[1]) ?? -1) : nil
        })
        print("the plugin socket's limits: \(report)")
        #expect(numbers["big_status"] == 413 && (numbers["big_sent_mib"] ?? 1024) < 64, "\(report)")
        #expect((numbers["closed_at_accept"] ?? 0) >= 300 - 256 && (numbers["closed_at_accept"] ?? 0) <= 300 - 250, "\(report)")
        #expect(numbers["slow_cut_after_s"].map { (9...14).contains($0) } == true, "\(report)")
        #expect(numbers["activate_status"] == 200, "\(report)")
        #expect(try pings(lab, "h1", "c1", o3), "c1 cannot ping o3 after the bad input")
    }

    /// Crosses the plugin socket's limits (argument: the socket) and prints `key=value` pairs.
    static let pluginLimits = """
        import socket, sys, time
        path = sys.argv[1]
        def conn():
            for _ in range(500):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(10)
                try:
                    s.connect(path)
                    return s
                except BlockingIOError:
                    # The listen queue is full for a moment: the server accepts (and closes) at its pace.
                    s.close()
                    time.sleep(0.01)
            raise OSError("the plugin socket's listen queue stayed full")
        def status(s):
            try:
                head = s.recv(4096).decode("latin-1")
                return int(head.split(" ")[1]) if head.startswith("HTTP/1.1 ") else -1
            except OSError:
                return -2
        slow = conn()
        slow.send(b"POST /Plugin.Activate HTTP/1.1\\r\\nHost: plugin\\r\\n")
        slow_start = time.time()
        big = conn()
        big.send(b"POST /NetworkDriver.CreateNetwork HTTP/1.1\\r\\nHost: plugin\\r\\nContent-Length: 1073741824\\r\\n\\r\\n")
        sent, chunk = 0, b"\\0" * 65536
        while sent < (1 << 30):
            try:
                sent += big.send(chunk)
            except OSError:
                break
        big_status = status(big)
        held = [conn() for _ in range(300)]
        time.sleep(1)
        for s in held:
            s.setblocking(False)
        closed = 0
        for s in held:
            try:
                if s.recv(1) == b"":
                    closed += 1
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
        for s in held:
            s.close()
        slow.settimeout(30)
        try:
            slow.recv(1)
        except OSError:
            pass
        slow_cut = time.time() - slow_start
        a = conn()
        a.send(b"POST /Plugin.Activate HTTP/1.1\\r\\nHost: plugin\\r\\nContent-Length: 0\\r\\n\\r\\n")
        print(f"big_status={big_status} big_sent_mib={sent >> 20} closed_at_accept={closed} slow_cut_after_s={int(slow_cut)} activate_status={status(a)}")
        """
}
