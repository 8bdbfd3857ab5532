import Foundation
import Glibc
import Testing
import OverlayTestKit

/// The CNI plugin driven as the spec says a runtime drives it (environment and standard input),
/// on three lab hosts with the real overlayd: ADD, CHECK, DEL and VERSION; chaining with Debian's
/// `portmap` and `tuning`; each error case with its code, leaving nothing half-made.
@Suite(.serialized) struct CNILabTests {
    struct Outcome {
        var status: Int32
        var output: String
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(output.utf8))) as? [String: Any] ?? [:] }
        var code: Int? { json["code"] as? Int }
        var msg: String { json["msg"] as? String ?? output }
    }

    /// Runs a CNI plugin (ours unless `plugin` names one of /usr/lib/cni) on `host` as a runtime does.
    func cni(_ lab: CLILab, _ host: String, _ command: String, id: String, netns: String?, ifname: String = "eth0",
             args: String? = nil, config: String, plugin: String? = nil) throws -> Outcome {
        let file = "/run/\(lab.name)/cni-\(UUID().uuidString).json"
        try config.write(toFile: file, atomically: true, encoding: .utf8)
        defer { unlink(file) }
        var env = ["CNI_COMMAND=\(command)", "CNI_CONTAINERID=\(id)", "CNI_IFNAME=\(ifname)", "CNI_PATH=\(lab.bin):/usr/lib/cni"]
        if let netns { env.append("CNI_NETNS=\(netns)") }
        if let args { env.append("CNI_ARGS=\(args)") }
        let binary = plugin.map { "/usr/lib/cni/\($0)" } ?? lab.bin + "/overlay-cni"
        // Standard output only: a runtime reads the result (or the error) there.
        let r = try lab.sh(host, ["sh", "-c", "env \(env.map { "'\($0)'" }.joined(separator: " ")) \(binary) < \(file) 2>/dev/null"])
        return Outcome(status: r.status, output: r.output.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    func config(_ lab: CLILab, _ host: String, network: String = "web", extra: String = "") -> String {
        #"{"cniVersion":"1.0.0","name":"\#(network)","type":"overlay-cni","socket":"/run/\#(lab.name)/\#(host)/overlayd.sock"\#(extra)}"#
    }

    /// A container's namespace, as a runtime makes one.
    func netns(_ lab: CLILab, _ name: String) throws -> String {
        let ns = "\(lab.name)-\(name)"
        _ = try Lab.run(["ip", "netns", "add", ns], timeout: 10)
        _ = try Lab.run(["ip", "-n", ns, "link", "set", "lo", "up"], timeout: 10)
        return "/run/netns/\(ns)"
    }

    func inNetns(_ path: String, _ argv: [String], timeout: Double = 10) throws -> CommandResult {
        try Lab.run(["nsenter", "--net=\(path)"] + argv, timeout: timeout)
    }

    func links(_ path: String) throws -> [String] {
        try inNetns(path, ["ip", "-o", "link", "show"]).output.split(separator: "\n").compactMap {
            $0.split(separator: ":").dropFirst().first.map { String($0.trimmingCharacters(in: .whitespaces).split(separator: "@")[0]) }
        }.sorted()
    }

    @Test func addCheckDelAcrossHostsChainedWithPortmapAndTuning() async throws {
        guard getuid() == 0 else {
            Issue.record("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
            return
        }
        let lab = try CLILab.up("ovlt-cni", hosts: 3, extra: ["--metrics"])
        defer { lab.down() }
        _ = try lab.must("h1", ["swarm", "init", "--advertise-addr", "198.18.0.1"])
        let token = try lab.must("h1", ["swarm", "join-token", "-q", "worker"])
        for i in 2...3 { _ = try lab.must("h\(i)", ["swarm", "join", "--token", token, "198.18.0.1:2377"]) }
        _ = try lab.must("h1", ["network", "create", "--attachable", "--subnet", "10.70.0.0/24", "web"])
        // Every host programs the network before its containers join.
        for h in ["h2", "h3"] { _ = try lab.retrying(h, ["network", "inspect", "web"], tries: 50, every: 100_000) }

        // VERSION.
        let version = try cni(lab, "h1", "VERSION", id: "", netns: nil, config: #"{"cniVersion":"1.0.0"}"#)
        #expect(version.status == 0 && (version.json["supportedVersions"] as? [String])?.contains("1.0.0") == true, "\(version.output)")

        // ADD on h1 and h2: two runtimes' containers, named by Kubernetes' pod name.
        let idA = String(repeating: "a", count: 64), idB = String(repeating: "b", count: 64)
        let nsA = try netns(lab, "ca"), nsB = try netns(lab, "cb")
        let addA = try cni(lab, "h1", "ADD", id: idA, netns: nsA, args: "IgnoreUnknown=1;K8S_POD_NAME=alpha", config: config(lab, "h1"))
        #expect(addA.status == 0, "ADD on h1: \(addA.output)")
        let ifaces = addA.json["interfaces"] as? [[String: Any]] ?? []
        let ips = addA.json["ips"] as? [[String: Any]] ?? []
        #expect(ifaces.first?["name"] as? String == "eth0" && ifaces.first?["sandbox"] as? String == nsA && ifaces.first?["mac"] != nil, "\(addA.output)")
        #expect(ifaces.count == 2 && ifaces[1]["name"] as? String == "ovgw0", "the gateway leg: \(addA.output)")
        let ipA = (ips.first?["address"] as? String ?? "").split(separator: "/").first.map(String.init) ?? ""
        #expect(ipA.hasPrefix("10.70.0.") && ips.first?["interface"] as? Int == 0 && ips.first?["gateway"] as? String == "10.70.0.1", "\(addA.output)")
        #expect((addA.json["dns"] as? [String: Any])?["nameservers"] as? [String] == ["127.0.0.11"], "\(addA.output)")
        #expect((addA.json["routes"] as? [[String: Any]])?.first?["dst"] as? String == "0.0.0.0/0", "\(addA.output)")
        let addB = try cni(lab, "h2", "ADD", id: idB, netns: nsB, args: "K8S_POD_NAME=beta", config: config(lab, "h2"))
        #expect(addB.status == 0, "ADD on h2: \(addB.output)")
        let ipB = ((addB.json["ips"] as? [[String: Any]])?.first?["address"] as? String ?? "").split(separator: "/").first.map(String.init) ?? ""

        // Across hosts by address and by name (the embedded DNS in each namespace), and with a
        // container overlayd made itself.
        #expect(try inNetns(nsA, ["ping", "-c", "1", "-W", "2", ipB]).succeeded, "alpha cannot ping beta at \(ipB)")
        #expect(try inNetns(nsB, ["dig", "+short", "+time=2", "@127.0.0.11", "alpha"]).output.trimmingCharacters(in: .whitespacesAndNewlines) == ipA)
        _ = try lab.must("h3", ["run", "-d", "--name", "c3", "--network", "web", "--", "sleep", "infinity"])
        #expect(try lab.on("h3", ["exec", "c3", "--", "ping", "-c", "1", "-W", "2", "alpha"]).succeeded, "c3 cannot ping alpha by name")
        #expect(try lab.on("h3", ["exec", "c3", "--", "ping", "-c", "1", "-W", "2", "beta"]).succeeded, "c3 cannot ping beta by name")

        // CHECK: attached; then with its interface gone, an error.
        #expect(try cni(lab, "h1", "CHECK", id: idA, netns: nsA, config: config(lab, "h1")).status == 0)

        // ADD repeated: the same answer, no second address.
        let before = try lab.allocated("web")
        let again = try cni(lab, "h1", "ADD", id: idA, netns: nsA, args: "K8S_POD_NAME=alpha", config: config(lab, "h1"))
        #expect(again.status == 0 && again.output == addA.output, "a repeated ADD: \(again.output)")
        #expect(try lab.allocated("web") == before, "a repeated ADD took another address")

        // Chained: portmap publishes h1:8080 to alpha's port 80 (DNAT to its overlay address, which
        // the host routes through its gateway leg); tuning sets a sysctl in its namespace.
        let server = try Child.spawn(["nsenter", "--net=\(nsA)", "python3", "-m", "http.server", "80", "--bind", "0.0.0.0"],
                                     log: "/run/ovlt-cni/http.log")
        defer { kill(server.pid, SIGKILL); var st: Int32 = 0; waitpid(server.pid, &st, 0) }
        let portmap = #"{"cniVersion":"1.0.0","name":"web","type":"portmap","capabilities":{"portMappings":true},"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]},"prevResult":\#(addA.output)}"#
        let pm = try cni(lab, "h1", "ADD", id: idA, netns: nsA, config: portmap, plugin: "portmap")
        #expect(pm.status == 0, "portmap: \(pm.output)")
        let tuning = #"{"cniVersion":"1.0.0","name":"web","type":"tuning","sysctl":{"net.ipv4.conf.eth0.arp_announce":"2"},"prevResult":\#(addA.output)}"#
        let tu = try cni(lab, "h1", "ADD", id: idA, netns: nsA, config: tuning, plugin: "tuning")
        #expect(tu.status == 0, "tuning: \(tu.output)")
        #expect(try inNetns(nsA, ["sysctl", "-n", "net.ipv4.conf.eth0.arp_announce"]).output.trimmingCharacters(in: .whitespacesAndNewlines) == "2")
        var published = false
        for _ in 0..<30 where !published {
            published = try lab.sh("h2", ["curl", "-sf", "-m", "2", "-o", "/dev/null", "http://198.18.0.1:8080/"]).succeeded
            if !published { usleep(200_000) }
        }
        #expect(published, "h1:8080 (portmap) did not reach alpha's port 80")
        #expect(try cni(lab, "h1", "DEL", id: idA, netns: nsA, config: portmap, plugin: "portmap").status == 0)

        // DEL: the address goes back; twice is fine; so is one for a container never seen.
        let withA = try lab.allocated("web")
        #expect(try cni(lab, "h1", "DEL", id: idA, netns: nsA, config: config(lab, "h1")).status == 0)
        let afterDel = try links(nsA)
        #expect(afterDel == ["lo"], "after DEL: \(afterDel)")
        #expect(try lab.allocated("web") == withA - 1, "DEL did not give alpha's address back")
        #expect(try cni(lab, "h1", "DEL", id: idA, netns: nsA, config: config(lab, "h1")).status == 0)
        #expect(try cni(lab, "h1", "DEL", id: String(repeating: "f", count: 64), netns: nil, config: config(lab, "h1")).status == 0)
        #expect(try cni(lab, "h1", "CHECK", id: idA, netns: nsA, config: config(lab, "h1")).code == 3)
        #expect(try lab.allocated("web") == withA - 1)
        // The freed address can be asked for again (IP= in CNI_ARGS).
        let reuse = try cni(lab, "h1", "ADD", id: idA, netns: nsA, args: "IP=\(ipA)", config: config(lab, "h1"))
        #expect(reuse.status == 0 && reuse.output.contains("\"\(ipA)/24\""), "\(reuse.output)")

        // DEL after overlayd restarted (h2), and after the namespace is gone (h3): the address
        // still goes back.
        try lab.restartDaemon("h2", hostIndex: 2)
        _ = try lab.retrying("h2", ["network", "inspect", "web"], tries: 50, every: 100_000)
        let withB = try lab.allocated("web")
        #expect(try cni(lab, "h2", "DEL", id: idB, netns: nsB, config: config(lab, "h2")).status == 0)
        let linksB = try links(nsB)
        #expect(try linksB == ["lo"] && lab.allocated("web") == withB - 1, "DEL after a restart: \(linksB)")
        let nsG = try netns(lab, "cg")
        #expect(try cni(lab, "h3", "ADD", id: "gamma", netns: nsG, config: config(lab, "h3")).status == 0)
        let withG = try lab.allocated("web")
        _ = try Lab.run(["ip", "netns", "del", "\(lab.name)-cg"], timeout: 10)
        #expect(try cni(lab, "h3", "DEL", id: "gamma", netns: nsG, config: config(lab, "h3")).status == 0)
        #expect(try retryUntil(10) { try lab.allocated("web") == withG - 1 }, "gamma's address was not given back after its namespace went")

        // CNI_IFNAME in a namespace that has interfaces of its own.
        let nsC = try netns(lab, "cc")
        // (This kernel has no dummy links: a veth pair inside the namespace stands for the runtime's own.)
        _ = try Lab.run(["ip", "-n", "\(lab.name)-cc", "link", "add", "eth0", "type", "veth", "peer", "name", "own0"], timeout: 10)
        let net1 = try cni(lab, "h1", "ADD", id: "cc1", netns: nsC, ifname: "net1", config: config(lab, "h1"))
        #expect(net1.status == 0 && (net1.json["interfaces"] as? [[String: Any]])?.first?["name"] as? String == "net1", "\(net1.output)")
        let linksC = try links(nsC)
        #expect(linksC == ["eth0", "lo", "net1", "ovgw0", "own0"], "\(linksC)")

        // Errors: each with its code and one clear message, nothing half-made.
        let held = try lab.allocated("web")
        let nsD = try netns(lab, "cd")
        let taken = try cni(lab, "h1", "ADD", id: "cd1", netns: nsD, config: config(lab, "h1"))
        #expect(taken.status == 0)
        let clash = try cni(lab, "h1", "ADD", id: "cd2", netns: nsC, ifname: "eth0", config: config(lab, "h1"))
        #expect(clash.code == 7 && clash.msg.contains("already has an interface named eth0"), "\(clash.output)")
        let unknown = try cni(lab, "h1", "ADD", id: "cd3", netns: nsD, ifname: "eth1", config: config(lab, "h1", network: "nosuch"))
        #expect(unknown.code == 7 && unknown.msg.contains("network nosuch not found"), "\(unknown.output)")
        let malformed = try cni(lab, "h1", "ADD", id: "cd4", netns: nsD, config: #"{"cniVersion":"1.0.0","name":"#)
        #expect(malformed.code == 6, "\(malformed.output)")
        let wrongVersion = try cni(lab, "h1", "ADD", id: "cd4", netns: nsD, config: #"{"cniVersion":"9.9.9","name":"web","type":"overlay-cni"}"#)
        #expect(wrongVersion.code == 1, "\(wrongVersion.output)")
        let noNetns = try cni(lab, "h1", "ADD", id: "cd5", netns: nil, config: config(lab, "h1"))
        #expect(noNetns.code == 4 && noNetns.msg.contains("CNI_NETNS"), "\(noNetns.output)")
        let badNetns = try cni(lab, "h1", "ADD", id: "cd6", netns: "/run/netns/\(lab.name)-none", config: config(lab, "h1"))
        #expect(badNetns.code == 4, "\(badNetns.output)")
        let noDaemon = try cni(lab, "h1", "ADD", id: "cd7", netns: nsD, ifname: "eth1",
                               config: #"{"cniVersion":"1.0.0","name":"web","type":"overlay-cni","socket":"/run/ovlt-cni/none.sock"}"#)
        #expect(noDaemon.code == 11 && noDaemon.msg.contains("overlayd is not answering"), "\(noDaemon.output)")
        #expect(try links(nsC) == ["eth0", "lo", "net1", "ovgw0", "own0"] && links(nsD) == ["eth0", "lo", "ovgw0"], "something was left half-made")
        let heldNow = try lab.allocated("web")
        #expect(heldNow == held + 1, "an address leaked: \(heldNow) held, \(held + 1) expected")
    }

    func retryUntil(_ seconds: Double, _ check: () throws -> Bool) rethrows -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if try check() { return true }
            usleep(200_000)
        }
        return try check()
    }
}
