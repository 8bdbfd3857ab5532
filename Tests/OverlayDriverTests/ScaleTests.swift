import Foundation
import Netlink
import OverlayDriver
import OverlayModel
import OverlayTestKit
import Testing

@Suite("OverlayDriver at scale")
struct ScaleTests {
    /// 1,000 endpoints attached through the API on h1 (50 veth endpoints in each of 20 namespaces,
    /// which is what the bridge sees of 1,000 containers), 1,000 peers programmed on h2, and every
    /// one of them pinged from a container on h2. A Linux bridge takes at most 1,024 ports
    /// (BR_MAX_PORTS, port 0 reserved), so 1,022 endpoints plus the VXLAN port fit one bridge: the
    /// test also fills the bridge and checks the next attach is refused and rolled back.
    @Test("1,000 endpoints on one host are all reachable from a container on another host", .timeLimit(.minutes(3)))
    func thousandEndpoints() throws {
        let testStart = ContinuousClock.now
        let f = try Fixture("ovlt-d1k", hosts: 2)
        defer { f.destroy() }
        let d1 = f.drivers[0], d2 = f.drivers[1]
        let spec = OverlayNetworkSpec(name: "big", subnet: "10.100.0.0/21", vni: 8000)
        try d1.createNetwork(spec)
        try d2.createNetwork(spec)
        let subnet = try CIDR.parse("10.100.0.0/21")

        let groups = 20, perGroup = 50
        var namespaces: [NetworkNamespace] = []
        for g in 0..<groups { namespaces.append(try f.container("k\(g)")) }
        var endpoints: [OverlayEndpoint] = []
        endpoints.reserveCapacity(groups * perGroup)
        var firstAttach = Duration.zero
        let attachStart = ContinuousClock.now
        for n in 0..<(groups * perGroup) {
            let ns = namespaces[n % groups]
            let t = ContinuousClock.now
            endpoints.append(try d1.attach(EndpointSpec(
                id: "ep\(n)", network: "big", namespace: .path(ns.path!), address: subnet.address(at: UInt128(n + 2))!,
                interfaceName: "e\(n / groups)")))
            if n == 0 { firstAttach = ContinuousClock.now - t }
        }
        let attachAll = ContinuousClock.now - attachStart
        print("1k: first attach (builds the sandbox): \(firstAttach); 1,000 attaches: \(attachAll) (\(attachAll / 1000) each)")
        let sb = try NetlinkSocket(namespace: NetworkNamespace.open(path: d1.sandboxPath(network: "big")!))
        let br = try sb.link(named: "br-8000")
        #expect(try sb.links().filter { $0.masterIndex == br.index }.count == 1001)

        let probe = try f.container("probe")
        let p = try d2.attach(EndpointSpec(id: "probe", network: "big", namespace: .path(probe.path!), address: ip("10.100.7.250")))
        try d1.addPeer(p.peer, network: "big")
        let peerStart = ContinuousClock.now
        try d2.addPeers(endpoints.map(\.peer), network: "big")
        let peerTime = ContinuousClock.now - peerStart
        print("1k: 1,000 peers programmed on h2: \(peerTime) (\(peerTime / 1000) each)")
        let sb2 = try NetlinkSocket(namespace: NetworkNamespace.open(path: d2.sandboxPath(network: "big")!))
        #expect(try sb2.neighbors(device: "vx-8000").filter(\.permanent).count == 1000)

        // Each test namespace holds 50 endpoints and answers through one of them, so it resolves
        // the probe's address once; do that first. (ARP broadcasts are copied to all 1,001 bridge
        // ports; many at once overflow the kernel's per-CPU backlog, netdev_max_backlog = 1,000,
        // and a proxy-ARP reply can be lost: a limit of one bridge this large, see the README.)
        for ns in namespaces {
            _ = try f.lab.run(["ping", "-c", "1", "-W", "2", p.address.description], in: ns)
        }
        let pingStart = ContinuousClock.now
        let missing = try f.lab.unreachable(endpoints.map(\.address.description), from: probe)
        let pingTime = ContinuousClock.now - pingStart
        print("1k: pinged 1,000 endpoints from h2 in \(pingTime) (with \(FileManager.default.isExecutableFile(atPath: "/usr/bin/fping") && ProcessInfo.processInfo.environment["OVERLAY_LAB_NO_FPING"] == nil ? "fping" : "ping x64 via xargs")); unreachable: \(missing.count)")
        #expect(missing.isEmpty, "unreachable: \(missing.prefix(20))")

        // The bridge's port limit: BR_MAX_PORTS is 1,024 port numbers, 0 reserved, one taken by
        // the VXLAN device, so 1,022 endpoints fit; the next attach fails cleanly.
        var n = 1000
        var refused: OverlayDriverError?
        while n < 1030 {
            let ns = namespaces[n % groups]
            do {
                try d1.attach(EndpointSpec(
                    id: "ep\(n)", network: "big", namespace: .path(ns.path!), address: subnet.address(at: UInt128(n + 2))!,
                    interfaceName: "e\(n / groups)"))
                n += 1
            } catch {
                refused = error
                break
            }
        }
        #expect(n == OverlayDriver.maxEndpointsPerSubnet, "endpoints on one bridge: \(n)")
        #expect(refused?.code == .capacityExceeded)
        print("1k: attach number \(n + 1) refused: \(refused?.message ?? "-")")
        #expect(try !NetlinkSocket(namespace: namespaces[n % groups]).links().contains { $0.name == "e\(n / groups)" })
        #expect(d1.endpoints(network: "big").count == 1022)

        let detachStart = ContinuousClock.now
        for n in 0..<100 { try d1.detach(endpoint: "ep\(n)") }
        print("1k: 100 detaches: \(ContinuousClock.now - detachStart)")
        print("1k: whole test before teardown: \(ContinuousClock.now - testStart)")
    }
}
