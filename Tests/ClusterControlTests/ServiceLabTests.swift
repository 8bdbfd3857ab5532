import Foundation
import Glibc
import Testing
import OverlayTestKit

/// Services through the real binaries on three lab hosts: VIPs, DNS names, the routing mesh
/// (TCP, UDP, SCTP), host-mode ports, the client's source address, scaling with a drain, and a
/// host that dies.
@Suite(.serialized) struct ServiceLabTests {
    /// A task's program: answers HTTP on 80 and UDP on 81 with "<container name> <client address>".
    static let server = """
        import http.server, os, socket, threading
        name = os.environ.get("OVERLAY_CONTAINER_NAME", "?")
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                b = (name + " " + self.client_address[0] + "\\n").encode()
                self.send_response(200); self.send_header("Content-Length", str(len(b))); self.end_headers(); self.wfile.write(b)
            def log_message(self, *a): pass
        def udp():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("", 81))
            while True:
                d, a = s.recvfrom(2048); s.sendto((name + " " + a[0] + "\\n").encode(), a)
        threading.Thread(target=udp, daemon=True).start()
        http.server.ThreadingHTTPServer(("", 80), H).serve_forever()
        """

    /// Sends one UDP datagram and prints the answer (or nothing after 2 s).
    static let udpClient = """
        import socket, sys
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
        s.sendto(b"x", (sys.argv[1], int(sys.argv[2])))
        try: print(s.recv(200).decode().strip())
        except Exception: pass
        """

    /// Sends SCTP INIT chunks by hand (this kernel has no SCTP sockets, but conntrack and NAT know
    /// SCTP): a raw IP protocol 132 packet with the CRC32c checksum.
    static let sctpInit = """
        import socket, struct, sys
        def crc32c(data):
            crc = 0xffffffff
            for b in data:
                crc ^= b
                for _ in range(8):
                    crc = (crc >> 1) ^ (0x82f63b78 if crc & 1 else 0)
            return crc ^ 0xffffffff
        dst, port = sys.argv[1], int(sys.argv[2])
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 132)
        for i in range(int(sys.argv[3])):
            init = struct.pack("!BBHIIHHI", 1, 0, 20, 0x1234 + i, 65535, 1, 1, 1)
            hdr = struct.pack("!HHII", 40000 + i, port, 0, 0)
            c = crc32c(hdr + init)
            s.sendto(hdr[:8] + struct.pack("<I", c) + init, (dst, 0))
        """

    func within(_ timeout: Double, _ check: () throws -> Bool) rethrows -> Double? {
        let start = Date()
        while Date().timeIntervalSince(start) < timeout {
            if try check() { return Date().timeIntervalSince(start) }
            usleep(100_000)
        }
        return nil
    }

    /// `curl` from a lab host (or a container when `container` is set); the body, trimmed.
    func curl(_ lab: CLILab, _ host: String, _ url: String, container: String? = nil) throws -> String {
        let argv = ["curl", "-s", "-m", "3", url]
        let r: CommandResult?
        if let container { r = try? lab.on(host, ["exec", container, "--"] + argv) } else { r = try? lab.sh(host, argv) }
        return (r?.output ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The tasks as `service ps` shows them: name, node, current state, addresses.
    func tasks(_ lab: CLILab, _ service: String) throws -> [[String: Any]] {
        try jsonLines(try lab.must("h1", ["service", "ps", service, "--format", "json"]))
    }

    func running(_ lab: CLILab, _ service: String) throws -> [[String: Any]] {
        try tasks(lab, service).filter { ($0["DesiredState"] as? String) == "Running" && ($0["CurrentState"] as? String) == "running" }
    }

    /// The names of the containers on `host` that belong to `service`.
    func containers(_ lab: CLILab, _ host: String, _ service: String) throws -> [String] {
        let json = try jsonLines(try lab.must(host, ["ps", "--format", "json"]))
        return json.compactMap { $0["Name"] as? String }.filter { $0.hasPrefix(service + ".") }
    }

    func setUp(_ name: String, hosts: Int) throws -> (CLILab, String) {
        let lab = try CLILab.up(name, hosts: hosts)
        _ = try lab.must("h1", ["swarm", "init", "--advertise-addr", "198.18.0.1"])
        let token = try lab.must("h1", ["swarm", "join-token", "-q", "worker"])
        for i in 2...hosts { _ = try lab.must("h\(i)", ["swarm", "join", "--token", token, "198.18.0.1:2377"]) }
        let script = "/run/\(name)/web.py"
        try Self.server.write(toFile: script, atomically: true, encoding: .utf8)
        try Self.udpClient.write(toFile: "/run/\(name)/udp.py", atomically: true, encoding: .utf8)
        try Self.sctpInit.write(toFile: "/run/\(name)/sctp.py", atomically: true, encoding: .utf8)
        return (lab, script)
    }

    @Test func vipMeshProtocolsSourceAddressScalingAndHostDeath() async throws {
        guard getuid() == 0 else {
            Issue.record("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
            return
        }
        let (lab, script) = try setUp("ovlt-sv", hosts: 3)
        defer { lab.down() }
        _ = try lab.must("h1", ["network", "create", "--attachable", "--subnet", "10.60.0.0/24", "front"])
        _ = try lab.must("h1", ["service", "create", "--name", "web", "--network", "front", "--replicas", "2",
                                "-p", "8080:80", "-p", "8081:81/udp", "-p", "published=8082,target=82,protocol=sctp",
                                "--", "python3", script])
        #expect(try within(15) { try running(lab, "web").count == 2 } != nil, "web's 2 tasks did not start: \((try? tasks(lab, "web")) ?? [])")
        let nodes = try running(lab, "web").map { $0["Node"] as! String }.sorted()
        #expect(nodes == ["h1", "h2"], "spread placed web on \(nodes)")

        // The mesh: h3 runs no task and still answers 8080, from both tasks.
        #expect(try within(10) { try curl(lab, "h1", "http://198.18.0.3:8080/").hasPrefix("web.") } != nil, "h3:8080 never answered")
        // Every request is answered, each within 10 s. In CI (2026-12-07) one request in 20 got
        // nothing within 3 s, with the whole suite's labs sharing two cores (iperf3 among them):
        // a lost SYN or SYN-ACK costs a 1 s retransmission, two cost 3 s. A failure says curl's
        // exit status (28 timed out, 7 refused, 56 reset); a slow answer is printed.
        var seen: Set<String> = []
        for _ in 0..<20 {
            let start = Date()
            let r = try lab.sh("h1", ["curl", "-s", "-S", "-m", "10", "http://198.18.0.3:8080/"])
            let took = Date().timeIntervalSince(start)
            let body = r.output.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(body.hasPrefix("web."), "a request through h3's mesh failed after \(took) s (curl exit \(r.status)): '\(body)'")
            if took > 0.9 { print("ServiceLabTests: a request through h3's mesh took \(took) s") }
            if let n = body.split(separator: " ").first { seen.insert(String(n)) }
        }
        #expect(seen.count == 2, "the mesh reached \(seen), not both tasks")
        // From a container the mesh answers on its own host's address too (a hairpin through the
        // gateway bridge, which br_netfilter bridges once DNAT points it at the ingress sandbox),
        // and on another host's.
        _ = try lab.must("h3", ["run", "-d", "--name", "hairpin", "--network", "front", "--", "sleep", "infinity"])
        for target in ["198.18.0.3", "198.18.0.1"] {
            #expect(try within(10) { try curl(lab, "h3", "http://\(target):8080/", container: "hairpin").hasPrefix("web.") } != nil,
                    "a container on h3 never reached the mesh at \(target):8080")
        }
        // UDP through the mesh.
        var udpSeen: Set<String> = []
        for _ in 0..<12 {
            let r = try lab.sh("h1", ["python3", "/run/ovlt-sv/udp.py", "198.18.0.3", "8081"]).output
            if let n = r.split(separator: " ").first, n.hasPrefix("web.") { udpSeen.insert(String(n)) }
        }
        #expect(udpSeen.count == 2, "UDP through the mesh reached \(udpSeen)")
        // SCTP through the mesh: INITs to h3:8082 arrive at a task's port 82.
        var captures: [Child] = []
        var logs: [String] = []
        for h in ["h1", "h2"] {
            for c in try containers(lab, h, "web") {
                let log = "/run/ovlt-sv/sctp-\(c).log"
                logs.append(log)
                captures.append(try Child.capture(
                    [lab.bin + "/overlayctl", "lab", "exec", "--name", "ovlt-sv", h, "--", "overlayctl", "exec", c, "--",
                     "tcpdump", "-l", "-n", "-i", "any", "sctp and dst port 82"], log: log))
            }
        }
        _ = try lab.sh("h1", ["python3", "/run/ovlt-sv/sctp.py", "198.18.0.3", "8082", "6"])
        let sctp = within(5) { logs.contains { ((try? String(contentsOfFile: $0, encoding: .utf8)) ?? "").contains("sctp") } }
        for c in captures { kill(c.pid, SIGKILL); var st: Int32 = 0; waitpid(c.pid, &st, 0) }
        // The tcpdumps inside the containers outlive the `exec` that started them. Lab hosts share
        // the machine's PID namespace, so only these captures are killed, by their filter: a bare
        // `pkill tcpdump` ends the captures of the lab suites running beside this one.
        _ = try? Lab.run(["pkill", "-KILL", "-f", "sctp and dst port 82"], timeout: 5)
        #expect(sctp != nil, "no SCTP INIT reached a task's port 82: \(logs.map { (try? String(contentsOfFile: $0, encoding: .utf8)) ?? "" })")

        // The VIP by name from a container, and DNS: `web` is the VIP, `tasks.web` the tasks.
        _ = try lab.must("h3", ["run", "-d", "--name", "client", "--network", "front", "--", "sleep", "infinity"])
        let inspect = try JSONSerialization.jsonObject(with: Data(try lab.must("h1", ["service", "inspect", "web"]).utf8)) as! [[String: Any]]
        let vip = ((inspect[0]["networks"] as! [[String: Any]]).first { ($0["networkName"] as? String) == "front" }?["vip"] as? String) ?? "?"
        #expect(try within(5) { try lab.must("h3", ["exec", "client", "--", "dig", "+short", "web"]) == vip } != nil)
        let taskIPs = try lab.must("h3", ["exec", "client", "--", "dig", "+short", "tasks.web"]).split(separator: "\n")
        #expect(taskIPs.count == 2 && !taskIPs.contains(Substring(vip)), "tasks.web: \(taskIPs)")
        seen = []
        for _ in 0..<20 {
            let body = try curl(lab, "h3", "http://web/", container: "client")
            #expect(body.hasPrefix("web."), "a request to the VIP failed: '\(body)'")
            if let n = body.split(separator: " ").first { seen.insert(String(n)) }
        }
        #expect(seen.count == 2, "the VIP reached \(seen), not both tasks")

        // dnsrr: the name is the tasks' addresses, no VIP; a mesh port with it is refused.
        let rrPort = try lab.on("h1", ["service", "create", "--name", "rr", "--endpoint-mode", "dnsrr", "-p", "9090:80", "--", "sleep", "1"])
        #expect(!rrPort.succeeded && rrPort.output.contains("port published with ingress mode can't be used with dnsrr mode"))
        _ = try lab.must("h1", ["service", "create", "--name", "rr", "--network", "front", "--endpoint-mode", "dnsrr", "--replicas", "2",
                                "--", "python3", script])
        #expect(try within(15) { try running(lab, "rr").count == 2 } != nil)
        let rrIPs = try running(lab, "rr").compactMap { ($0["Addresses"] as? [String: String])?["front"] }.sorted()
        let rrDNS = try within(5) {
            try lab.must("h3", ["exec", "client", "--", "dig", "+short", "rr"]).split(separator: "\n").map(String.init).sorted() == rrIPs
        }
        #expect(rrDNS != nil, "rr did not resolve to its tasks \(rrIPs)")

        // service logs: every task's output, from the node that runs it, prefixed as Docker does.
        _ = try lab.must("h1", ["service", "create", "--name", "talk", "--replicas", "3", "--",
                                "sh", "-c", "echo hello from $OVERLAY_CONTAINER_NAME; echo second line; exec sleep infinity"])
        #expect(try within(15) { try running(lab, "talk").count == 3 } != nil)
        let talkTasks = try running(lab, "talk")
        #expect(Set(talkTasks.map { $0["Node"] as! String }) == ["h1", "h2", "h3"], "talk is not on every host: \(talkTasks)")
        var talk = ""
        _ = try within(10) {
            talk = try lab.must("h1", ["service", "logs", "talk"])
            return talk.split(separator: "\n").count == 6
        }
        for t in talkTasks {
            let name = t["Name"] as! String, id = String((t["ID"] as! String).prefix(12)), node = t["Node"] as! String
            let lines = talk.split(separator: "\n").filter { $0.hasPrefix("\(name).\(id)@\(node) ") }
            #expect(lines.count == 2 && lines[0].hasSuffix("| hello from \(name).\(id)") && lines[1].hasSuffix("| second line"),
                    "service logs for \(name) on \(node):\n\(talk)")
        }
        let tail = try lab.must("h1", ["service", "logs", "--tail", "1", "--no-task-ids", "talk"]).split(separator: "\n")
        #expect(tail.count == 3 && tail.allSatisfy { $0.hasSuffix("| second line") } && tail.contains { $0.hasPrefix("talk.1@") },
                "service logs --tail 1 --no-task-ids: \(tail)")
        let raw = try lab.must("h1", ["service", "logs", "--raw", "talk"]).split(separator: "\n")
        #expect(raw.filter { $0 == "second line" }.count == 3, "service logs --raw: \(raw)")
        let noSuch = try lab.on("h1", ["service", "logs", "nosuch"])
        #expect(!noSuch.succeeded && noSuch.output.contains("nosuch"), "\(noSuch.output)")
        _ = try lab.must("h1", ["service", "rm", "talk"])

        // A published port already taken is refused.
        let dup = try lab.on("h1", ["service", "create", "--name", "dup", "-p", "8080:80", "--", "sleep", "1"])
        #expect(!dup.succeeded && dup.output.contains("port '8080/tcp' is already in use by service 'web'"), "\(dup.output)")

        // mode=host: only the node with the task answers, straight to it.
        _ = try lab.must("h1", ["service", "create", "--name", "hm", "--network", "front", "-p", "published=8088,target=80,mode=host",
                                "--", "python3", script])
        #expect(try within(15) { try running(lab, "hm").count == 1 } != nil)
        let hmNode = try running(lab, "hm")[0]["Node"] as! String
        let hmIndex = Int(hmNode.dropFirst())!
        #expect(try within(5) { try curl(lab, "h1", "http://198.18.0.\(hmIndex):8088/").hasPrefix("hm.") } != nil)
        let other = hmIndex == 3 ? 1 : 3
        #expect(try curl(lab, "h2", "http://198.18.0.\(other):8088/") == "", "h\(other) answered a host-mode port it has no task for")

        // --source-ip keep: a node with the task hands the client's own address to it.
        _ = try lab.must("h1", ["service", "create", "--name", "keep", "--network", "front", "--source-ip", "keep", "-p", "8090:80",
                                "--", "python3", script])
        #expect(try within(15) { try running(lab, "keep").count == 1 } != nil)
        let keepNode = Int((try running(lab, "keep")[0]["Node"] as! String).dropFirst())!
        let client = keepNode == 1 ? 2 : 1
        var kept = ""
        _ = try within(10) {
            kept = try curl(lab, "h\(client)", "http://198.18.0.\(keepNode):8090/")
            return kept.hasPrefix("keep.")
        }
        #expect(kept.hasSuffix(" 198.18.0.\(client)"), "the task saw '\(kept)', not the client 198.18.0.\(client)")
        let meshOnly = [1, 2, 3].first { $0 != keepNode && $0 != client }!
        #expect(try curl(lab, "h\(client)", "http://198.18.0.\(meshOnly):8090/").hasPrefix("keep."), "a node without the task did not forward")

        // Scale up, then down while requests flow: the leaving task drains, no request fails.
        _ = try lab.must("h1", ["service", "update", "--replicas", "3", "web"])
        #expect(try within(15) { try running(lab, "web").count == 3 } != nil)
        // Every task answers (a process just started may not listen yet: there are no health checks).
        seen = []
        let three = try within(15) {
            let body = try curl(lab, "h1", "http://198.18.0.3:8080/")
            if let n = body.split(separator: " ").first, body.hasPrefix("web.") { seen.insert(String(n)) }
            return seen.count == 3
        }
        #expect(three != nil, "after scaling to 3 the mesh reached only \(seen)")
        _ = try lab.must("h1", ["service", "update", "--replicas", "2", "web"])
        var failed = 0
        for _ in 0..<30 {
            if !(try curl(lab, "h1", "http://198.18.0.3:8080/")).hasPrefix("web.") { failed += 1 }
            usleep(100_000)
        }
        #expect(failed == 0, "\(failed) of 30 requests failed while web went from 3 to 2 tasks")
        #expect(try within(10) { try tasks(lab, "web").count == 2 } != nil)

        // h2 dies: its task moves, and the mesh stops sending to it.
        let h2Task = try containers(lab, "h2", "web")
        #expect(h2Task.count == 1)
        let pid2 = try lab.pid("h2")
        kill(pid2, SIGKILL)
        let killed = Date()
        // service logs while h2's task is still its: the others' output comes, h2 is named, exit 1.
        let partial = try lab.on("h1", ["service", "logs", "web"])
        #expect(!partial.succeeded && partial.output.contains("error: node h2 did not answer within 10 s: the output of its 1 task(s) is missing"),
                "service logs with h2 dead: \(partial.output)")
        let moved = try within(20) {
            let r = try running(lab, "web")
            return r.count == 2 && !r.contains { ($0["Node"] as? String) == "h2" }
        }
        #expect(moved != nil, "web's task on h2 was not moved: \((try? tasks(lab, "web")) ?? [])")
        print("services: the task of a dead host runs elsewhere after \(Date().timeIntervalSince(killed)) s")
        usleep(1_000_000)
        for _ in 0..<20 {
            let body = try curl(lab, "h1", "http://198.18.0.3:8080/")
            #expect(body.hasPrefix("web.") && !h2Task.contains(String(body.split(separator: " ")[0])), "after h2 died: '\(body)'")
        }
        // h2 comes back: the task it no longer owns is removed there.
        let dir = "/run/ovlt-sv/h2"
        _ = try Child.spawn(["/usr/bin/setsid", "ip", "netns", "exec", "ovlt-sv-h2", lab.bin + "/overlayd", "--config-file", dir + "/daemon.json", "--state-dir", dir,
                             "--socket", dir + "/overlayd.sock", "--hostname", "h2", "--advertise-addr", "198.18.0.2",
                             "--fast-gossip"], log: dir + "/overlayd.log")
        #expect(within(15) { (try? containers(lab, "h2", "web"))?.isEmpty == true } != nil, "h2 kept its moved task's container")
    }

    /// The processes of `service`'s tasks running on this machine, by their environment.
    func taskProcesses(_ service: String) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { pid in
            guard let env = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return false }
            return env.split(separator: 0).contains { $0.elementsEqual("OVERLAY_SERVICE_NAME=\(service)".utf8) }
        }
    }

    /// `rm -f` of a service's task containers while the node's reconciler runs: the removal kills
    /// the process and then awaits (DNS, endpoints) before the record goes, and a reconcile in
    /// that window took the task for exited and started it again into the namespace being
    /// removed: a process no container holds, left forever (found by chaos-soak at `lab down`).
    @Test func removingTaskContainersLeavesNoProcessBehind() async throws {
        guard getuid() == 0 else {
            Issue.record("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
            return
        }
        let (lab, _) = try setUp("ovlt-svrm", hosts: 2)
        defer { lab.down() }
        _ = try lab.must("h1", ["network", "create", "--attachable", "--subnet", "10.61.0.0/24", "rmnet"])
        _ = try lab.must("h1", ["service", "create", "--name", "rmme", "--network", "rmnet", "--replicas", "6", "--", "sleep", "infinity"])
        #expect(try within(20) { try running(lab, "rmme").count == 6 } != nil, "rmme's 6 tasks did not start: \((try? tasks(lab, "rmme")) ?? [])")
        for round in 0..<6 {
            // Every task container on both hosts, removed at once from several clients.
            let names = try ["h1", "h2"].flatMap { h in try containers(lab, h, "rmme").map { (h, $0) } }
            await withTaskGroup(of: Void.self) { group in
                for (h, name) in names { group.addTask { _ = try? lab.on(h, ["rm", "-f", name]) } }
            }
            let settled = try within(30) { try running(lab, "rmme").count == 6 && taskProcesses("rmme").count == 6 }
            #expect(settled != nil, "round \(round): \(taskProcesses("rmme").count) task processes for 6 running tasks (\((try? running(lab, "rmme").count) ?? -1) running)")
            if settled == nil { break }
        }
        _ = try lab.must("h1", ["service", "rm", "rmme"])
        #expect(within(20) { taskProcesses("rmme").isEmpty } != nil, "\(taskProcesses("rmme").count) task processes left after service rm")
    }

    @Test func ingressNetworkRulesAndReplacement() async throws {
        guard getuid() == 0 else {
            Issue.record("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
            return
        }
        let (lab, script) = try setUp("ovlt-si", hosts: 2)
        defer { lab.down() }
        _ = try lab.must("h1", ["network", "create", "--attachable", "--subnet", "10.61.0.0/24", "front"])
        _ = try lab.must("h1", ["service", "create", "--name", "pub", "-p", "8080:80", "--", "python3", script])
        _ = try lab.must("h1", ["service", "create", "--name", "plain", "--network", "front", "--", "python3", script])
        // The ingress network can't go while a service publishes through it; the message names it.
        let busy = try lab.on("h1", ["network", "rm", "ingress"])
        #expect(!busy.succeeded && busy.output.contains("pub"), "\(busy.output)")
        _ = try lab.must("h1", ["service", "rm", "pub"])
        // Its task drains for 2 s first; until it is gone the network still has its endpoint.
        #expect(try within(10) { try lab.on("h1", ["network", "rm", "ingress"]).succeeded } != nil, "ingress could not be removed")
        // Without an ingress network: publishing is refused, other services keep working.
        let noIngress = try lab.on("h1", ["service", "create", "--name", "pub2", "-p", "8081:80", "--", "python3", script])
        #expect(!noIngress.succeeded && noIngress.output.contains("no ingress network is present"), "\(noIngress.output)")
        _ = try lab.must("h2", ["run", "-d", "--name", "client", "--network", "front", "--", "sleep", "infinity"])
        #expect(try within(15) { try curl(lab, "h2", "http://plain/", container: "client").hasPrefix("plain.") } != nil,
                "plain's VIP did not answer while no ingress network exists")
        // A replacement over a node's gateway bridge is refused at once.
        let bridge = try lab.sh("h2", ["ip", "-4", "-o", "addr", "show", "ovl_gwbridge"]).output
        let bridgeAddress = bridge.split(separator: " ").first { $0.contains("/") }.map(String.init) ?? "?"
        let cidr = try lab.sh("h2", ["python3", "-c", "import ipaddress; print(ipaddress.ip_interface('\(bridgeAddress)').network)"])
            .output.trimmingCharacters(in: .whitespacesAndNewlines)
        let over = try lab.on("h1", ["network", "create", "-d", "overlay", "--ingress", "--subnet", cidr, "ingress"])
        #expect(!over.succeeded && over.output.contains("overlaps the gateway bridge"), "\(cidr): \(over.output)")
        // The replacement, customised; a second one is refused.
        _ = try lab.must("h1", ["network", "create", "-d", "overlay", "--ingress", "--subnet", "10.99.0.0/24", "--gateway", "10.99.0.254",
                                "--opt", "com.docker.network.driver.mtu=1400", "my-ingress"])
        let second = try lab.on("h1", ["network", "create", "-d", "overlay", "--ingress", "--subnet", "10.98.0.0/24", "other"])
        #expect(!second.succeeded && second.output.contains("an ingress network already exists"))
        // In force on every node at once: a new publishing service answers on both.
        _ = try lab.must("h1", ["service", "create", "--name", "pub2", "-p", "8081:80", "--", "python3", script])
        #expect(try within(15) { try running(lab, "pub2").count == 1 } != nil)
        for h in [1, 2] {
            #expect(try within(10) { try curl(lab, "h1", "http://198.18.0.\(h):8081/").hasPrefix("pub2.") } != nil, "h\(h):8081 never answered")
        }
        let task = try running(lab, "pub2")[0]
        let address = (task["Addresses"] as? [String: String])?["my-ingress"] ?? ""
        #expect(address.hasPrefix("10.99.0."), "pub2's ingress address: \(task)")
        let node = task["Node"] as! String
        let name = try containers(lab, node, "pub2")[0]
        #expect(try lab.must(node, ["exec", name, "--", "ip", "-o", "link"]).contains("mtu 1400"))

        // update: a port added answers on every node, a port removed stops.
        let badProto = try lab.on("h1", ["service", "update", "--publish-rm", "8081/icmp", "pub2"])
        #expect(!badProto.succeeded && badProto.output.contains("unknown protocol 'icmp'"), "\(badProto.output)")
        _ = try lab.must("h1", ["service", "update", "--publish-add", "8083:80", "--publish-rm", "8081", "pub2"])
        #expect(try within(10) { try curl(lab, "h1", "http://198.18.0.2:8083/").hasPrefix("pub2.") } != nil, "the added port never answered")
        #expect(try within(10) { try curl(lab, "h1", "http://198.18.0.2:8081/").isEmpty } != nil, "the removed port still answers")

        // Standalone containers' published ports and services' are checked both ways: a port the
        // mesh publishes can't be taken by `run -p` on any node, and a service can't publish a
        // port a standalone container holds on any node (h2 tells the manager when it runs one).
        let taken = try lab.on("h2", ["run", "-d", "--name", "squatter", "--network", "front", "-p", "8083:80", "--", "sleep", "infinity"])
        #expect(!taken.succeeded && taken.output.contains("already in use by service 'pub2'"), "\(taken.output)")
        _ = try lab.must("h2", ["run", "-d", "--name", "holder", "--network", "front", "-p", "8095:80", "--", "sleep", "infinity"])
        let held = try lab.on("h1", ["service", "create", "--name", "wants8095", "-p", "8095:80", "--", "sleep", "infinity"])
        #expect(!held.succeeded && held.output.contains("already in use by container 'holder' on node h2"), "\(held.output)")
        _ = try lab.must("h2", ["rm", "-f", "holder"])
        _ = try lab.must("h1", ["service", "create", "--name", "wants8095", "-p", "8095:80", "--", "sleep", "infinity"])
        _ = try lab.must("h1", ["service", "rm", "wants8095"])

        // Global mode: one task on every node.
        _ = try lab.must("h1", ["service", "create", "--name", "everywhere", "--mode", "global", "--network", "front", "--", "sleep", "infinity"])
        let global = try within(15) { try Set(running(lab, "everywhere").map { $0["Node"] as! String }) == ["h1", "h2"] }
        #expect(global != nil, "global service: \((try? tasks(lab, "everywhere")) ?? [])")

        // A task whose process ends is started again.
        _ = try lab.must("h1", ["service", "create", "--name", "flaky", "--", "sh", "-c", "echo started >> /run/ovlt-si/flaky.log; sleep 0.5"])
        let restarted = within(15) {
            ((try? String(contentsOfFile: "/run/ovlt-si/flaky.log", encoding: .utf8)) ?? "").split(separator: "\n").count >= 2
        }
        #expect(restarted != nil, "flaky's process was not started again after it ended")

        // Bad input: one clear line each, nothing made.
        let bad: [([String], String, String)] = [
            (["service", "create", "--name", "x", "--replicas=-1", "--", "sleep", "1"], "h1", "out of range"),
            (["service", "create", "--name", "x", "--replicas", "5000", "--", "sleep", "1"], "h1", "out of range"),
            (["service", "create", "--name", "x", "--mode", "sometimes", "--", "sleep", "1"], "h1", "invalid --mode"),
            (["service", "create", "--name", "x", "--mode", "global", "--replicas", "2", "--", "sleep", "1"], "h1", "replicated mode"),
            (["service", "create", "--name", "x", "--network", "nowhere", "--", "sleep", "1"], "h1", "network nowhere not found"),
            (["service", "create", "--name", "x", "--network", "my-ingress", "--", "sleep", "1"], "h1", "ingress network"),
            (["service", "create", "--name", "x", "-p", "99999:80", "--", "sleep", "1"], "h1", "invalid -p"),
            (["service", "create", "--name", "x", "--source-ip", "mine", "-p", "8090:80", "--", "sleep", "1"], "h1", "invalid --source-ip"),
            (["service", "create", "--name", "x"], "h1", "needs a command"),
            (["service", "create", "--name", "bad name", "--", "sleep", "1"], "h1", "invalid service name"),
            (["service", "create", "--name", "pub2", "--", "sleep", "1"], "h1", "already exists"),
            (["service", "create", "--name", "x", "--", "sleep", "1"], "h2", "not a swarm manager"),
            (["service", "update", "--replicas", "2", "nothing"], "h1", "service nothing not found"),
            (["service", "update", "--replicas", "2", "everywhere"], "h1", "replicated mode"),
            (["service", "rm", "nothing"], "h1", "service nothing not found"),
            (["network", "rm", "front"], "h1", "in use by service"),
        ]
        for (args, host, message) in bad {
            let r = try lab.on(host, args)
            #expect(!r.succeeded && r.output.contains(message) && r.output.split(separator: "\n").count == 1,
                    "overlayctl \(args.joined(separator: " ")): \(r.output)")
        }
        #expect(try !lab.must("h1", ["service", "ls"]).contains(" x "))
    }
}
