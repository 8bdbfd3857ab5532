import Foundation
import Testing
import OverlayTestKit

/// A process started inside a lab host's network namespace (`nsenter --net=<handle> -- ...`,
/// which execs the program, so the pid is the program's), output to a log file. Always `kill()`ed
/// by the test that started it.
final class LabProcess: @unchecked Sendable {
    // @unchecked: the Process is only touched from the test that owns it.
    let process = Process()
    let logPath = "/tmp/ovlt-lab-\(UInt32.random(in: 0 ... .max)).log"

    init(_ arguments: [String], in host: Lab.Host) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
        process.arguments = ["--net=\(host.namespace.path!)", "--"] + arguments
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = FileHandle(forWritingAtPath: logPath)
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    /// SIGKILL: the program vanishes without a leave.
    func kill() {
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    /// Waits for a normal exit (up to `timeout`), then kills.
    func wait(_ timeout: Duration) async throws {
        _ = try await waitUntil(timeout) { !self.process.isRunning }
        kill()
    }

    var output: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    deinit { try? FileManager.default.removeItem(atPath: logPath) }
}

/// The gossip-agent example program: next to the test bundle (`.build/<config>/`) or in `.build/debug`.
func gossipAgentBinary() throws -> String {
    var candidates: [String] = []
    var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for _ in 0 ..< 5 {
        candidates.append(dir.appendingPathComponent("gossip-agent").path)
        dir = dir.deletingLastPathComponent()
    }
    candidates.append(FileManager.default.currentDirectoryPath + "/.build/debug/gossip-agent")
    if let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) { return found }
    throw LabError("gossip-agent is not built (looked in \(candidates.joined(separator: ", "))); run `swift build --build-tests` or `swift build --product gossip-agent` first")
}

/// serf and our gossip-agent in different lab hosts (network namespaces on one underlay bridge).
struct SerfLab {
    let lab: Lab
    let agentBinary: String

    static var available: Bool { SerfAgent.installed && getuid() == 0 }

    init() throws {
        agentBinary = try gossipAgentBinary()
        lab = try Lab.create(name: "ovlt-gs\(String(UInt16.random(in: 0 ... .max), radix: 16))", hosts: 3)
    }

    func address(_ host: Int) -> String { "\(lab.hosts[host - 1].address)" }

    /// `serf agent` bound to host `host`'s eth0 address, RPC on the host's loopback.
    func serf(_ name: String, on host: Int, key: [UInt8]? = nil) throws -> LabProcess {
        var args = [SerfAgent.path!, "agent", "-node=\(name)", "-bind=\(address(host)):7946", "-rpc-addr=127.0.0.1:7373", "-log-level=debug"]
        if let key { args.append("-encrypt=\(Data(key).base64EncodedString())") }
        return try LabProcess(args, in: lab.hosts[host - 1])
    }

    /// Our node: gossip-agent bound to host `host`'s address.
    func agent(_ name: String, on host: Int, join: Int?, key: [UInt8]? = nil, seconds: Int = 120) throws -> LabProcess {
        // stdbuf: the agent's stdout is a file, so without line buffering its event lines would
        // only appear at exit (stdbuf execs the agent, so the pid stays the agent's).
        var args = ["/usr/bin/stdbuf", "-oL", agentBinary, "--name", name, "--bind", "\(address(host)):7946", "--seconds", "\(seconds)"]
        if let join { args += ["--join", "\(address(join)):7946"] }
        if let key { args += ["--key", Data(key).base64EncodedString()] }
        return try LabProcess(args, in: lab.hosts[host - 1])
    }

    /// A serf CLI command against the agent in host `host`.
    func serfCLI(_ args: [String], on host: Int) -> String {
        let command = [SerfAgent.path!, args[0], "-rpc-addr=127.0.0.1:7373"] + args.dropFirst()
        return (try? lab.run(command, on: lab.hosts[host - 1], timeout: 10).output) ?? ""
    }

    /// `serf members` in host `host` as name -> (address, status).
    func members(on host: Int) -> [String: (address: String, status: String)] {
        let statuses: Set<String> = ["alive", "leaving", "left", "failed", "none"]
        var out: [String: (String, String)] = [:]
        for line in serfCLI(["members"], on: host).split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            if f.count >= 3, f[1].contains(":"), statuses.contains(f[2]) { out[f[0]] = (f[1], f[2]) }
        }
        return out
    }

    func status(_ node: String, on host: Int) -> String? { members(on: host)[node]?.status }
}

@Suite(.serialized, .enabled(if: SerfLab.available, "needs root and serf (apt-get install serf)"))
struct SerfLabTests {
    /// serf in h1; our node in h2 joins it, serf lists it alive at its lab address, and after a
    /// SIGKILL serf marks it failed. Then our node in h3 joins, serf is SIGKILLed, and our node
    /// declares it failed within the suspicion timeout. Plain and with the same key on both sides.
    @Test(arguments: [false, true])
    func joinAndCrashBothWaysAcrossHosts(encrypted: Bool) async throws {
        let key: [UInt8]? = encrypted ? (0 ..< 32).map { _ in UInt8.random(in: 0 ... 255) } : nil
        let lab = try SerfLab()
        defer { lab.lab.destroy() }
        let serf = try lab.serf("serf-lab", on: 1, key: key)
        defer { serf.kill() }
        #expect(try await waitUntil(.seconds(10)) { lab.status("serf-lab", on: 1) == "alive" }, "serf did not start:\n\(serf.output)")

        let first = try lab.agent("swift-h2", on: 2, join: 1, key: key)
        defer { first.kill() }
        #expect(try await waitUntil(.seconds(10)) { lab.status("swift-h2", on: 1) == "alive" },
                "serf members: \(lab.members(on: 1))\nagent:\n\(first.output)")
        #expect(lab.members(on: 1)["swift-h2"]?.address == "\(lab.address(2)):7946")
        // A few probe rounds across the bridge: serf keeps us alive and has nothing to complain about.
        try await Task.sleep(for: .seconds(3))
        #expect(lab.status("swift-h2", on: 1) == "alive")
        #expect(!serf.output.contains("[ERR] memberlist"), "serf logged errors about us:\n\(serf.output)")
        #expect(first.output.contains("joined through 1 seed"), "agent:\n\(first.output)")

        first.kill()
        #expect(try await waitUntil(.seconds(20)) { lab.status("swift-h2", on: 1) == "failed" }, "serf members: \(lab.members(on: 1))")

        let second = try lab.agent("swift-h3", on: 3, join: 1, key: key)
        defer { second.kill() }
        #expect(try await waitUntil(.seconds(10)) { lab.status("swift-h3", on: 1) == "alive" },
                "serf members: \(lab.members(on: 1))\nagent:\n\(second.output)")
        try await Task.sleep(for: .seconds(2))
        let killedAt = ContinuousClock.now
        serf.kill()
        // Our view: serf-lab, swift-h2 (dead), us: suspicion = 4 s * max(1, log10 3) with k = 0.
        let declared = try await waitUntil(.seconds(15)) { second.output.contains("event: failed(serf-lab") }
        let elapsed = ContinuousClock.now - killedAt
        #expect(declared, "agent never declared serf failed:\n\(second.output)")
        if declared {
            #expect(elapsed >= .seconds(4), "declared dead after \(elapsed), before the minimum suspicion")
            #expect(elapsed < .seconds(12), "took \(elapsed)")
        }
    }

    /// serf with one key; our node with another. Our join is refused (the agent reports the
    /// failed join), serf never lists us, and serf's join attempt to us is counted as
    /// unauthenticated by our node.
    @Test func wrongKeyIsRefusedAndCountedAcrossHosts() async throws {
        let serfKey = (0 ..< 32).map { _ in UInt8.random(in: 0 ... 255) }
        let ourKey = (0 ..< 16).map { _ in UInt8.random(in: 0 ... 255) }
        let lab = try SerfLab()
        defer { lab.lab.destroy() }
        let serf = try lab.serf("serf-key", on: 1, key: serfKey)
        defer { serf.kill() }
        #expect(try await waitUntil(.seconds(10)) { lab.status("serf-key", on: 1) == "alive" }, "serf did not start:\n\(serf.output)")

        // Our node tries to join serf with the wrong key: the join fails and the agent exits with an error.
        let joining = try lab.agent("swift-wrong", on: 2, join: 1, key: ourKey, seconds: 5)
        defer { joining.kill() }
        try await joining.wait(.seconds(15))
        #expect(joining.process.terminationReason != .exit || joining.process.terminationStatus != 0, "agent:\n\(joining.output)")
        #expect(!joining.output.contains("joined through"), "agent:\n\(joining.output)")

        // serf tries to join our node: we refuse its stream and count it.
        let listening = try lab.agent("swift-listen", on: 3, join: nil, key: ourKey, seconds: 5)
        defer { listening.kill() }
        try await Task.sleep(for: .seconds(1))
        let said = lab.serfCLI(["join", "\(lab.address(3)):7946"], on: 1)
        #expect(!said.contains("Successfully joined"), "serf join said: \(said)")
        try await listening.wait(.seconds(20))
        let out = listening.output
        let counted = out.range(of: #"unauthenticated: (\d+)"#, options: .regularExpression)
            .flatMap { Int(out[$0].split(separator: " ").last ?? "") } ?? 0
        #expect(counted >= 1, "agent did not count serf's encrypted stream:\n\(out)")
        #expect(lab.members(on: 1)["swift-wrong"] == nil && lab.members(on: 1)["swift-listen"] == nil, "serf members: \(lab.members(on: 1))")
    }
}
