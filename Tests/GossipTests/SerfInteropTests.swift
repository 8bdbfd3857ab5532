import Foundation
import Testing
import OverlayCrypto
import OverlayModel
@testable import Gossip

/// A real `serf agent` on a loopback address, started by a test and always killed by it.
final class SerfAgent: @unchecked Sendable {
    // @unchecked: the Process is only touched from the test that owns the agent.
    static let path = ["/usr/bin/serf", "/usr/local/bin/serf"].first { FileManager.default.isExecutableFile(atPath: $0) }
    static var installed: Bool { path != nil }

    let name: String
    let ip: IPAddress
    let process = Process()
    /// serf's output goes to a file (a pipe nobody drains would block the agent once full).
    let logPath = "/tmp/ovlt-serf-\(UInt32.random(in: 0 ... .max)).log"

    init(name: String, ip: IPAddress, encryptKey: [UInt8]? = nil) throws {
        self.name = name
        self.ip = ip
        process.executableURL = URL(fileURLWithPath: Self.path!)
        var args = ["agent", "-node=\(name)", "-bind=\(ip):7946", "-rpc-addr=\(ip):7373", "-log-level=debug"]
        if let k = encryptKey { args.append("-encrypt=\(Data(k).base64EncodedString())") }
        process.arguments = args
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = FileHandle(forWritingAtPath: logPath)
        process.standardOutput = log
        process.standardError = log
        try process.run()
    }

    var address: NodeAddress { NodeAddress(ip: ip, port: 7946) }

    /// Runs a serf CLI command against this agent's RPC address.
    func cli(_ args: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.path!)
        // Go's flag parsing stops at the first positional argument: flags go right after the command.
        p.arguments = [args[0], "-rpc-addr=\(ip):7373"] + args.dropFirst()
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    /// `serf members` as name -> status.
    func members() -> [String: String] {
        guard let text = try? cli(["members"]) else { return [:] }
        var out: [String: String] = [:]
        // Lines look like "name  ip:port  status  tags"; anything else (e.g. "Error connecting to
        // Serf agent: ...") is not a member.
        let statuses: Set<String> = ["alive", "leaving", "left", "failed", "none"]
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            if f.count >= 3, f[1].contains(":"), statuses.contains(f[2]) { out[f[0]] = f[2] }
        }
        return out
    }

    /// Waits until the agent answers RPC and lists itself.
    func waitForRPC() async throws {
        let up = try await waitUntil(.seconds(10)) { self.members()[self.name] == "alive" }
        if !up { throw GossipError(.io, "serf agent \(name) did not come up: \(output)") }
    }

    /// SIGKILL: the agent vanishes without a leave.
    func kill() {
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: logPath)
    }

    /// SIGINT: serf leaves gracefully.
    func interrupt() {
        if process.isRunning { process.interrupt() }
        process.waitUntilExit()
    }

    var output: String {
        (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
    }
}

private func ourNode(_ name: String, key: SecretKey? = nil, meta: [UInt8] = []) throws -> (GossipNode, NodeAddress) {
    let address = NodeAddress(ip: uniqueLoopback(), port: 7946)
    var swim = SwimConfig(name: name, advertise: address, meta: meta)
    swim.pushPullInterval = .seconds(10)
    let node = try GossipNode(configuration: GossipConfiguration(swim: swim, keyring: try key.map { try Keyring(primary: $0) }))
    return (node, address)
}

@Suite(.serialized, .enabled(if: SerfAgent.installed, "serf not installed: apt-get install serf"))
struct SerfInteropTests {
    @Test func weJoinSerfAndSerfSeesUsFailWhenWeStop() async throws {
        let serf = try SerfAgent(name: "serf-a", ip: uniqueLoopback())
        defer { serf.kill() }
        try await serf.waitForRPC()
        let (node, _) = try ourNode("swift-a", meta: SerfTags.encode(["role": "overlay"]))
        try await node.start()
        var stopped = false
        defer { if !stopped { Task { try? await node.shutdown() } } }
        try await node.join([serf.address])
        #expect(try await waitUntil(.seconds(10)) { serf.members()["swift-a"] == "alive" }, "serf members: \(serf.members())")
        #expect(try await waitUntil(.seconds(5)) { try await node.members().contains { $0.name == "serf-a" && $0.state == .alive } })
        let tags = try serf.cli(["members", "-format=json"])
        #expect(tags.contains("overlay"), "serf should decode our tags: \(tags)")
        // Stay a few probe rounds: serf must keep us alive (we answer UDP and TCP pings).
        try await Task.sleep(for: .seconds(4))
        #expect(serf.members()["swift-a"] == "alive")
        let log = serf.output
        #expect(!log.contains("[ERR]") && !log.contains("[WARN]"), "serf complained about us:\n\(log)")
        try await node.shutdown()
        stopped = true
        #expect(try await waitUntil(.seconds(20)) { serf.members()["swift-a"] == "failed" }, "serf members: \(serf.members())")
    }

    @Test func weLeaveGracefullyAndSerfSaysLeft() async throws {
        let serf = try SerfAgent(name: "serf-e", ip: uniqueLoopback())
        defer { serf.kill() }
        try await serf.waitForRPC()
        let (node, _) = try ourNode("swift-e")
        try await node.start()
        try await node.join([serf.address])
        #expect(try await waitUntil(.seconds(10)) { serf.members()["swift-e"] == "alive" })
        // serf reports "left" only after its own leave intent; memberlist's leave alone reads as "failed".
        try await node.broadcastUserMessage(SerfIntent.leave(node: "swift-e", lamportTime: 1))
        try await Task.sleep(for: .milliseconds(600))
        try await node.leave()
        try await node.shutdown()
        #expect(try await waitUntil(.seconds(10)) { serf.members()["swift-e"] == "left" }, "serf members: \(serf.members())")
        let log = serf.output
        #expect(!log.contains("[ERR] memberlist"), "serf logged memberlist errors about us:\n\(log)")
    }

    @Test func serfKilledIsMarkedDeadWithinTheSuspicionTimeout() async throws {
        let serf = try SerfAgent(name: "serf-b", ip: uniqueLoopback())
        defer { serf.kill() }
        try await serf.waitForRPC()
        let (node, _) = try ourNode("swift-b")
        try await node.start()
        defer { Task { try? await node.shutdown() } }
        try await node.join([serf.address])
        #expect(try await waitUntil(.seconds(10)) { serf.members()["swift-b"] == "alive" })
        let killedAt = ContinuousClock.now
        serf.kill()
        // Two members: up to ~2 probe intervals to notice, then 4 s suspicion (k = 0).
        #expect(try await waitUntil(.seconds(10)) { try await node.members().first { $0.name == "serf-b" }?.state == .dead })
        let elapsed = ContinuousClock.now - killedAt
        #expect(elapsed >= .seconds(4), "declared dead after \(elapsed), before the minimum suspicion")
        #expect(elapsed < .seconds(9))
    }

    @Test func serfJoinsUsAndLeavesGracefully() async throws {
        let (node, address) = try ourNode("swift-c")
        try await node.start()
        defer { Task { try? await node.shutdown() } }
        let serf = try SerfAgent(name: "serf-c", ip: uniqueLoopback())
        defer { serf.kill() }
        try await serf.waitForRPC()
        let out = try serf.cli(["join", "\(address)"])
        #expect(out.contains("Successfully joined"), "serf join said: \(out)")
        #expect(try await waitUntil(.seconds(5)) { try await node.members().contains { $0.name == "serf-c" && $0.state == .alive } })
        serf.interrupt()
        #expect(try await waitUntil(.seconds(10)) { try await node.members().first { $0.name == "serf-c" }?.state == .left })
    }

    @Test func encryptedClusterWithSerf() async throws {
        let key = try SecretKey.random(byteCount: 32)
        let keyBytes = key.withUnsafeBytes { Array($0) }
        let serf = try SerfAgent(name: "serf-d", ip: uniqueLoopback(), encryptKey: keyBytes)
        defer { serf.kill() }
        try await serf.waitForRPC()
        let (node, address) = try ourNode("swift-d", key: key)
        try await node.start()
        defer { Task { try? await node.shutdown() } }
        try await node.join([serf.address])
        #expect(try await waitUntil(.seconds(10)) { serf.members()["swift-d"] == "alive" })
        try await Task.sleep(for: .seconds(3))
        #expect(serf.members()["swift-d"] == "alive")
        let c = try await node.counters()
        #expect(c.unauthenticated == 0 && c.packetsReceived > 0)

        // A second node with the wrong key is refused by serf, and serf's attempts are counted by it.
        let (wrong, wrongAddress) = try ourNode("swift-wrong", key: try SecretKey.random(byteCount: 16))
        try await wrong.start()
        defer { Task { try? await wrong.shutdown() } }
        await #expect(throws: GossipError.self) { try await wrong.join([serf.address]) }
        #expect(try await wrong.counters().unauthenticated >= 1)
        _ = try serf.cli(["join", "\(wrongAddress)"])
        #expect(try await waitUntil(.seconds(3)) { try await wrong.counters().unauthenticated >= 2 })
        #expect(serf.members()["swift-wrong"] == nil)
        #expect(try await node.members().allSatisfy { $0.name != "swift-wrong" })
        _ = address
    }

    @Test func mixedClusterOfTwoSerfsAndUs() async throws {
        let s1 = try SerfAgent(name: "serf-m1", ip: uniqueLoopback())
        defer { s1.kill() }
        let s2 = try SerfAgent(name: "serf-m2", ip: uniqueLoopback())
        defer { s2.kill() }
        try await s1.waitForRPC()
        try await s2.waitForRPC()
        let address = NodeAddress(ip: uniqueLoopback(), port: 7946)
        var cfg = GossipConfiguration(swim: SwimConfig(name: "swift-m", advertise: address))
        let received = Collector<[UInt8]>()
        cfg.userMessage = { received.add($0) }
        let node = try GossipNode(configuration: cfg)
        try await node.start()
        defer { Task { try? await node.shutdown() } }
        // We join serf-m1; serf-m2 joins us: membership must flow through our node both ways.
        try await node.join([s1.address])
        _ = try s2.cli(["join", "\(address)"])
        #expect(try await waitUntil(.seconds(10)) {
            s1.members()["serf-m2"] == "alive" && s2.members()["serf-m1"] == "alive" && s2.members()["swift-m"] == "alive"
        }, "serf-m1: \(s1.members()), serf-m2: \(s2.members())")
        #expect(try await node.members().filter { $0.state == .alive }.count == 3)
        // serf user events are memberlist user messages: they reach our hook (serf type 3).
        _ = try s1.cli(["event", "deploy", "v42"])
        #expect(try await waitUntil(.seconds(5)) { received.all.contains { $0.first == 3 && String(decoding: $0, as: UTF8.self).contains("deploy") } })
        // serf-m2 vanishes: both the other serf and we declare it failed/dead.
        s2.kill()
        #expect(try await waitUntil(.seconds(20)) {
            try await node.members().first { $0.name == "serf-m2" }?.state == .dead && s1.members()["serf-m2"] == "failed"
        }, "serf-m1: \(s1.members())")
        #expect(s1.members()["swift-m"] == "alive")
    }

    @Test func weRestartAfterSerfMarkedUsFailedAndRefute() async throws {
        let serf = try SerfAgent(name: "serf-r", ip: uniqueLoopback())
        defer { serf.kill() }
        try await serf.waitForRPC()
        let address = NodeAddress(ip: uniqueLoopback(), port: 7946)
        func make() throws -> GossipNode { try GossipNode(configuration: GossipConfiguration(swim: SwimConfig(name: "swift-r", advertise: address))) }
        let first = try make()
        try await first.start()
        try await first.join([serf.address])
        #expect(try await waitUntil(.seconds(10)) { serf.members()["swift-r"] == "alive" })
        try await first.shutdown()
        #expect(try await waitUntil(.seconds(20)) { serf.members()["swift-r"] == "failed" })
        // A new process with the same name starts at incarnation 1, below what serf remembers; serf's
        // push-pull tells it it is dead, it refutes with a higher incarnation, and serf accepts.
        let second = try make()
        try await second.start()
        defer { Task { try? await second.shutdown() } }
        try await second.join([serf.address])
        #expect(try await waitUntil(.seconds(10)) { serf.members()["swift-r"] == "alive" }, "serf members: \(serf.members())")
        #expect(try await second.counters().swim.refutations >= 1)
    }
}
