import ArgumentParser
import OverlayAPI
import Foundation
import OverlayTestKit

/// `overlayctl lab`: several hosts on this machine, each a network namespace running its own
/// overlayd, joined by a bridge in a lab namespace (198.18.0.0/15, no link to the uplink).
struct LabCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lab", abstract: "A local multi-host lab: up, exec, down.",
        subcommands: [LabUp.self, LabExec.self, LabRestart.self, LabDown.self])
}

struct LabOptions: ParsableArguments {
    @Option(help: "The lab's name (namespaces are <name>-h1, ...; it must start with 'ovl').") var name = "ovl-lab"

    func validate() throws {
        guard name.hasPrefix("ovl"), name.count <= 12,
              name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" }) else {
            throw ValidationError("--name \(name): start with 'ovl', at most 12 letters, digits or '-'")
        }
    }

    var stateRoot: String { "/run/\(name)" }
    func stateDir(_ host: String) -> String { "\(stateRoot)/\(host)" }
    func socket(_ host: String) -> String { "\(stateRoot)/\(host)/overlayd.sock" }
    func namespace(_ host: String) -> String { "\(name)-\(host)" }

    /// The lab's hosts (h1, h2, ...) found by their namespaces.
    func hosts() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? []
        return names.filter { $0.hasPrefix(name + "-h") }.map { String($0.dropFirst(name.count + 1)) }
            .filter { Int($0.dropFirst()) != nil }.sorted { Int($0.dropFirst())! < Int($1.dropFirst())! }
    }

    /// `h2`, `2` or `<name>-h2` -> `h2`.
    func host(_ given: String) throws -> String {
        var h = given
        if h.hasPrefix(name + "-") { h = String(h.dropFirst(name.count + 1)) }
        if Int(h) != nil { h = "h" + h }
        guard hosts().contains(h) else {
            throw CLIError("no host \(given) in lab \(name) (hosts: \(hosts().joined(separator: ", ")); is the lab up?)")
        }
        return h
    }
}

/// The directory this executable is in (overlayd is expected next to it).
func binDirectory() -> String {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return (exe as NSString).deletingLastPathComponent
}

struct LabUp: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up", abstract: "Create the lab's hosts and start overlayd in each (not yet in a swarm).",
        discussion: """
            Each host's overlayd runs in a cgroup of its own, <cgroup2>/swift-overlay/<name>/<host>, \
            and so does every container it starts (not dockerd's or podman's): lab down kills what \
            is left there even when a daemon was killed with SIGKILL. Where no cgroup2 hierarchy \
            can be written, the lab runs without them (with a warning).
            """)
    @OptionGroup var lab: LabOptions
    @Option(help: "How many hosts (1-250).") var hosts = 3
    @Flag(help: "Docker's gossip intervals instead of the lab's fast ones.") var normalGossip = false
    @Option(help: "An upstream DNS server every host's overlayd forwards to (repeatable; passed as overlayd --dns).") var dns: [String] = []
    @Flag(help: "Every host's overlayd serves Prometheus metrics on its lab address, port 9323 (overlayd --metrics-addr).")
    var metrics = false
    @Flag(help: "Every host also runs podman (CNI backend, overlay-cni, a local busybox image), in a mount namespace it shares with its overlayd.")
    var podman = false
    @Flag(help: "Every host also runs dockerd (docker.io, live restore, a local busybox image), in a mount namespace it shares with its overlayd, which serves it the swift-overlay network and IPAM plugin.")
    var docker = false
    @Option(name: .customLong("overlayd-arg"), parsing: .unconditionalSingleValue,
            help: "An argument added to every host's overlayd (repeatable), e.g. --overlayd-arg --gossip-port=7947.")
    var overlaydArguments: [String] = []
    @Option(name: .customLong("dockerd-arg"), parsing: .unconditionalSingleValue,
            help: "An argument added to every host's dockerd with --docker (repeatable), e.g. --dockerd-arg --live-restore=false (swarm mode refuses live restore).")
    var dockerdArguments: [String] = []
    @Option(help: "Members of an etcd cluster to start, one on each of the first N hosts (1-7); every overlayd gets --cluster-store naming them.")
    var etcd: Int?

    func validate() throws {
        guard (1...250).contains(hosts) else { throw ValidationError("--hosts \(hosts): use 1-250") }
        if let etcd, !(1...min(7, hosts)).contains(etcd) {
            throw ValidationError("--etcd \(etcd): use 1-\(min(7, hosts)) (one member on each of the first hosts)")
        }
    }

    func run() async throws {
        let overlayd = binDirectory() + "/overlayd"
        guard FileManager.default.isExecutableFile(atPath: overlayd) else {
            throw CLIError("cannot find overlayd next to overlayctl (\(overlayd)): build both (swift build)")
        }
        // What an earlier lab of this name left (its namespaces, or only its state directory,
        // whose store would make the new daemons rejoin the old swarm) goes first.
        if !lab.hosts().isEmpty || FileManager.default.fileExists(atPath: lab.stateRoot)
            || LabCgroup.directory(lab).map({ FileManager.default.fileExists(atPath: $0) }) == true {
            try await LabDown.tearDown(lab)
        }
        if FileManager.default.fileExists(atPath: lab.stateRoot) {
            throw CLIError("cannot remove \(lab.stateRoot), left by an earlier lab \(lab.name): see what holds it (mounts, processes) and remove it")
        }
        let created: Lab
        do { created = try Lab.create(name: lab.name, hosts: hosts) } catch { throw CLIError("cannot create the lab: \(error)") }
        var clusterStore: String?
        if let etcd {
            let members = Array(created.hosts.prefix(etcd))
            try await LabEtcd.start(lab, members)
            clusterStore = LabEtcd.url(members)
        }
        for h in created.hosts {
            let dir = lab.stateDir(h.name)
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            guard FileManager.default.createFile(atPath: dir + "/overlayd.log", contents: nil, attributes: [.posixPermissions: 0o600]) else {
                throw CLIError("cannot create \(dir)/overlayd.log")
            }
            let log = FileHandle(forWritingAtPath: dir + "/overlayd.log")!
            // A configuration file of its own (empty): the machine's /etc/overlayd/daemon.json is
            // not the lab's.
            guard FileManager.default.createFile(atPath: dir + "/daemon.json", contents: Data("{}\n".utf8),
                                                 attributes: [.posixPermissions: 0o600]) else {
                throw CLIError("cannot create \(dir)/daemon.json")
            }
            if podman {
                do { try LabPodman.setUp(lab, h.name, pluginDirectory: binDirectory()) } catch {
                    throw CLIError("cannot set up podman on \(h.name): \(error)")
                }
            }
            if docker {
                do { try LabDocker.setUp(lab, h.name, extra: dockerdArguments) } catch { throw CLIError("cannot set up Docker on \(h.name): \(error)") }
            }
            // In the host's cgroup first (overlayd and every container it starts), then in its namespaces.
            let enter: [String] = LabCgroup.enter(lab, h.name)
                + (podman || docker ? LabMountNamespace.enter(lab, h.name) : ["ip", "netns", "exec", lab.namespace(h.name)])
            var daemon: [String] = [overlayd, "--config-file", dir + "/daemon.json", "--state-dir", dir, "--socket", lab.socket(h.name),
                                    "--hostname", h.name, "--advertise-addr", h.address.description]
            if !normalGossip { daemon.append("--fast-gossip") }
            daemon += dns.flatMap { ["--dns", $0] }
            if metrics { daemon += ["--metrics-addr", "\(h.address):9323"] }
            if let clusterStore { daemon += ["--cluster-store", clusterStore] }
            if docker { daemon += LabDocker.overlaydArguments(lab, h.name) }
            daemon += overlaydArguments
            try? log.close()
            // Kept for `lab restart`, which starts it again the same way.
            guard FileManager.default.createFile(atPath: dir + "/overlayd.argv", contents: try JSONEncoder().encode(enter + daemon),
                                                 attributes: [.posixPermissions: 0o600]) else {
                throw CLIError("cannot create \(dir)/overlayd.argv")
            }
            do { _ = try Command.start(enter + daemon, log: dir + "/overlayd.log") } catch {
                throw CLIError("cannot start overlayd on \(h.name): \(error)")
            }
        }
        for h in created.hosts {
            let client = try DaemonClient(host: "unix://" + lab.socket(h.name))
            var up = false
            for _ in 0..<100 where !up {
                if (try? await client.call(LocalAPI.info)) != nil { up = true } else {
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            guard up else {
                let log = (try? String(contentsOfFile: lab.stateDir(h.name) + "/overlayd.log", encoding: .utf8)) ?? ""
                throw CLIError("overlayd on \(h.name) did not come up in 10 s: \(log.split(separator: "\n").last ?? "no log")")
            }
            if podman {
                do { try LabPodman.importImage(lab, h.name) } catch { throw CLIError("cannot import the busybox image on \(h.name): \(error)") }
            }
            if docker {
                do {
                    try LabDocker.start(lab, h.name)
                    try LabDocker.importImage(lab, h.name)
                } catch { throw CLIError("cannot start Docker on \(h.name): \(error)") }
            }
            print("\(h.name)  \(h.address)  netns \(lab.namespace(h.name))  socket \(lab.socket(h.name))"
                  + (metrics ? "  metrics http://\(h.address):9323/metrics" : "")
                  + (docker ? "  DOCKER_HOST=unix://\(LabDocker.socket(lab, h.name))" : ""))
        }
        if let clusterStore { print("etcd  \(clusterStore)  (data and log under \(lab.stateRoot)/hN/etcd)") }
        print("lab \(lab.name) is up: `overlayctl lab exec h1 -- overlayctl swarm init` to begin")
    }
}

struct LabExec: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exec",
        abstract: "Run a command on a lab host (its namespaces, with OVERLAY_HOST set to that host's overlayd, and DOCKER_HOST to its dockerd with --docker).")
    @OptionGroup var lab: LabOptions
    @Argument(help: "The host: h1, 1 or <lab>-h1.") var host: String
    @Argument(parsing: .captureForPassthrough, help: "-- CMD ARGS...") var command: [String] = []

    func run() async throws {
        var cmd = command
        if cmd.first == "--" { cmd.removeFirst() }
        guard !cmd.isEmpty else { throw CLIError("lab exec needs a command: overlayctl lab exec h1 -- CMD", code: 64) }
        let h = try lab.host(host)
        let path = binDirectory() + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin")
        let env = ["env", "OVERLAY_HOST=unix://\(lab.socket(h))", "PATH=\(path)"]
        if LabMountNamespace.exists(lab, h) {
            let extra = (LabPodman.isOn(lab, h) ? LabPodman.environment(lab, h) : []) + (LabDocker.isOn(lab, h) ? LabDocker.environment(lab, h) : [])
            throw execReplacing(LabMountNamespace.enter(lab, h) + env + extra + cmd)
        }
        throw execReplacing(["ip", "netns", "exec", lab.namespace(h)] + env + cmd)
    }
}

struct LabRestart: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restart",
        abstract: "Stop a lab host's overlayd (or its dockerd) and start it again the way lab up did; containers keep running.")
    @OptionGroup var lab: LabOptions
    @Argument(help: "The host: h1, 1 or <lab>-h1.") var host: String
    @Flag(help: "Restart the host's dockerd instead (lab up --docker; its containers live on: --live-restore).") var dockerd = false
    @Flag(help: "Kill it (SIGKILL) instead of stopping it (SIGTERM).") var kill = false

    func run() async throws {
        let h = try lab.host(host)
        let signal = kill ? SIGKILL : SIGTERM
        if dockerd {
            guard LabDocker.isOn(lab, h) else { throw CLIError("\(h) has no dockerd: the lab was not made with --docker") }
            if let pid = LabDocker.pid(lab, h) {
                Glibc.kill(pid, signal)
                for _ in 0..<200 where Glibc.kill(pid, 0) == 0 { try await Task.sleep(for: .milliseconds(100)) }
            }
            try LabDocker.start(lab, h)
            print("dockerd on \(h) restarted")
            return
        }
        let argvFile = lab.stateDir(h) + "/overlayd.argv"
        guard let data = FileManager.default.contents(atPath: argvFile), let argv = try? JSONDecoder().decode([String].self, from: data) else {
            throw CLIError("cannot read \(argvFile): was \(h) made by lab up?")
        }
        let client = try DaemonClient(host: "unix://" + lab.socket(h))
        if let info = try? await client.call(LocalAPI.info) {
            Glibc.kill(info.pid, signal)
            for _ in 0..<200 where Glibc.kill(info.pid, 0) == 0 { try await Task.sleep(for: .milliseconds(100)) }
        }
        _ = try Command.start(argv, log: lab.stateDir(h) + "/overlayd.log")
        for _ in 0..<100 {
            if (try? await client.call(LocalAPI.info)) != nil {
                print("overlayd on \(h) restarted")
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw CLIError("overlayd on \(h) did not answer in 10 s after its restart (see \(lab.stateDir(h))/overlayd.log)")
    }
}

struct LabDown: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "down", abstract: "Stop every host's overlayd, remove its containers, the lab's cgroup and its namespaces.")
    @OptionGroup var lab: LabOptions

    func run() async throws {
        try await Self.tearDown(lab)
        print("lab \(lab.name) is down")
    }

    static func tearDown(_ lab: LabOptions) async throws {
        var pids: [Int32] = []
        for h in lab.hosts() {
            LabPodman.tearDown(lab, h)
            LabDocker.tearDown(lab, h)
        }
        for h in lab.hosts() {
            guard let client = try? DaemonClient(host: "unix://" + lab.socket(h)),
                  let info = try? await client.call(LocalAPI.info) else { continue }
            if let containers = try? await client.call(LocalAPI.containers) {
                for c in containers { _ = try? await client.call(LocalAPI.removeContainer, c.Id, query: [("force", "1")]) }
            }
            pids.append(info.pid)
        }
        // The daemons are frozen before any stops: a manager's reconciler would otherwise start a
        // removed service task again on a daemon not yet stopped. While they are frozen and alive,
        // their mount namespaces (where the containers' namespace handles are mounted; a
        // container has a mount namespace of its own, without them) are read for every
        // container's network namespace, so that what still runs there is killed below.
        for p in pids { kill(p, SIGSTOP) }
        var containerInodes = containerNamespaces(under: lab.stateRoot)
        for p in pids {
            kill(p, SIGTERM)
            kill(p, SIGCONT)
        }
        // Read again while they stop: a task whose start was under way when they froze.
        for _ in 0..<50 where pids.contains(where: { kill($0, 0) == 0 }) {
            containerInodes.formUnion(containerNamespaces(under: lab.stateRoot))
            try await Task.sleep(for: .milliseconds(100))
        }
        for p in pids where kill(p, 0) == 0 { kill(p, SIGKILL) }
        // Read once more (a daemon that did not answer) before the cgroup's processes, whose
        // mount tables hold the handles, are killed.
        containerInodes.formUnion(containerNamespaces(under: lab.stateRoot))
        // What the daemons left in the lab's cgroup: containers of a daemon that did not answer,
        // a service's tasks, and what the namespaces below do not lead to (a process a container
        // started in a network namespace of its own).
        await LabCgroup.killAll(lab)
        for h in lab.hosts() { LabEtcd.stop(lab, h) }
        // Namespace handles and other mounts the daemons left under the state root.
        let mounts = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        let points = mounts.split(separator: "\n").compactMap { line -> String? in
            let f = line.split(separator: " ")
            return f.count > 4 && f[4].hasPrefix(lab.stateRoot + "/") ? String(f[4]) : nil
        }
        // Processes still in the lab's namespaces: the hosts' (containers of a daemon that did
        // not answer) and the containers' own (a service's tasks, which a stopped daemon leaves
        // running for its next start). The containers' handles are mounted under the state root
        // in the daemons' mount namespaces, which this one does not see (`ip netns exec` gives
        // each daemon its own): every process's mountinfo was read for them while the daemons
        // were frozen, and again after they stopped. Without a lab cgroup this is the only way.
        var labInodes = Set(lab.hosts().compactMap { inode("/run/netns/\(lab.namespace($0))") })
        labInodes.formUnion(containerInodes)
        killProcesses(inNamespaces: labInodes)
        for p in points.sorted(by: { $0.count > $1.count }) { umount2(p, Int32(MNT_DETACH)) }
        try? FileManager.default.removeItem(atPath: lab.stateRoot)
        Lab.destroyAll(prefix: lab.name + "-")
    }

    static func inode(_ path: String) -> UInt? {
        var s = stat()
        return stat(path, &s) == 0 ? UInt(s.st_ino) : nil
    }

    /// The network namespaces whose handles (nsfs mounts, root `net:[INODE]`) any process has
    /// mounted under `root`.
    static func containerNamespaces(under root: String) -> Set<UInt> {
        var out: Set<UInt> = []
        var seen: Set<UInt> = []
        for e in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard Int32(e) != nil else { continue }
            // Processes sharing a mount namespace share its table: read each once.
            if let ns = inode("/proc/\(e)/ns/mnt"), !seen.insert(ns).inserted { continue }
            guard let text = try? String(contentsOfFile: "/proc/\(e)/mountinfo", encoding: .utf8) else { continue }
            for line in text.split(separator: "\n") {
                let f = line.split(separator: " ")
                guard f.count > 4, f[4].hasPrefix(root + "/"), f[3].hasPrefix("net:["), f[3].hasSuffix("]"),
                      let n = UInt(f[3].dropFirst(5).dropLast()) else { continue }
                out.insert(n)
            }
        }
        return out
    }

    static func killProcesses(inNamespaces inodes: Set<UInt>) {
        guard !inodes.isEmpty, let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return }
        for e in entries {
            guard let pid = Int32(e), pid != getpid(), let ino = inode("/proc/\(e)/ns/net"), inodes.contains(ino) else { continue }
            kill(pid, SIGKILL)
        }
    }
}
