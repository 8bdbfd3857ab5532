import Foundation
import Glibc
import Testing
import OverlayTestKit

/// Attacks on the control plane through the real binaries and the real manager listener (2377),
/// each made with what an attacker would hold: a worker's certificate and key, a join token.
/// Every attack must fail with a clear refusal and leave the cluster as it was.
@Suite(.serialized) struct SecurityLabTests {
    /// The lab's state directory of `host`.
    static func stateDir(_ lab: CLILab, _ host: String) -> String { "/run/\(lab.name)/\(host)" }

    /// `curl` on the manager port from `host` with that host's node certificate. Returns the HTTP
    /// status and the body.
    static func asNode(_ lab: CLILab, _ host: String, certsOf owner: String? = nil, _ method: String, _ path: String,
                       body: String? = nil) throws -> (status: Int, body: String) {
        let certs = stateDir(lab, owner ?? host) + "/certs"
        var args = ["curl", "-s", "-k", "-m", "10", "-w", "\n%{http_code}", "--cert", certs + "/node.crt", "--key", certs + "/node.key",
                    "-X", method, "https://198.18.0.1:2377" + path]
        if let body { args += ["-H", "Content-Type: application/json", "--data-binary", body] }
        let r = try lab.sh(host, args)
        let lines = r.output.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n", omittingEmptySubsequences: false)
        return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
    }

    /// hostname -> node ID, from `node ls` on the manager.
    static func nodeIDs(_ lab: CLILab) throws -> [String: String] {
        let json = try jsonLines(try lab.must("h1", ["node", "ls", "--format", "json"]))
        return Dictionary(json.map { ($0["hostname"] as! String, $0["id"] as! String) }, uniquingKeysWith: { a, _ in a })
    }

    /// The gossip keys and the IPsec key tags in a `/v1/state` answer, and each ring's primary.
    static func keys(_ body: String) throws -> (gossip: [String], gossipPrimary: String, ipsec: [Int], ipsecPrimary: Int) {
        let json = try JSONSerialization.jsonObject(with: Data(body.utf8)) as! [String: Any]
        let gossip = json["gossipKeys"] as! [String]
        let ring = ((json["ipsecKeys"] as! [String: Any])["keys"] as! [[String: Any]]).map { $0["tag"] as! Int }.sorted()
        return (gossip, gossip[gossip.count / 2], ring, ring[1])
    }

    @Test func aWorkerCertificateActsOnlyForItsNodeAndARemovedNodeIsLockedOut() async throws {
        guard getuid() == 0 else {
            Issue.record("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
            return
        }
        let lab = try CLILab.up("ovlt-sec", hosts: 3)
        defer { lab.down() }
        let token = try lab.initSwarm()

        // Secrets on disk: after init (join tokens, gossip keys, the CA's key in the store and
        // files), nothing under the state directory is open to group or others. The API socket
        // is the one exception by design (0660, like docker.sock), inside the 0700 directory.
        let dir = Self.stateDir(lab, "h1")
        var st = stat()
        #expect(stat(dir, &st) == 0 && st.st_mode & 0o777 == 0o700, "state directory mode \(String(st.st_mode & 0o777, radix: 8))")
        var open: [String] = []
        let walker = FileManager.default.enumerator(atPath: dir)!
        var files = 0
        while let rel = walker.nextObject() as? String {
            let path = dir + "/" + rel
            guard lstat(path, &st) == 0, st.st_mode & S_IFMT != S_IFSOCK else { continue }
            files += 1
            if st.st_mode & 0o077 != 0 { open.append("\(rel) \(String(st.st_mode & 0o777, radix: 8))") }
        }
        #expect(files >= 8, "expected the store, its WAL, the CA and node files; found \(files)")
        #expect(FileManager.default.fileExists(atPath: dir + "/overlayd.db-wal"))
        #expect(open.isEmpty, "open to group or others: \(open)")

        try lab.join(["h2", "h3"], token: token)
        var ids = try Self.nodeIDs(lab)
        let (managerID, h2, h3) = (ids["h1"]!, ids["h2"]!, ids["h3"]!)

        // Node identity is the manager's to give: a join that names the manager's ID gets a new one,
        // and the manager's record is untouched.
        let keyPath = "/run/\(lab.name)/evil.key", csrPath = "/run/\(lab.name)/evil.csr"
        let made = try Command.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                                    "-keyout", keyPath, "-subj", "/CN=evil", "-out", csrPath])
        #expect(made.succeeded, "\(made.output)")
        let csr = try String(contentsOfFile: csrPath, encoding: .utf8)
        let join: [String: Any] = ["token": token, "hostname": "evil", "advertiseAddr": "198.18.0.3", "dataPathAddr": "198.18.0.3",
                                   "gossipPort": 7946, "csr": csr, "nodeID": managerID]
        let joinBody = String(decoding: try JSONSerialization.data(withJSONObject: join), as: UTF8.self)
        let joined = try lab.sh("h3", ["curl", "-s", "-k", "-m", "10", "-X", "POST", "https://198.18.0.1:2377/v1/join",
                                       "-H", "Content-Type: application/json", "--data-binary", joinBody])
        let reply = try JSONSerialization.jsonObject(with: Data(joined.output.utf8)) as? [String: Any]
        let evilID = reply?["nodeID"] as? String
        #expect(evilID != nil && evilID != managerID && evilID != h2 && evilID != h3, "\(joined.output.prefix(300))")
        ids = try Self.nodeIDs(lab)
        #expect(ids["h1"] == managerID && ids["evil"] == evilID)
        let nodeList = try jsonLines(try lab.must("h1", ["node", "ls", "--format", "json"]))
        #expect(nodeList.first { $0["id"] as? String == managerID }?["role"] as? String == "manager")
        // `node rm` is the manager's, for a node that exists and is not the manager itself.
        let onWorker = try lab.on("h2", ["node", "rm", "evil"])
        #expect(!onWorker.succeeded && onWorker.output.contains("not a swarm manager"), "\(onWorker.output)")
        let unknown = try lab.on("h1", ["node", "rm", "nosuchnode"])
        #expect(!unknown.succeeded && unknown.output.contains("node nosuchnode not found"), "\(unknown.output)")
        let itself = try lab.on("h1", ["node", "rm", "--force", "h1"])
        #expect(!itself.succeeded && itself.output.contains("is this manager"), "\(itself.output)")
        // That node never came up: `node rm` takes it without --force.
        #expect(try lab.must("h1", ["node", "rm", "evil"]) == "evil")
        #expect(try Self.nodeIDs(lab)["evil"] == nil)

        // A worker's certificate cannot remove another node.
        let leave = try Self.asNode(lab, "h2", "POST", "/v1/leave?node=\(h3)")
        #expect(leave.status == 403 && leave.body.contains("only leave for itself"), "\(leave)")
        #expect(try Self.nodeIDs(lab)["h3"] == h3)
        // ... nor call what only the manager's local socket may.
        let create = try Self.asNode(lab, "h2", "POST", "/v1/networks", body: #"{"name":"pwn","driver":"overlay"}"#)
        #expect(create.status == 403 && create.body.contains("only the manager's local socket"), "\(create)")
        let rm = try Self.asNode(lab, "h2", "DELETE", "/v1/nodes/\(h3)")
        #expect(rm.status == 403, "\(rm)")
        // ... nor report for another node's tasks.
        let report = try Self.asNode(lab, "h2", "POST", "/v1/report", body: #"{"nodeID":"\#(h3)","taskStates":{}}"#)
        #expect(report.status == 403, "\(report)")
        // ... nor report a gateway bridge that would overlap every network.
        let gateway = try Self.asNode(lab, "h2", "POST", "/v1/report", body: #"{"nodeID":"\#(h2)","gatewaySubnet":"0.0.0.0/0"}"#)
        #expect(gateway.status == 400 && gateway.body.contains("plausible"), "\(gateway)")
        _ = try lab.must("h1", ["network", "create", "-d", "overlay", "--attachable", "--subnet", "10.31.0.0/24", "web"])

        // ... nor give back another node's address.
        _ = try lab.must("h3", ["run", "-d", "--name", "c3", "--network", "web", "--", "sleep", "infinity"])
        let inspect = try JSONSerialization.jsonObject(with: Data(try lab.must("h3", ["inspect", "c3"]).utf8)) as! [[String: Any]]
        let endpoint = ((inspect[0]["NetworkSettings"] as! [String: Any])["Networks"] as! [String: Any])["web"] as! [String: Any]
        let ip3 = endpoint["IPAddress"] as! String, eid3 = endpoint["EndpointID"] as! String
        let release = try Self.asNode(lab, "h2", "POST", "/v1/release",
                                      body: #"{"network":"web","address":"\#(ip3)","endpointID":"\#(eid3)"}"#)
        #expect(release.status == 403 && release.body.contains("belongs to another node"), "\(release)")
        let taken = try lab.on("h2", ["run", "-d", "--name", "c2", "--network", "web", "--ip", ip3, "--", "sleep", "infinity"])
        #expect(!taken.succeeded, "h2 got h3's address \(ip3): \(taken.output)")
        // ... nor report the state of another node's task (it is ignored, and counted as such).
        _ = try lab.must("h1", ["service", "create", "--name", "g", "--mode", "global", "--network", "web", "--", "sleep", "infinity"])
        var h3Task: String?
        for _ in 0..<100 where h3Task == nil {
            let ps = try jsonLines(try lab.must("h1", ["service", "ps", "g", "--format", "json"]))
            h3Task = ps.first { $0["Node"] as? String == "h3" }?["ID"] as? String
            if h3Task == nil { usleep(100_000) }
        }
        let foreignTask = try #require(h3Task)
        let foreign = try Self.asNode(lab, "h2", "POST", "/v1/report", body: #"{"nodeID":"\#(h2)","taskStates":{"\#(foreignTask)":"failed: forged"}}"#)
        #expect(foreign.status == 200 && foreign.body.contains("\"ignored\" : 1") && foreign.body.contains("\"recorded\" : 0"), "\(foreign)")
        _ = try lab.must("h1", ["service", "rm", "g"])

        // Two `run`s with one name at once: one container, one clear refusal, nothing leaked.
        async let first = lab.on("h2", ["run", "-d", "--name", "twin", "--network", "web", "--", "sleep", "infinity"])
        async let second = lab.on("h2", ["run", "-d", "--name", "twin", "--network", "web", "--", "sleep", "infinity"])
        let twins = try await [first, second]
        #expect(twins.filter(\.succeeded).count == 1, "\(twins.map(\.output))")
        #expect(twins.contains { !$0.succeeded && $0.output.contains("already in use") }, "\(twins.map(\.output))")
        let twinIP = try lab.ip("h2", "twin", network: "web")
        _ = try lab.must("h2", ["rm", "-f", "twin"])
        // Its one address is free again (the refused run took none).
        _ = try lab.must("h2", ["run", "-d", "--name", "twin", "--network", "web", "--ip", twinIP, "--", "sleep", "infinity"])
        _ = try lab.must("h2", ["rm", "-f", "twin"])

        // Removal: refused while the node is up unless forced; then its certificate is refused
        // everywhere, its address comes back, and the keys move on without it.
        let before = try Self.asNode(lab, "h3", "GET", "/v1/state")
        #expect(before.status == 200)
        let old = try Self.keys(before.body)
        let up = try lab.on("h1", ["node", "rm", "h3"])
        #expect(!up.succeeded && up.output.contains("is not down"), "\(up.output)")
        #expect(try lab.must("h1", ["node", "rm", "--force", "h3"]) == "h3")
        #expect(try lab.hostnames("h1") == ["h1", "h2"])
        let state = try Self.asNode(lab, "h3", "GET", "/v1/state")
        #expect(state.status == 403 && state.body.contains("not a member"), "\(state)")
        let renew = try Self.asNode(lab, "h3", "POST", "/v1/renew", body: #"{"csr":"x"}"#)
        #expect(renew.status == 403, "\(renew)")
        // A stolen certificate is refused the same way from any host.
        let stolen = try Self.asNode(lab, "h2", certsOf: "h3", "GET", "/v1/state")
        #expect(stolen.status == 403, "\(stolen)")
        // Two rotations: the primary keys in use are ones the removed node never had.
        var fresh: (gossip: [String], gossipPrimary: String, ipsec: [Int], ipsecPrimary: Int)?
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            let now = try Self.keys(try Self.asNode(lab, "h2", "GET", "/v1/state").body)
            if !old.gossip.contains(now.gossipPrimary) && !old.ipsec.contains(now.ipsecPrimary) {
                fresh = now
                break
            }
            usleep(500_000)
        }
        #expect(fresh != nil, "the keys did not move past the removed node's within 30 s")
        // The manager gave its address back. h3 still runs c3 but can no longer read gossip, so
        // the others soon find it dead; until then h2's driver refuses the address as a peer's.
        var reused = try lab.on("h2", ["run", "-d", "--name", "reuse", "--network", "web", "--ip", ip3, "--", "sleep", "infinity"])
        let gossipDeadline = Date().addingTimeInterval(40)
        while !reused.succeeded && reused.output.contains("already used by peer") && Date() < gossipDeadline {
            usleep(500_000)
            reused = try lab.on("h2", ["run", "-d", "--name", "reuse", "--network", "web", "--ip", ip3, "--", "sleep", "infinity"])
        }
        #expect(reused.succeeded, "h3's address \(ip3) did not come back: \(reused.output)")
        _ = try? lab.on("h2", ["rm", "-f", "reuse"])
        // The rest of the cluster still works on the new keys.
        let after = try lab.must("h2", ["node", "ls", "--format", "json"])
        #expect(after.contains("\"h1\"") && !after.contains("\"h3\""), "\(after)")
        _ = try lab.must("h1", ["run", "-d", "--name", "c1", "--network", "web", "--", "sleep", "infinity"])
        _ = try lab.must("h2", ["run", "-d", "--name", "c2", "--network", "web", "--", "sleep", "infinity"])
        let ip2 = try lab.ip("h2", "c2", network: "web")
        #expect(try lab.pings("h1", "c1", ip2), "c1 cannot reach c2 (\(ip2)) after the keys rotated")
    }

    /// Holds `count` TCP connections to the manager port from the host it runs on, `slow` of them
    /// a slowloris (a TLS record header a byte a second), and reports how many the server closed
    /// and when: `closed N of M; slow closed S after T s`.
    static let flood = """
        import resource, select, socket, sys, time
        count, slow, limit = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
        resource.setrlimit(resource.RLIMIT_NOFILE, (count + 100, count + 100))
        ep = select.epoll()
        socks = {}
        for i in range(count):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("198.18.0.1", 2377))
            except BlockingIOError:
                pass
            socks[s.fileno()] = (s, i < slow)
            ep.register(s.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
        start = time.time()
        closed, slow_closed_at, next_drip = set(), 0.0, start
        while time.time() - start < limit and len(closed) < count:
            if time.time() >= next_drip:
                next_drip += 1
                for fd, (s, is_slow) in socks.items():
                    if is_slow and fd not in closed:
                        try:
                            s.send(b"\\x16")
                        except OSError:
                            pass
            for fd, ev in ep.poll(0.2):
                if fd in closed:
                    continue
                s, is_slow = socks[fd]
                try:
                    gone = (ev & (select.EPOLLHUP | select.EPOLLERR)) != 0 or s.recv(4096) == b""
                except OSError:
                    gone = True
                if gone:
                    closed.add(fd)
                    ep.unregister(fd)
                    if is_slow:
                        slow_closed_at = max(slow_closed_at, time.time() - start)
        slow_closed = sum(1 for fd, (s, is_slow) in socks.items() if is_slow and fd in closed)
        print(f"closed {len(closed)} of {count}; slow closed {slow_closed} after {slow_closed_at:.1f} s")
        """

    @Test func theManagerPortOutlastsIdleConnectionsAndASlowloris() async throws {
        guard getuid() == 0 else {
            Issue.record("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
            return
        }
        let lab = try CLILab.up("ovlt-sec2", hosts: 3)
        defer { lab.down() }
        try lab.join(["h2"], token: try lab.initSwarm())
        _ = try lab.must("h1", ["network", "create", "-d", "overlay", "--attachable", "--subnet", "10.32.0.0/24", "web"])
        let script = "/run/\(lab.name)/flood.py"
        try Self.flood.write(toFile: script, atomically: true, encoding: .utf8)

        // h3 (no certificate at all) opens 10,000 connections and holds them, 50 dripping bytes.
        async let flood = lab.sh("h3", ["python3", script, "10000", "50", "25"], timeout: 60)
        usleep(3_000_000)
        // Meanwhile a worker still gets addresses from the manager over 2377, and the manager
        // still serves its own CLI.
        let started = Date()
        for i in 0..<3 {
            let r = try lab.on("h2", ["run", "-d", "--name", "w\(i)", "--network", "web", "--", "sleep", "infinity"], timeout: 30)
            #expect(r.succeeded, "run on a worker during the flood: \(r.output)")
        }
        #expect(Date().timeIntervalSince(started) < 20, "three runs took \(Date().timeIntervalSince(started)) s during the flood")
        #expect(try lab.hostnames("h1") == ["h1", "h2"])
        // Past the request timeout, the manager holds no more of h3's connections than one source
        // may have open (the rest were closed at accept, or never got past the kernel's queue).
        usleep(UInt32(max(0, 14 - Date().timeIntervalSince(started))) * 1_000_000)
        let held = try lab.sh("h1", ["ss", "-Htn", "state", "established", "( sport = :2377 and dst 198.18.0.3 )"])
        let heldCount = held.output.split(separator: "\n").count
        #expect(heldCount <= 64, "the manager holds \(heldCount) of h3's connections")
        // A body over the limit before any certificate is shown: refused at once.
        let big = String(repeating: "a", count: 100_000)
        let join = try lab.sh("h2", ["curl", "-s", "-k", "-m", "10", "-w", "\n%{http_code}", "-X", "POST", "https://198.18.0.1:2377/v1/join",
                                     "-H", "Content-Type: application/json", "--data-binary", #"{"token":"\#(big)"}"#])
        #expect(join.output.hasSuffix("413"), "\(join.output.suffix(200))")

        let report = try await flood
        #expect(report.succeeded, "\(report.output)")
        // The slowloris was cut off; most of the idle flood was closed by the server. (Connections
        // the kernel answered with SYN cookies while the accept queue was full look open to the
        // client but hold nothing on the server: the count above is what matters.)
        #expect(report.output.contains("slow closed 50 "), "\(report.output)")
        let closed = report.output.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        #expect(closed > 1000, "\(report.output)")
        print("flood: \(report.output.trimmingCharacters(in: .whitespacesAndNewlines)); the manager held \(heldCount) of them")
        // And the daemon holds none of them past the request deadline (10 s from accept). The
        // flood's process is gone, but the kernel keeps completing connections after it: a dead
        // client's retransmitted FIN carries a valid SYN cookie, so a connection the full queue
        // once dropped is made then (established, no FIN seen) and accepted late. Each is held
        // only for its deadline; watched for 25 s, none lives longer, and the daemon closes them.
        var firstSeen: [String: Date] = [:]
        var oldest = 0.0
        var holding: [String] = []
        let watch = Date().addingTimeInterval(25)
        repeat {
            let open = try lab.sh("h1", ["ss", "-Htnp", "state", "established", "( sport = :2377 and dst 198.18.0.3 )"])
            holding = open.output.split(separator: "\n").filter { $0.contains("overlayd") }.compactMap { line in
                line.split(separator: " ", omittingEmptySubsequences: true).first { $0.hasPrefix("198.18.0.3:") }.map(String.init)
            }
            let now = Date()
            for peer in holding {
                let since = firstSeen[peer] ?? now
                firstSeen[peer] = since
                oldest = max(oldest, now.timeIntervalSince(since))
            }
            if !holding.isEmpty { usleep(200_000) }
        } while !holding.isEmpty && Date() < watch
        print("after the flood: \(firstSeen.count) of h3's connections held by the daemon, the longest \(oldest) s; \(holding.count) at the end")
        #expect(oldest <= 13, "a connection of h3's was held \(oldest) s, past the 10 s request deadline")
        // A new call from h3 is answered again. (Connections the kernel completed late may still
        // wait in the accept queue, each taking h3's per-source allowance until the daemon closes
        // it: a call can be cut off at accept for a moment, so it is asked again for up to 10 s.)
        let asked = Date()
        var anonymous = try lab.sh("h3", ["curl", "-sk", "-m", "5", "https://198.18.0.1:2377/v1/state"])
        while !anonymous.output.contains("client certificate is required") && Date().timeIntervalSince(asked) < 10 {
            usleep(500_000)
            anonymous = try lab.sh("h3", ["curl", "-sk", "-m", "5", "https://198.18.0.1:2377/v1/state"])
        }
        print("after the flood, a join-less call answered in \(Date().timeIntervalSince(asked)) s")
        #expect(anonymous.output.contains("client certificate is required"), "\(anonymous.output)")
    }

    /// Opens `count` gossip TCP streams to 198.18.0.1:7946, each an `encrypt` frame header claiming
    /// 20 MiB followed by a trickle of bytes, for `seconds`; reports how many the node cut off.
    static let gossipFlood = """
        import resource, select, socket, sys, time
        count, seconds = int(sys.argv[1]), float(sys.argv[2])
        resource.setrlimit(resource.RLIMIT_NOFILE, (count + 100, count + 100))
        socks = []
        for i in range(count):
            s = socket.socket()
            s.settimeout(2)
            try:
                s.connect(("198.18.0.1", 7946))
                s.send(bytes([10, 0x01, 0x40, 0x00, 0x00]) + b"\\xab" * 1024)
            except OSError:
                pass
            s.setblocking(False)
            socks.append(s)
        start, closed = time.time(), set()
        while time.time() - start < seconds:
            for i, s in enumerate(socks):
                if i in closed:
                    continue
                try:
                    if s.recv(1) == b"":
                        closed.add(i)
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    closed.add(i)
                    continue
                try:
                    s.send(b"\\xab" * 512)
                except OSError:
                    closed.add(i)
            time.sleep(0.5)
        print(f"cut off {len(closed)} of {count}")
        """

    @Test func fakeGiantGossipFramesDoNotMakeHealthyNodesLookDead() async throws {
        guard getuid() == 0 else {
            Issue.record("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
            return
        }
        let lab = try CLILab.up("ovlt-sec3", hosts: 3)
        defer { lab.down() }
        try lab.join(["h2"], token: try lab.initSwarm())
        let script = "/run/\(lab.name)/gossip-flood.py"
        try Self.gossipFlood.write(toFile: script, atomically: true, encoding: .utf8)
        func ready() throws -> Bool {
            let json = try jsonLines(try lab.must("h1", ["node", "ls", "--format", "json"]))
            return json.count == 2 && json.allSatisfy { $0["status"] as? String == "ready" }
        }
        #expect(try ready())
        // h3, holding no key, opens 128 streams each claiming a 20 MiB encrypted frame and feeds
        // them slowly; h2 must stay ready on the manager the whole time.
        async let flood = lab.sh("h3", ["python3", script, "128", "20"], timeout: 60)
        var downSeen: [Int] = []
        for second in stride(from: 2, through: 20, by: 2) {
            usleep(2_000_000)
            if try !ready() { downSeen.append(second) }
        }
        let report = try await flood
        #expect(downSeen.isEmpty, "h2 looked down at \(downSeen) s into the flood")
        // The node served at most 8 of them at a time and cut every one off (over the per-source
        // limit at once, the rest at their header: 20 MiB is more than an address no member has
        // may send), none held to the end.
        #expect(report.output.contains("cut off 128 of 128"), "\(report.output)")
        print("gossip flood: \(report.output.trimmingCharacters(in: .whitespacesAndNewlines))")
    }

    @Test func anAddressGivenToADaemonKilledBeforeItsContainerIsRecordedComesBackAndTheQuotaHolds() async throws {
        guard getuid() == 0 else {
            Issue.record("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
            return
        }
        let lab = try CLILab.up("ovlt-sec4", hosts: 2)
        defer { lab.down() }
        try lab.join(["h2"], token: try lab.initSwarm())
        _ = try lab.must("h1", ["network", "create", "-d", "overlay", "--attachable", "--subnet", "10.33.0.0/24", "web"])

        // h2's daemon dies (as by kill -9) right after the manager gave it an address.
        try lab.stopDaemon("h2")
        try lab.startDaemon("h2", hostIndex: 2, env: ["OVERLAYD_TEST_CRASH_AFTER_ALLOCATE=1"])
        let doomed = try lab.on("h2", ["run", "-d", "--name", "doomed", "--network", "web", "--", "sleep", "infinity"])
        #expect(!doomed.succeeded)
        for _ in 0..<50 where (try? lab.on("h2", ["info"]))?.succeeded == true { usleep(100_000) }
        // The manager holds that address for h2 now: the network cannot go.
        let busy = try lab.on("h1", ["network", "rm", "web"])
        #expect(!busy.succeeded && busy.output.contains("doomed"), "\(busy.output)")

        // Started again, h2 finds the address it asked for held by no container and gives it back.
        try lab.startDaemon("h2", hostIndex: 2)
        let removed = try lab.retrying("h1", ["network", "rm", "web"], tries: 31, every: 500_000)
        #expect(removed.succeeded, "the address h2 was given before it died is still held: \(removed.output)")
        let log = (try? String(contentsOfFile: "/run/\(lab.name)/h2/overlayd.log", encoding: .utf8)) ?? ""
        #expect(log.contains("asked for before a crash"), "h2's log does not say what it gave back")

        // The per-node quota and a short orphan grace, set by the operator on the manager.
        try lab.stopDaemon("h1")
        try lab.startDaemon("h1", hostIndex: 1, args: ["--max-addresses-per-node", "2", "--orphaned-address-grace", "2"])

        // An address the worker no longer knows of at all (it died after the manager gave it,
        // and its record of asking was lost with its store): two of its reports leave it out,
        // so the manager gives it back on its own.
        _ = try lab.must("h1", ["network", "create", "-d", "overlay", "--attachable", "--subnet", "10.37.0.0/24", "lost"])
        _ = try lab.must("h1", ["network", "create", "-d", "overlay", "--attachable", "--subnet", "10.38.0.0/24", "other"])
        for _ in 0..<100 where !(try lab.on("h2", ["network", "inspect", "other"])).succeeded { usleep(100_000) }
        try lab.stopDaemon("h2")
        try lab.startDaemon("h2", hostIndex: 2, env: ["OVERLAYD_TEST_CRASH_AFTER_ALLOCATE=1"])
        #expect(!(try lab.on("h2", ["run", "-d", "--name", "forgotten", "--network", "lost", "--", "sleep", "infinity"])).succeeded)
        for _ in 0..<50 where (try? lab.on("h2", ["info"]))?.succeeded == true { usleep(100_000) }
        let forget = try Command.run(["python3", "-c", """
            import sqlite3, sys
            db = sqlite3.connect(sys.argv[1])
            n = db.execute("DELETE FROM object WHERE kind = 'address-intent'").rowcount
            db.commit()
            print("forgot", n)
            """, "/run/\(lab.name)/h2/overlayd.db"])
        #expect(forget.output.contains("forgot 1"), "\(forget.output)")
        try lab.startDaemon("h2", hostIndex: 2)
        let held = try lab.on("h1", ["network", "rm", "lost"])
        #expect(!held.succeeded && held.output.contains("forgotten"), "\(held.output)")
        // After the grace, a change on h2 (a container on another network) sends a report that
        // still leaves the address out.
        usleep(2_500_000)
        _ = try lab.must("h2", ["run", "-d", "--name", "nudge", "--network", "other", "--", "sleep", "infinity"], timeout: 60)
        let gone = try lab.retrying("h1", ["network", "rm", "lost"], tries: 41, every: 250_000)
        #expect(gone.succeeded, "the manager still holds the forgotten address: \(gone.output)")
        let managerLog = (try? String(contentsOfFile: "/run/\(lab.name)/h1/overlayd.log", encoding: .utf8)) ?? ""
        #expect(managerLog.contains("no longer holds endpoint") && managerLog.contains("by two of its reports"), "the manager's log does not say what it gave back")
        // What h2 does hold stays: nudge's address, and h2's quota counts it.
        _ = try lab.must("h2", ["rm", "-f", "nudge"])

        // The quota: h2 gets two addresses, no third.
        _ = try lab.must("h1", ["network", "create", "-d", "overlay", "--attachable", "--subnet", "10.36.0.0/24", "quota"])
        for _ in 0..<100 where !(try lab.on("h2", ["network", "inspect", "quota"])).succeeded { usleep(100_000) }
        for i in 1...2 { _ = try lab.must("h2", ["run", "-d", "--name", "q\(i)", "--network", "quota", "--", "sleep", "infinity"], timeout: 60) }
        let third = try lab.on("h2", ["run", "-d", "--name", "q3", "--network", "quota", "--", "sleep", "infinity"], timeout: 60)
        #expect(!third.succeeded && third.output.contains("--max-addresses-per-node"), "\(third.output)")
        #expect(third.output.split(separator: "\n").count == 1, "\(third.output)")
    }

    /// Sends the UDP payloads of a pcap's packets (Ethernet, IPv4, UDP) to 198.18.0.1:4500.
    static let replay = """
        import socket, struct, sys
        data = open(sys.argv[1], "rb").read()
        off, sent = 24, 0
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        while off + 16 <= len(data):
            incl = struct.unpack("<I", data[off + 8:off + 12])[0]
            frame = data[off + 16:off + 16 + incl]
            off += 16 + incl
            ihl = (frame[14] & 0x0f) * 4
            payload = frame[14 + ihl + 8:]
            if len(payload) > 8:
                s.sendto(payload, ("198.18.0.1", 4500))
                sent += 1
        print("replayed", sent)
        """

    @Test func aReplayedCaptureFromBeforeAPeersRestartIsDroppedAndThePeerKeepsTalking() async throws {
        guard getuid() == 0 else {
            Issue.record("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
            return
        }
        let lab = try CLILab.up("ovlt-sec5", hosts: 2)
        defer { lab.down() }
        try lab.join(["h2"], token: try lab.initSwarm())
        _ = try lab.must("h1", ["network", "create", "--attachable", "--opt", "encrypted", "--subnet", "10.35.0.0/24", "sec"])
        _ = try lab.must("h1", ["run", "-d", "--name", "c1", "--network", "sec", "--", "sleep", "infinity"])
        _ = try lab.must("h2", ["run", "-d", "--name", "c2", "--network", "sec", "--", "sleep", "infinity"])
        let ip1 = try lab.ip("h1", "c1", network: "sec")
        #expect(try lab.pings("h2", "c2", ip1, tries: 40), "c2 cannot reach c1 on the encrypted network")

        // Capture what h2 sends h1 (ESP in UDP) while c2 pings c1 many times. First 200 pings
        // uncaptured, so every captured sequence number lies above all that h2's next boot sends
        // before the replay (its pings until one answers, a few ARPs): a captured packet whose
        // number that boot has used is dropped by the replay window before its ICV is checked
        // (RFC 4303's order), which says nothing about its key. Once in CI, with 201 captured
        // from sequence numbers in the low tens and a slow restart, one was.
        _ = try lab.on("h2", ["exec", "c2", "--", "ping", "-c", "200", "-i", "0.002", "-q", ip1], timeout: 30)
        let capture = "/run/\(lab.name)/before-restart.pcap"
        let dump = try Child.capture(["ip", "netns", "exec", "\(lab.name)-h1", "tcpdump", "-i", "eth0", "-n", "-U", "-w", capture,
                                      "udp port 4500 and src host 198.18.0.2"], log: "/run/\(lab.name)/tcpdump.log")
        _ = try lab.on("h2", ["exec", "c2", "--", "ping", "-c", "200", "-i", "0.002", "-q", ip1], timeout: 30)
        usleep(300_000)
        dump.finishCapture()

        // h2's daemon restarts: a new boot, its sequence numbers start again under new keys.
        try lab.restartDaemon("h2", hostIndex: 2)
        #expect(try lab.pings("h2", "c2", ip1, tries: 40), "c2 cannot reach c1 after h2 restarted")
        func drops() throws -> [String: Int] {
            let json = try JSONSerialization.jsonObject(with: Data(try lab.must("h1", ["network", "inspect", "sec"]).utf8)) as! [[String: Any]]
            return json[0]["ESPDropped"] as? [String: Int] ?? [:]
        }
        let before = try drops()

        // The capture from before the restart, sent to h1 again: none of it authenticates now.
        let script = "/run/\(lab.name)/replay.py"
        try Self.replay.write(toFile: script, atomically: true, encoding: .utf8)
        let replayed = try lab.sh("h2", ["python3", script, capture])
        let count = Int(replayed.output.split(separator: " ").last.map { String($0).trimmingCharacters(in: .whitespacesAndNewlines) } ?? "") ?? 0
        #expect(count >= 100, "\(replayed.output)")
        usleep(500_000)
        let after = try drops()
        let refused = (after["espAuthFailed"] ?? 0) - (before["espAuthFailed"] ?? 0)
        #expect(refused >= count, "of \(count) replayed packets \(refused) failed authentication; drops \(before) -> \(after)")
        #expect((after["espReplayed"] ?? 0) == (before["espReplayed"] ?? 0), "replays reached the window: \(after)")
        // ... and the peer is not cut off: its new traffic still gets through.
        #expect(try lab.on("h2", ["exec", "c2", "--", "ping", "-c", "3", "-i", "0.2", "-W", "2", ip1]).succeeded,
                "h2 is cut off after the replay")
        print("replayed \(count) pre-restart ESP packets: \(refused) refused (authentication); drops \(after)")
    }
}
