import Foundation
import Netlink
import OverlayDriver
import OverlayModel
import OverlayTestKit
import Testing

@Suite("OverlayDriver in the lab")
struct OverlayDriverTests {
    @Test("the default endpoint link is MACVLAN (this kernel has it); veth + bridge when asked for")
    func endpointLinkChoice() throws {
        let f = try Fixture("ovlt-dlnk", hosts: 1)
        defer { f.destroy() }
        let d = f.drivers[0]
        #expect(d.configuration.endpointLink == .auto)
        #expect(d.endpointLink == .macvlan)
        #expect(d.endpointLinkFallbackReason == nil)
        let net = try d.createNetwork(OverlayNetworkSpec(name: "n", subnet: "10.20.0.0/21", vni: 4500))
        // The subnet is the limit: 2,048 addresses less network, broadcast and gateway.
        #expect(d.maxEndpoints(on: net.subnets[0]) == 2045)
        // The probe's scratch namespace is gone again.
        #expect(f.sandboxes(0).isEmpty)
        let bridged = try OverlayDriver(configuration: OverlayDriverConfiguration(
            nodeID: "h1b", stateDirectory: f.stateDirectory(0) + "-b", hostNamespacePath: f.lab.hosts[0].namespace.path,
            dataPathAddress: .v4(f.lab.hosts[0].address), endpointLink: .vethBridge))
        defer { bridged.shutdown() }
        #expect(bridged.endpointLink == .vethBridge)
        #expect(bridged.maxEndpoints(on: net.subnets[0]) == OverlayDriver.maxEndpointsPerBridge)
        #expect(OverlayDriver.maxEndpointsPerBridge == 1022)
    }

    @Test("3 hosts, one network, a container on each: every container pings every other and its gateway",
          arguments: [EndpointLink.macvlan, .vethBridge])
    func threeHosts(link: EndpointLink) throws {
        let f = try Fixture("ovlt-d3h\(link.tag)", hosts: 3, link: link)
        defer { f.destroy() }
        var endpoints: [OverlayEndpoint] = []
        var containers: [NetworkNamespace] = []
        for (i, d) in f.drivers.enumerated() {
            try d.createNetwork(OverlayNetworkSpec(name: "front", subnet: "10.10.0.0/24", vni: 4096))
            let c = try f.container("c\(i + 1)")
            let start = ContinuousClock.now
            let ep = try d.attach(EndpointSpec(id: "c\(i + 1)", network: "front", namespace: .path(c.path!), address: ip("10.10.0.\(i + 2)")))
            print("three-hosts: first attach on h\(i + 1) (sandbox + endpoint): \(ms(since: start))")
            #expect(ep.mtu == 1450)
            #expect(ep.link == link)
            endpoints.append(ep)
            containers.append(c)
            // What the endpoint and the sandbox are made of, in each mode.
            let eth0 = try NetlinkSocket(namespace: c).link(named: "eth0")
            let sb = try NetlinkSocket(namespace: NetworkNamespace.open(path: d.sandboxPath(network: "front")!))
            let vx = try sb.link(named: "vx-4096")
            #expect(eth0.mtu == 1450 && eth0.mac == ep.mac && eth0.isUp)
            switch link {
            case .macvlan, .auto:
                #expect(eth0.kind == "macvlan")
                #expect(ep.sandboxInterface == nil)
                #expect(vx.masterIndex == nil)
                let gw = try sb.link(named: "gw-4096")
                #expect(gw.kind == "macvlan" && gw.isUp && gw.mtu == 1450)
                #expect(try sb.addresses(on: "gw-4096", family: .v4).map(\.description) == ["10.10.0.1/24"])
                #expect(try !sb.links().contains { $0.kind == "bridge" || $0.kind == "veth" })
            case .vethBridge:
                #expect(eth0.kind == "veth")
                let br = try sb.link(named: "br-4096")
                #expect(br.kind == "bridge")
                #expect(vx.masterIndex == br.index)
                #expect(try sb.link(named: try #require(ep.sandboxInterface)).masterIndex == br.index)
                #expect(try sb.addresses(on: "br-4096", family: .v4).map(\.description) == ["10.10.0.1/24"])
            }
        }
        for (i, d) in f.drivers.enumerated() {
            for (j, ep) in endpoints.enumerated() where j != i { try d.addPeer(ep.peer, network: "front") }
            #expect(try d.peers(network: "front").count == 2)
            // The flood entries: one per remote VTEP.
            let sb = try NetlinkSocket(namespace: NetworkNamespace.open(path: d.sandboxPath(network: "front")!))
            let flood = try sb.fdbEntries(device: "vx-4096").filter { $0.mac == .zero }.compactMap(\.destination)
            // Bridged overlay traffic skips br_netfilter's iptables hooks where the host has them.
            if let value = try? sb.namespace.sysctl("net.bridge.bridge-nf-call-iptables") {
                #expect(value == "0")
            }
            #expect(Set(flood) == Set(endpoints.enumerated().filter { $0.offset != i }.map(\.element.vtep)))
        }
        for (i, c) in containers.enumerated() {
            for (j, ep) in endpoints.enumerated() where j != i {
                let r = try f.ping(ep.address, from: c)
                #expect(r.succeeded, "c\(i + 1) -> \(ep.address): \(r.output)")
            }
            let gw = try f.ping(ip("10.10.0.1"), from: c)
            #expect(gw.succeeded, "c\(i + 1) -> gateway: \(gw.output)")
        }
    }

    @Test("two networks on one host: same name and same VNI refused; distinct networks are isolated")
    func isolation() throws {
        let f = try Fixture("ovlt-diso", hosts: 2)
        defer { f.destroy() }
        let d1 = f.drivers[0], d2 = f.drivers[1]
        for d in f.drivers {
            try d.createNetwork(OverlayNetworkSpec(name: "a", subnet: "10.30.0.0/24", vni: 5000))
            try d.createNetwork(OverlayNetworkSpec(name: "b", subnet: "10.31.0.0/24", vni: 5001))
        }
        #expect(throws: OverlayDriverError.self) { try d1.createNetwork(OverlayNetworkSpec(name: "a", subnet: "10.32.0.0/24", vni: 5002)) }
        do {
            try d1.createNetwork(OverlayNetworkSpec(name: "a", subnet: "10.32.0.0/24", vni: 5002))
        } catch {
            #expect(error.code == .duplicateNetwork)
            #expect(error.message.contains("'a' already exists"))
        }
        do {
            try d1.createNetwork(OverlayNetworkSpec(name: "c", subnet: "10.32.0.0/24", vni: 5001))
            Issue.record("same VNI accepted")
        } catch {
            #expect(error.code == .duplicateVNI)
            #expect(error.message.contains("VXLAN ID 5001 is already used by network 'b'"))
        }
        #expect(d1.networks().map(\.name) == ["a", "b"])

        // h1: a1 on a, b1 on b (same host). h2: a2 on a, b2 on b.
        let a1 = try f.container("a1"), b1 = try f.container("b1"), a2 = try f.container("a2"), b2 = try f.container("b2")
        let ea1 = try d1.attach(EndpointSpec(id: "a1", network: "a", namespace: .path(a1.path!), address: ip("10.30.0.2")))
        let eb1 = try d1.attach(EndpointSpec(id: "b1", network: "b", namespace: .path(b1.path!), address: ip("10.31.0.2")))
        let ea2 = try d2.attach(EndpointSpec(id: "a2", network: "a", namespace: .path(a2.path!), address: ip("10.30.0.3")))
        let eb2 = try d2.attach(EndpointSpec(id: "b2", network: "b", namespace: .path(b2.path!), address: ip("10.31.0.3")))
        try d1.addPeer(ea2.peer, network: "a")
        try d1.addPeer(eb2.peer, network: "b")
        try d2.addPeer(ea1.peer, network: "a")
        try d2.addPeer(eb1.peer, network: "b")
        #expect(f.sandboxes(0) == ["sb-5000", "sb-5001"])

        #expect(try f.ping(ea2.address, from: a1).succeeded)
        #expect(try f.ping(eb2.address, from: b1).succeeded)
        // A route to the other network through its own gateway does not help.
        #expect(try f.lab.run(["ip", "route", "add", "10.31.0.0/24", "via", "10.30.0.1"], in: a1).succeeded)
        #expect(try f.lab.run(["ip", "route", "add", "10.30.0.0/24", "via", "10.31.0.1"], in: b2).succeeded)
        for (target, from) in [(eb1.address, a1), (eb2.address, a1), (ea1.address, b2)] {
            let r = try f.lab.run(["ping", "-c", "2", "-i", "0.2", "-W", "1", target.description], in: from)
            #expect(!r.succeeded, "\(target) reached across networks: \(r.output)")
        }
    }

    @Test("a container on two networks reaches peers on both")
    func twoNetworks() throws {
        let f = try Fixture("ovlt-d2n", hosts: 2)
        defer { f.destroy() }
        for d in f.drivers {
            try d.createNetwork(OverlayNetworkSpec(name: "a", subnet: "10.40.0.0/24", vni: 6000))
            try d.createNetwork(OverlayNetworkSpec(name: "b", subnet: "10.41.0.0/24", vni: 6001))
        }
        let x = try f.container("x"), y = try f.container("y"), z = try f.container("z")
        let xa = try f.drivers[0].attach(EndpointSpec(id: "x-a", network: "a", namespace: .path(x.path!), address: ip("10.40.0.2")))
        let xb = try f.drivers[0].attach(EndpointSpec(id: "x-b", network: "b", namespace: .path(x.path!), address: ip("10.41.0.2"), interfaceName: "eth1"))
        let ya = try f.drivers[1].attach(EndpointSpec(id: "y", network: "a", namespace: .path(y.path!), address: ip("10.40.0.3")))
        let zb = try f.drivers[1].attach(EndpointSpec(id: "z", network: "b", namespace: .path(z.path!), address: ip("10.41.0.3")))
        try f.drivers[0].addPeers([ya.peer], network: "a")
        try f.drivers[0].addPeers([zb.peer], network: "b")
        try f.drivers[1].addPeers([xa.peer], network: "a")
        try f.drivers[1].addPeers([xb.peer], network: "b")
        #expect(try f.ping(ya.address, from: x).succeeded)
        #expect(try f.ping(zb.address, from: x).succeeded)
        #expect(try f.ping(xb.address, from: z).succeeded)
        let links = try NetlinkSocket(namespace: x).links().map(\.name)
        #expect(links.contains("eth0") && links.contains("eth1"))
    }

    @Test("a network with two subnets: endpoints get a route to the other subnet and reach it")
    func twoSubnets() throws {
        let f = try Fixture("ovlt-dsub", hosts: 2)
        defer { f.destroy() }
        let spec = OverlayNetworkSpec(name: "m", subnets: [.init("10.50.0.0/24", vni: 7000), .init("10.50.1.0/24", vni: 7001)])
        for d in f.drivers { try d.createNetwork(spec) }
        let p = try f.container("p"), q = try f.container("q")
        let ep = try f.drivers[0].attach(EndpointSpec(id: "p", network: "m", namespace: .path(p.path!), address: ip("10.50.0.2")))
        let eq = try f.drivers[1].attach(EndpointSpec(id: "q", network: "m", namespace: .path(q.path!), address: ip("10.50.1.2")))
        // p's host needs q's entry on vx-7001 (q's subnet), and vice versa; then p -> its gateway ->
        // the sandbox routes to br-7001 -> vx-7001 -> q.
        try f.drivers[0].addPeer(eq.peer, network: "m")
        try f.drivers[1].addPeer(ep.peer, network: "m")
        let routes = try NetlinkSocket(namespace: p).routes()
        #expect(routes.contains { $0.destination?.description == "10.50.1.0/24" && $0.gateway == ip("10.50.0.1") })
        let r = try f.ping(eq.address, from: p)
        #expect(r.succeeded, "\(r.output)")
    }

    @Test("a process's namespace attached by PID (a container without a handle)")
    func attachByPID() throws {
        let f = try Fixture("ovlt-dpid", hosts: 1)
        defer { f.destroy() }
        let d = f.drivers[0]
        try d.createNetwork(OverlayNetworkSpec(name: "n", subnet: "10.61.0.0/24", vni: 4150))
        // A process in a fresh namespace of its own, known only by its PID.
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        process.arguments = ["--net", "--", "sleep", "30"]
        try process.run()
        defer { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
        let pid = process.processIdentifier
        func netInode(_ path: String) -> UInt64? {
            var st = stat()
            return stat(path, &st) == 0 ? UInt64(st.st_ino) : nil
        }
        let ours = netInode("/proc/self/ns/net")
        var waited = 0
        while netInode("/proc/\(pid)/ns/net") == ours && waited < 200 {
            usleep(10_000)
            waited += 1
        }
        try #require(netInode("/proc/\(pid)/ns/net") != ours, "unshare did not enter a new namespace")
        let ep = try d.attach(EndpointSpec(id: "p", network: "n", namespace: .pid(pid), address: ip("10.61.0.2")))
        #expect(ep.namespace == .pid(pid))
        let r = try Lab.run(["nsenter", "--net=/proc/\(pid)/ns/net", "--", "ping", "-c", "1", "-W", "2", "10.61.0.1"])
        #expect(r.succeeded, "\(r.output)")
        try d.detach(endpoint: "p")
        let after = try Lab.run(["nsenter", "--net=/proc/\(pid)/ns/net", "--", "ip", "-o", "link"])
        #expect(!after.output.contains("eth0"), "\(after.output)")
        #expect(f.sandboxes(0).isEmpty)
    }

    @Test("an IPv6 network: containers on two hosts ping each other (proxy ND on the VXLAN device)")
    func ipv6() throws {
        let f = try Fixture("ovlt-dv6", hosts: 2)
        defer { f.destroy() }
        for d in f.drivers { try d.createNetwork(OverlayNetworkSpec(name: "v6", subnet: "fd00:5::/64", vni: 4160)) }
        let c1 = try f.container("c1"), c2 = try f.container("c2")
        let e1 = try f.drivers[0].attach(EndpointSpec(id: "c1", network: "v6", namespace: .path(c1.path!), address: ip("fd00:5::2")))
        let e2 = try f.drivers[1].attach(EndpointSpec(id: "c2", network: "v6", namespace: .path(c2.path!), address: ip("fd00:5::3")))
        #expect(e1.mac.isLocallyAdministered)
        try f.drivers[0].addPeer(e2.peer, network: "v6")
        try f.drivers[1].addPeer(e1.peer, network: "v6")
        let r = try f.lab.run(["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", e2.address.description], in: c1)
        #expect(r.succeeded, "\(r.output)")
        let gw = try f.lab.run(["ping", "-6", "-c", "1", "-W", "2", "fd00:5::1"], in: c2)
        #expect(gw.succeeded, "\(gw.output)")
        // No duplicate address detection: the address is not tentative.
        let addr = try f.lab.run(["ip", "-6", "-o", "addr", "show", "dev", "eth0"], in: c1)
        #expect(addr.output.contains("fd00:5::2/64") && !addr.output.contains("tentative"), "\(addr.output)")
    }

    @Test("detaching the last endpoint removes the sandbox: namespace and VXLAN device gone")
    func detachRemovesSandbox() throws {
        let f = try Fixture("ovlt-ddet", hosts: 1)
        defer { f.destroy() }
        let d = f.drivers[0]
        try d.createNetwork(OverlayNetworkSpec(name: "n", subnet: "10.60.0.0/24", vni: 4100))
        #expect(f.sandboxes(0).isEmpty)
        let c1 = try f.container("c1"), c2 = try f.container("c2")
        try d.attach(EndpointSpec(id: "c1", network: "n", namespace: .path(c1.path!), address: ip("10.60.0.2")))
        try d.attach(EndpointSpec(id: "c2", network: "n", namespace: .path(c2.path!), address: ip("10.60.0.3")))
        #expect(f.sandboxes(0) == ["sb-4100"])
        let sbPath = try #require(d.sandboxPath(network: "n"))
        let sb = try NetlinkSocket(namespace: NetworkNamespace.open(path: sbPath))
        #expect(try sb.link(named: "vx-4100").kind == "vxlan")
        #expect(try sb.link(named: "vx-4100").mtu == 1450)
        // The endpoints are MACVLANs on vx-4100 (the default), the gateway one in the sandbox.
        #expect(try NetlinkSocket(namespace: c1).link(named: "eth0").kind == "macvlan")
        #expect(try sb.link(named: "gw-4100").kind == "macvlan")
        // Two containers on one host talk to each other (MACVLAN bridge mode) and to the gateway.
        #expect(try f.ping(ip("10.60.0.3"), from: c1).succeeded)
        #expect(try f.ping(ip("10.60.0.2"), from: c2).succeeded)
        #expect(try f.ping(ip("10.60.0.1"), from: c2).succeeded)

        let start = ContinuousClock.now
        try d.detach(endpoint: "c1")
        print("detach (not last): \(ms(since: start))")
        #expect(f.sandboxes(0) == ["sb-4100"])
        #expect(try !NetlinkSocket(namespace: c1).links().contains { $0.name == "eth0" })
        let last = ContinuousClock.now
        try d.detach(endpoint: "c2")
        print("detach (last, sandbox removed): \(ms(since: last))")
        #expect(f.sandboxes(0).isEmpty)
        #expect(d.sandboxPath(network: "n") == nil)
        #expect(try f.hostVXLANs(0).isEmpty)
        #expect(try sb.links().allSatisfy { $0.kind != "vxlan" && $0.kind != "veth" && $0.kind != "bridge" && $0.kind != "macvlan" })
        #expect(try !NetlinkSocket(namespace: c2).links().contains { $0.name == "eth0" })
        do {
            try d.detach(endpoint: "c2")
            Issue.record("second detach accepted")
        } catch {
            #expect(error.code == .unknownEndpoint)
        }
        // The network can be removed now, and the same VNI reused.
        try d.removeNetwork(named: "n")
        try d.createNetwork(OverlayNetworkSpec(name: "n2", subnet: "10.60.0.0/24", vni: 4100))
        try d.attach(EndpointSpec(id: "c1", network: "n2", namespace: .path(c1.path!), address: ip("10.60.0.2")))
        #expect(f.sandboxes(0) == ["sb-4100"])
    }

    @Test("peers: learned before the sandbox are replayed; removal stops traffic and the flood entry")
    func peerRemoval() throws {
        let f = try Fixture("ovlt-dpeer", hosts: 2)
        defer { f.destroy() }
        let d1 = f.drivers[0], d2 = f.drivers[1]
        for d in f.drivers { try d.createNetwork(OverlayNetworkSpec(name: "n", subnet: "10.70.0.0/24", vni: 4200)) }
        let c2 = try f.container("c2")
        let e2 = try d2.attach(EndpointSpec(id: "c2", network: "n", namespace: .path(c2.path!), address: ip("10.70.0.3")))
        // h1 learns c2 before it has any endpoint (no sandbox yet): kept, replayed later.
        try d1.addPeer(e2.peer, network: "n")
        try d1.addPeer(e2.peer, network: "n")  // idempotent
        #expect(f.sandboxes(0).isEmpty)
        let c1 = try f.container("c1")
        let e1 = try d1.attach(EndpointSpec(id: "c1", network: "n", namespace: .path(c1.path!), address: ip("10.70.0.2")))
        try d2.addPeer(e1.peer, network: "n")
        let r = try f.ping(e2.address, from: c1)
        #expect(r.succeeded, "\(r.output)")

        // A replaced peer (new MAC) takes over; the stale removal of the old entry is ignored.
        let moved = PeerEntry(address: e2.address, mac: MACAddress("02:42:aa:bb:cc:dd")!, vtep: e2.vtep)
        try d1.addPeer(moved, network: "n")
        #expect(try d1.removePeer(e2.peer, network: "n") == false)
        let sb = try NetlinkSocket(namespace: NetworkNamespace.open(path: d1.sandboxPath(network: "n")!))
        let fdb = try sb.fdbEntries(device: "vx-4200").filter(\.isSelf)  // the device's own entries
        #expect(fdb.contains { $0.mac == moved.mac && $0.destination == e2.vtep })
        #expect(!fdb.contains { $0.mac == e2.mac })
        try d1.addPeer(e2.peer, network: "n")
        #expect(try f.ping(e2.address, from: c1).succeeded)

        let start = ContinuousClock.now
        #expect(try d1.removePeer(e2.peer, network: "n"))
        print("removePeer: \(ms(since: start))")
        #expect(try d1.removePeer(e2.peer, network: "n") == false)
        let after = try f.lab.run(["ping", "-c", "2", "-i", "0.2", "-W", "1", e2.address.description], in: c1)
        #expect(!after.succeeded, "still reachable after removePeer: \(after.output)")
        let left = try sb.fdbEntries(device: "vx-4200").filter(\.isSelf)
        #expect(!left.contains { $0.destination == e2.vtep }, "flood or peer entry left: \(left)")
        #expect(try sb.neighbors(device: "vx-4200").allSatisfy { $0.address != e2.address })
    }

    @Test("restart: a new driver on the same state directory removes what a crashed one left")
    func restart() throws {
        let f = try Fixture("ovlt-drst", hosts: 1)
        defer { f.destroy() }
        let c = try f.container("c")
        do {
            let crashed = try f.makeDriver(0)
            try crashed.createNetwork(OverlayNetworkSpec(name: "n", subnet: "10.80.0.0/24", vni: 4300))
            try crashed.attach(EndpointSpec(id: "c", network: "n", namespace: .path(c.path!), address: ip("10.80.0.2")))
            // A VXLAN device left half-made in the host namespace, named with the node's prefix.
            try NetlinkSocket(namespace: f.lab.hosts[0].namespace).createVXLAN(
                named: "h1x10cd", options: VXLANOptions(vni: try VNI(0x10cd), learning: false))
            // Dropped without cleanup: nothing is torn down on release.
        }
        f.drivers = []
        #expect(f.sandboxes(0) == ["sb-4300"])
        #expect(try NetlinkSocket(namespace: c).links().contains { $0.name == "eth0" })
        let start = ContinuousClock.now
        let fresh = try f.makeDriver(0)
        print("restart with one stale sandbox: \(ms(since: start))")
        f.drivers = [fresh]
        #expect(fresh.removedStale.contains("sandbox sb-4300"))
        #expect(fresh.removedStale.contains("link h1x10cd"))
        #expect(f.sandboxes(0).isEmpty)
        #expect(try f.hostVXLANs(0).isEmpty)
        #expect(try !NetlinkSocket(namespace: c).links().contains { $0.name == "eth0" })
        // The same network comes back on the new driver.
        try fresh.createNetwork(OverlayNetworkSpec(name: "n", subnet: "10.80.0.0/24", vni: 4300))
        try fresh.attach(EndpointSpec(id: "c", network: "n", namespace: .path(c.path!), address: ip("10.80.0.2")))
        #expect(try f.ping(ip("10.80.0.1"), from: c).succeeded)
    }

    @Test("MTU 1450: 1450-byte packets with DF cross hosts; 1451 bytes are refused, not lost")
    func mtuEdge() throws {
        let f = try Fixture("ovlt-dmtu", hosts: 2)
        defer { f.destroy() }
        for d in f.drivers { try d.createNetwork(OverlayNetworkSpec(name: "n", subnet: "10.90.0.0/24", vni: 4400)) }
        let c1 = try f.container("c1"), c2 = try f.container("c2")
        let e1 = try f.drivers[0].attach(EndpointSpec(id: "c1", network: "n", namespace: .path(c1.path!), address: ip("10.90.0.2")))
        let e2 = try f.drivers[1].attach(EndpointSpec(id: "c2", network: "n", namespace: .path(c2.path!), address: ip("10.90.0.3")))
        try f.drivers[0].addPeer(e2.peer, network: "n")
        try f.drivers[1].addPeer(e1.peer, network: "n")
        #expect(try NetlinkSocket(namespace: c1).link(named: "eth0").mtu == 1450)
        let fits = try f.ping(e2.address, from: c1, extra: ["-M", "do", "-s", "1422"])
        #expect(fits.succeeded, "1450 bytes did not cross: \(fits.output)")
        let big = try f.ping(e2.address, from: c1, extra: ["-M", "do", "-s", "1423"])
        #expect(!big.succeeded)
        #expect(big.output.contains("message too long") && big.output.contains("1450"), "\(big.output)")
        // A custom MTU above what the underlay carries is refused.
        do {
            try f.drivers[0].createNetwork(OverlayNetworkSpec(name: "jumbo", subnet: "10.91.0.0/24", vni: 4401, mtu: 1451))
            Issue.record("MTU 1451 accepted over a 1500 underlay")
        } catch {
            #expect(error.code == .invalidMTU)
            #expect(error.message.contains("68...1450"))
        }
    }

    @Test("bad input: clear errors, and nothing of the failed call is left in the kernel")
    func badInput() throws {
        let f = try Fixture("ovlt-dbad", hosts: 1)
        defer { f.destroy() }
        let d = f.drivers[0]
        let c = try f.container("c")
        let hostLinks = try NetlinkSocket(namespace: f.lab.hosts[0].namespace).links().map(\.name)
        func clean(_ what: String) throws {
            #expect(f.sandboxes(0).isEmpty, "\(what): sandbox left")
            #expect(try NetlinkSocket(namespace: f.lab.hosts[0].namespace).links().map(\.name) == hostLinks, "\(what): host link left")
            #expect(try NetlinkSocket(namespace: c).links().map(\.name) == ["lo"], "\(what): container link left")
        }
        func expectError(_ code: OverlayDriverError.Code, _ text: String, _ body: () throws -> Void) throws {
            do {
                try body()
                Issue.record("accepted; expected \(code): \(text)")
            } catch let error as OverlayDriverError {
                #expect(error.code == code, "\(error)")
                #expect(error.message.contains(text), "\(error.message)")
            }
            try clean(text)
        }
        try expectError(.invalidSubnet, "/33 is out of range") { try d.createNetwork(OverlayNetworkSpec(name: "x", subnet: "10.0.0.0/33", vni: 4096)) }
        try expectError(.invalidSubnet, "host bits set") { try d.createNetwork(OverlayNetworkSpec(name: "x", subnet: "10.0.0.1/24", vni: 4096)) }
        try expectError(.invalidSubnet, "not a subnet") { try d.createNetwork(OverlayNetworkSpec(name: "x", subnet: "banana", vni: 4096)) }
        try expectError(.invalidVNI, "out of range") { try d.createNetwork(OverlayNetworkSpec(name: "x", subnet: "10.0.0.0/24", vni: 0)) }
        try expectError(.invalidVNI, "out of range") { try d.createNetwork(OverlayNetworkSpec(name: "x", subnet: "10.0.0.0/24", vni: 1 << 24)) }
        try expectError(.invalidName, "network name") { try d.createNetwork(OverlayNetworkSpec(name: "a/b", subnet: "10.0.0.0/24", vni: 4096)) }
        try d.createNetwork(OverlayNetworkSpec(name: "n", subnet: "10.0.0.0/24", vni: 4096))
        try expectError(.duplicateNetwork, "already exists") { try d.createNetwork(OverlayNetworkSpec(name: "n", subnet: "10.1.0.0/24", vni: 4097)) }
        try expectError(.duplicateVNI, "VXLAN ID 4096 is already used by network 'n'") {
            try d.createNetwork(OverlayNetworkSpec(name: "m", subnet: "10.1.0.0/24", vni: 4096))
        }
        try expectError(.unknownNetwork, "no network named 'nope'") {
            try d.attach(EndpointSpec(id: "e", network: "nope", namespace: .path(c.path!), address: ip("10.0.0.2")))
        }
        try expectError(.unknownNetwork, "no network named 'nope'") {
            try d.addPeer(PeerEntry(address: ip("10.0.0.9"), mac: MACAddress("02:42:0a:00:00:09")!, vtep: ip("198.18.0.9")), network: "nope")
        }
        try expectError(.namespaceNotFound, "does not exist") {
            try d.attach(EndpointSpec(id: "e", network: "n", namespace: .path("/run/netns/ovlt-dbad-missing"), address: ip("10.0.0.2")))
        }
        try expectError(.namespaceNotFound, "does not exist") {
            try d.attach(EndpointSpec(id: "e", network: "n", namespace: .pid(0x3fff_fff0), address: ip("10.0.0.2")))
        }
        try expectError(.addressNotInNetwork, "none of network 'n'") {
            try d.attach(EndpointSpec(id: "e", network: "n", namespace: .path(c.path!), address: ip("10.9.0.2")))
        }
        try expectError(.addressNotInNetwork, "gateway") {
            try d.attach(EndpointSpec(id: "e", network: "n", namespace: .path(c.path!), address: ip("10.0.0.1")))
        }
        // A kernel failure after the sandbox was built: the interface name is taken in the
        // container. The sandbox built for this call is rolled back.
        try NetlinkSocket(namespace: c).createVeth(named: "eth0", peerName: "taken0")
        do {
            try d.attach(EndpointSpec(id: "e", network: "n", namespace: .path(c.path!), address: ip("10.0.0.2")))
            Issue.record("attach over an existing eth0 accepted")
        } catch {
            #expect(error.code == .kernel)
            #expect(error.message.contains("eth0"), "\(error.message)")
        }
        #expect(f.sandboxes(0).isEmpty)
        #expect(try f.hostVXLANs(0).isEmpty)
        try NetlinkSocket(namespace: c).deleteLink(named: "eth0")
        try clean("rollback")

        // Duplicate endpoint address (and ID): refused, the first endpoint untouched.
        let c2 = try f.container("c2")
        try d.attach(EndpointSpec(id: "e", network: "n", namespace: .path(c2.path!), address: ip("10.0.0.2")))
        do {
            try d.attach(EndpointSpec(id: "e2", network: "n", namespace: .path(c.path!), address: ip("10.0.0.2")))
            Issue.record("duplicate address accepted")
        } catch {
            #expect(error.code == .duplicateAddress)
            #expect(error.message.contains("10.0.0.2 is already used by endpoint 'e'"))
        }
        do {
            try d.attach(EndpointSpec(id: "e", network: "n", namespace: .path(c.path!), address: ip("10.0.0.3")))
            Issue.record("duplicate endpoint ID accepted")
        } catch {
            #expect(error.code == .duplicateEndpoint)
        }
        #expect(try NetlinkSocket(namespace: c).links().map(\.name) == ["lo"])
        #expect(f.sandboxes(0) == ["sb-4096"])
        do {
            try d.removeNetwork(named: "n")
            Issue.record("network with endpoints removed")
        } catch {
            #expect(error.code == .networkInUse)
        }
    }
}
