// chaos-soak: faults at random, for as long as asked, in a 5-host lab under traffic, with the
// invariants checked throughout (issue 20). See Documentation/Reliability.md.
//
//   chaos-soak [--duration 30m] [--seed 1] [--name ovl-chaos] [--keep]   (root; overlayd, overlayctl beside it)
//
// The lab: h1-h3 managers on a 3-member etcd, h4 and h5 workers; an attachable network `plain`
// and an encrypted one `secret`; on every host a container `c-hN` on both, running a probe agent
// (Agent.swift); a service `web` (3 tasks on `plain`, published on 8080 by the routing mesh).
// Faults, one at a time, chosen by the seed: overlayd killed (SIGKILL) and started again, an etcd
// member the same, a host cut off (nftables) for 5-60 s, random loss on a host's underlay
// (nftables `numgen`) for 5-60 s, gossip key rotation, a worker leaving and joining again, the
// service scaled, a container replaced. After each heals: every probe stream must succeed again
// within 10 s (names: `dns`; reachability: `plain`, `secret`, `vip`, `mesh`), no overlay address is
// held twice. Throughout: no VXLAN packet of the encrypted network on any underlay (tcpdump). At
// the end: each overlayd's memory (RSS) grew under 10% over the run's second half, and `lab down`
// leaves no namespace, link, nft table or process.
import ArgumentParser
import Foundation
import OverlayTestKit

/// SplitMix64: the fault schedule depends on the seed alone.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

/// The faults, with how often each is drawn.
enum Fault: String, CaseIterable {
    case killOverlayd = "kill overlayd"
    case killEtcd = "kill etcd"
    case partition = "partition"
    case loss = "loss"
    case rotateKeys = "rotate keys"
    case leaveJoin = "leave and join"
    case scale = "scale"
    case churn = "container churn"

    var weight: Int {
        switch self {
        case .killOverlayd: 3
        case .partition, .loss, .churn: 2
        case .killEtcd, .rotateKeys, .leaveJoin, .scale: 1
        }
    }
}

/// One fault as it happened.
struct Injected {
    var fault: Fault
    var detail: String
    var began: Double
    var healed: Double
    /// Seconds from the heal until every stream succeeded again (nil: not within the wait).
    var recovery: Double?
    var namesRecovery: Double?
}

@main struct ChaosSoak: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chaos-soak",
        abstract: "Faults at random in a 5-host lab under traffic, with invariants checked throughout; prints a report.")

    @Option(help: "How long to inject faults: seconds, or with a unit (90s, 30m, 1h).") var duration = "30m"
    @Option(help: "The seed: the same seed draws the same faults in the same order.") var seed: UInt64 = 1
    @Option(help: "The lab's name (its namespaces are NAME-h1 ...; `ovl` and at most 9 more letters, digits or -).") var name = "ovl-chaos"
    @Option(help: "Where the agents' results, the captures, the memory samples and the daemons' logs go (default /tmp/chaos-soak-SEED).") var out: String?
    @Flag(help: "Leave the lab up at the end (the teardown check is skipped).") var keep = false

    func run() throws {
        guard getuid() == 0 else { throw ValidationError("chaos-soak needs root (it makes a lab of network namespaces)") }
        let seconds: Double
        switch duration.last {
        case "s": seconds = Double(duration.dropLast()) ?? -1
        case "m": seconds = (Double(duration.dropLast()) ?? -1) * 60
        case "h": seconds = (Double(duration.dropLast()) ?? -1) * 3600
        default: seconds = Double(duration) ?? -1
        }
        guard seconds > 0 else { throw ValidationError("--duration \(duration) is not a duration: 1800, 90s, 30m or 1h") }
        let soak = try Soak(lab: name, seed: seed, seconds: seconds, directory: out ?? "/tmp/chaos-soak-\(seed)", keep: keep)
        let violations = try soak.run()
        if violations > 0 { throw ExitCode(1) }
    }
}

final class Soak {
    let lab: String
    let seed: UInt64
    let seconds: Double
    let dir: String
    let keep: Bool
    let bin: String
    var rng: SplitMix
    let hosts = ["h1", "h2", "h3", "h4", "h5"]
    let managers = ["h1", "h2", "h3"]
    /// Hosts in the swarm with their container running (the probes' peers).
    var present: Set<String>
    var workerToken = ""
    var injected: [Injected] = []
    var violations: [String] = []
    /// Probes that failed while no fault was in effect (after the last one's recovery and its
    /// settle window, before the next one), per stream.
    var quiet: [Stream: Int] = [:]
    var addressChecks = 0
    var rss: [String: [MemorySample]] = [:]
    var lastSample = 0.0
    var lastHeapSample = 0.0
    var captures: [Int32] = []
    let probes: ProbeLog
    let start = Date().timeIntervalSince1970

    init(lab: String, seed: UInt64, seconds: Double, directory: String, keep: Bool) throws {
        self.lab = lab
        self.seed = seed
        self.seconds = seconds
        self.dir = directory
        self.keep = keep
        rng = SplitMix(state: seed)
        present = Set(hosts)
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        bin = (exe as NSString).deletingLastPathComponent
        guard FileManager.default.isExecutableFile(atPath: bin + "/overlayctl") else {
            throw ValidationError("no overlayctl beside chaos-soak in \(bin): swift build first")
        }
        probes = ProbeLog(directory: directory + "/probes")
    }

    var now: Double { Date().timeIntervalSince1970 }

    /// A line on standard output at once (unbuffered: a long run is followed as it goes).
    func emit(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }

    /// A line with the seconds since the start.
    func say(_ line: String) {
        emit(String(format: "%7.1f  ", now - start) + line)
    }

    // MARK: Commands

    /// What a command did: whether it exited 0, and its output.
    struct Outcome {
        var succeeded: Bool
        var output: String
    }

    @discardableResult
    func run(_ args: [String], timeout: Double = 60) -> Outcome {
        do {
            let r = try Command.run(args, timeout: timeout)
            return Outcome(succeeded: r.succeeded, output: r.output)
        } catch {
            return Outcome(succeeded: false, output: "\(args.first ?? ""): \(error)")
        }
    }

    /// `overlayctl ARGS` on host `h`.
    @discardableResult
    func on(_ h: String, _ args: [String], timeout: Double = 60) -> Outcome {
        run([bin + "/overlayctl", "lab", "exec", "--name", lab, h, "--", "overlayctl"] + args, timeout: timeout)
    }

    /// Any command in host `h`'s namespaces.
    @discardableResult
    func shell(_ h: String, _ args: [String], timeout: Double = 60) -> Outcome {
        run([bin + "/overlayctl", "lab", "exec", "--name", lab, h, "--"] + args, timeout: timeout)
    }

    func must(_ h: String, _ args: [String], timeout: Double = 60) throws -> String {
        let r = on(h, args, timeout: timeout)
        guard r.succeeded else { throw ValidationError("\(h): overlayctl \(args.joined(separator: " ")): \(r.output)") }
        return r.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func random(_ range: ClosedRange<Double>) -> Double { Double.random(in: range, using: &rng) }
    func pick<T>(_ xs: [T]) -> T { xs[Int.random(in: 0..<xs.count, using: &rng)] }

    // MARK: The run

    func run() throws -> Int {
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir + "/probes", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: dir + "/www", withIntermediateDirectories: true)
        try agentSource.write(toFile: dir + "/agent.py", atomically: true, encoding: .utf8)
        try pageSource.write(toFile: dir + "/www/index.html", atomically: true, encoding: .utf8)
        try writePeers()
        say("chaos-soak: seed \(seed), \(Int(seconds)) s of faults, lab \(lab) (5 hosts, h1-h3 managers on etcd), results in \(dir)")
        run([bin + "/overlayctl", "lab", "down", "--name", lab])
        let up = run([bin + "/overlayctl", "lab", "up", "--name", lab, "--hosts", "5", "--etcd", "3", "--metrics"], timeout: 120)
        guard up.succeeded else { throw ValidationError("lab up: \(up.output)") }
        var tornDown = false
        defer { if !tornDown { teardown() } }
        try setUp()
        try waitForBaseline()

        let end = now + seconds
        var quietFrom = now
        while now < end {
            // Failures while no fault was in effect: a stream that broke on its own.
            probes.read(hosts: hosts)
            for (s, n) in probes.failedStreams(from: quietFrom, to: now) { quiet[s, default: 0] += n }
            let fault = drawFault()
            var record = inject(fault)
            let (all, names, late) = recovery(since: record.healed)
            record.recovery = all
            record.namesRecovery = names
            injected.append(record)
            let shown = all.map { String(format: "%.1f s", $0) } ?? "not within 60 s"
            let impact = probes.failed(from: record.began, to: record.healed + (all ?? 60))
            say("\(fault.rawValue) \(record.detail): \(impact) probes failed; every stream succeeded again \(shown) after it healed"
                + ((all ?? 60) > 5 ? " (\(late))" : ""))
            if all == nil || all! > 10 {
                violations.append("after \(fault.rawValue) \(record.detail): \(all == nil ? "not steadily reachable again within 60 s" : String(format: "recovered in %.1f s", all!)) (\(late))")
            }
            checkAddresses()
            quietFrom = record.healed + (all ?? 60) + Self.settle
            idle(random(2...5))
        }
        probes.read(hosts: hosts)
        for (s, n) in probes.failedStreams(from: quietFrom, to: now) { quiet[s, default: 0] += n }
        stopCaptures()
        checkCleartext()
        checkMemory()
        teardown()
        tornDown = true
        return report()
    }

    func writePeers() throws {
        let hostsJSON = present.sorted().map { "\"\($0)\"" }.joined(separator: ",")
        let mesh = hosts.map { "[\"\($0)\",\"198.18.0.\($0.dropFirst())\"]" }.joined(separator: ",")
        let text = "{\"hosts\":[\(hostsJSON)],\"mesh\":[\(mesh)]}"
        // Written whole, then renamed: an agent never reads half a file.
        try text.write(toFile: dir + "/peers.json.new", atomically: false, encoding: .utf8)
        rename(dir + "/peers.json.new", dir + "/peers.json")
    }

    func setUp() throws {
        _ = try must("h1", ["swarm", "init", "--advertise-addr", "198.18.0.1"])
        workerToken = try must("h1", ["swarm", "join-token", "-q", "worker"])
        let managerToken = try must("h1", ["swarm", "join-token", "-q", "manager"])
        for h in ["h2", "h3"] { _ = try must(h, ["swarm", "join", "--token", managerToken, "198.18.0.1:2377"]) }
        for h in ["h4", "h5"] { _ = try must(h, ["swarm", "join", "--token", workerToken, "198.18.0.1:2377"]) }
        _ = try must("h1", ["network", "create", "-d", "overlay", "--attachable", "--subnet", "10.90.0.0/24", "plain"])
        _ = try must("h1", ["network", "create", "-d", "overlay", "--attachable", "--opt", "encrypted", "--subnet", "10.91.0.0/24", "secret"])
        _ = try must("h1", ["service", "create", "--name", "web", "--network", "plain", "--replicas", "3", "--publish", "8080:8000",
                            "--", "python3", "-m", "http.server", "8000", "--directory", dir + "/www"])
        for h in hosts { try startContainer(h) }
        // The capture of cleartext: VXLAN (4789) carrying an inner IPv4 packet from or to the
        // encrypted network's 10.91.0.0/24 (offsets from the UDP header: 8 + 8 VXLAN + 14 Ethernet
        // + 12 or 16 into the inner IPv4 header). First the same filter on the plain network for
        // a few seconds, to show that it sees what it looks for.
        let control = dir + "/control.pcap"
        shell("h1", ["timeout", "5", "tcpdump", "-i", "eth0", "-n", "-U", "-s", "96", "-w", control,
                     "udp port 4789 and (udp[42:2] = 0x0a5a or udp[46:2] = 0x0a5a)"], timeout: 20)
        let seen = packets(control)
        say("capture check: \(seen) VXLAN packets of the plain network seen on h1 in 5 s (the same filter then watches the encrypted one)")
        if seen == 0 { violations.append("the capture's filter saw no plain VXLAN packet in 5 s: the cleartext check would prove nothing") }
        for h in hosts {
            let argv = [bin + "/overlayctl", "lab", "exec", "--name", lab, h, "--", "tcpdump", "-i", "eth0", "-n", "-U", "-s", "96",
                        "-w", dir + "/\(h)-cleartext.pcap", "udp port 4789 and (udp[42:2] = 0x0a5b or udp[46:2] = 0x0a5b)"]
            if let pid = try? Command.start(argv, log: dir + "/\(h)-tcpdump.log") { captures.append(pid) }
        }
    }

    func startContainer(_ h: String) throws {
        _ = try must(h, ["run", "-d", "--name", "c-\(h)", "--network", "plain", "--network", "secret",
                         "--", "python3", dir + "/agent.py", h, dir + "/peers.json", dir + "/probes/\(h).jsonl"])
    }

    /// The streams that should succeed now: every present host's agent, to every other present
    /// host, the VIP, and the mesh of every host.
    func expectedStreams() -> [Stream] {
        var out: [Stream] = []
        for from in present.sorted() {
            for to in present.sorted() where to != from {
                for kind in ["dns", "plain", "secret"] { out.append(Stream(from: from, kind: kind, to: to)) }
            }
            out.append(Stream(from: from, kind: "vip", to: "web"))
            for to in hosts { out.append(Stream(from: from, kind: "mesh", to: to)) }
        }
        return out
    }

    func waitForBaseline() throws {
        let t = now
        let (all, _, late) = recovery(since: t, wait: 120)
        guard let all else { throw ValidationError("the lab never got every probe through before the first fault: \(late)") }
        say(String(format: "baseline: every probe stream succeeds (%.1f s after the setup)", all))
        idle(5)
    }

    /// How long a stream must keep succeeding after it comes back to count as recovered: a
    /// stream that answers once and breaks again has not recovered.
    static let settle = 3.0

    /// Seconds from `time` until every expected stream has come back to stay (its first success
    /// not followed by a failure within ``settle`` s; nil: not within `wait`), the same for names
    /// alone, and the streams still failing (or the slowest).
    func recovery(since time: Double, wait: Double = 60) -> (Double?, Double?, String) {
        let deadline = time + wait
        while true {
            probes.read(hosts: hosts)
            sampleMemory()
            let expected = expectedStreams()
            var latest = 0.0, latestName = 0.0
            var missing: [Stream] = []
            var pending: [Stream] = []
            var slowest: (Stream, Double)?
            for s in expected {
                let t: Double
                switch probes.settled(s, after: time, settle: Self.settle) {
                case .at(let at): t = at
                case .pending(let at):
                    // Back, but not yet for the whole window: judged once it is.
                    pending.append(s)
                    t = at
                case .no:
                    missing.append(s)
                    continue
                }
                if t - time > (slowest?.1 ?? -1) { slowest = (s, t - time) }
                latest = max(latest, t - time)
                if s.isName { latestName = max(latestName, t - time) }
            }
            if missing.isEmpty && pending.isEmpty {
                return (latest, latestName, slowest.map { s, t in
                    let why = probes.reasons(s, from: time, to: time + t)
                    return "slowest: \(s)" + (why.isEmpty ? "" : "; its failures since the heal: " + why)
                } ?? "")
            }
            if now > deadline + (missing.isEmpty ? Self.settle + 2 : 0) {
                func list(_ xs: [Stream]) -> String {
                    xs.sorted().prefix(12).map(\.description).joined(separator: ", ") + (xs.count > 12 ? " and \(xs.count - 12) more" : "")
                }
                let failing = missing.isEmpty ? pending : missing
                let why = failing.sorted().prefix(3).map { s in
                    let r = probes.reasons(s, from: time, to: now)
                    return "\(s): " + (r.isEmpty ? "no results" : r)
                }.joined(separator: "; ")
                return (nil, nil, (missing.isEmpty ? "back but failing again within \(Self.settle) s: " : "still failing: ") + list(failing) + " (\(why))")
            }
            usleep(250_000)
        }
    }

    /// Waits `seconds` while reading the probes and sampling memory.
    func idle(_ seconds: Double) {
        let until = now + seconds
        while now < until {
            probes.read(hosts: hosts)
            sampleMemory()
            usleep(250_000)
        }
    }

    func drawFault() -> Fault {
        let total = Fault.allCases.map(\.weight).reduce(0, +)
        var x = Int.random(in: 0..<total, using: &rng)
        for f in Fault.allCases {
            if x < f.weight { return f }
            x -= f.weight
        }
        return .killOverlayd
    }

    // MARK: Faults

    /// Injects `fault`, holds it, heals it; the record's `healed` is when the lab was whole again.
    func inject(_ fault: Fault) -> Injected {
        let began = now
        var detail = ""
        switch fault {
        case .killOverlayd:
            // h4's daemon is never killed: one overlayd lives through the whole run, so its memory
            // can always be judged.
            let h = pick(hosts.filter { $0 != Self.memoryWitness })
            detail = "on \(h)"
            let r = run([bin + "/overlayctl", "lab", "restart", "--name", lab, h, "--kill"], timeout: 60)
            if !r.succeeded { violations.append("overlayd on \(h) did not start again after SIGKILL: \(r.output.suffix(300))") }
        case .killEtcd:
            let h = pick(managers)
            let hold = random(1...5)
            detail = String(format: "on %@, down %.0f s", h, hold)
            killEtcd(h, hold: hold)
        case .partition:
            let h = pick(hosts)
            let hold = random(5...60)
            detail = String(format: "of %@ for %.0f s", h, hold)
            filter(h, rule: "drop")
            idle(hold)
            unfilter(h)
        case .loss:
            let h = pick(hosts)
            let hold = random(5...60)
            let percent = Int(random(5...30))
            detail = String(format: "of %d%% on %@ for %.0f s", percent, h, hold)
            filter(h, rule: "numgen random mod 100 < \(percent) drop")
            idle(hold)
            unfilter(h)
        case .rotateKeys:
            let h = pick(managers)
            detail = "on \(h)"
            let r = on(h, ["swarm", "rotate-keys"])
            if !r.succeeded { detail += " (refused: \(r.output.trimmingCharacters(in: .whitespacesAndNewlines).suffix(120)))" }
        case .leaveJoin:
            let h = pick(["h4", "h5"])
            detail = "of \(h)"
            present.remove(h)
            try? writePeers()
            let left = on(h, ["swarm", "leave", "--force"])
            if !left.succeeded { violations.append("\(h) could not leave: \(left.output.suffix(200))") }
            idle(random(1...5))
            let joined = on(h, ["swarm", "join", "--token", workerToken, "198.18.0.1:2377"])
            if !joined.succeeded { violations.append("\(h) could not join again: \(joined.output.suffix(200))") }
            do { try startContainer(h) } catch { violations.append("\(h)'s container after its rejoin: \(error)") }
            present.insert(h)
            try? writePeers()
        case .scale:
            let replicas = Int.random(in: 1...5, using: &rng)
            detail = "to \(replicas)"
            let r = on(pick(managers), ["service", "scale", "web=\(replicas)"])
            if !r.succeeded { detail += " (refused: \(r.output.trimmingCharacters(in: .whitespacesAndNewlines).suffix(120)))" }
        case .churn:
            let h = pick(hosts)
            detail = "on \(h)"
            present.remove(h)
            try? writePeers()
            on(h, ["rm", "-f", "c-\(h)"])
            do { try startContainer(h) } catch { violations.append("\(h)'s container could not be made again: \(error)") }
            present.insert(h)
            try? writePeers()
        }
        return Injected(fault: fault, detail: detail, began: began, healed: now)
    }

    /// Drops (or randomly drops) everything on `h`'s underlay but loopback, both ways.
    func filter(_ h: String, rule: String) {
        let ruleset = """
            table inet chaos {
              chain in { type filter hook input priority -10; iifname "eth0" \(rule); }
              chain out { type filter hook output priority -10; oifname "eth0" \(rule); }
            }
            """
        let file = dir + "/\(h)-chaos.nft"
        try? ruleset.write(toFile: file, atomically: true, encoding: .utf8)
        let r = shell(h, ["nft", "-f", file])
        if !r.succeeded { violations.append("nft on \(h): \(r.output)") }
    }

    func unfilter(_ h: String) {
        let r = shell(h, ["nft", "delete", "table", "inet", "chaos"])
        if !r.succeeded { violations.append("nft delete on \(h): \(r.output)") }
    }

    /// Kills `h`'s etcd member (SIGKILL), and after `hold` seconds starts it again the way
    /// `lab up` did (its command is kept beside its data).
    func killEtcd(_ h: String, hold: Double) {
        let memberDir = "/run/\(lab)/\(h)/etcd"
        guard let command = try? String(contentsOfFile: memberDir + "/command", encoding: .utf8) else {
            violations.append("no etcd command for \(h) in \(memberDir)")
            return
        }
        for pid in pids(matching: memberDir + "/data", binary: "etcd") { kill(pid, SIGKILL) }
        idle(hold)
        let argv = command.split(separator: "\n").map(String.init)
        if (try? Command.start(argv, log: memberDir + "/etcd.log")) == nil { violations.append("etcd on \(h) could not be started again") }
    }

    /// Processes whose command line holds `needle`, of an executable whose name ends with `binary`.
    func pids(matching needle: String, binary: String) -> [Int32] {
        var out: [Int32] = []
        for e in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(e), let cmdline = FileManager.default.contents(atPath: "/proc/\(e)/cmdline") else { continue }
            let args = cmdline.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            guard let exe = args.first, exe.hasSuffix(binary), args.contains(where: { $0.contains(needle) }) else { continue }
            out.append(pid)
        }
        return out
    }

    // MARK: Invariants

    /// No overlay address held by two endpoints of a network, in what gossip holds on h1.
    func checkAddresses() {
        addressChecks += 1
        for network in ["plain", "secret"] {
            let r = on("h1", ["network", "inspect", "-v", network])
            guard r.succeeded, let json = try? JSONSerialization.jsonObject(with: Data(r.output.utf8)) else {
                violations.append("network inspect -v \(network) on h1 failed: \(r.output.suffix(200))")
                continue
            }
            var seen: [String: String] = [:]
            for endpoint in Self.endpoints(in: json) {
                guard let address = endpoint["address"] ?? endpoint["IPv4Address"], let id = endpoint["id"] ?? endpoint["EndpointID"] else { continue }
                let bare = String(address.split(separator: "/").first ?? "")
                if let other = seen[bare], other != id {
                    violations.append("\(bare) on \(network) is held by \(other) and \(id)")
                }
                seen[bare] = id
            }
        }
    }

    /// Every object with string fields under `json` that looks like an endpoint.
    static func endpoints(in json: Any) -> [[String: String]] {
        var out: [[String: String]] = []
        func walk(_ v: Any) {
            if let d = v as? [String: Any] {
                let strings = d.compactMapValues { $0 as? String }
                if (strings["address"] ?? strings["IPv4Address"]) != nil && (strings["id"] ?? strings["EndpointID"]) != nil { out.append(strings) }
                d.values.forEach(walk)
            } else if let a = v as? [Any] {
                a.forEach(walk)
            }
        }
        walk(json)
        return out
    }

    /// Each overlayd's resident memory, every 10 s.
    /// Every 10 s, each overlayd's resident memory: the whole (VmRSS, what is judged), its
    /// anonymous part (heap, stacks) and its file-backed part (the binary's and libraries' pages
    /// it has run); every 60 s also its live C heap (`overlay_heap_bytes{state="in_use"}`).
    func sampleMemory() {
        guard now - lastSample >= 10 else { return }
        lastSample = now
        let withHeap = now - lastHeapSample >= 60
        if withHeap { lastHeapSample = now }
        for h in hosts {
            guard let pid = pids(matching: "/run/\(lab)/\(h)/overlayd.sock", binary: "overlayd").first,
                  let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { continue }
            func field(_ name: String) -> Int? {
                guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return nil }
                return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
            }
            guard let kb = field("VmRSS") else { continue }
            var heap: Int?
            if withHeap {
                let scrape = shell(h, ["curl", "-s", "-m", "2", "http://198.18.0.\(h.dropFirst()):9323/metrics"], timeout: 10)
                heap = scrape.output.split(separator: "\n")
                    .first { $0.hasPrefix("overlay_heap_bytes{") && $0.contains("in_use") }
                    .flatMap { $0.split(separator: " ").last }.flatMap { Double($0) }.map { Int($0) / 1024 }
            }
            rss[h, default: []].append(MemorySample(t: now, pid: pid, kb: kb, anonKB: field("RssAnon") ?? 0, fileKB: field("RssFile") ?? 0,
                                                    heapKB: heap))
        }
    }

    /// The host whose overlayd is never killed.
    static let memoryWitness = "h4"

    /// Over the run's second half, each overlayd process that was running at its start and lived
    /// through at least a third of it grew its RSS by under 10% (from its first sample there to
    /// the median of its last minute, so one busy moment does not count as growth). h4's daemon,
    /// never killed, must be judged.
    func checkMemory() {
        // Every sample, for a post-mortem: seconds into the run, host, PID, RSS in KiB.
        var table = "t\thost\tpid\trss_kib\tanon_kib\tfile_kib\theap_in_use_kib\n"
        for h in hosts {
            for r in rss[h] ?? [] {
                table += String(format: "%.1f\t%@\t%d\t%d\t%d\t%d\t%@\n", r.t - start, h, r.pid, r.kb, r.anonKB, r.fileKB, r.heapKB.map { "\($0)" } ?? "")
            }
        }
        try? table.write(toFile: dir + "/memory.tsv", atomically: true, encoding: .utf8)
        let half = start + (now - start) / 2
        for h in hosts {
            let samples = (rss[h] ?? []).filter { $0.t >= half }
            let alive = Set((rss[h] ?? []).filter { $0.t < half }.map(\.pid))
            let byPID = Dictionary(grouping: samples.filter { alive.contains($0.pid) }, by: \.pid)
            guard let (pid, lived) = byPID.max(by: { $0.value.count < $1.value.count }), let first = lived.first, let last = lived.last,
                  last.t - first.t >= (now - half) / 3 else {
                say("memory \(h): no overlayd ran through the second half's first third (killed by a fault), not judged")
                if h == Self.memoryWitness { violations.append("the memory of \(h)'s overlayd, never killed, could not be judged") }
                continue
            }
            let tailSamples = lived.filter { $0.t >= last.t - 60 }
            func median(_ xs: [Int]) -> Int { xs.sorted()[xs.count / 2] }
            let end = median(tailSamples.map(\.kb))
            let growth = Double(end - first.kb) / Double(first.kb) * 100
            // What grew: the anonymous part, the file-backed part, the live heap (informative).
            let heaps = lived.compactMap(\.heapKB)
            let heapText = heaps.count >= 2 ? String(format: "; live heap %d -> %d KiB", heaps.first!, heaps.last!) : ""
            say(String(format: "memory %@ (pid %d): %d KiB -> %d KiB over %.0f s, %+.1f%% (anonymous %d -> %d KiB, file-backed %d -> %d KiB%@)",
                       h, pid, first.kb, end, last.t - first.t, growth, first.anonKB, median(tailSamples.map(\.anonKB)),
                       first.fileKB, median(tailSamples.map(\.fileKB)), heapText))
            if growth >= 10 { violations.append(String(format: "overlayd on %@ grew %.1f%% over the second half", h, growth)) }
        }
    }

    func stopCaptures() {
        for pid in captures { kill(pid, SIGINT) }
        usleep(1_000_000)
    }

    /// Packets in a pcap file (its records, by walking their headers).
    func packets(_ path: String) -> Int {
        guard let data = FileManager.default.contents(atPath: path), data.count >= 24 else { return 0 }
        let bytes = [UInt8](data)
        let little = bytes[0] == 0xd4
        var offset = 24, count = 0
        while offset + 16 <= bytes.count {
            let b = bytes[(offset + 8)..<(offset + 12)].map(UInt32.init)
            let caplen = little ? b[0] | b[1] << 8 | b[2] << 16 | b[3] << 24 : b[3] | b[2] << 8 | b[1] << 16 | b[0] << 24
            offset += 16 + Int(caplen)
            count += 1
        }
        return count
    }

    func checkCleartext() {
        var total = 0
        for h in hosts { total += packets(dir + "/\(h)-cleartext.pcap") }
        say("cleartext: \(total) VXLAN packets of the encrypted network seen on the underlays")
        if total > 0 { violations.append("\(total) cleartext VXLAN packets of the encrypted network on the underlays (see \(dir)/h*-cleartext.pcap)") }
    }

    func teardown() {
        stopCaptures()
        guard !keep else {
            say("the lab \(lab) is left up (--keep)")
            return
        }
        // The daemons' and etcd's logs stay with the results, for a post-mortem.
        for h in hosts {
            try? FileManager.default.removeItem(atPath: dir + "/\(h)-overlayd.log")
            try? FileManager.default.copyItem(atPath: "/run/\(lab)/\(h)/overlayd.log", toPath: dir + "/\(h)-overlayd.log")
        }
        run([bin + "/overlayctl", "lab", "down", "--name", lab], timeout: 120)
        var left: [String] = []
        let netns = run(["ip", "netns", "list"]).output
        left += netns.split(separator: "\n").filter { $0.hasPrefix("\(lab)-") }.map { "namespace \($0)" }
        let links = run(["ip", "-o", "link"]).output
        left += links.split(separator: "\n").filter { $0.contains(lab) }.map { "link \($0.prefix(60))" }
        let tables = run(["nft", "list", "tables"]).output
        left += tables.split(separator: "\n").filter { $0.contains(lab) }.map { "nft \($0)" }
        for pid in Set(pids(matching: "/run/\(lab)/", binary: "") + pids(matching: dir + "/", binary: "")).sorted() {
            let environment = (FileManager.default.contents(atPath: "/proc/\(pid)/environ") ?? Data()).split(separator: 0)
                .map { String(decoding: $0, as: UTF8.self) }.filter { $0.hasPrefix("OVERLAY_CONTAINER_NAME=") }
            let netns = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/net")) ?? "?"
            left.append("process \(pid) (\(environment.first ?? "not a container"), \(netns))")
        }
        if FileManager.default.fileExists(atPath: "/run/\(lab)") { left.append("/run/\(lab)") }
        say(left.isEmpty ? "teardown: no namespace, link, nft table, process or state directory left" : "teardown left: \(left.joined(separator: "; "))")
        violations += left.map { "left after lab down: \($0)" }
    }

    // MARK: Report

    func report() -> Int {
        emit("")
        emit("chaos-soak report: seed \(seed), \(Int(seconds)) s of faults, \(injected.count) faults, \(probes.results) probe results")
        emit("| fault | count | recovery p50 | p99 | max | names p99 |")
        emit("|---|---|---|---|---|---|")
        func pct(_ xs: [Double], _ p: Double) -> String {
            guard !xs.isEmpty else { return "-" }
            let s = xs.sorted()
            return String(format: "%.1f s", s[min(s.count - 1, Int(Double(s.count - 1) * p + 0.5))])
        }
        for f in Fault.allCases {
            let of = injected.filter { $0.fault == f }
            guard !of.isEmpty else { continue }
            let times = of.compactMap(\.recovery), names = of.compactMap(\.namesRecovery)
            emit("| \(f.rawValue) | \(of.count) | \(pct(times, 0.5)) | \(pct(times, 0.99)) | \(pct(times, 1)) | \(pct(names, 0.99)) |")
        }
        emit("address checks (no address held twice): \(addressChecks)")
        let quietTotal = quiet.values.reduce(0, +)
        emit("probes failed while no fault was in effect: \(quietTotal)"
            + (quiet.isEmpty ? "" : " (" + quiet.sorted { $0.key < $1.key }.prefix(12).map { "\($0.key): \($0.value)" }.joined(separator: ", ") + ")"))
        emit("invariant violations: \(violations.count)")
        for v in violations { emit("  - \(v)") }
        return violations.count
    }
}

/// One sample of an overlayd's memory (KiB).
struct MemorySample {
    var t: Double
    var pid: Int32
    var kb: Int
    var anonKB: Int
    var fileKB: Int
    /// The live C heap, on the samples that scraped it.
    var heapKB: Int?
}
