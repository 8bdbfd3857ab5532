import Discovery
import DiscoveryServer
import Foundation
import Netlink
import OverlayModel
import OverlayTestKit
import Testing

/// A dnsmasq on the root namespace's loopback (a random port), standing in for the host's
/// resolver. It owns `upstream.test` and nothing else: it has no upstream of its own, so no query
/// ever leaves the machine.
final class FakeUpstream {
    let address = "127.0.0.1"
    let port = UInt16.random(in: 20000...29999)
    let process = Process()

    init() throws {
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/dnsmasq")
        process.arguments = ["--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--bind-interfaces",
                             "--listen-address=\(address)", "--port=\(port)", "--address=/upstream.test/203.0.113.7",
                             "--pid-file=", "--user=root", "--group=root"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        // Ready when it answers.
        for _ in 0..<50 {
            let r = try Lab.run(["dig", "@\(address)", "-p", "\(port)", "+short", "+time=1", "+tries=1", "upstream.test"], timeout: 5)
            if r.output.contains("203.0.113.7") { return }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw LabError("the fake upstream dnsmasq did not come up")
    }

    var upstream: Upstream { Upstream(address: .v4(IPv4Address(address)!), port: port) }

    /// Stops dnsmasq (call it in a `defer`: the object may be released early otherwise).
    func stop() {
        // SIGKILL by PID: a child of the test process inherits a signal mask that blocks SIGTERM.
        let pid = process.processIdentifier
        if pid > 0 { kill(pid, SIGKILL) }
        for _ in 0..<100 where process.isRunning { usleep(20_000) }
    }
}

@Suite(.serialized) struct DNSServerTests {
    static func names(_ table: inout NameTable) {
        table.upsert(EndpointName(id: "e1", network: "front", name: "web", aliases: ["www"], ipv4: IPv4Address(10, 0, 0, 2)))
        table.upsert(EndpointName(id: "e2", network: "front", name: "api", aliases: [], ipv4: IPv4Address(10, 0, 0, 3)))
        table.upsert(EndpointName(id: "e3", network: "back", name: "db", aliases: [], ipv4: IPv4Address(10, 0, 1, 2)))
        // A service with 100 tasks: its answer does not fit 512 bytes.
        for i in 0..<100 {
            table.upsert(EndpointName(id: "t\(i)", network: "front", name: "big.\(i + 1).task\(i)", aliases: [],
                                      ipv4: IPv4Address(10, 0, 2, UInt8(i + 2)), service: "big"))
        }
        table.upsert(ServiceName(name: "big", network: "front", vip4: IPv4Address(10, 0, 0, 200), mode: .vip, ports: []))
    }

    /// A started server holding `names`, serving one new namespace of `lab` (`c1`) as `client`.
    /// The caller shuts the server down.
    func serving(_ lab: Lab, _ client: ResolverClient, configuration: DNSServer.Configuration = .init()) async throws
        -> (DNSServer, NetworkNamespace) {
        let c1 = try lab.makeNamespace("c1")
        try NetlinkSocket(namespace: c1).setUp("lo")
        let server = DNSServer(configuration: configuration)
        try await server.start()
        await server.updateTableNow { Self.names(&$0) }
        try await server.serve(container: "c1", namespace: c1, client: client)
        return (server, c1)
    }

    func dig(_ lab: Lab, _ ns: NetworkNamespace, _ args: [String]) throws -> String {
        try lab.run(["dig", "@127.0.0.11", "+time=2", "+tries=1"] + args, in: ns, timeout: 20).output
    }

    @Test func answersForwardsTruncatesAndIsolates() async throws {
        let lab = try Lab.create(name: "ovlt-dns\(UInt16.random(in: 1000...9999))", hosts: 1)
        defer { lab.destroy() }
        let upstream = try FakeUpstream()
        defer { upstream.stop() }
        let c1 = try lab.makeNamespace("c1")
        let c2 = try lab.makeNamespace("c2")
        let ci = try lab.makeNamespace("ci")
        for ns in [c1, c2, ci] { try NetlinkSocket(namespace: ns).setUp("lo") }
        var config = DNSServer.Configuration()
        config.upstreams = [upstream.upstream]
        let server = DNSServer(configuration: config)
        try await server.start()
        defer { Task { await server.shutdown() } }
        await server.updateTableNow { Self.names(&$0) }
        try await server.serve(container: "c1", namespace: c1, client: ResolverClient(networks: ["front"], mayForward: true))
        try await server.serve(container: "c2", namespace: c2, client: ResolverClient(networks: ["back"], mayForward: true))
        try await server.serve(container: "ci", namespace: ci, client: ResolverClient(networks: ["front"], mayForward: false))

        // Names, aliases, name.network, case, PTR.
        #expect(try dig(lab, c1, ["+short", "web"]).trimmed == "10.0.0.2")
        #expect(try dig(lab, c1, ["+short", "WWW."]).trimmed == "10.0.0.2")
        #expect(try dig(lab, c1, ["+short", "api.front"]).trimmed == "10.0.0.3")
        #expect(try dig(lab, c1, ["+short", "-x", "10.0.0.3"]).trimmed == "api.front.")
        #expect(try dig(lab, c1, ["+short", "big"]).trimmed == "10.0.0.200")
        // NXDOMAIN for a name that is clearly ours.
        #expect(try dig(lab, c1, ["tasks.nothing"]).contains("status: NXDOMAIN"))
        // A container on `back` never sees `front`'s names: they go upstream, which refuses them.
        let leak = try dig(lab, c2, ["web"])
        #expect(!leak.contains("10.0.0.2"))
        #expect(try dig(lab, c2, ["+short", "db"]).trimmed == "10.0.1.2")
        // TCP fallback: 100 task IPs do not fit a UDP answer; dig retries over TCP and gets them all.
        let tasks = try dig(lab, c1, ["+short", "tasks.big"]).split(separator: "\n")
        #expect(tasks.count == 100)
        #expect(Set(tasks).count == 100)
        let udpOnly = try dig(lab, c1, ["+ignore", "tasks.big"])
        #expect(udpOnly.contains(" tc "))
        // Forwarded upstream over UDP and over TCP.
        #expect(try dig(lab, c1, ["+short", "upstream.test"]).trimmed == "203.0.113.7")
        #expect(try dig(lab, c1, ["+short", "+tcp", "upstream.test"]).trimmed == "203.0.113.7")
        // An internal-only container does not forward: REFUSED, and its own names still answer.
        #expect(try dig(lab, ci, ["upstream.test"]).contains("status: REFUSED"))
        #expect(try dig(lab, ci, ["+short", "web"]).trimmed == "10.0.0.2")

        let counters = await server.counters()
        #expect(counters.truncated >= 1)
        #expect(counters.tcpConnections >= 2)
        #expect(counters.refused >= 1)
        #expect(counters.forwarded >= 2)

        // A table change is visible to the next query; removal answers NXDOMAIN for name.network.
        await server.updateTableNow { $0.removeEndpoint(id: "e2", network: "front") }
        #expect(try dig(lab, c1, ["api.front"]).contains("status: NXDOMAIN"))

        // Stopping a container closes its sockets.
        await server.stop(container: "c1")
        #expect(try dig(lab, c1, ["+short", "web"]).contains("no servers could be reached")
                || !(try dig(lab, c1, ["+short", "web"]).contains("10.0.0.2")))
        #expect(await server.servedContainers() == ["c2", "ci"])
    }

    @Test func malformedQueriesAreAnsweredOrCountedNeverFatal() async throws {
        let lab = try Lab.create(name: "ovlt-dnsm\(UInt16.random(in: 1000...9999))", hosts: 1)
        defer { lab.destroy() }
        let (server, c1) = try await serving(lab, ResolverClient(networks: ["front"], mayForward: false))
        defer { Task { await server.shutdown() } }
        // Garbage from inside the namespace: a header-only FORMERR case, a short datagram, random bytes,
        // a response instead of a query, and garbage over TCP.
        let script = """
            import os, socket
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(1)
            hdr = bytes([0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00])
            for p in [hdr + bytes([0x3f]), b"\\x01", os.urandom(300), bytes([0x12, 0x34, 0x81, 0x80]) + bytes(8)]:
                s.sendto(p, ("127.0.0.11", 53))
            try:
                r = s.recv(4096)
                print("rcode", r[3] & 0x0f, "id", r[0] * 256 + r[1])
            except Exception as e:
                print("no reply", e)
            t = socket.create_connection(("127.0.0.11", 53), timeout=2)
            t.sendall(bytes([0x00, 0x05, 1, 2, 3, 4, 5]))
            try:
                print("tcp", len(t.recv(100)))
            except Exception as e:
                print("tcp closed", e)
            """
        let out = try lab.run(["python3", "-c", script], in: c1, timeout: 20).output
        #expect(out.contains("rcode 1 id 4660"))   // FORMERR with the query's ID
        // A long (but valid) query arrives whole: a 240-octet name with EDNS is refused for this
        // internal-only client, not answered FORMERR as a cut datagram would be.
        let long = (0..<4).map { _ in String(repeating: "a", count: 58) }.joined(separator: ".") + ".test"
        #expect(try dig(lab, c1, [long]).contains("status: REFUSED"))
        // Still serving.
        #expect(try dig(lab, c1, ["+short", "web"]).trimmed == "10.0.0.2")
        let counters = await server.counters()
        #expect(counters.formErr >= 1)
        #expect(counters.dropped >= 2)
    }
}

extension DNSServerTests {
    @Test func aTCPClientThatNeverReadsHoldsBoundedReplies() async throws {
        let lab = try Lab.create(name: "ovlt-dnsb\(UInt16.random(in: 1000...9999))", hosts: 1)
        defer { lab.destroy() }
        let (server, c1) = try await serving(lab, ResolverClient(networks: ["front"], mayForward: false))
        defer { Task { await server.shutdown() } }
        // `tasks.big` is answered with 100 addresses (about 1.7 KB over TCP). The client pipelines
        // 20,000 such queries (34 MB of replies) on one connection with a small receive buffer and
        // reads nothing for 3 s, then reads what it can.
        let script = """
            import socket, struct, time
            q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + b"\\x05tasks\\x03big\\x00" + struct.pack(">HH", 1, 1)
            frame = struct.pack(">H", len(q)) + q
            t = socket.socket()
            t.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            t.connect(("127.0.0.11", 53))
            t.settimeout(0.5)
            sent = 0
            start = time.time()
            while sent < 20000 and time.time() - start < 3:
                try:
                    t.sendall(frame * 100)
                    sent += 100
                except socket.timeout:
                    pass
            time.sleep(max(0, 3 - (time.time() - start)))
            print("sent", sent)
            """
        async let client = lab.run(["python3", "-c", script], in: c1, timeout: 30)
        let before = await server.counters()
        try await Task.sleep(for: .seconds(2))
        let during = await server.counters()
        let out = try await client
        // Far fewer replies made than queries sent: the server stopped reading the connection
        // once a window of replies waited (its 64 KiB high-water mark plus the socket's 64 KiB
        // send buffer, which the kernel may double: about 200 replies, not 20,000).
        let made = during.answered - before.answered
        #expect(made < 400, "\(made) replies made for a client that reads none (\(out.output.trimmed))")
        #expect(during.tcpPaused >= 1)
        print("a client that reads nothing: \(made) replies made; \(out.output.trimmed) queries")
        #expect(out.output.contains("sent"), "\(out.output)")
        // And everyone else is still served.
        #expect(try dig(lab, c1, ["+short", "web"]).trimmed == "10.0.0.2")
        #expect(try dig(lab, c1, ["+short", "+tcp", "web"]).trimmed == "10.0.0.2")
    }
}

extension DNSServerTests {
    @Test func oneContainerFloodingTheForwarderLeavesTheOthersTheirShare() async throws {
        let lab = try Lab.create(name: "ovlt-dnsf\(UInt16.random(in: 1000...9999))", hosts: 1)
        defer { lab.destroy() }
        let upstream = try FakeUpstream()
        defer { upstream.stop() }
        // A first upstream that takes queries and never answers: each forwarded query waits the
        // forward timeout there before dnsmasq (the second upstream) is asked.
        let hole = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(hole) }
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &sin) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(hole, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var bound = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(hole, $0, &len) } }
        let holePort = UInt16(bigEndian: bound.sin_port)
        var config = DNSServer.Configuration()
        config.upstreams = [Upstream(address: .v4(IPv4Address(127, 0, 0, 1)), port: holePort), upstream.upstream]
        config.forwardTimeout = .seconds(2)
        let server = DNSServer(configuration: config)
        try await server.start()
        defer { Task { await server.shutdown() } }
        let c1 = try lab.makeNamespace("c1")
        let c2 = try lab.makeNamespace("c2")
        for ns in [c1, c2] { try NetlinkSocket(namespace: ns).setUp("lo") }
        try await server.serve(container: "c1", namespace: c1, client: ResolverClient(networks: ["front"], mayForward: true))
        try await server.serve(container: "c2", namespace: c2, client: ResolverClient(networks: ["front"], mayForward: true))
        // c1 sends 2,000 queries for names only upstream knows (more than the server's 1,024
        // in flight), and counts the SERVFAILs that come back at once.
        let flood = """
            import socket, struct, time
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for i in range(2000):
                if i % 50 == 0:
                    time.sleep(0.005)
                name = b"".join(bytes([len(p)]) + p for p in [b"n%d" % i, b"flood", b"test"]) + b"\\x00"
                s.sendto(struct.pack(">HHHHHH", i, 0x0100, 1, 0, 0, 0) + name + struct.pack(">HH", 1, 1), ("127.0.0.11", 53))
            s.settimeout(0.5)
            fails = 0
            try:
                while True:
                    r = s.recv(4096)
                    if r[3] & 0x0f == 2:
                        fails += 1
            except socket.timeout:
                pass
            print("servfail", fails)
            """
        async let flooding = lab.run(["python3", "-c", flood], in: c1, timeout: 30)
        try await Task.sleep(for: .milliseconds(400))
        // Meanwhile c2's query is forwarded and answered (after the first upstream's timeout).
        let answer = try dig(lab, c2, ["+short", "+time=5", "upstream.test"]).trimmed
        let out = try await flooding
        #expect(answer == "203.0.113.7", "c2 got '\(answer)' while c1 flooded (\(out.output.trimmed))")
        let counters = await server.counters()
        // c1 held its share of 128 waiting; the rest of its flood (past the server's 1,024 in
        // flight, which would otherwise have refused c2 too) was refused at once. A busy machine
        // drops some of the flood in the kernel before the server reads it (the socket's buffer
        // overflows), so the server's own accounting is checked: every query it read was either
        // forwarded (c1's 128 and c2's one, one more should dig ask again) or refused over its
        // container's share.
        #expect(counters.queries > 1024 + 128, "the flood reached past the server's limit: \(counters)")
        #expect(counters.forwarded <= 128 + 2, "\(counters)")
        #expect(counters.overShare == counters.queries - counters.forwarded, "\(counters)")
        #expect(out.output.contains("servfail"), "\(out.output)")
    }
}

extension DNSServerTests {
    @Test func forwardedQueriesLeaveFromChangingPortsWithRandomIDs() async throws {
        let lab = try Lab.create(name: "ovlt-dnsp\(UInt16.random(in: 1000...9999))", hosts: 1)
        defer { lab.destroy() }
        // An upstream on the root namespace's loopback that answers NXDOMAIN to everything and
        // writes down the source port and ID of each query.
        let port = UInt16.random(in: 30000...39999)
        let log = "/tmp/ovlt-dnsp-\(port).log"
        let responder = Process()
        responder.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        responder.arguments = ["-c", """
            import socket, sys
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", \(port)))
            out = open(sys.argv[1], "w", buffering=1)
            while True:
                q, src = s.recvfrom(4096)
                out.write(f"{src[1]} {q[0] * 256 + q[1]}\\n")
                r = bytearray(q)
                r[2] |= 0x80
                r[3] = (r[3] & 0xf0) | 3
                s.sendto(bytes(r), src)
            """, log]
        try responder.run()
        defer { kill(responder.processIdentifier, SIGKILL); try? FileManager.default.removeItem(atPath: log) }
        usleep(300_000)
        var config = DNSServer.Configuration()
        config.upstreams = [Upstream(address: .v4(IPv4Address(127, 0, 0, 1)), port: port)]
        let (server, c1) = try await serving(lab, ResolverClient(networks: ["front"], mayForward: true), configuration: config)
        defer { Task { await server.shutdown() } }
        // 1,000 queries, one at a time.
        let ask = """
            import socket, struct
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(2)
            ok = 0
            for i in range(1000):
                name = b"".join(bytes([len(p)]) + p for p in [b"q%d" % i, b"example", b"test"]) + b"\\x00"
                s.sendto(struct.pack(">HHHHHH", i, 0x0100, 1, 0, 0, 0) + name + struct.pack(">HH", 1, 1), ("127.0.0.11", 53))
                r = s.recv(4096)
                ok += r[0] * 256 + r[1] == i and r[3] & 0x0f == 3
            print("answered", ok)
            """
        let out = try lab.run(["python3", "-c", ask], in: c1, timeout: 60)
        #expect(out.output.contains("answered 1000"), "\(out.output)")
        let seen = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").map { $0.split(separator: " ") }
        let ports = Set(seen.map { $0[0] }), ids = seen.map { UInt16($0[1])! }
        #expect(seen.count == 1000)
        // A socket of its own for every query, on a port the kernel picks at random (1,000 draws
        // from ~28,000 ports repeat a few at most)...
        #expect(ports.count >= 950, "\(ports.count) source ports for 1,000 queries")
        #expect(await server.counters().upstreamSockets == 1000)
        // ... and IDs that follow no visible pattern: none repeats its predecessor plus one, and
        // they spread over the whole 16-bit space.
        let steps = zip(ids.dropFirst(), ids).filter { $0.0 == $0.1 &+ 1 }.count
        #expect(steps < 5, "\(steps) IDs were their predecessor plus one")
        #expect(Set(ids.map { $0 >> 12 }).count == 16)
    }
}

extension String {
    var trimmed: String { trimmingCharacters(in: .whitespacesAndNewlines) }
}
