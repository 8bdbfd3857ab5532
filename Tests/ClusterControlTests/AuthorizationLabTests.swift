import Foundation
import Hummingbird
import OverlayTestKit
import Testing
@testable import ClusterControl

/// Who may call what, and what is never shown. Every route the daemon serves (read from its two
/// routers, so a route added later is asked too) is called by every kind of caller: no
/// certificate, a certificate from another CA, an expired one from the cluster's CA, a worker's,
/// a manager's, and the local socket. Then a lab run's logs and answers are searched for every
/// secret the swarm holds.
@Suite struct AuthorizationLabTests {
    struct Call: Codable { var method: String; var path: String; var body: String? }
    struct Answer: Codable, CustomStringConvertible {
        var status: Int
        var body: String
        var description: String { "\(status) \(body.prefix(160))" }
    }

    /// Every route of the local socket's router and of the manager port's, with its `:parameters`
    /// filled by `name` and a `{}` body for what is posted.
    static func routes(name: String = "nosuch") async throws -> (local: [Call], manager: [Call]) {
        let dir = "/tmp/ovl-routes-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let daemon = try OverlayDaemon(configuration: DaemonConfiguration(stateDirectory: dir, socketPath: dir + "/overlayd.sock"))
        func calls(_ routes: [Router<APIContext>.RouteDescription]) -> [Call] {
            routes.map { r in
                let path = "/" + r.path.components.map { "\($0)".hasPrefix("{") ? name : "\($0)" }.joined(separator: "/")
                let method = r.method.rawValue
                return Call(method: method, path: path, body: method == "POST" ? "{}" : nil)
            }
        }
        let local = calls(daemon.localRouter().routes), manager = calls(daemon.managerRouter().routes)
        await daemon.stop()
        return (local, manager)
    }

    /// Sends each call on its own connection and prints the answers as JSON: over TLS to
    /// `HOST:PORT` (with a client certificate unless it is `-`), or on a Unix socket.
    static let client = """
        import http.client, json, socket, ssl, sys
        mode, target, cert, key, calls = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], json.load(open(sys.argv[5]))
        class Unix(http.client.HTTPConnection):
            def connect(self):
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(10)
                self.sock.connect(target)
        out = []
        for c in calls:
            try:
                if mode == "unix":
                    conn = Unix("localhost", timeout=10)
                else:
                    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                    if cert != "-":
                        ctx.load_cert_chain(cert, key)
                    host, port = target.rsplit(":", 1)
                    conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=10)
                body = c.get("body")
                headers = {"Connection": "close"}
                if body is not None:
                    headers["Content-Type"] = "application/json"
                try:
                    conn.request(c["method"], c["path"], body=None if body is None else body.encode(), headers=headers)
                except (BrokenPipeError, ConnectionResetError):
                    # http.client sends the head and the body in two writes; a server may answer
                    # (a 404) and close after the head alone. Read that answer, as curl and Go do.
                    pass
                r = conn.getresponse()
                out.append({"status": r.status, "body": r.read(400).decode("utf-8", "replace")})
                conn.close()
            except Exception as e:
                out.append({"status": 0, "body": f"{type(e).__name__}: {e}"})
        print(json.dumps(out))
        """

    /// Runs `calls` through ``client``: on h3 towards the manager port with the certificate and
    /// key at `cert` (nil: none), or on `unixSocket` from here.
    static func ask(_ lab: CLILab, _ calls: [Call], cert: String? = nil, unixSocket: String? = nil) throws -> [Answer] {
        let dir = "/run/\(lab.name)"
        let script = dir + "/authz.py", file = dir + "/authz-\(UInt32.random(in: 0...UInt32.max)).json"
        try client.write(toFile: script, atomically: true, encoding: .utf8)
        try JSONEncoder().encode(calls).write(to: URL(fileURLWithPath: file))
        defer { unlink(file) }
        let r: CommandResult
        if let unixSocket {
            r = try Command.run(["python3", script, "unix", unixSocket, "-", "-", file], timeout: 120)
        } else {
            r = try lab.sh("h3", ["python3", script, "tls", "198.18.0.1:2377", cert.map { $0 + "/node.crt" } ?? "-",
                                  cert.map { $0 + "/node.key" } ?? "-", file], timeout: 120)
        }
        guard r.succeeded, let line = r.output.split(separator: "\n").last,
              let answers = try? JSONDecoder().decode([Answer].self, from: Data(line.utf8)), answers.count == calls.count
        else { throw LabError("the API client failed: \(r.output.suffix(500))") }
        return answers
    }

    /// Writes a key and a certificate for `nodeID` issued by `ca` into `directory`, valid for
    /// an hour from `issued`.
    static func certificate(from ca: ClusterCA, nodeID: String, role: NodeRole, issued: Date, into directory: String) throws {
        let request = try NodeIdentity.Request()
        let pem = try ca.issue(csrPEM: request.csrPEM, nodeID: nodeID, role: role, validity: 3600, now: issued)
        try NodeIdentity(request: request, certificatePEM: pem, caCertificatePEM: ca.certificatePEM).save(to: directory)
    }

    @Test func everyRouteAnswersOnlyTheCallersItIsFor() async throws {
        guard getuid() == 0 else {
            Issue.record("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
            return
        }
        let (local, manager) = try await Self.routes()
        #expect(local.count >= 30 && manager.count >= 8, "local \(local.count) routes, manager \(manager.count)")
        let lab = try CLILab.up("ovlt-authz", hosts: 3)
        defer { lab.down() }
        try lab.join(["h2"], token: try lab.initSwarm())
        let ids = try SecurityLabTests.nodeIDs(lab)
        let (managerID, workerID) = (ids["h1"]!, ids["h2"]!)
        let state = { (h: String) in SecurityLabTests.stateDir(lab, h) }

        // Certificates a stranger could hold: one for the worker's node ID from a CA of its own,
        // and one from the cluster's own CA that expired a day ago.
        let otherCA = "/run/\(lab.name)/other-ca", expired = "/run/\(lab.name)/expired"
        try Self.certificate(from: try ClusterCA.create(), nodeID: workerID, role: .worker, issued: Date(), into: otherCA)
        try Self.certificate(from: try ClusterCA.load(from: state("h1") + "/ca"), nodeID: workerID, role: .worker,
                             issued: Date().addingTimeInterval(-86_400), into: expired)

        let everything = manager + local
        let join = { (c: Call) in c.method == "POST" && c.path == "/v1/join" }
        let leave = { (c: Call) in c.method == "POST" && c.path == "/v1/leave" }
        let isManagerRoute = { (c: Call) in manager.contains { $0.method == c.method && $0.path == c.path } }

        // No certificate: the join call alone (which refuses an empty body), 403 for the rest.
        for (call, answer) in zip(everything, try Self.ask(lab, everything)) {
            if join(call) {
                #expect(answer.status == 400, "no certificate, \(call.method) \(call.path): \(answer)")
            } else {
                #expect(answer.status == 403 && (call.method == "HEAD" || answer.body.contains("client certificate is required")),
                        "no certificate, \(call.method) \(call.path): \(answer)")
            }
        }
        // Another CA's certificate naming a real node, and the cluster's own expired: no HTTP at all.
        for (who, dir) in [("another CA's certificate", otherCA), ("an expired certificate", expired)] {
            for (call, answer) in zip(everything, try Self.ask(lab, everything, cert: dir)) {
                #expect(answer.status == 0 && answer.body.contains("SSL"), "\(who), \(call.method) \(call.path): \(answer)")
            }
        }
        // A node's certificate (the manager's own, and a worker's): the node calls, for itself;
        // every call of the local socket is refused. Leaving is the worker's, asked last.
        for (who, dir) in [("the manager's certificate", state("h1") + "/certs"), ("a worker's certificate", state("h2") + "/certs")] {
            let calls = everything.filter { !leave($0) }
            for (call, answer) in zip(calls, try Self.ask(lab, calls, cert: dir)) {
                if isManagerRoute(call) {
                    #expect(answer.status != 403 && answer.status != 0 && answer.status != 404 && answer.status < 500,
                            "\(who), \(call.method) \(call.path): \(answer)")
                } else {
                    #expect(answer.status == 403 && (call.method == "HEAD" || answer.body.contains("only the manager's local socket may")),
                            "\(who), \(call.method) \(call.path): \(answer)")
                }
            }
        }
        // The local socket: every call of its own reaches its handler; the manager port's are not there.
        for (call, answer) in zip(everything, try Self.ask(lab, everything, unixSocket: state("h1") + "/overlayd.sock")) {
            if isManagerRoute(call) {
                #expect(answer.status == 404 && answer.body.contains("no such API call"), "local socket, \(call.method) \(call.path): \(answer)")
            } else {
                #expect(answer.status != 403 && answer.status != 0 && answer.status < 500 && !answer.body.contains("no such API call"),
                        "local socket, \(call.method) \(call.path): \(answer)")
            }
        }
        // Leaving by the manager port is a worker's call: the manager's certificate is refused,
        // and the manager is still there; the worker's leaves, and its certificate opens nothing more.
        let leaveCall = [Call(method: "POST", path: "/v1/leave", body: nil)]
        let managerLeaves = try Self.ask(lab, leaveCall, cert: state("h1") + "/certs")[0]
        #expect(managerLeaves.status == 403 && managerLeaves.body.contains("swarm leave"), "the manager's certificate, leave: \(managerLeaves)")
        #expect(try SecurityLabTests.nodeIDs(lab)["h1"] == managerID)
        let workerLeaves = try Self.ask(lab, leaveCall, cert: state("h2") + "/certs")[0]
        #expect(workerLeaves.status == 200, "a worker's certificate, leave: \(workerLeaves)")
        #expect(try SecurityLabTests.nodeIDs(lab)["h2"] == nil)
        let after = manager.filter { !join($0) }
        for (call, answer) in zip(after, try Self.ask(lab, after, cert: state("h2") + "/certs")) {
            #expect(answer.status == 403 && answer.body.contains("not a member of this swarm"), "a node that left, \(call.method) \(call.path): \(answer)")
        }
    }

    /// The ways a secret's bytes could be written: base64, hex, and a list of its first bytes in
    /// decimal (how a byte array prints or encodes as JSON; compared with whitespace removed).
    static func forms(_ bytes: [UInt8]) -> [String] {
        // Base64 at each of the three alignments the bytes could have inside a longer encoded
        // text (a key in a PEM or JSON blob), without the characters that mix in their
        // neighbours, in both alphabets.
        var out: [String] = []
        for k in 0..<3 {
            let text = Array(Data(Array(repeating: 0, count: k) + bytes).base64EncodedString())
            let core = String(text[[0, 2, 3][k]..<max([0, 2, 3][k], text.count - 4)])
            if core.count >= 12 {
                out += [core, core.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")]
            }
        }
        let hex = bytes.map { String(format: "%02x", $0) }
        return out + [hex.joined(), hex.joined().uppercased(), hex.joined(separator: ":"), hex.joined(separator: ":").uppercased(),
                      bytes.prefix(10).map(String.init).joined(separator: ",")]
    }

    /// The private scalar of the EC key in the PEM file at `path`, from `openssl pkey -text`.
    static func privateScalar(_ path: String) throws -> [UInt8] {
        let r = try Command.run(["openssl", "pkey", "-in", path, "-noout", "-text"])
        let text = r.output.split(separator: "\n")
        guard r.succeeded, let start = text.firstIndex(where: { $0.hasPrefix("priv:") }) else { throw LabError("openssl pkey \(path): \(r.output)") }
        let hex = text[(start + 1)...].prefix { $0.hasPrefix(" ") }.joined().filter { $0.isHexDigit }
        var bytes = stride(from: 0, to: hex.count - 1, by: 2).map { i in
            UInt8(hex[hex.index(hex.startIndex, offsetBy: i)...].prefix(2), radix: 16)!
        }
        while bytes.count > 32 && bytes.first == 0 { bytes.removeFirst() }
        return bytes
    }

    @Test func noSecretIsLoggedShownOrLeftOnDisk() async throws {
        guard getuid() == 0 else {
            Issue.record("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
            return
        }
        let lab = try CLILab.up("ovlt-secret", hosts: 3, extra: ["--metrics", "--overlayd-arg", "--log-level=debug"])
        defer { lab.down() }
        let hosts = ["h1", "h2", "h3"]
        let state = { (h: String) in SecurityLabTests.stateDir(lab, h) }

        // A lab run that touches every secret: tokens made, used and rotated; gossip keys
        // rotated; an encrypted network with traffic; a service; a node removed (IPsec keys rotate).
        var tokens = [try lab.initSwarm(), try lab.must("h1", ["swarm", "join-token", "-q", "manager"])]
        try lab.join(["h2", "h3"], token: tokens[0])
        _ = try lab.must("h1", ["swarm", "join-token", "--rotate", "worker"])
        tokens.append(try lab.must("h1", ["swarm", "join-token", "-q", "worker"]))
        var states = [try SecurityLabTests.asNode(lab, "h2", "GET", "/v1/state").body]
        _ = try lab.must("h1", ["swarm", "rotate-keys"])
        _ = try lab.must("h1", ["network", "create", "-d", "overlay", "--attachable", "--opt", "encrypted", "--subnet", "10.33.0.0/24", "sec"])
        _ = try lab.must("h1", ["run", "-d", "--name", "c1", "--network", "sec", "--", "sleep", "infinity"])
        _ = try lab.must("h2", ["run", "-d", "--name", "c2", "--network", "sec", "--", "sleep", "infinity"])
        #expect(try lab.pings("h1", "c1", try lab.ip("h2", "c2", network: "sec")), "c1 reaches c2 on the encrypted network")
        _ = try lab.must("h1", ["service", "create", "--name", "web", "--network", "sec", "--replicas", "2", "--", "sleep", "infinity"])
        states.append(try SecurityLabTests.asNode(lab, "h2", "GET", "/v1/state").body)

        // The secrets: join tokens' secret parts, every gossip and IPsec key handed out, the CA's
        // key and every node's key.
        var secrets: [(name: String, bytes: [UInt8]?, text: String?)] = tokens.map { token in
            ("join token \(token.prefix(12))...", nil, String(token.split(separator: "-").last!))
        }
        var ipsec: [[UInt8]] = []
        for body in states {
            let json = try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any], "\(body.prefix(200))")
            for key in json["gossipKeys"] as? [String] ?? [] { secrets.append(("gossip key", Array(Data(base64Encoded: key) ?? Data()), nil)) }
            for key in (json["ipsecKeys"] as? [String: Any])?["keys"] as? [[String: Any]] ?? [] {
                ipsec.append((key["key"] as? [Int] ?? []).map { UInt8($0) })
            }
        }
        #expect(secrets.count >= 6 && ipsec.count >= 2, "\(secrets.count) secrets, \(ipsec.count) IPsec keys")
        // Every key was read whole (a key that did not decode would have no forms to find).
        #expect(secrets.allSatisfy { $0.text != nil || [16, 24, 32].contains($0.bytes?.count ?? 0) }, "\(secrets.map { $0.bytes?.count ?? -1 })")
        #expect(ipsec.allSatisfy { [16, 24, 32].contains($0.count) }, "\(ipsec.map(\.count))")
        secrets += ipsec.map { ("IPsec key", $0, nil) }
        secrets.append(("the CA's key", try Self.privateScalar(state("h1") + "/ca/ca.key"), nil))
        for h in hosts { secrets.append(("\(h)'s node key", try Self.privateScalar(state(h) + "/certs/node.key"), nil)) }
        // The keys' PEM files as written, by their first line of base64.
        for (name, path) in [("the CA's key file", state("h1") + "/ca/ca.key")] + hosts.map({ ("\($0)'s node key file", state($0) + "/certs/node.key") }) {
            let pem = try String(contentsOfFile: path, encoding: .utf8)
            let body = pem.split(separator: "\n").first { !$0.hasPrefix("-----") }.map(String.init)
            #expect(body.map { $0.count >= 40 } == true, "\(path): \(pem.prefix(60))")
            if let body { secrets.append((name, nil, body)) }
        }

        // What is written and shown: each daemon's log (at debug), every GET of the local socket
        // with each name the run made (but the join token's, which shows the token by design),
        // and the metrics.
        var seen: [(name: String, text: String)] = []
        for h in hosts { seen.append(("\(h)'s log", try String(contentsOfFile: state(h) + "/overlayd.log", encoding: .utf8))) }
        let names = ["h1", "h2", "h3", "sec", "c1", "c2", "web", "web.1"]
        let gets = try await Self.routes(name: "{name}").local.filter { $0.method == "GET" && $0.path != "/v1/swarm/join-token" }
        let calls = gets.flatMap { call in
            call.path.contains("{name}") ? names.map { Call(method: "GET", path: call.path.replacingOccurrences(of: "{name}", with: $0)) } : [call]
        }
        for h in hosts {
            for (call, answer) in zip(calls, try Self.ask(lab, calls, unixSocket: state(h) + "/overlayd.sock")) {
                seen.append(("\(h)'s answer to GET \(call.path)", answer.body))
            }
            let metrics = try lab.sh(h, ["curl", "-sf", "-m", "5", "http://198.18.0.\(h.dropFirst()):9323/metrics"])
            #expect(metrics.succeeded && metrics.output.contains("overlay_"), "\(h)'s metrics: \(metrics.output.prefix(200))")
            seen.append(("\(h)'s metrics", metrics.output))
        }
        #expect(seen.count > 3 * calls.count, "\(seen.count) texts")
        // The search finds what is there: the join token's own answer shows the token.
        let shown = try lab.must("h1", ["swarm", "join-token", "worker"])
        var found: [String] = []
        for (where_, text) in seen + [("the join token's answer", shown)] {
            let squeezed = text.filter { !$0.isWhitespace }
            for secret in secrets {
                let forms = secret.text.map { [$0] } ?? Self.forms(secret.bytes ?? [])
                if forms.contains(where: { !$0.isEmpty && (text.contains($0) || squeezed.contains($0)) }) {
                    found.append("\(secret.name) in \(where_)")
                }
            }
        }
        #expect(found == ["join token \(tokens[2].prefix(12))... in the join token's answer"], "secrets shown: \(Set(found).sorted())")
        print("searched \(seen.count) logs and answers for \(secrets.count) secrets")

        // IPsec keys are never written to disk, in any form.
        for h in hosts {
            let walker = FileManager.default.enumerator(atPath: state(h))!
            while let rel = walker.nextObject() as? String {
                var st = stat()
                guard lstat(state(h) + "/" + rel, &st) == 0, st.st_mode & S_IFMT == S_IFREG,
                      let data = FileManager.default.contents(atPath: state(h) + "/" + rel) else { continue }
                let text = String(decoding: data, as: UTF8.self).filter { !$0.isWhitespace }
                for key in ipsec where data.range(of: Data(key)) != nil || Self.forms(key).contains(where: { text.contains($0) }) {
                    Issue.record("an IPsec key is in \(h)'s \(rel)")
                }
            }
        }
    }
}
