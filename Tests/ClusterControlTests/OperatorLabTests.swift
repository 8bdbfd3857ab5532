import Foundation
import Glibc
import OverlayTestKit
import Testing

/// What an operator reaches for first: versions, Docker's global `-H`, the health endpoints and
/// `-q` on the lists, `run`'s exit status.
@Suite(.serialized) struct OperatorLabTests {
    @Test func versionsGlobalHostHealthAndQuietLists() async throws {
        guard getuid() == 0 else {
            Issue.record("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
            return
        }
        let bin = CLILab.binDirectory()
        // --version on both binaries: one line, exit 0.
        for program in ["overlayd", "overlayctl"] {
            let r = try Command.run([bin + "/" + program, "--version"])
            #expect(r.succeeded && r.output.hasPrefix("\(program) version ") && r.output.contains(", API 1, linux/"), "\(r.output)")
        }
        let lab = try CLILab.up("ovlt-op", hosts: 1)
        defer { lab.down() }
        let socket = "/run/\(lab.name)/h1/overlayd.sock"
        let ctl = bin + "/overlayctl"
        // -H before the command (Docker's habit), in each spelling, and after it; OVERLAY_HOST unset.
        for args in [["-H", "unix://" + socket, "info"], ["--host", "unix://" + socket, "info"], ["-H=unix://" + socket, "info"],
                     ["--host=unix://" + socket, "info"], ["info", "-H", "unix://" + socket]] {
            let r = try Command.run(["env", "-u", "OVERLAY_HOST", ctl] + args)
            #expect(r.succeeded && r.output.contains("\"hostname\" : \"h1\"") && r.output.contains("\"version\" : \""), "\(args): \(r.output)")
        }
        let wrong = try Command.run(["env", "-u", "OVERLAY_HOST", ctl, "-H", "tcp://1.2.3.4:2375", "info"])
        #expect(!wrong.succeeded && wrong.output.contains("only unix:///path") && wrong.output.split(separator: "\n").count == 1, "\(wrong.output)")
        // `version`: the client's and the daemon's, with the kernel's release.
        let version = try lab.must("h1", ["version"])
        let kernel = try Command.run(["uname", "-r"]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(version.contains("Client:") && version.contains("Server:") && version.contains(" Version:           0.")
                    && version.contains("Kernel Version:    \(kernel)"), "\(version)")
        // Health on the API socket: Docker's /_ping, /healthz, /readyz.
        func get(_ path: String) throws -> (Int, String) {
            let r = try Command.run(["curl", "-s", "-m", "5", "--unix-socket", socket, "-w", "\n%{http_code}", "http://overlayd" + path])
            let lines = r.output.split(separator: "\n", omittingEmptySubsequences: false)
            return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n").trimmingCharacters(in: .whitespacesAndNewlines))
        }
        #expect(try get("/_ping") == (200, "OK"))
        #expect(try get("/healthz") == (200, "ok"))
        #expect(try get("/readyz") == (200, "ready (not in a swarm)"))
        let v = try get("/v1/version")
        let json = try JSONSerialization.jsonObject(with: Data(v.1.utf8)) as? [String: Any] ?? [:]
        #expect(v.0 == 200 && json["ApiVersion"] as? String == "1" && (json["Version"] as? String)?.isEmpty == false, "\(v)")
        _ = try lab.must("h1", ["swarm", "init", "--advertise-addr", "198.18.0.1"])
        _ = try lab.must("h1", ["network", "create", "-d", "overlay", "--attachable", "--subnet", "10.40.0.0/24", "ops"])
        #expect(try get("/readyz") == (200, "ready"))
        // -q on the lists: the IDs the table shows, one per line.
        _ = try lab.must("h1", ["run", "-d", "--name", "q1", "--network", "ops", "--", "sleep", "infinity"])
        let networkIDs = try lab.must("h1", ["network", "ls", "-q"]).split(separator: "\n").map(String.init)
        let table = try lab.must("h1", ["network", "ls"])
        #expect(!networkIDs.isEmpty && networkIDs.allSatisfy { $0.count == 12 && table.contains($0) }, "\(networkIDs) vs \(table)")
        let containerIDs = try lab.must("h1", ["ps", "--quiet"]).split(separator: "\n").map(String.init)
        let id = try JSONSerialization.jsonObject(with: Data(try lab.must("h1", ["inspect", "q1"]).utf8)) as? [[String: Any]]
        #expect(containerIDs.count == 1 && (id?.first?["Id"] as? String)?.hasPrefix(containerIDs[0]) == true, "\(containerIDs)")
        let nodeIDs = try lab.must("h1", ["node", "ls", "-q"]).split(separator: "\n").map(String.init)
        let me = try JSONSerialization.jsonObject(with: Data(try lab.must("h1", ["info"]).utf8)) as? [String: Any]
        #expect(nodeIDs == [me?["nodeID"] as? String ?? "?"], "\(nodeIDs)")
        #expect(try lab.must("h1", ["service", "ls", "-q"]).isEmpty)
        // `run`'s exit status, as Docker's: 125 for the daemon's refusal or bad flags, 127 for a
        // command not found, else the command's own.
        #expect(try lab.on("h1", ["run", "--network", "nope", "--", "true"]).status == 125)
        #expect(try lab.on("h1", ["run", "--bogus", "--network", "ops", "--", "true"]).status == 125)
        #expect(try lab.on("h1", ["run", "--name", "e3", "--network", "ops", "--", "sh", "-c", "exit 3"]).status == 3)
        #expect(try lab.on("h1", ["run", "--name", "e127", "--network", "ops", "--", "no-such-command"]).status == 127)
        _ = try lab.must("h1", ["rm", "-f", "e3", "e127"])
        // What -q is for: `rm -f $(ps -q)`.
        _ = try lab.must("h1", ["rm", "-f"] + containerIDs)
        #expect(try lab.must("h1", ["ps", "-q"]).isEmpty)
    }
}

/// Docker's list habits: `--format json` as one object per line, `--format '{{.Field}}'`
/// templates, `--filter KEY=VALUE`.
@Suite(.serialized) struct ListFormatLabTests {
    @Test func jsonLinesTemplatesAndFilters() async throws {
        guard getuid() == 0 else {
            Issue.record("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
            return
        }
        let lab = try CLILab.up("ovlt-fmt", hosts: 1)
        defer { lab.down() }
        _ = try lab.must("h1", ["swarm", "init", "--advertise-addr", "198.18.0.1"])
        _ = try lab.must("h1", ["network", "create", "-d", "overlay", "--attachable", "--subnet", "10.41.0.0/24", "--label", "env=prod", "web"])
        _ = try lab.must("h1", ["network", "create", "-d", "overlay", "--attachable", "--subnet", "10.42.0.0/24", "--label", "env=dev", "db"])
        _ = try lab.must("h1", ["run", "-d", "--name", "c1", "--network", "web", "--", "sleep", "infinity"])
        func lines(_ args: [String]) throws -> [String] { try lab.must("h1", args).split(separator: "\n").map(String.init) }

        // One JSON object per line.
        let objects = try jsonLines(try lab.must("h1", ["network", "ls", "--format", "json"]))
        #expect(Set(objects.compactMap { $0["Name"] as? String }) == ["ingress", "web", "db"], "\(objects)")
        // Templates: fields in any case, nested ones, JSON, tabs.
        #expect(Set(try lines(["network", "ls", "--format", "{{.Name}}"])) == ["ingress", "web", "db"])
        #expect(try lines(["node", "ls", "--format", "{{.Hostname}} {{.role}} {{.Status}}"]) == ["h1 manager ready"])
        #expect(try lines(["ps", "--format", "{{.Name}}\\t{{.State.Status}}"]) == ["c1\trunning"])
        #expect(try lines(["ps", "--format", "{{json .Config.Cmd}}"]) == [#"["sleep","infinity"]"#])
        let version = try lab.must("h1", ["version", "--format", "{{.Server.Version}}"])
        #expect(version.hasPrefix("0.") && !version.contains(" "), "\(version)")
        // Filters: part of a name, labels with and without a value, any field; one key any, keys all.
        #expect(try lines(["network", "ls", "--filter", "name=we", "--format", "{{.Name}}"]) == ["web"])
        #expect(Set(try lines(["network", "ls", "--filter", "label=env", "--format", "{{.Name}}"])) == ["web", "db"])
        #expect(try lines(["network", "ls", "-f", "label=env=prod", "--format", "{{.Name}}"]) == ["web"])
        #expect(Set(try lines(["network", "ls", "--filter", "name=web", "--filter", "name=db", "--format", "{{.Name}}"])) == ["web", "db"])
        #expect(try lines(["network", "ls", "--filter", "label=env", "--filter", "name=d", "--format", "{{.Name}}"]) == ["db"])
        let webID = try lines(["network", "ls", "--filter", "name=web", "-q"])
        #expect(webID.count == 1 && webID[0].count == 12)
        #expect(try lines(["network", "ls", "--filter", "id=\(webID[0].prefix(6))", "--format", "{{.Name}}"]) == ["web"])
        #expect(try lines(["node", "ls", "--filter", "role=manager", "-q"]).count == 1)
        #expect(try lab.must("h1", ["node", "ls", "--filter", "role=worker", "-q"]).isEmpty)
        // Mistakes get one clear line.
        for (args, says) in [
            (["network", "ls", "--format", "{{.Nope}}"], "no field .Nope"),
            (["network", "ls", "--format", "{{Name}}"], "is not a field"),
            (["network", "ls", "--filter", "colour=blue"], "have no field colour"),
            (["network", "ls", "--filter", "web"], "use KEY=VALUE"),
            (["ps", "--format", "yaml"], "use table, json or a template"),
        ] {
            let r = try lab.on("h1", args)
            #expect(!r.succeeded && r.output.contains(says), "\(args): \(r.output)")
        }
    }
}

/// A container's life as Docker's CLI drives it: `logs`, `stop`, `start`.
@Suite(.serialized) struct ContainerLifeLabTests {
    @Test func logsStopAndStartKeepTheContainersAddress() async throws {
        guard getuid() == 0 else {
            Issue.record("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
            return
        }
        let lab = try CLILab.up("ovlt-life", hosts: 1)
        defer { lab.down() }
        _ = try lab.must("h1", ["swarm", "init", "--advertise-addr", "198.18.0.1"])
        _ = try lab.must("h1", ["network", "create", "-d", "overlay", "--attachable", "--subnet", "10.45.0.0/24", "web"])
        _ = try lab.must("h1", ["run", "-d", "--name", "talker", "--network", "web", "--", "sh", "-c",
                                "trap 'echo stopping; exit 0' TERM; echo one; echo two; echo three; sleep infinity & wait"])
        let ip = try lab.ip("h1", "talker", network: "web")
        func status() throws -> String {
            try lab.must("h1", ["ps", "--filter", "name=talker", "--format", "{{.State.Status}}"])
        }
        var log = ""
        for _ in 0..<50 where !log.contains("three") { log = try lab.must("h1", ["logs", "talker"]); usleep(100_000) }
        #expect(log == "one\ntwo\nthree", "\(log)")
        #expect(try lab.must("h1", ["logs", "--tail", "1", "talker"]) == "three")
        // Its process has no signal blocked or ignored by the daemon (a process started from a
        // Swift daemon inherits its threads' blocked mask unless the start clears it).
        let inspect = try JSONSerialization.jsonObject(with: Data(try lab.must("h1", ["inspect", "talker"]).utf8)) as? [[String: Any]]
        let pid = (inspect?.first?["State"] as? [String: Any])?["Pid"] as? Int ?? 0
        var masks: [String: UInt64] = [:]
        for line in ((try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? "").split(separator: "\n") {
            let f = line.split(separator: "\t")
            if f.count == 2, f[0] == "SigBlk:" || f[0] == "SigIgn:" { masks[String(f[0])] = UInt64(f[1], radix: 16) }
        }
        #expect(masks["SigBlk:"] == 0, "talker (pid \(pid)) has signals blocked: \(masks)")
        #expect(masks["SigIgn:"].map { $0 & (1 << (UInt64(SIGPIPE) - 1)) == 0 } == true, "talker (pid \(pid)) ignores SIGPIPE: \(masks)")
        // stop: SIGTERM reaches the process (its trap says so), the container stays with its address.
        // The container stops whole: its command's `sleep infinity` child does not run on (it did,
        // with init as its parent, until the next reboot).
        let netns = try #require(try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/net"))
        func inContainer() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).filter {
                Int($0) != nil && (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\($0)/ns/net")) == netns
            }
        }
        #expect(inContainer().count >= 2, "sh and its sleep in \(netns)")
        #expect(try lab.must("h1", ["stop", "-t", "10", "talker"]) == "talker")
        #expect(try status() == "exited")
        var left = inContainer()
        for _ in 0..<20 where !left.isEmpty { usleep(50_000); left = inContainer() }
        #expect(left.isEmpty, "processes left in the stopped container: \(left)")
        #expect(try lab.must("h1", ["logs", "--tail", "1", "talker"]) == "stopping", "stop's SIGTERM did not reach the container's process")
        #expect(try lab.ip("h1", "talker", network: "web") == ip)
        // start: the command runs again; its output goes on in the same log.
        #expect(try lab.must("h1", ["start", "talker"]) == "talker")
        #expect(try status() == "running")
        log = ""
        for _ in 0..<50 where log.components(separatedBy: "three").count < 3 { log = try lab.must("h1", ["logs", "talker"]); usleep(100_000) }
        #expect(log == "one\ntwo\nthree\nstopping\none\ntwo\nthree", "\(log)")
        #expect(try lab.ip("h1", "talker", network: "web") == ip)
        // Mistakes: one clear line.
        let missing = try lab.on("h1", ["logs", "nobody"])
        #expect(!missing.succeeded && missing.output.contains("nobody") && missing.output.split(separator: "\n").count == 1, "\(missing.output)")
        let badTail = try lab.on("h1", ["logs", "--tail", "-3", "talker"])
        #expect(!badTail.succeeded, "\(badTail.output)")
        // rm without -f refuses a container that runs anything: after stop, an `exec` is enough.
        _ = try lab.must("h1", ["stop", "-t", "1", "talker"])
        let session = try Child.spawn([lab.bin + "/overlayctl", "lab", "exec", "--name", lab.name, "h1", "--",
                                       "overlayctl", "exec", "talker", "--", "sleep", "30"], log: "/run/\(lab.name)/exec.log")
        defer { _ = session.stop() }
        for _ in 0..<50 where inContainer().isEmpty { usleep(50_000) }
        #expect(inContainer().count == 1, "the exec'd sleep: \(inContainer())")
        let refused = try lab.on("h1", ["rm", "talker"])
        #expect(!refused.succeeded && refused.output.contains("is running"), "\(refused.output)")
        // rm -f: every process of the container goes (here the exec'd one).
        _ = try lab.must("h1", ["rm", "-f", "talker"])
        left = inContainer()
        for _ in 0..<20 where !left.isEmpty { usleep(50_000); left = inContainer() }
        #expect(left.isEmpty, "processes left after rm -f: \(left)")
    }

    @Test(.enabled(if: cgroup2MountPoint() != nil, "no cgroup2 hierarchy: lab down finds containers by their namespaces only"))
    func labDownStopsTheContainersOfADaemonKilledWithSIGKILL() async throws {
        guard getuid() == 0 else {
            Issue.record("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
            return
        }
        let lab = try CLILab.up("ovlt-kill9", hosts: 1)
        defer { lab.down() }
        _ = try lab.must("h1", ["swarm", "init", "--advertise-addr", "198.18.0.1"])
        _ = try lab.must("h1", ["network", "create", "-d", "overlay", "--attachable", "--subnet", "10.44.0.0/24", "web"])
        // The container starts a process in a network namespace of its own, where neither the
        // host's nor the container's namespace finds it.
        _ = try lab.must("h1", ["run", "-d", "--name", "orphan", "--network", "web", "--",
                                "sh", "-c", "unshare --net sleep 1000 & exec sleep infinity"])
        let inspect = try JSONSerialization.jsonObject(with: Data(try lab.must("h1", ["inspect", "orphan"]).utf8)) as? [[String: Any]]
        let main = Int32((inspect?.first?["State"] as? [String: Any])?["Pid"] as? Int ?? 0)
        #expect(main > 0 && kill(main, 0) == 0, "\(String(describing: inspect))")
        var children: [Int32] = []
        for _ in 0..<50 where children.isEmpty {
            usleep(100_000)
            children = ((try? String(contentsOfFile: "/proc/\(main)/task/\(main)/children", encoding: .utf8)) ?? "")
                .split(separator: " ").compactMap { Int32($0) }
                .filter { ((try? String(contentsOfFile: "/proc/\($0)/cmdline", encoding: .utf8)) ?? "").hasPrefix("sleep\u{0}1000") }
        }
        #expect(children.count == 1, "no sleep 1000 under \(main)")
        let pid = children.first ?? main
        // The daemon and the container's processes are in the host's cgroup.
        let cgroup = try String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8)
        #expect(cgroup.split(separator: "\n").contains { $0.hasPrefix("0::") && $0.hasSuffix("/swift-overlay/ovlt-kill9/h1") }, "\(cgroup)")
        let daemon = try lab.pid("h1")
        kill(daemon, SIGKILL)
        for _ in 0..<50 where kill(daemon, 0) == 0 { usleep(100_000) }
        let down = try lab.ctl(["lab", "down", "--name", "ovlt-kill9"], timeout: 60)
        #expect(down.succeeded, "\(down.output)")
        // Gone (or a zombie of whoever adopted it, which nothing runs in).
        func running() -> Bool {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return false }
            return !stat[stat.index(after: close)...].hasPrefix(" Z")
        }
        for _ in 0..<20 where running() { usleep(100_000) }
        #expect(!running(), "the container's process \(pid) outlived lab down")
        kill(pid, SIGKILL)  // (when it did: not left to the next test)
        #expect(!FileManager.default.fileExists(atPath: (cgroup2MountPoint() ?? "") + "/swift-overlay/ovlt-kill9"), "the lab's cgroup is left")
    }
}

/// Where this machine's cgroup2 hierarchy is mounted, nil if nowhere.
func cgroup2MountPoint() -> String? {
    let table = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
    for line in table.split(separator: "\n") {
        let f = line.split(separator: " ")
        if let dash = f.firstIndex(of: "-"), dash + 1 < f.count, f.count > 4, f[dash + 1] == "cgroup2" { return String(f[4]) }
    }
    return nil
}

/// `network connect NETWORK CONTAINER` and `network disconnect`, across hosts and a restart.
@Suite(.serialized) struct NetworkConnectLabTests {
    @Test func aContainerJoinsAndLeavesANetworkAndKeepsItThroughARestart() async throws {
        guard getuid() == 0 else {
            Issue.record("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
            return
        }
        let lab = try CLILab.up("ovlt-conn", hosts: 2)
        defer { lab.down() }
        try lab.join(["h2"], token: try lab.initSwarm())
        _ = try lab.must("h1", ["network", "create", "-d", "overlay", "--attachable", "--subnet", "10.46.0.0/24", "web"])
        _ = try lab.must("h1", ["network", "create", "-d", "overlay", "--attachable", "--subnet", "10.47.0.0/24", "db"])
        for _ in 0..<100 where !(try lab.on("h2", ["network", "inspect", "db"])).succeeded { usleep(100_000) }
        _ = try lab.must("h1", ["run", "-d", "--name", "c1", "--network", "web", "--", "sleep", "infinity"])
        _ = try lab.must("h2", ["run", "-d", "--name", "c2", "--network", "db", "--", "sleep", "infinity"])
        let ip2 = try lab.ip("h2", "c2", network: "db")
        func reaches(_ target: String, tries: Int = 1) throws -> Bool {
            for _ in 0..<tries {
                if (try lab.on("h1", ["exec", "c1", "--", "ping", "-c", "1", "-W", "1", target])).succeeded { return true }
            }
            return false
        }
        #expect(try !reaches(ip2), "c1 reached c2 before joining db")

        // connect: c1 gets an address on db, reaches c2 there by address and by name.
        let joined = try lab.must("h1", ["network", "connect", "db", "c1"])
        #expect(joined.hasPrefix("10.47.0."), "\(joined)")
        #expect(try lab.ip("h1", "c1", network: "db") == joined && lab.ip("h1", "c1", network: "web").hasPrefix("10.46.0."))
        #expect(try reaches(ip2, tries: 20), "c1 cannot reach c2 on db")
        #expect(try reaches("c2.db", tries: 5), "c1 cannot reach c2 by name")
        let again = try lab.on("h1", ["network", "connect", "db", "c1"])
        #expect(!again.succeeded && again.output.contains("already connected"), "\(again.output)")

        // A restart of h1's daemon brings both endpoints back, on the interfaces they had.
        try lab.restartDaemon("h1", hostIndex: 1)
        #expect(try reaches(ip2, tries: 20), "c1 lost c2 after h1's daemon restarted")

        // disconnect: db's address goes back to the pool (h2 may take it), c2 is out of reach.
        #expect(try lab.must("h1", ["network", "disconnect", "db", "c1"]) == "c1")
        #expect(try !reaches(ip2))
        let inspect = try lab.must("h1", ["inspect", "c1"])
        #expect(!inspect.contains("10.47.0.") && inspect.contains("10.46.0."), "\(inspect)")
        let taken = try lab.retrying("h2", ["run", "-d", "--name", "reuse", "--network", "db", "--ip", joined, "--", "sleep", "infinity"],
                                     tries: 21, every: 250_000)
        #expect(taken.succeeded, "c1's db address did not come back: \(taken.output)")
        let twice = try lab.on("h1", ["network", "disconnect", "db", "c1"])
        #expect(!twice.succeeded && twice.output.contains("not connected"), "\(twice.output)")
    }
}

/// The swarm's nodes and services as Docker's CLI handles them: `node inspect`, `node update
/// --availability` (drain moves the tasks off), `service scale`, `network prune`.
@Suite(.serialized) struct NodeAvailabilityLabTests {
    @Test func drainMovesTasksOffScaleSetsReplicasPruneKeepsWhatIsUsed() async throws {
        guard getuid() == 0 else {
            Issue.record("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
            return
        }
        let lab = try CLILab.up("ovlt-drain", hosts: 2)
        defer { lab.down() }
        try lab.join(["h2"], token: try lab.initSwarm())
        _ = try lab.must("h1", ["network", "create", "-d", "overlay", "--subnet", "10.43.0.0/24", "apps"])
        _ = try lab.must("h1", ["network", "create", "-d", "overlay", "--subnet", "10.44.0.0/24", "unused"])
        _ = try lab.must("h1", ["service", "create", "--name", "web", "--network", "apps", "--replicas", "2", "--", "sleep", "infinity"])
        func nodesOf(_ service: String) throws -> [String] {
            try jsonLines(try lab.must("h1", ["service", "ps", service, "--filter", "desired-state=Running", "--format", "json"]))
                .compactMap { $0["Node"] as? String }.sorted()
        }
        func waitFor(_ what: String, _ body: () throws -> Bool) throws {
            for _ in 0..<100 { if try body() { return }; usleep(100_000) }
            Issue.record("timed out waiting for \(what)")
        }
        try waitFor("one task per node") { try nodesOf("web") == ["h1", "h2"] }

        // node inspect: by hostname, as JSON; a template too.
        let inspect = try JSONSerialization.jsonObject(with: Data(try lab.must("h1", ["node", "inspect", "h2"]).utf8)) as? [[String: Any]]
        #expect(inspect?.count == 1 && inspect?[0]["hostname"] as? String == "h2" && inspect?[0]["role"] as? String == "worker")
        #expect(try lab.must("h1", ["node", "inspect", "self", "--format", "{{.Hostname}} {{.Role}}"]) == "h1 manager")
        #expect(!(try lab.on("h1", ["node", "inspect", "nowhere"])).succeeded)

        // drain: h2's task moves to h1; the table says so.
        _ = try lab.must("h1", ["node", "update", "--availability", "drain", "h2"])
        try waitFor("the task to leave h2") { try nodesOf("web") == ["h1", "h1"] }
        #expect(try lab.must("h1", ["node", "ls", "--filter", "availability=drain", "--format", "{{.Hostname}}"]) == "h2")
        #expect(try lab.must("h1", ["node", "ls"]).contains("Drain"))
        // scale: new tasks stay off the drained node.
        _ = try lab.must("h1", ["service", "scale", "web=3"])
        try waitFor("three tasks on h1") { try nodesOf("web") == ["h1", "h1", "h1"] }
        // active again: new tasks may go there (replicated ones do not move back by themselves).
        _ = try lab.must("h1", ["node", "update", "--availability", "active", "h2"])
        _ = try lab.must("h1", ["service", "scale", "web=4"])
        try waitFor("the fourth task on h2") { try nodesOf("web") == ["h1", "h1", "h1", "h2"] }
        let bad = try lab.on("h1", ["node", "update", "--availability", "sleepy", "h2"])
        #expect(!bad.succeeded && bad.output.contains("use active, pause or drain"), "\(bad.output)")
        let badScale = try lab.on("h1", ["service", "scale", "web=many"])
        #expect(!badScale.succeeded && badScale.output.contains("SERVICE=REPLICAS"), "\(badScale.output)")

        // prune: the unused network goes; the service's and the ingress network stay.
        let pruned = try lab.must("h1", ["network", "prune", "-f"])
        #expect(pruned.contains("unused") && !pruned.contains("apps"), "\(pruned)")
        #expect(Set(try lab.must("h1", ["network", "ls", "--format", "{{.Name}}"]).split(separator: "\n")) == ["apps", "ingress"])

        // /readyz on a worker restarted while its manager is down: 503 until the manager answers.
        func readyz(_ host: String) throws -> (Int, String) {
            let r = try Command.run(["curl", "-s", "-m", "5", "--unix-socket", "/run/\(lab.name)/\(host)/overlayd.sock",
                                     "-w", "\n%{http_code}", "http://overlayd/readyz"])
            let lines = r.output.split(separator: "\n", omittingEmptySubsequences: false)
            return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n").trimmingCharacters(in: .whitespacesAndNewlines))
        }
        #expect(try readyz("h2") == (200, "ready"))
        try lab.stopDaemon("h1")
        try lab.restartDaemon("h2", hostIndex: 2)
        #expect(try readyz("h2") == (503, "not ready: no state from the manager yet"))
        try lab.startDaemon("h1", hostIndex: 1)
        var ready = (0, "")
        for _ in 0..<100 where ready.0 != 200 { ready = try readyz("h2"); usleep(100_000) }
        #expect(ready == (200, "ready"), "\(ready)")
    }
}

/// Installing and running it as an operator would: `Scripts/install.sh` (what `make install`
/// runs after building) into a temporary prefix, the systemd unit, the configuration file, the
/// readiness notice to systemd, the socket's group, JSON logs.
@Suite(.serialized) struct InstallLabTests {
    @Test func installedBinariesTakeTheConfigFileFlagsWinAndSystemdHearsTheyAreReady() async throws {
        guard getuid() == 0 else {
            Issue.record("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
            return
        }
        let bin = CLILab.binDirectory()
        let prefix = "/tmp/ovlt-install"
        try? FileManager.default.removeItem(atPath: prefix)
        defer { try? FileManager.default.removeItem(atPath: prefix) }
        var root = bin
        while !FileManager.default.fileExists(atPath: root + "/Package.swift") && root.count > 1 { root = (root as NSString).deletingLastPathComponent }
        let install = try Command.run(["env", "BIN=\(bin)", "PREFIX=\(prefix)", "SYSCONFDIR=\(prefix)/etc", root + "/Scripts/install.sh"], timeout: 60)
        #expect(install.succeeded, "\(install.output)")
        for file in ["bin/overlayd", "bin/overlayctl", "lib/cni/overlay-cni", "lib/systemd/system/overlayd.service", "etc/overlayd/daemon.json",
                     "share/bash-completion/completions/overlayctl", "share/zsh/site-functions/_overlayctl",
                     "share/fish/vendor_completions.d/overlayd.fish"] {
            #expect(FileManager.default.fileExists(atPath: "\(prefix)/\(file)"), "\(file) not installed")
        }
        // The unit: Type=notify, run from the prefix, accepted by systemd.
        let unit = try String(contentsOfFile: prefix + "/lib/systemd/system/overlayd.service", encoding: .utf8)
        #expect(unit.contains("Type=notify") && unit.contains("ExecStart=\(prefix)/bin/overlayd --config-file \(prefix)/etc/overlayd/daemon.json"))
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-analyze") {
            let verify = try Command.run(["systemd-analyze", "verify", "--man=no", prefix + "/lib/systemd/system/overlayd.service"])
            #expect(verify.succeeded, "systemd-analyze verify: \(verify.output)")
        } else {
            Issue.record("systemd-analyze is not installed (Debian's systemd package): the unit was not verified")
        }
        let installed = prefix + "/bin/overlayd"
        #expect(try Command.run([installed, "--version"]).output.hasPrefix("overlayd version "))

        // A bad file is refused with its line, and nothing starts.
        let config = prefix + "/etc/overlayd/daemon.json"
        for (text, says) in [
            ("{\n  \"log-level\": \"info\",\n  \"data-path-port\": \"many\"\n}", "daemon.json line 3: 'data-path-port' must be a whole number"),
            ("{\n  \"metrics-addr\": \"nowhere\"\n}", "daemon.json line 2: --metrics-addr nowhere is not HOST:PORT"),
            ("{\n  \"log-level\": \"info\",\n  \"colour\": \"blue\"\n}", "daemon.json line 3: unknown setting 'colour'"),
            ("{\n  \"log-level\": \"info\",,\n}", "daemon.json line 2: not valid JSON"),
        ] {
            try text.write(toFile: config, atomically: true, encoding: .utf8)
            let r = try Command.run([installed, "--config-file", config, "--state-dir", prefix + "/bad", "--socket", prefix + "/bad.sock"])
            #expect(!r.succeeded && r.output.contains(says), "\(says): \(r.output)")
            #expect(!FileManager.default.fileExists(atPath: prefix + "/bad.sock"))
        }

        // A good one: metrics and JSON logs from the file; the hostname flag wins over the file's.
        let lab = try CLILab.up("ovlt-inst", hosts: 1)
        defer { lab.down() }
        try lab.stopDaemon("h1")
        try """
            {
              "metrics-addr": "198.18.0.1:9323",
              "log-format": "json",
              "hostname": "from-the-file",
              "fast-gossip": true
            }
            """.write(toFile: config, atomically: true, encoding: .utf8)
        // systemd's end of Type=notify: a datagram socket named by NOTIFY_SOCKET.
        let notifyPath = "/run/\(lab.name)/notify.sock"
        unlink(notifyPath)
        let notify = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(notify) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { b in for (i, c) in notifyPath.utf8.enumerated() { b[i] = c } }
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(notify, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        #expect(bound == 0)
        var timeout = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(notify, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        try lab.startDaemon("h1", hostIndex: 1, env: ["NOTIFY_SOCKET=\(notifyPath)"],
                            args: ["--config-file", config, "--group", "nogroup"], binary: installed)
        var buffer = [UInt8](repeating: 0, count: 512)
        let n = recv(notify, &buffer, buffer.count, 0)
        let said = n > 0 ? String(decoding: buffer.prefix(n), as: UTF8.self) : ""
        #expect(said.hasPrefix("READY=1"), "systemd heard: '\(said)'")
        let info = try JSONSerialization.jsonObject(with: Data(try lab.must("h1", ["info"]).utf8)) as? [String: Any] ?? [:]
        #expect(info["hostname"] as? String == "h1", "the --hostname flag did not win: \(info["hostname"] ?? "-")")
        let metrics = try lab.sh("h1", ["curl", "-sf", "http://198.18.0.1:9323/metrics"])
        #expect(metrics.succeeded && metrics.output.contains("overlay_build_info"), "\(metrics.output.prefix(300))")
        // Each line names its part of the daemon and the IDs it concerns.
        _ = try lab.must("h1", ["swarm", "init", "--advertise-addr", "198.18.0.1"])
        _ = try lab.must("h1", ["run", "-d", "--name", "jl", "--", "sleep", "60"])
        let log = (try? String(contentsOfFile: "/run/\(lab.name)/h1/overlayd.log", encoding: .utf8)) ?? ""
        // (What the lab's own daemon wrote before it was stopped is text.)
        let lines = log.split(separator: "\n").reversed().prefix { !$0.contains("overlayd stopped") }
        #expect(!lines.isEmpty && lines.allSatisfy { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8))).flatMap { $0 as? [String: String] }.map {
                $0["component"] != nil && $0["level"] != nil && $0["msg"] != nil && $0["time"] != nil } ?? false
        }, "not JSON lines: \(lines)")
        let fields = lines.compactMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: String] }
        #expect(fields.contains { $0["component"] == "api" && ($0["msg"] ?? "").hasPrefix("overlayd listening") }, "\(fields)")
        #expect(fields.contains { $0["component"] == "containers" && $0["container"] == "jl" && ($0["msg"] ?? "").hasPrefix("container jl created") },
                "no line about container jl with its ID: \(fields)")
        // The API socket: the group's, 0660.
        var st = stat()
        #expect(stat("/run/\(lab.name)/h1/overlayd.sock", &st) == 0 && st.st_gid == getgrnam("nogroup")!.pointee.gr_gid
                    && st.st_mode & 0o777 == 0o660, "socket gid \(st.st_gid) mode \(String(st.st_mode & 0o777, radix: 8))")
        // A stop is announced too.
        try lab.stopDaemon("h1")
        let m = recv(notify, &buffer, buffer.count, 0)
        #expect(m > 0 && String(decoding: buffer.prefix(m), as: UTF8.self) == "STOPPING=1")
    }
}
