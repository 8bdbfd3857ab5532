import Foundation
import Synchronization
import Testing
import OverlayModel
@testable import Gossip

/// Several `NetworkDBCore`s wired together by a deterministic in-memory message queue.
struct TableSim {
    var cores: [String: NetworkDBCore] = [:]
    var queue: [(to: String, bytes: [UInt8])] = []
    var changes: [String: [TableChange]] = [:]
    var memberships: [String: [NetworkMembershipEvent]] = [:]
    var down: Set<String> = []
    var now: Duration = .zero

    static func config(_ name: String) -> NetworkDBConfig {
        NetworkDBConfig(nodeName: name, reapInterval: .seconds(60), bulkSyncInterval: .seconds(30))
    }

    init(_ names: [String]) {
        for n in names { add(n, clock: 0) }
        for a in names { for b in names where a != b { run(a) { $0.nodeAlive(b, address: Self.address(b), now: .zero) } } }
    }

    static func address(_ name: String) -> NodeAddress {
        NodeAddress(ip: .v4(IPv4Address(127, 0, 0, UInt8(truncatingIfNeeded: name.utf8.reduce(0) { $0 &+ Int($1) }))), port: 7946)
    }

    mutating func add(_ name: String, clock: UInt64) {
        cores[name] = NetworkDBCore(config: Self.config(name), clock: clock)
    }

    mutating func run(_ name: String, _ body: (inout NetworkDBCore) throws -> [NetworkDBDirective]) rethrows {
        let out = try body(&cores[name]!)
        for d in out {
            switch d {
            case .send(let to, _, let bytes): queue.append((to, bytes))
            case .broadcast(let bytes): for other in cores.keys.sorted() where other != name { queue.append((other, bytes)) }
            case .change(let c): changes[name, default: []].append(c)
            case .membership(let m): memberships[name, default: []].append(m)
            }
        }
    }

    /// Delivers queued messages (and what they cause) until none are left.
    mutating func settle() {
        var steps = 0
        while !queue.isEmpty && steps < 10_000 {
            let (to, bytes) = queue.removeFirst()
            steps += 1
            if down.contains(to) || cores[to] == nil { continue }
            let now = self.now
            run(to) { $0.receive(bytes, now: now) }
        }
    }

    /// Cluster membership: `name` is gone (as the gossip layer would report on every other node).
    mutating func fail(_ name: String) {
        down.insert(name)
        let now = self.now
        for other in cores.keys.sorted() where other != name && !down.contains(other) { run(other) { $0.nodeGone(name, now: now) } }
    }

    mutating func revive(_ name: String) {
        down.remove(name)
        let now = self.now
        for other in cores.keys.sorted() where other != name {
            run(other) { $0.nodeAlive(name, address: Self.address(name), now: now) }
            run(name) { $0.nodeAlive(other, address: Self.address(other), now: now) }
            let state = cores[other]!.localState()   // the join push-pull
            run(name) { $0.receive(state, now: now) }
        }
        settle()
    }

    func keys(_ node: String, _ network: String = "n1") -> [String] {
        cores[node]!.visibleEntries(network: network).map { "\($0.key)=\(String(decoding: $0.value, as: UTF8.self))@\($0.owner)" }
    }
}

@Suite struct NetworkDBCoreTests {
    @Test func entriesReachOnlyNetworkMembers() throws {
        var sim = TableSim(["a", "b", "c", "d"])
        for n in ["a", "b", "c"] { sim.run(n) { $0.joinNetwork("n1", now: .zero) } }
        sim.settle()
        #expect(sim.cores["a"]!.members(of: "n1") == ["a", "b", "c"])
        try sim.run("a") { try $0.createEntry(network: "n1", table: "t", key: "k1", value: Array("v1".utf8), now: .zero) }
        sim.settle()
        #expect(sim.keys("b") == ["k1=v1@a"])
        #expect(sim.keys("c") == ["k1=v1@a"])
        #expect(sim.keys("d").isEmpty)
        #expect(sim.cores["d"]!.storedEntries == 0)
        #expect(sim.changes["b"]?.map(\.description) == ["create n1/t/k1 by a"])

        try sim.run("b") { try $0.updateEntry(network: "n1", table: "t", key: "k1", value: Array("v2".utf8), now: .zero) }
        sim.settle()
        #expect(sim.keys("a") == ["k1=v2@b"])
        #expect(sim.keys("c") == ["k1=v2@b"])
        #expect(sim.changes["c"]?.map(\.kind) == [.create, .update])

        try sim.run("a") { try $0.deleteEntry(network: "n1", table: "t", key: "k1", now: .zero) }
        sim.settle()
        #expect(sim.keys("b").isEmpty && sim.keys("c").isEmpty)
        #expect(sim.changes["c"]?.last?.kind == .delete)
        #expect(sim.cores["c"]!.storedEntries == 1)   // the tombstone
        // Writing to a network one is not in, or creating twice, is refused.
        #expect(throws: GossipError.self) { try sim.run("d") { try $0.createEntry(network: "n1", table: "t", key: "x", value: [], now: .zero) } }
        try sim.run("a") { try $0.createEntry(network: "n1", table: "t", key: "k2", value: [], now: .zero) }
        #expect(throws: GossipError.self) { try sim.run("a") { try $0.createEntry(network: "n1", table: "t", key: "k2", value: [], now: .zero) } }
        // Tombstones go after the reap interval.
        sim.now = .seconds(61)
        let now = sim.now
        sim.run("c") { $0.onTick(now: now) }
        #expect(sim.cores["c"]!.storedEntries == 0)
    }

    @Test func lateJoinerGetsBulkSyncAndLeaverIsForgotten() throws {
        var sim = TableSim(["a", "b", "c"])
        sim.run("a") { $0.joinNetwork("n1", now: .zero) }
        sim.run("b") { $0.joinNetwork("n1", now: .zero) }
        sim.settle()
        try sim.run("a") { try $0.createEntry(network: "n1", table: "t", key: "ka", value: Array("1".utf8), now: .zero) }
        try sim.run("b") { try $0.createEntry(network: "n1", table: "t", key: "kb", value: Array("2".utf8), now: .zero) }
        sim.settle()
        sim.run("c") { $0.joinNetwork("n1", now: .zero) }
        sim.settle()
        #expect(sim.keys("c") == ["ka=1@a", "kb=2@b"])
        #expect(sim.memberships["a"]?.contains(.joined(network: "n1", node: "c")) == true)
        // b leaves the network: its entries disappear everywhere, and it forgets the network.
        sim.run("b") { $0.leaveNetwork("n1", now: .zero) }
        sim.settle()
        #expect(sim.keys("a") == ["ka=1@a"])
        #expect(sim.keys("c") == ["ka=1@a"])
        #expect(sim.keys("b").isEmpty)
        #expect(sim.memberships["c"]?.last == .left(network: "n1", node: "b"))
    }

    @Test func failedNodeIsWithdrawnAndRestoredOnReturn() throws {
        var sim = TableSim(["a", "b", "c"])
        for n in ["a", "b", "c"] { sim.run(n) { $0.joinNetwork("n1", now: .zero) } }
        sim.settle()
        try sim.run("a") { try $0.createEntry(network: "n1", table: "t", key: "ka", value: Array("1".utf8), now: .zero) }
        sim.settle()
        sim.fail("a")
        #expect(sim.keys("b").isEmpty && sim.keys("c").isEmpty)
        #expect(sim.changes["b"]?.last?.description == "delete n1/t/ka by a")
        #expect(sim.cores["b"]!.members(of: "n1") == ["b", "c"])
        // A late write from the dead node does not resurrect anything.
        let late = TableWire.encode(.entry(EntryRecord(owner: "a", network: "n1", table: "t", key: "late", value: [], ltime: 1 << 40, deleted: false)))
        sim.run("b") { $0.receive(late, now: .zero) }
        #expect(sim.keys("b").isEmpty)
        // Back before the reap: it answers the bulk syncs and the entry is visible again.
        sim.revive("a")
        #expect(sim.keys("b") == ["ka=1@a"])
        #expect(sim.keys("c") == ["ka=1@a"])
        #expect(sim.changes["c"]?.map(\.kind) == [.create, .delete, .create])
        // Gone for longer than the reap interval: the withdrawn entry is forgotten.
        sim.fail("a")
        sim.now = .seconds(120)
        let now = sim.now
        sim.run("b") { $0.onTick(now: now) }
        #expect(sim.cores["b"]!.storedEntries == 0)
    }

    @Test func restartedNodeReplacesItsOldEntries() throws {
        var sim = TableSim(["a", "b"])
        for n in ["a", "b"] { sim.run(n) { $0.joinNetwork("n1", now: .zero) } }
        sim.settle()
        try sim.run("a") { try $0.createEntry(network: "n1", table: "t", key: "old", value: Array("1".utf8), now: .zero) }
        try sim.run("a") { try $0.createEntry(network: "n1", table: "t", key: "same", value: Array("1".utf8), now: .zero) }
        sim.settle()
        sim.fail("a")
        // A new process with the same name, a later clock and fresh state.
        sim.add("a", clock: 1_000_000)
        sim.revive("a")
        sim.run("a") { $0.joinNetwork("n1", now: .zero) }
        try sim.run("a") { try $0.createEntry(network: "n1", table: "t", key: "same", value: Array("2".utf8), now: .zero) }
        sim.settle()
        #expect(sim.keys("b") == ["same=2@a"])
        #expect(sim.keys("a") == ["same=2@a"])
    }

    @Test func periodicBulkSyncRepairsLostMessages() throws {
        var sim = TableSim(["a", "b"])
        for n in ["a", "b"] { sim.run(n) { $0.joinNetwork("n1", now: .zero) } }
        sim.settle()
        sim.run("a") { $0.onTick(now: .zero) }
        try sim.run("a") { try $0.createEntry(network: "n1", table: "t", key: "k", value: [1], now: .zero) }
        sim.queue.removeAll()   // lost
        #expect(sim.keys("b").isEmpty)
        sim.run("a") { $0.onTick(now: .seconds(10)) }
        sim.settle()
        #expect(sim.keys("b").isEmpty)
        sim.run("a") { $0.onTick(now: .seconds(31)) }
        sim.settle()
        #expect(sim.keys("b") == ["k=\u{1}@a"])
    }

    @Test func pushPullStateCarriesMemberships() {
        var a = NetworkDBCore(config: TableSim.config("a"))
        var b = NetworkDBCore(config: TableSim.config("b"))
        _ = a.joinNetwork("n1", now: .zero)
        _ = a.joinNetwork("n2", now: .zero)
        _ = b.joinNetwork("n2", now: .zero)
        _ = b.nodeAlive("a", address: TableSim.address("a"), now: .zero)
        let out = b.receive(a.localState(), now: .zero)
        #expect(b.members(of: "n2") == ["a", "b"])
        #expect(b.members(of: "n1") == ["a"])
        #expect(out.contains(.membership(.joined(network: "n2", node: "a"))))
        #expect(b.clock >= a.clock)
    }

    @Test func aLamportTimeFarAheadIsRefusedAndTheClockKept() {
        let start: UInt64 = 1_765_000_000_000   // Unix milliseconds, as the daemon seeds it
        var core = NetworkDBCore(config: TableSim.config("a"), clock: start)
        _ = core.joinNetwork("n1", now: .zero)
        _ = core.nodeAlive("x", address: TableSim.address("x"), now: .zero)
        let before = core.clock
        func entry(_ key: String, _ ltime: UInt64) -> [UInt8] {
            TableWire.encode(.entry(EntryRecord(owner: "x", network: "n1", table: "t", key: key, value: [1], ltime: ltime, deleted: false)))
        }
        // UInt64.max would wrap every clock it reached on the next tick: refused, counted, not applied.
        #expect(core.receive(entry("evil", .max), now: .zero).isEmpty)
        #expect(core.clock == before)
        #expect(core.rejectedClocks == 1)
        // So is a time just past the allowed lead, in any message kind.
        let far = before + core.config.maxClockLead + 1
        #expect(core.receive(entry("far", far), now: .zero).isEmpty)
        #expect(core.receive(TableWire.encode(.network(NetworkRecord(node: "x", network: "n2", ltime: far, leaving: false))), now: .zero).isEmpty)
        #expect(core.rejectedClocks == 3)
        #expect(core.clock == before)
        #expect(core.visibleEntries(network: "n1", table: "t").isEmpty)
        // An honest time ahead (another node seeded later, or busier) is taken, and the clock follows it.
        let ahead = before + 86_400_000
        #expect(!core.receive(entry("ok", ahead), now: .zero).isEmpty)
        #expect(core.clock == ahead)
        #expect(core.visibleEntries(network: "n1", table: "t").map(\.key) == ["ok"])
        // A node seeded at zero (the library's default) still takes a wall-clock seeded peer's time.
        var fresh = NetworkDBCore(config: TableSim.config("b"))
        _ = fresh.joinNetwork("n1", now: .zero)
        _ = fresh.nodeAlive("x", address: TableSim.address("x"), now: .zero)
        #expect(!fresh.receive(entry("k", start), now: .zero).isEmpty)
        #expect(fresh.rejectedClocks == 0)
    }

    @Test func aRunOfTimesEachAsFarAheadAsAllowedCannotRatchetTheClock() {
        let start: UInt64 = 1_765_000_000_000
        var core = NetworkDBCore(config: TableSim.config("a"), clock: start)
        _ = core.joinNetwork("n1", now: .zero)
        _ = core.nodeAlive("x", address: TableSim.address("x"), now: .zero)
        let lead = core.config.maxClockLead
        func entry(_ key: String, _ ltime: UInt64) -> [UInt8] {
            TableWire.encode(.entry(EntryRecord(owner: "x", network: "n1", table: "t", key: key, value: [1], ltime: ltime, deleted: false)))
        }
        // A peer a day ahead (seeded later, or busier) is taken...
        let first = core.clock + 86_400_000
        #expect(!core.receive(entry("k0", first), now: .zero).isEmpty)
        #expect(core.clock == first)
        // ...but a run of times, each the whole lead ahead of the last, is measured from this
        // node's own clock: refused from the first.
        // Without it, 2^62 / 2^44 = 262,144 such records in one message would reach the ceiling,
        // and every node that took them would then refuse every honest peer.
        for i in 1...1_000 {
            #expect(core.receive(entry("k\(i)", first + UInt64(i) * lead), now: .zero).isEmpty)
        }
        #expect(core.rejectedClocks == 1_000)
        #expect(core.clock == first)
        // Honest peers, just behind or ahead of the clock taken, are still heard.
        #expect(!core.receive(entry("honest", first + 5), now: .zero).isEmpty)
        // A time at the very edge of the lead is taken, but the clock moves at most half the lead
        // past this node's own: one message cannot push it where every other node refuses it.
        #expect(!core.receive(entry("edge", core.ownClock + lead - 1), now: .zero).isEmpty)
        #expect(core.clock <= core.ownClock + lead / 2)
    }

    /// A toy signature: the signer's name and an FNV-1a hash of the message.
    static func toySign(_ node: String, _ message: [UInt8]) -> [UInt8] {
        let h = message.reduce(UInt64(0xcbf2_9ce4_8422_2325)) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
        return Array("\(node):".utf8) + withUnsafeBytes(of: h) { Array($0) }
    }

    @Test func onlyANodeItselfTakesItsEntriesAway() throws {
        var sim = TableSim(["a", "b", "x"])
        for n in ["a", "b", "x"] {
            sim.cores[n]!.authenticator = TableAuthenticator(sign: { Self.toySign(n, $0) },
                                                             verify: { node, message, signature in signature == Self.toySign(node, message) })
            sim.run(n) { $0.joinNetwork("n1", now: .zero) }
        }
        sim.settle()
        try sim.run("a") { try $0.createEntry(network: "n1", table: "t", key: "k1", value: Array("v1".utf8), now: .zero) }
        try sim.run("a") { try $0.createEntry(network: "n1", table: "t", key: "k2", value: Array("v2".utf8), now: .zero) }
        sim.settle()
        #expect(sim.keys("b") == ["k1=v1@a", "k2=v2@a"])
        // x holds the gossip key but not a's: a tombstone of a's entry (unsigned, then signed by
        // x), a leave of a's, and a bulk sync of a's naming nothing are all refused by b.
        let t = sim.cores["b"]!.clock + 1000
        let forged: [TableMessage] = [
            .entry(EntryRecord(owner: "a", network: "n1", table: "t", key: "k1", value: [], ltime: t, deleted: true)),
            .entry(EntryRecord(owner: "a", network: "n1", table: "t", key: "k1", value: [], ltime: t, deleted: true,
                               signature: Self.toySign("x", TableAuthenticator.tombstone(
                                   EntryRecord(owner: "a", network: "n1", table: "t", key: "k1", value: [], ltime: t, deleted: true))))),
            .network(NetworkRecord(node: "a", network: "n1", ltime: t, leaving: true)),
            .bulk(BulkRecord(node: "a", network: "n1", ltime: t, reply: false, entries: [])),
        ]
        for m in forged { sim.run("b") { $0.receive(TableWire.encode(m), now: .zero) } }
        sim.settle()
        #expect(sim.keys("b") == ["k1=v1@a", "k2=v2@a"])
        #expect(sim.cores["b"]!.members(of: "n1") == ["a", "b", "x"])
        #expect(sim.cores["b"]!.unauthenticated == 4)
        // A real bulk sync of a's, taken by x and passed on with its entries' owner changed (so
        // none would count as a's): its implicit deletes are not taken either.
        var sent: [UInt8] = []
        for d in sim.cores["a"]!.bulk(network: "n1", to: "x", reply: false) { if case .send(_, _, let bytes) = d { sent = bytes } }
        guard case .bulk(var stolen)? = TableWire.decode(sent) else { Issue.record("no bulk"); return }
        stolen.entries = stolen.entries.map { var e = $0; e.owner = "x"; return e }
        sim.run("b") { $0.receive(TableWire.encode(.bulk(stolen)), now: .zero) }
        #expect(sim.keys("b") == ["k1=v1@a", "k2=v2@a"])
        // And with the signature checked over its entries' owners and networks, even an honest
        // looking one is refused when they were changed.
        #expect(!(sim.cores["b"]!.authenticator!.verify("a", TableAuthenticator.bulk(stolen), stolen.signature)))
        // a itself: its delete, its bulk sync without k2 (after a lost delete), its leave.
        try sim.run("a") { try $0.deleteEntry(network: "n1", table: "t", key: "k1", now: .zero) }
        sim.settle()
        #expect(sim.keys("b") == ["k2=v2@a"])
        sim.cores["a"]!.entries[NetworkDBCore.EntryID(network: "n1", table: "t", key: "k2")] = nil
        sim.run("a") { $0.bulk(network: "n1", to: "b", reply: false) }
        sim.settle()
        #expect(sim.keys("b").isEmpty)
        try sim.run("a") { try $0.createEntry(network: "n1", table: "t", key: "k3", value: Array("v3".utf8), now: .zero) }
        sim.settle()
        sim.run("a") { $0.leaveNetwork("n1", now: .zero) }
        sim.settle()
        #expect(sim.keys("b").isEmpty && sim.cores["b"]!.members(of: "n1") == ["b", "x"])
        #expect(sim.cores["b"]!.unauthenticated == 4)
        // The leave, signed by a, is passed on in b's push-pull state and taken by a newcomer.
        var c = NetworkDBCore(config: TableSim.config("c"))
        c.authenticator = TableAuthenticator(sign: { Self.toySign("c", $0) }, verify: { node, m, sig in sig == Self.toySign(node, m) })
        _ = c.receive(sim.cores["b"]!.localState(), now: .zero)
        #expect(c.unauthenticated == 0)
    }

    @Test func malformedMessagesAreCountedAndDropped() {
        var core = NetworkDBCore(config: TableSim.config("a"))
        _ = core.joinNetwork("n1", now: .zero)
        var rng = SystemRandomNumberGenerator()
        var valid = TableWire.encode(.entry(EntryRecord(owner: "x", network: "n1", table: "t", key: "k", value: [1, 2], ltime: 5, deleted: false)))
        let samples: [[UInt8]] = [
            TableWire.prefix, TableWire.prefix + [0x90], TableWire.prefix + [0x92, 0x03, 0xc0], TableWire.prefix + [0xdd, 0xff, 0xff, 0xff, 0xff],
            TableWire.prefix + MsgPack.encode(.array([.uint(3), .array([.string(""), .string("n1"), .string("t"), .string("k"), .bin([]), .uint(1), .bool(false)])])),
            Array(valid.dropLast()),
        ]
        for s in samples { #expect(core.receive(s, now: .zero).isEmpty) }
        #expect(core.malformedMessages == samples.count)
        for _ in 0 ..< 2000 {   // random corruption of a valid message: never a crash
            var m = valid
            m[Int.random(in: 3 ..< m.count, using: &rng)] = UInt8.random(in: 0 ... 255, using: &rng)
            _ = core.receive(m, now: .zero)
        }
        #expect(core.malformedMessages > samples.count)
        valid[3] = 0x00   // not an array
        let before = core.malformedMessages
        #expect(core.receive(valid, now: .zero).isEmpty)
        #expect(core.malformedMessages == before + 1)
    }
}

@Suite(.serialized) struct NetworkDBNodeTests {
    /// A database that was shut down is freed with its gossip node (a daemon makes a new pair at
    /// every `swarm join`): the node's hooks held the database strongly, and the database holds
    /// the node, so every leave and join kept the old pair and its tables (chaos-soak saw a
    /// worker's RSS grow 22% in four leave-and-joins).
    @Test func aShutDownDatabaseAndItsNodeAreFreed() async throws {
        weak var weakDB: NetworkDB?
        weak var weakNode: GossipNode?
        do {
            let ip = uniqueLoopback()
            let db = try NetworkDB(configuration: GossipConfiguration(swim: fastSwim("f1", NodeAddress(ip: ip, port: 7946))),
                                   tables: NetworkDBConfig(nodeName: "f1", tickInterval: .milliseconds(50)))
            try await db.start()
            db.joinNetwork("demo")
            try db.createEntry(network: "demo", table: "endpoint_table", key: "ep1", value: Array("hello".utf8))
            weakDB = db
            weakNode = db.node
            try await db.shutdown(leave: false)
        }
        // Its tasks end on their next wake-up.
        #expect(try await waitUntil(.seconds(5)) { weakDB == nil && weakNode == nil },
                "still alive after shutdown: database \(weakDB != nil), node \(weakNode != nil)")
    }

    @Test func threeNodesOnLoopbackShareAWithdrawAndRestore() async throws {
        let ips = (0 ..< 3).map { _ in uniqueLoopback() }
        let names = ["t1", "t2", "t3"]
        func make(_ i: Int) throws -> NetworkDB {
            var cfg = GossipConfiguration(swim: fastSwim(names[i], NodeAddress(ip: ips[i], port: 7946)))
            cfg.swim.pushPullInterval = .seconds(2)
            return try NetworkDB(configuration: cfg, tables: NetworkDBConfig(
                nodeName: names[i], reapInterval: .seconds(30), bulkSyncInterval: .seconds(2), tickInterval: .milliseconds(100)))
        }
        var dbs = try (0 ..< 3).map(make)
        for db in dbs { try await db.start() }
        var stopped = [false, false, false]
        defer { for (i, db) in dbs.enumerated() where !stopped[i] { Task { try? await db.shutdown(leave: false) } } }
        let seed = NodeAddress(ip: ips[0], port: 7946)
        try await dbs[1].join([seed])
        try await dbs[2].join([seed])
        for db in dbs { db.joinNetwork("demo") }
        let watch = dbs[2].watch(network: "demo", table: "endpoint_table")
        let seen = Collector<TableChange>()
        let watcher = Task { for await c in watch { seen.add(c) } }
        defer { watcher.cancel() }

        // Precondition: t1 knows who is on the network (the join spreads by gossip; on a loaded
        // machine that can take a few rounds). An entry is pushed to the members known then.
        #expect(try await waitUntil(.seconds(10)) { dbs.allSatisfy { $0.networkMembers("demo") == names } })
        let start = ContinuousClock.now
        try dbs[0].createEntry(network: "demo", table: "endpoint_table", key: "ep1", value: Array("hello".utf8))
        #expect(try await waitUntil(.seconds(5)) { dbs[1].entries(network: "demo").count == 1 && dbs[2].entries(network: "demo").count == 1 })
        let propagation = ContinuousClock.now - start
        #expect(dbs[2].entries(network: "demo").first?.owner == "t1")
        #expect(dbs[1].networkMembers("demo") == names)
        // A new watcher gets the current entries first.
        var late = dbs[1].watch(network: "demo").makeAsyncIterator()
        let first = await late.next()
        #expect(first == TableChange(kind: .create, network: "demo", table: "endpoint_table", key: "ep1", value: Array("hello".utf8), owner: "t1"))
        // A stranger's garbage with our prefix is counted, not fatal.
        try await dbs[0].node.sendUserMessage(TableWire.prefix + [0xff, 0x00], to: NodeAddress(ip: ips[1], port: 7946))
        #expect(try await waitUntil(.seconds(3)) { dbs[1].malformedMessages == 1 })

        let memberships = dbs[1].watchNetworks()
        let membershipSeen = Collector<NetworkMembershipEvent>()
        let membershipWatcher = Task { for await m in memberships { membershipSeen.add(m) } }
        defer { membershipWatcher.cancel() }
        // t1 dies without leaving: its entry is withdrawn on t2 and t3.
        let killed = ContinuousClock.now
        try await dbs[0].shutdown(leave: false)
        stopped[0] = true
        #expect(try await waitUntil(.seconds(10)) { dbs[1].entries().isEmpty && dbs[2].entries().isEmpty })
        let withdrawal = ContinuousClock.now - killed
        #expect(try await waitUntil(.seconds(2)) { membershipSeen.all.contains(.left(network: "demo", node: "t1")) })
        #expect(dbs[1].networkMembers("demo") == ["t2", "t3"])
        // A new t1 at the same address re-announces its entry.
        // (The old listener's port can take a moment to be free again.)
        for attempt in 1 ... 75 {
            dbs[0] = try make(0)
            do {
                try await dbs[0].start()
                break
            } catch where attempt < 75 {
                try? await dbs[0].shutdown(leave: false)
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        stopped[0] = false
        try await dbs[0].join([NodeAddress(ip: ips[1], port: 7946)])
        dbs[0].joinNetwork("demo")
        try dbs[0].createEntry(network: "demo", table: "endpoint_table", key: "ep1", value: Array("again".utf8))
        #expect(try await waitUntil(.seconds(10)) { dbs[2].entries(network: "demo").map(\.value) == [Array("again".utf8)] })
        #expect(seen.all.map(\.kind).prefix(2) == [.create, .delete])
        #expect(try await waitUntil(.seconds(2)) { membershipSeen.all.last == .joined(network: "demo", node: "t1") })
        print("NetworkDB loopback: propagation \(propagation), withdrawal after stop \(withdrawal)")
    }
}
