import Foundation
import Glibc
import Testing
import OverlayTestKit

/// Real podman 4.3 (CNI backend) on three lab hosts, its containers on one of our overlay networks
/// through `overlay-cni`, chained with Debian's `portmap`: across hosts by address and by name,
/// `podman run -p`, `podman rm` giving the address back, and an `overlayctl run` container on the
/// same network.
@Suite(.serialized) struct PodmanLabTests {
    func podman(_ lab: CLILab, _ host: String, _ args: [String], timeout: Double = 60) throws -> CommandResult {
        try lab.sh(host, ["podman"] + args, timeout: timeout)
    }

    func mustPodman(_ lab: CLILab, _ host: String, _ args: [String]) throws -> String {
        let r = try podman(lab, host, args)
        guard r.succeeded else { throw LabError("\(host): podman \(args.joined(separator: " ")): \(r.output)") }
        return r.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The container's address on `network`, as podman shows it (from the CNI result).
    func address(_ lab: CLILab, _ host: String, _ name: String, network: String = "web") throws -> String {
        try mustPodman(lab, host, ["inspect", "--format", "{{(index .NetworkSettings.Networks \"\(network)\").IPAddress}}", name])
    }

    @Test func podmanContainersOnAnOverlayAcrossHosts() async throws {
        guard getuid() == 0 else {
            Issue.record("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
            return
        }
        let lab = try CLILab.up("ovlt-pod", hosts: 3, extra: ["--podman", "--metrics"])
        defer { if ProcessInfo.processInfo.environment["KEEP_LAB"] == nil { lab.down() } }
        _ = try lab.must("h1", ["swarm", "init", "--advertise-addr", "198.18.0.1"])
        let token = try lab.must("h1", ["swarm", "join-token", "-q", "worker"])
        for i in 2...3 { _ = try lab.must("h\(i)", ["swarm", "join", "--token", token, "198.18.0.1:2377"]) }
        _ = try lab.must("h1", ["network", "create", "--attachable", "--subnet", "10.71.0.0/24", "web"])
        for h in ["h1", "h2", "h3"] {
            _ = try lab.retrying(h, ["network", "inspect", "web"], tries: 50, every: 100_000)
            // The network as podman sees it: our plugin, then portmap for -p.
            try """
                {"cniVersion": "1.0.0", "name": "web", "plugins": [
                  {"type": "overlay-cni", "network": "web", "socket": "/run/\(lab.name)/\(h)/overlayd.sock", "capabilities": {"aliases": true}},
                  {"type": "portmap", "capabilities": {"portMappings": true}}
                ]}
                """.write(toFile: "/run/\(lab.name)/\(h)/podman/net.d/web.conflist", atomically: true, encoding: .utf8)
        }
        let before = try lab.allocated("web")
        _ = try mustPodman(lab, "h1", ["run", "-d", "--name", "pa", "--network", "web", "localhost/busybox:lab", "sleep", "1000"])
        _ = try mustPodman(lab, "h2", ["run", "-d", "--name", "pb", "--network", "web", "-p", "8080:80", "localhost/busybox:lab",
                                       "sh", "-c", "echo hello-from-pb > /tmp/index.html; exec httpd -f -p 80 -h /tmp"])
        let ipA = try address(lab, "h1", "pa"), ipB = try address(lab, "h2", "pb")
        #expect(ipA.hasPrefix("10.71.0.") && ipB.hasPrefix("10.71.0.") && ipA != ipB, "pa \(ipA), pb \(ipB)")
        #expect(try lab.allocated("web") == before + 2)

        // Across hosts by address and by name (the embedded DNS, which podman wrote into resolv.conf).
        #expect(try podman(lab, "h1", ["exec", "pa", "ping", "-c", "1", "-W", "2", ipB]).succeeded, "pa cannot ping pb at \(ipB)")
        let resolv = try mustPodman(lab, "h1", ["exec", "pa", "cat", "/etc/resolv.conf"])
        #expect(resolv.contains("nameserver 127.0.0.11"), "pa's resolv.conf: \(resolv)")
        #expect(try podman(lab, "h1", ["exec", "pa", "ping", "-c", "1", "-W", "2", "pb"]).succeeded, "pa cannot ping pb by name")
        let page = try podman(lab, "h1", ["exec", "pa", "sh", "-c", "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 3 pb 80"])
        #expect(page.output.contains("hello-from-pb"), "pa fetched \(page.output)")

        // An overlayctl container on h3 and the podman ones reach each other by name.
        _ = try lab.must("h3", ["run", "-d", "--name", "c3", "--network", "web", "--", "sleep", "infinity"])
        #expect(try lab.on("h3", ["exec", "c3", "--", "ping", "-c", "1", "-W", "2", "pa"]).succeeded, "c3 cannot ping pa")
        let c3 = try lab.ip("h3", "c3", network: "web")
        #expect(try podman(lab, "h2", ["exec", "pb", "ping", "-c", "1", "-W", "2", c3]).succeeded, "pb cannot ping c3")
        #expect(try podman(lab, "h2", ["exec", "pb", "ping", "-c", "1", "-W", "2", "c3"]).succeeded, "pb cannot ping c3 by name")

        // podman run -p through portmap: h2's 8080 from another host.
        var published = ""
        for _ in 0..<30 where !published.contains("hello-from-pb") {
            published = try lab.sh("h3", ["curl", "-s", "-m", "2", "http://198.18.0.2:8080/index.html"]).output
            if !published.contains("hello-from-pb") { usleep(200_000) }
        }
        #expect(published.contains("hello-from-pb"), "h2:8080 answered '\(published)'")

        // podman rm gives the address back.
        let withPB = try lab.allocated("web")
        _ = try mustPodman(lab, "h2", ["rm", "-f", "-t", "0", "pb"])
        var freed = false
        for _ in 0..<50 where !freed {
            freed = try lab.allocated("web") == withPB - 1
            if !freed { usleep(100_000) }
        }
        #expect(freed, "pb's address was not given back (\(withPB - 1) expected)")
        _ = try mustPodman(lab, "h1", ["rm", "-f", "-t", "0", "pa"])
    }
}
