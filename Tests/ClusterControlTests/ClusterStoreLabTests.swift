import Foundation
import Glibc
import Testing
import OverlayTestKit

/// The manager on etcd (`overlayd --cluster-store`), with the real binaries and a real 3-member
/// etcd cluster in the lab (`lab up --etcd 3`, one member on each of h1-h3).
@Suite(.serialized) struct ClusterStoreLabTests {
    static let store = "etcd://198.18.0.1:2379,198.18.0.2:2379,198.18.0.3:2379"

    /// The keys etcd holds under the swarm's prefix for `kind` (read with etcdctl from h1, through
    /// whichever member answers).
    func keys(_ lab: CLILab, _ kind: String) throws -> [String] {
        let r = try lab.sh("h1", ["etcdctl", "--endpoints", ["h1", "h2", "h3"].map(endpoint).joined(separator: ","), "get", "--prefix", "/swift-overlay/swarm/\(kind)/", "--keys-only"])
        #expect(r.succeeded, "etcdctl: \(r.output)")
        return r.output.split(separator: "\n").map(String.init).filter { !$0.isEmpty }
    }

    /// The etcd member of `host`: the etcd process with the host's data directory.
    func memberPID(_ lab: CLILab, _ host: String) -> Int32? {
        let needle = Data("/run/\(lab.name)/\(host)/etcd/data".utf8)
        for e in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(e), let cmdline = FileManager.default.contents(atPath: "/proc/\(e)/cmdline"),
                  cmdline.starts(with: Data("/usr/bin/etcd".utf8)), cmdline.range(of: needle) != nil else { continue }
            return pid
        }
        return nil
    }

    /// Kills the etcd member on `host` (SIGKILL) and waits until it is gone.
    func killMember(_ lab: CLILab, _ host: String) throws {
        let pid = try #require(memberPID(lab, host), "no etcd member runs on \(host)")
        kill(pid, SIGKILL)
        for _ in 0..<50 where kill(pid, 0) == 0 { usleep(100_000) }
        #expect(kill(pid, 0) != 0, "etcd on \(host) is still running")
    }

    /// The etcd client URL of `host`'s member (h1 is 198.18.0.1).
    func endpoint(_ host: String) -> String { "http://198.18.0.\(host.dropFirst()):2379" }

    /// The host whose etcd member leads (etcdctl's `endpoint status`: its fifth column).
    func leaderHost(_ lab: CLILab) throws -> String {
        let hosts = ["h1", "h2", "h3"]
        let r = try lab.sh("h1", ["etcdctl", "--endpoints", hosts.map(endpoint).joined(separator: ","), "endpoint", "status", "-w", "simple"])
        let leaders = r.output.split(separator: "\n").compactMap { line -> String? in
            let fields = line.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            guard fields.count > 4, fields[4] == "true" else { return nil }
            return hosts.first { endpoint($0) == fields[0] }
        }
        return try #require(leaders.count == 1 ? leaders.first : nil, "one leader in: \(r.output)")
    }

    /// Waits (at most 15 s) until etcd answers a linearizable read through the members of `hosts`,
    /// which it does only when they have a leader (etcdctl's `endpoint health` commits a read).
    func waitForLeader(_ lab: CLILab, members hosts: [String]) throws {
        let endpoints = hosts.map(endpoint).joined(separator: ",")
        var last = ""
        for _ in 0..<30 {
            let r = try lab.sh("h1", ["etcdctl", "--endpoints", endpoints, "--command-timeout", "1s", "endpoint", "health"], timeout: 10)
            if r.succeeded { return }
            last = r.output
            usleep(500_000)
        }
        Issue.record("etcd at \(endpoints) has no leader after 15 s: \(last)")
    }

    /// Starts the etcd member on `host` again, with its data, as `lab up` started it.
    func startMember(_ lab: CLILab, _ host: String) throws {
        let dir = "/run/\(lab.name)/\(host)/etcd"
        let arguments = try String(contentsOfFile: dir + "/command", encoding: .utf8).split(separator: "\n").map(String.init)
        // Through setsid, which forks: etcd becomes init's child, reaped when killed (see killMember).
        _ = try Child.spawn(["/usr/bin/setsid"] + arguments, log: dir + "/etcd.log")
    }

    @Test func theManagerKeepsTheSwarmInEtcdThroughRestartsAndMemberLosses() async throws {
        let lab = try CLILab.up("ovl-cs", hosts: 3, extra: ["--etcd", "3"])
        defer { lab.down() }
        let token = try lab.initSwarm()
        try lab.join(["h2", "h3"], token: token)
        _ = try lab.must("h1", ["network", "create", "-d", "overlay", "--attachable", "--subnet", "10.60.0.0/24", "net1"])
        _ = try lab.must("h1", ["run", "-d", "--name", "c1", "--network", "net1", "--", "sleep", "100000"])
        _ = try lab.must("h2", ["run", "-d", "--name", "c2", "--network", "net1", "--", "sleep", "100000"])
        let ip1 = try lab.ip("h1", "c1", network: "net1"), ip2 = try lab.ip("h2", "c2", network: "net1")
        #expect(try lab.pings("h2", "c2", ip1))

        // What the manager holds is in etcd: the networks (ingress and net1), the three nodes, both
        // addresses, the shared settings.
        #expect(try keys(lab, "network").count == 2)
        #expect(try keys(lab, "node").count == 3)
        #expect(try keys(lab, "allocation").map { $0.split(separator: "/").last.map(String.init) ?? "" }.sorted() == [ip1, ip2].sorted())
        #expect(try keys(lab, "cluster-setting").contains("/swift-overlay/swarm/cluster-setting/manager"))

        // The manager killed and started again reads the swarm from etcd: the same networks and
        // nodes, and a new address that is neither of the old ones.
        let pid = try lab.pid("h1")
        kill(pid, SIGKILL)
        for _ in 0..<50 where kill(pid, 0) == 0 { usleep(100_000) }
        try lab.startDaemon("h1", hostIndex: 1, args: ["--cluster-store", Self.store])
        #expect(try lab.must("h1", ["network", "ls", "--format", "{{.Name}}"]).split(separator: "\n").sorted() == ["ingress", "net1"])
        #expect(try lab.hostnames("h1") == ["h1", "h2", "h3"])
        _ = try lab.must("h3", ["run", "-d", "--name", "c3", "--network", "net1", "--", "sleep", "100000"])
        let ip3 = try lab.ip("h3", "c3", network: "net1")
        #expect(![ip1, ip2].contains(ip3))
        #expect(try lab.pings("h3", "c3", ip1))

        // One etcd member down, its leader (the hardest one to lose): nothing stops. A write in the
        // second or two before the other two elect a new leader is held by etcd past the 3 s
        // deadline and refused as "may have been made" (Operations.md); so the write comes once
        // the two left have a leader, as it would for an operator a moment later.
        let first = try leaderHost(lab)
        let rest = ["h1", "h2", "h3"].filter { $0 != first }
        try killMember(lab, first)
        try waitForLeader(lab, members: rest)
        // The manager's own lease renewal may have timed out or been stopped in the election's
        // window; neither makes its client refuse the next call (a cancelled renewal once did, as
        // "no etcd member answers").
        let created = try lab.on("h1", ["network", "create", "-d", "overlay", "net2"])
        #expect(created.succeeded, "network create after etcd's leader was lost: \(created.output)")
        #expect(try keys(lab, "network").count == 3)

        // Two down: etcd has no quorum. A write is refused with one line within seconds; the data
        // plane and names keep working from what every node knows.
        try killMember(lab, rest[1])
        let start = ContinuousClock.now
        let refused = try lab.on("h1", ["network", "create", "-d", "overlay", "net3"], timeout: 30)
        let took = ContinuousClock.now - start
        #expect(!refused.succeeded)
        let line = refused.output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(!line.contains("\n"), "one line: \(line)")
        #expect(line.contains("etcd"), "names the store: \(line)")
        #expect(took < .seconds(10), "refused within seconds, took \(took)")
        #expect(try lab.pings("h2", "c2", ip1, tries: 3))
        #expect(try lab.on("h3", ["exec", "c3", "--", "ping", "-c", "1", "-W", "1", "c1"]).succeeded)

        // etcd back: writes resume. A refusal that said the change may have been made may have
        // been: etcd applies the held proposal once it has a quorum again, and then net3 exists.
        try startMember(lab, first)
        try startMember(lab, rest[1])
        let resumed = try lab.retrying("h1", ["network", "create", "-d", "overlay", "net3"], tries: 30, every: 500_000)
        let appliedLater = line.contains("may have been made") && resumed.output.contains("already exists")
        #expect(resumed.succeeded || appliedLater, "refused with: \(line); then: \(resumed.output)")
        #expect(try keys(lab, "network").count == 4)
    }

    @Test func aBadClusterStoreIsOneLineAtStart() throws {
        let bin = CLILab.binDirectory() + "/overlayd"
        let dir = "/tmp/ovl-cs-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Data("{}\n".utf8).write(to: URL(fileURLWithPath: dir + "/daemon.json"))
        func start(_ args: [String]) throws -> CommandResult {
            try Command.run([bin, "--config-file", dir + "/daemon.json", "--state-dir", dir + "/state", "--socket", dir + "/s.sock"] + args,
                            timeout: 20)
        }
        // Nothing listens there: one line naming the endpoint, exit 1, and no socket served.
        let down = try start(["--cluster-store", "etcd://127.0.0.1:1"])
        #expect(down.status == 1)
        let lines = down.output.split(separator: "\n").filter { $0.hasPrefix("overlayd:") }
        #expect(lines.count == 1 && lines[0].contains("127.0.0.1:1"), "\(down.output)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/s.sock"))
        for (args, says) in [
            (["--cluster-store", "consul://127.0.0.1:8500"], "etcd://"),
            (["--cluster-store", "etcd://127.0.0.1:2379", "--cluster-store-opt", "kv.bogus=1"], "kv.bogus"),
            (["--cluster-store", "etcd://127.0.0.1:2379", "--cluster-store-opt", "kv.certfile=/nonexistent"], "kv.keyfile"),
            (["--cluster-store-opt", "kv.path=/x"], "needs --cluster-store"),
        ] {
            let r = try start(args)
            #expect(!r.succeeded)
            #expect(r.output.contains(says), "\(args): \(r.output)")
        }
    }
}
