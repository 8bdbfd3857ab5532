import Foundation
import Glibc
import Testing
import OverlayCrypto
import OverlayModel
import OverlayTestKit
@testable import Gossip

/// A holder of the cluster's gossip key (not a node the manager knows) joins gossip from a host
/// of its own and publishes endpoint records: one under a real node's name pointing at its own
/// VTEP, one under its own name. Nodes must use neither: no DNS name, no peer, no traffic sent
/// to it. Two more under the real node's name at that node's own VTEP (so the VTEP check passes),
/// one unsigned and one with a signature that is not the node's: refused too, no name. It also
/// publishes records that do not decode (not JSON; an address that does not
/// parse) under a real node's name: each is a counted drop, and the node goes on working.
@Suite(.serialized) struct RogueGossipLabTests {
    @Test func aGossipKeyHolderCannotPublishEndpointsForAnotherNodeOrItself() async throws {
        guard getuid() == 0 else {
            Issue.record("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
            return
        }
        let lab = try CLILab.up("ovlt-sec6", hosts: 2)
        defer { lab.down() }
        try lab.join(["h2"], token: try lab.initSwarm())
        _ = try lab.must("h1", ["network", "create", "-d", "overlay", "--attachable", "--subnet", "10.37.0.0/24", "web"])
        _ = try lab.must("h1", ["run", "-d", "--name", "c1", "--network", "web", "--", "sleep", "infinity"])
        let h2 = try jsonLines(try lab.must("h1", ["node", "ls", "--format", "json"]))
        let h2ID = h2.first { $0["hostname"] as? String == "h2" }!["id"] as! String

        // The rogue: this test process, plugged into the lab's underlay at 198.18.0.200.
        let (outside, inside) = ("ovls6r", "ovls6p")
        _ = try? Command.run(["ip", "link", "del", outside])
        for step in [["ip", "link", "add", outside, "type", "veth", "peer", "name", inside],
                     ["ip", "link", "set", inside, "netns", "\(lab.name)-sw"],
                     ["ip", "-n", "\(lab.name)-sw", "link", "set", inside, "master", "lab0", "up"],
                     ["ip", "addr", "add", "198.18.0.200/15", "dev", outside],
                     ["ip", "link", "set", outside, "up"]] {
            let r = try Command.run(step)
            #expect(r.succeeded, "\(step.joined(separator: " ")): \(r.output)")
        }
        defer { _ = try? Command.run(["ip", "link", "del", outside]) }
        // It holds the cluster's gossip keys (read here from the manager's store).
        let read = try Command.run(["python3", "-c", """
            import json, sqlite3, sys
            c = sqlite3.connect(sys.argv[1])
            print(" ".join(json.loads(c.execute("select json from object where kind='cluster-setting' and key='manager'").fetchone()[0])["gossipKeys"]))
            """, "/run/\(lab.name)/h1/overlayd.db"])
        let keys = read.output.split(whereSeparator: \.isWhitespace).compactMap { Data(base64Encoded: String($0)) }.map { SecretKey(bytes: $0) }
        #expect(keys.count == 3, "\(read.output)")
        let ring = try Keyring(primary: keys[keys.count / 2], others: keys.enumerated().filter { $0.offset != keys.count / 2 }.map(\.element))
        var swim = SwimConfig(name: "rogue", advertise: NodeAddress(ip: IPAddress("198.18.0.200")!, port: 7946), versions: .plainMemberlist)
        swim.probeInterval = .milliseconds(200)
        swim.probeTimeout = .milliseconds(100)
        swim.gossipInterval = .milliseconds(50)
        let rogue = try NetworkDB(configuration: GossipConfiguration(swim: swim, bindHost: "198.18.0.200", bindPort: 7946, keyring: ring),
                                  tables: NetworkDBConfig(nodeName: "rogue"))
        try await rogue.start()
        defer { Task { try? await rogue.shutdown() } }
        #expect(try await rogue.join([NodeAddress(ip: IPAddress("198.18.0.1")!, port: 7946)]) == 1)
        rogue.joinNetwork("web")
        try await Task.sleep(for: .seconds(1))

        // Two forged endpoint records on `web`, both at the rogue's VTEP.
        @Sendable func record(_ id: String, _ name: String, _ last: Int, vtep: String = "198.18.0.200", signature: String? = nil) -> [UInt8] {
            let signed = signature.map { #","signature":"\#($0)""# } ?? ""
            let json = #"{"address":"10.37.0.\#(last)","id":"\#(id)","mac":"02:42:0a:25:00:\#(String(last, radix: 16))","name":"\#(name)"\#(signed),"vtep":"\#(vtep)"}"#
            return Array(json.utf8)
        }
        // Sent to h1 over gossip TCP (encrypted with the cluster's key) every 200 ms, each round with
        // a newer Lamport time, for the whole test: h2's own bulk syncs say the record under its
        // name is not h2's and remove it, so a real attacker keeps re-sending. A thread of its own
        // sends them, so the other suites running beside this one cannot hold it up.
        let base = UInt64(Date().timeIntervalSince1970 * 1000)
        let sender = RawSender()
        let forged = [(h2ID, "forged-h2", "evil", 99), ("rogue", "forged-self", "evil2", 98)].map { (owner: $0.0, id: $0.1, name: $0.2, last: $0.3) }
        let garbled: [(id: String, value: [UInt8])] = [
            ("garbled-json", Array("{\"address\":".utf8)),
            ("garbled-address", Array(String(decoding: record("garbled-address", "evil3", 97), as: UTF8.self)
                .replacingOccurrences(of: "10.37.0.97", with: "10.37.0.300").utf8)),
        ]
        let atH2 = [(h2ID, "forged-h2-unsigned", record("forged-h2-unsigned", "evil5", 95, vtep: "198.18.0.2")),
                    (h2ID, "forged-h2-signed", record("forged-h2-signed", "evil4", 96, vtep: "198.18.0.2",
                                                      signature: Data(repeating: 7, count: 64).base64EncodedString()))]
        let payloads: @Sendable (UInt64) -> [[UInt8]] = { round in
            let values = forged.map { (owner: $0.owner, id: $0.id, value: record($0.id, $0.name, $0.last)) }
                + atH2.map { (owner: $0.0, id: $0.1, value: $0.2) }
                + garbled.map { (owner: h2ID, id: $0.id, value: $0.value) }
            // And one whose Lamport time would wrap every clock that took it.
            let wrap = EntryRecord(owner: h2ID, network: "web", table: "endpoint_table", key: "forged-clock",
                                   value: record("forged-clock", "evil6", 94, vtep: "198.18.0.2"), ltime: .max, deleted: false)
            return values.compactMap { f in
                let entry = EntryRecord(owner: f.owner, network: "web", table: "endpoint_table", key: f.id, value: f.value,
                                        ltime: base + round * 1_000_000_000, deleted: false)
                return try? StreamCodec.encodeUser(TableWire.encode(.entry(entry)), keyring: ring)
            } + [try? StreamCodec.encodeUser(TableWire.encode(.entry(wrap)), keyring: ring)].compactMap { $0 }
        }
        sender.start(to: "198.18.0.1", port: 7946, every: 200_000, payloads: payloads)
        defer { sender.stop() }
        // Both reach h1's gossip table ...
        var seen: Set<String> = []
        var inspect = ""
        let deadline = Date().addingTimeInterval(30)
        let ids = ["forged-h2", "forged-self", "forged-h2-unsigned", "forged-h2-signed"]
        while seen.count < ids.count && Date() < deadline {
            inspect = try lab.must("h1", ["network", "inspect", "-v", "web"])
            for id in ids where inspect.contains("\"\(id)\"") { seen.insert(id) }
            if seen.count < ids.count { usleep(100_000) }
        }
        let members = try await rogue.node.members().map { "\($0.name)=\($0.state)" }
        #expect(seen.count == ids.count, "forged records seen on h1: \(seen) (the rogue sees \(members)): \(inspect.suffix(800))")
        usleep(500_000)
        // ... but were refused: no name, and nothing is sent to the rogue's VTEP.
        let log = (try? String(contentsOfFile: "/run/\(lab.name)/h1/overlayd.log", encoding: .utf8)) ?? ""
        #expect(log.contains("refused endpoint record forged-h2 ") && log.contains("refused endpoint record forged-self"))
        #expect(log.contains("refused endpoint record forged-h2-unsigned on web from \(h2ID): it is not signed by its owner"))
        #expect(log.contains("refused endpoint record forged-h2-signed on web from \(h2ID): its signature is not its owner's"))
        // The garbled ones were counted drops (in the log and in `info`), and h1 still answers.
        #expect(log.contains("ignored malformed endpoint record garbled-json on web")
                    && log.contains("ignored malformed endpoint record garbled-address on web"))
        let info = try JSONSerialization.jsonObject(with: Data(try lab.must("h1", ["info"]).utf8)) as? [String: Any] ?? [:]
        #expect((info["malformedEndpointRecords"] as? Int ?? 0) >= 2 && (info["refusedEndpointRecords"] as? Int ?? 0) >= 4,
                "h1's counts: \(info)")
        // The time of UInt64.max was refused before anything else was looked at: counted, and the
        // record is not in the table at all.
        #expect((info["rejectedClockMessages"] as? Int ?? 0) >= 1, "h1's counts: \(info)")
        #expect(!(try lab.must("h1", ["network", "inspect", "-v", "web"])).contains("forged-clock"))
        // (`name.network` is the cluster's own: answered from the names alone, never forwarded.)
        for _ in 0..<3 {
            for name in ["evil.web", "evil2.web", "evil4.web", "evil5.web", "evil6.web"] {
                let answer = try lab.on("h1", ["exec", "c1", "--", "dig", "@127.0.0.11", "+time=5", "+tries=1", name])
                #expect(answer.output.contains("status: NXDOMAIN") && !answer.output.contains("10.37.0.9"), "\(name) resolves: \(answer.output)")
            }
            usleep(300_000)
        }
        let capture = "/run/\(lab.name)/rogue.pcap"
        let dump = try Child.capture(["tcpdump", "-i", outside, "-n", "-U", "-w", capture, "udp port 4789"], log: "/run/\(lab.name)/tcpdump.log")
        _ = try lab.on("h1", ["exec", "c1", "--", "ping", "-c", "10", "-i", "0.2", "-W", "1", "10.37.0.99"])
        _ = try lab.on("h1", ["exec", "c1", "--", "ping", "-c", "10", "-i", "0.2", "-W", "1", "10.37.0.98"])
        usleep(300_000)
        dump.finishCapture()
        let sent = try Command.run(["tcpdump", "-n", "-r", capture], timeout: 20).output
        #expect(!sent.contains("198.18.0.200.4789"), "h1 sent overlay traffic to the rogue: \(sent.prefix(500))")
        // The real node's own endpoints still work: h2 joins with a container, c1 reaches it.
        _ = try lab.must("h2", ["run", "-d", "--name", "c2", "--network", "web", "--", "sleep", "infinity"])
        let ip2 = try lab.ip("h2", "c2", network: "web")
        #expect(try lab.pings("h1", "c1", ip2), "c1 cannot reach c2 (\(ip2))")

        // Nor can the rogue take h2's endpoint away: a tombstone of c2's record, a leave of `web`
        // and a bulk sync naming nothing, all under h2's name, for 2 s.
        let c2Inspect = try JSONSerialization.jsonObject(with: Data(try lab.must("h2", ["inspect", "c2"]).utf8)) as! [[String: Any]]
        let c2Endpoint = (((c2Inspect[0]["NetworkSettings"] as! [String: Any])["Networks"] as! [String: Any])["web"] as! [String: Any])["EndpointID"] as! String
        sender.stop()
        let later = UInt64(Date().timeIntervalSince1970 * 1000) + 10_000_000
        let takers: [TableMessage] = [
            .entry(EntryRecord(owner: h2ID, network: "web", table: "endpoint_table", key: c2Endpoint, value: [], ltime: later, deleted: true)),
            .network(NetworkRecord(node: h2ID, network: "web", ltime: later, leaving: true)),
            .bulk(BulkRecord(node: h2ID, network: "web", ltime: later, reply: false, entries: [])),
        ]
        let taker = RawSender()
        taker.start(to: "198.18.0.1", port: 7946, every: 200_000) { round in
            takers.compactMap { try? StreamCodec.encodeUser(TableWire.encode($0), keyring: ring) }
        }
        usleep(2_000_000)
        taker.stop()
        let after = try JSONSerialization.jsonObject(with: Data(try lab.must("h1", ["info"]).utf8)) as? [String: Any] ?? [:]
        #expect((after["unauthenticatedTableMessages"] as? Int ?? 0) >= 3, "h1's counts: \(after)")
        #expect(try lab.pings("h1", "c1", ip2, tries: 3), "c1 lost c2 (\(ip2)) to forged deletes")
        let name = try lab.on("h1", ["exec", "c1", "--", "dig", "+short", "+tries=1", "c2.web"])
        #expect(name.output.trimmingCharacters(in: .whitespacesAndNewlines) == ip2, "c2.web: \(name.output)")
    }
}

/// Sends byte strings to a TCP address from a thread of its own, one connection each, again and
/// again until stopped.
final class RawSender: @unchecked Sendable {
    // @unchecked: `stopped` is guarded by `lock`; the thread reads it, `stop` writes it.
    private let lock = NSLock()
    private var stopped = false

    func start(to host: String, port: UInt16, every micros: UInt32, payloads: @escaping @Sendable (UInt64) -> [[UInt8]]) {
        let thread = Thread { [self] in
            var round: UInt64 = 1
            while !lock.withLock({ stopped }) {
                for bytes in payloads(round) { Self.send(bytes, to: host, port: port) }
                round += 1
                usleep(micros)
            }
        }
        thread.start()
    }

    func stop() { lock.withLock { stopped = true } }

    static func send(_ bytes: [UInt8], to host: String, port: UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        sin.sin_addr.s_addr = inet_addr(host)
        let connected = withUnsafePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { return }
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        usleep(20_000)   // let the node read it before the close
    }
}
