import GWBridge
import IPAM
import Netlink
import OverlayModel
import OverlayTestKit
import PacketFilter
import Testing

@Suite("GatewayBridge in a lab", .serialized)
struct GatewayBridgeLabTests {
    @Test func egressIsMasqueradedBehindTheHostAddress() throws {
        let t = try GWLab()
        defer { t.destroy() }
        let info = try t.gw.ensure()
        #expect(info.bridgeName == "ovl_gwbridge")
        #expect(info.subnet == CIDR("172.17.0.0/16")!)
        #expect(info.gateway == IPv4Address(172, 17, 0, 1))
        #expect(info.createdBridge)
        #expect(try t.h1.namespace.sysctl("net.ipv4.ip_forward") == "1")
        #expect(try t.h2.namespace.sysctl("net.ipv4.ip_forward") == "0")

        let c1 = try t.container("c1")
        let a = try t.gw.attach(container: c1)
        #expect(a.address == IPv4Address(172, 17, 0, 2))
        #expect(a.interfaceName == "eth1")
        #expect(a.hostInterfaceName == "ovgwac110002")
        let inside = try NetlinkSocket(namespace: c1)
        #expect(try inside.addresses(on: "eth1", family: .v4) == [InterfaceAddress("172.17.0.2/16")!])
        #expect(try inside.link(named: "eth1").mac == MACAddress("02:42:ac:11:00:02")!)
        #expect(try inside.routes(family: .v4).contains { $0.destination == nil && $0.gateway == .v4(info.gateway) })

        #expect(try t.ping(from: c1, "198.18.0.2"))
        try t.startServer(in: t.h2.namespace, proto: "tcp", port: 7000, tag: "h2")
        // h2 sees h1's lab address, not the container's: the masquerade did it.
        #expect(try t.ask(from: c1, "tcp", "198.18.0.2", 7000) == "h2 198.18.0.1")

        // Without masquerade h2 sees 172.17.0.2 and has no way back: nothing answers.
        try t.gw.ensure(GatewayBridgeOptions(ipMasquerade: false))
        #expect(try t.ask(from: c1, "tcp", "198.18.0.2", 7000) == nil)
        try t.gw.ensure()
        #expect(try t.ask(from: c1, "tcp", "198.18.0.2", 7000) == "h2 198.18.0.1")
    }

    @Test func iccOffIsolatesContainersButNotTheirEgress() throws {
        let t = try GWLab()
        defer { t.destroy() }
        try t.gw.ensure()
        let c1 = try t.container("c1")
        let c2 = try t.container("c2")
        let a1 = try t.gw.attach(container: c1)
        let a2 = try t.gw.attach(container: c2)
        #expect(a2.address == IPv4Address(172, 17, 0, 3))
        try t.startServer(in: t.h2.namespace, proto: "tcp", port: 7000, tag: "h2")

        #expect(try t.ping(from: c1, "\(a2.address)") == false)
        #expect(try t.ping(from: c2, "\(a1.address)") == false)
        #expect(try t.ask(from: c1, "tcp", "198.18.0.2", 7000) == "h2 198.18.0.1")
        #expect(try t.ask(from: c2, "tcp", "198.18.0.2", 7000) == "h2 198.18.0.1")
        #expect(try t.ping(from: c1, "172.17.0.1"))  // the gateway is reachable

        try t.gw.ensure(GatewayBridgeOptions(icc: true))
        #expect(try t.ping(from: c1, "\(a2.address)"))
        #expect(try t.ping(from: c2, "\(a1.address)"))

        try t.gw.ensure(GatewayBridgeOptions(icc: false))
        #expect(try t.ping(from: c1, "\(a2.address)") == false)
        // A container attached later is isolated too.
        let c3 = try t.container("c3")
        let a3 = try t.gw.attach(container: c3)
        #expect(try t.ping(from: c3, "\(a1.address)") == false)
        #expect(try t.ping(from: c3, "198.18.0.2"))
        _ = a3
    }

    @Test func aPremadeBridgeIsReusedUnchanged() throws {
        let t = try GWLab()
        defer { t.destroy() }
        let host = try NetlinkSocket(namespace: t.h1.namespace)
        try host.createBridge(named: "ovl_gwbridge", mtu: 1400)
        try host.addAddress(InterfaceAddress("10.123.0.1/24")!, to: "ovl_gwbridge")
        try host.setUp("ovl_gwbridge")

        // A different --subnet for an existing bridge is refused, and nothing changes.
        let clash = #expect(throws: GatewayBridgeError.self) {
            try t.gw.ensure(GatewayBridgeOptions(subnet: CIDR("172.30.0.0/16")!))
        }
        #expect(clash?.code == .conflict)
        #expect(clash?.message.contains("10.123.0.0/24") == true)
        #expect(try t.rules().isEmpty)

        let info = try t.gw.ensure()
        #expect(info.subnet == CIDR("10.123.0.0/24")!)
        #expect(info.gateway == IPv4Address(10, 123, 0, 1))
        #expect(info.mtu == 1400)
        #expect(!info.createdBridge)
        #expect(try host.addresses(on: "ovl_gwbridge", family: .v4) == [InterfaceAddress("10.123.0.1/24")!])
        #expect(try host.link(named: "ovl_gwbridge").mtu == 1400)

        let c1 = try t.container("c1")
        let a = try t.gw.attach(container: c1)
        #expect(a.address == IPv4Address(10, 123, 0, 2))
        #expect(a.prefixLength == 24)
        #expect(try NetlinkSocket(namespace: c1).link(named: "eth1").mtu == 1400)
        try t.startServer(in: t.h2.namespace, proto: "tcp", port: 7000, tag: "h2")
        #expect(try t.ask(from: c1, "tcp", "198.18.0.2", 7000) == "h2 198.18.0.1")

        // Teardown removes our tables and veths but leaves the operator's bridge.
        try t.gw.teardown()
        #expect(try t.rules().isEmpty)
        #expect(try host.link(named: "ovl_gwbridge").kind == "bridge")
        #expect(throws: NetlinkError.self) { try host.link(named: a.hostInterfaceName) }
    }

    @Test func theSubnetAvoidsWhatTheHostAlreadyUses() throws {
        let t = try GWLab()
        defer { t.destroy() }
        let host = try NetlinkSocket(namespace: t.h1.namespace)
        try host.createVeth(named: "ovlt-a", peerName: "ovlt-b")
        try host.addAddress(InterfaceAddress("172.17.5.1/24")!, to: "ovlt-a")
        try host.setUp("ovlt-a")

        // An explicit subnet that overlaps is refused, and no bridge is made.
        let error = #expect(throws: GatewayBridgeError.self) {
            try t.gw.ensure(GatewayBridgeOptions(subnet: CIDR("172.17.0.0/16")!))
        }
        #expect(error?.code == .conflict)
        #expect(error?.message.contains("overlaps 172.17.5.0/24") == true)
        #expect(throws: NetlinkError.self) { try host.link(named: "ovl_gwbridge") }

        let info = try t.gw.ensure()
        #expect(info.subnet == CIDR("172.18.0.0/16")!)

        // An explicit free subnet and gateway are used as given.
        try t.gw.teardown()
        #expect(throws: NetlinkError.self) { try host.link(named: "ovl_gwbridge") }
        let custom = try t.gw.ensure(
            GatewayBridgeOptions(bridgeName: "ovlt-gw0", subnet: CIDR("10.77.0.0/24")!, gateway: IPv4Address(10, 77, 0, 254)))
        #expect(custom.gateway == IPv4Address(10, 77, 0, 254))
        #expect(custom.tableName == "ovlt_gw0")
        #expect(try host.addresses(on: "ovlt-gw0", family: .v4) == [InterfaceAddress("10.77.0.254/24")!])
        #expect(try t.rules("ovlt_gw0").contains("10.77.0.0/24"))
        try t.gw.teardown()
        #expect(try t.rules("ovlt_gw0").isEmpty)
    }

    @Test func publishedPortsReachTheContainerFromOutsideAndFromTheHost() throws {
        let t = try GWLab()
        defer { t.destroy() }
        try t.gw.ensure()
        let c1 = try t.container("c1")
        let a = try t.gw.attach(container: c1)
        try t.startServer(in: c1, proto: "tcp", port: 80, tag: "c1")
        try t.startServer(in: c1, proto: "udp", port: 81, tag: "c1")

        #expect(try t.ask(from: t.h2.namespace, "tcp", "198.18.0.1", 8080) == nil)
        let tcp = PortMapping(hostPort: 8080, protocol: .tcp, containerAddress: a.address, containerPort: 80)
        let udp = PortMapping(hostPort: 8081, protocol: .udp, containerAddress: a.address, containerPort: 81)
        try t.gw.publish(tcp)
        try t.gw.publish(udp)
        #expect(t.gw.publishedPorts == [tcp, udp])

        // From h2 to h1's lab address: the container sees h2 (the source is kept).
        #expect(try t.ask(from: t.h2.namespace, "tcp", "198.18.0.1", 8080) == "c1 198.18.0.2")
        #expect(try t.ask(from: t.h2.namespace, "udp", "198.18.0.1", 8081) == "c1 198.18.0.2")
        // From h1 itself, to its own address.
        #expect(try t.ask(from: t.h1.namespace, "tcp", "198.18.0.1", 8080) == "c1 198.18.0.1")
        #expect(try t.ask(from: t.h1.namespace, "udp", "198.18.0.1", 8081) == "c1 198.18.0.1")
        // From the container itself through the host (hairpin): masqueraded behind the gateway.
        #expect(try t.lab.run(["bridge", "-d", "link", "show", "dev", a.hostInterfaceName], on: t.h1).output.contains("hairpin on"))
        #expect(try t.ask(from: c1, "tcp", "198.18.0.1", 8080) == "c1 172.17.0.1")

        try t.gw.unpublish(PortMapping(hostPort: 8080, protocol: .tcp, containerAddress: a.address, containerPort: 80))
        #expect(try t.ask(from: t.h2.namespace, "tcp", "198.18.0.1", 8080) == nil)
        #expect(try t.ask(from: t.h2.namespace, "udp", "198.18.0.1", 8081) == "c1 198.18.0.2")
        #expect(!(try t.rules()).contains("8080"))

        // Detaching the container drops its published ports too.
        try t.gw.detach(a)
        #expect(t.gw.publishedPorts.isEmpty)
        #expect(!(try t.rules()).contains("8081"))
        #expect(t.gw.allocatedAddresses.isEmpty)
    }

    @Test func publishingToOneHostAddressOnly() throws {
        let t = try GWLab()
        defer { t.destroy() }
        try t.gw.ensure()
        let c1 = try t.container("c1")
        let a = try t.gw.attach(container: c1)
        try t.startServer(in: c1, proto: "tcp", port: 80, tag: "c1")
        try t.gw.publish(PortMapping(hostPort: 9090, containerAddress: a.address, containerPort: 80, hostAddress: IPv4Address(198, 18, 0, 1)))
        #expect(try t.ask(from: t.h2.namespace, "tcp", "198.18.0.1", 9090) == "c1 198.18.0.2")
        // The gateway address is the host's too, but not the one published on.
        #expect(try t.ask(from: t.h1.namespace, "tcp", "172.17.0.1", 9090) == nil)
    }

    @Test func badInputIsRefusedAndChangesNothing() throws {
        let t = try GWLab()
        defer { t.destroy() }
        let c1 = try t.container("c1")
        let early = #expect(throws: GatewayBridgeError.self) { try t.gw.attach(container: c1) }
        #expect(early?.code == .notReady)

        for (options, words) in [
            (GatewayBridgeOptions(subnet: CIDR("fd00::/64")!), "not IPv4"),
            (GatewayBridgeOptions(subnet: CIDR("10.1.2.0/31")!), "/31"),
            (GatewayBridgeOptions(subnet: CIDR("10.1.2.0/24")!, gateway: IPv4Address(10, 1, 3, 1)), "not a usable address"),
            (GatewayBridgeOptions(gateway: IPv4Address(10, 1, 3, 1)), "needs --subnet"),
            (GatewayBridgeOptions(bridgeName: "a-name-far-too-long"), "not a bridge name"),
            (GatewayBridgeOptions(mtu: 10), "MTU"),
        ] {
            let error = #expect(throws: GatewayBridgeError.self) { try t.gw.ensure(options) }
            #expect(error?.code == .invalidArgument)
            #expect(error?.message.contains(words) == true, "\(error?.message ?? "")")
        }
        #expect(throws: NetlinkError.self) { try NetlinkSocket(namespace: t.h1.namespace).link(named: "ovl_gwbridge") }
        #expect(try t.rules().isEmpty)

        try t.gw.ensure()
        let a = try t.gw.attach(container: c1)
        let good = PortMapping(hostPort: 8080, protocol: .tcp, containerAddress: a.address, containerPort: 80)
        try t.gw.publish(good)
        let before = try t.rules()

        let cases: [(PortMapping, GatewayBridgeError.Code, String)] = [
            (PortMapping(hostPort: 0, containerAddress: a.address, containerPort: 80), .invalidArgument, "host port 0"),
            (PortMapping(hostPort: 8082, containerAddress: a.address, containerPort: 0), .invalidArgument, "container port 0"),
            (PortMapping(hostPort: 8082, containerAddress: IPv4Address(10, 9, 9, 9), containerPort: 80), .invalidArgument, "not a container address"),
            (PortMapping(hostPort: 8082, containerAddress: IPv4Address(172, 17, 0, 1), containerPort: 80), .invalidArgument, "not a container address"),
            (PortMapping(hostPort: 8080, protocol: .tcp, containerAddress: a.address, containerPort: 81), .conflict, "already published"),
            (PortMapping(hostPort: 8080, containerAddress: a.address, containerPort: 80, hostAddress: IPv4Address(198, 18, 0, 1)), .conflict, "already published"),
        ]
        for (mapping, code, words) in cases {
            let error = #expect(throws: GatewayBridgeError.self) { try t.gw.publish(mapping) }
            #expect(error?.code == code)
            #expect(error?.message.contains(words) == true, "\(error?.message ?? "")")
        }
        #expect(t.gw.publishedPorts == [good])
        #expect(try t.rules() == before)
        // The same port on another protocol is fine.
        try t.gw.publish(PortMapping(hostPort: 8080, protocol: .udp, containerAddress: a.address, containerPort: 80))

        let missing = #expect(throws: GatewayBridgeError.self) {
            try t.gw.unpublish(PortMapping(hostPort: 9999, containerAddress: a.address, containerPort: 80))
        }
        #expect(missing?.code == .notFound)
        let taken = #expect(throws: GatewayBridgeError.self) { try t.gw.attach(container: try t.container("c2"), address: a.address) }
        #expect(taken?.code == .conflict)
        let badName = #expect(throws: GatewayBridgeError.self) { try t.gw.attach(container: c1, interfaceName: "eth/1") }
        #expect(badName?.code == .invalidArgument)
        // A name already used in the container: refused, the address is not kept.
        let dup = #expect(throws: GatewayBridgeError.self) { try t.gw.attach(container: c1, interfaceName: "eth1") }
        #expect(dup != nil)
        #expect(t.gw.allocatedAddresses == [a.address])
    }

    @Test func stateIsRestoredAfterARestart() throws {
        let t = try GWLab()
        defer { t.destroy() }
        try t.gw.ensure()
        let c1 = try t.container("c1")
        let c2 = try t.container("c2")
        let a1 = try t.gw.attach(container: c1)
        let a2 = try t.gw.attach(container: c2)
        let reserved = try t.gw.allocate()
        #expect(reserved == IPv4Address(172, 17, 0, 4))
        let mapping = PortMapping(hostPort: 8080, containerAddress: a1.address, containerPort: 80)
        try t.gw.publish(mapping)
        try t.startServer(in: c1, proto: "tcp", port: 80, tag: "c1")

        // A new object (the daemon restarted): the bridge is reused, state comes back from the caller.
        let again = GatewayBridge(namespace: t.h1.namespace)
        let info = try again.ensure()
        #expect(info.subnet == CIDR("172.17.0.0/16")!)
        #expect(try t.ask(from: t.h2.namespace, "tcp", "198.18.0.1", 8080) == nil)  // not restored yet
        try again.restore(addresses: [a1.address, a2.address, reserved], publications: [mapping])
        #expect(again.allocatedAddresses == [a1.address, a2.address, reserved])
        #expect(try again.allocate() == IPv4Address(172, 17, 0, 5))
        try again.release(IPv4Address(172, 17, 0, 5))
        #expect(try t.ask(from: t.h2.namespace, "tcp", "198.18.0.1", 8080) == "c1 198.18.0.2")
        #expect(try t.ping(from: c1, "\(a2.address)") == false)  // ICC rule knows the old ports

        // Teardown with the bridge: everything goes.
        try again.teardown(removeBridge: true)
        let host = try NetlinkSocket(namespace: t.h1.namespace)
        #expect(throws: NetlinkError.self) { try host.link(named: "ovl_gwbridge") }
        #expect(throws: NetlinkError.self) { try host.link(named: a1.hostInterfaceName) }
        #expect(try t.rules().isEmpty)
        #expect(again.info == nil)
        try again.teardown()  // twice is fine
    }
}

@Suite("GatewayBridge rules and helpers")
struct GatewayBridgeUnitTests {
    @Test func rendersMasqueradeDNATAndIsolation() {
        let r = GatewayRuleset(
            bridgeName: "ovl_gwbridge", subnet: CIDR("172.18.0.0/16")!, tableName: "ovl_gwbridge", icc: false,
            ipMasquerade: true, ports: ["ovgwac120003", "ovgwac120002"],
            published: [
                PortMapping(hostPort: 8081, protocol: .udp, containerAddress: IPv4Address(172, 18, 0, 2), containerPort: 81),
                PortMapping(hostPort: 8080, containerAddress: IPv4Address(172, 18, 0, 2), containerPort: 80, hostAddress: IPv4Address(198, 18, 0, 1)),
            ])
        let tables = r.tables
        #expect(tables.map(\.family) == [.ip, .bridge])
        #expect(tables.allSatisfy { $0.name == "ovl_gwbridge" })
        let nat = tables[0].body
        #expect(nat.contains("ip saddr 172.18.0.0/16 oifname != \"ovl_gwbridge\" masquerade"))
        #expect(nat.contains("ip daddr 198.18.0.1 tcp dport 8080 dnat to 172.18.0.2:80"))
        #expect(nat.contains("udp dport 8081 dnat to 172.18.0.2:81"))
        #expect(tables[1].body.contains("elements = { \"ovgwac120002\", \"ovgwac120003\" }"))
        #expect(tables[1].body.contains("iifname \"ovgwac120002\" oifname != \"ovgwac120002\" oifname @ports drop"))
        #expect(tables[1].body.contains("iifname \"ovgwac120003\" oifname != \"ovgwac120003\" oifname @ports drop"))
        // Frames of DNAT'd connections (a published port reached from the bridge, bridged by
        // br_netfilter) are marked on the IP side and pass the ICC rule.
        #expect(tables[0].body.contains("ct status dnat meta mark set meta mark | 0x100000"))
        #expect(tables[1].body.contains("meta mark & 0x100000 == 0x100000 accept"))

        var open = r
        open.icc = true
        open.ipMasquerade = false
        #expect(!open.tables[1].body.contains("drop"))
        #expect(!open.tables[0].body.contains("oifname != "))
        #expect(open.tables[0].body.contains("ct status dnat masquerade"))  // hairpin stays
    }

    @Test func namesAndSubnets() throws {
        #expect(GatewayBridge.hostInterfaceName(for: IPv4Address(172, 18, 0, 2)) == "ovgwac120002")
        #expect(GatewayBridge.hostInterfaceName(for: IPv4Address(10, 0, 0, 1)) == "ovgw0a000001")
        let pools = AddressPool.localDefaults
        #expect(try GatewayBridge.pickSubnet(pools: pools, avoiding: []) == CIDR("172.17.0.0/16")!)
        #expect(try GatewayBridge.pickSubnet(pools: pools, avoiding: [CIDR("172.17.3.0/24")!, CIDR("172.18.0.0/15")!]) == CIDR("172.20.0.0/16")!)
        #expect(try GatewayBridge.pickSubnet(pools: pools, avoiding: [CIDR("172.16.0.0/12")!]) == CIDR("192.168.0.0/20")!)
        let error = #expect(throws: GatewayBridgeError.self) {
            try GatewayBridge.pickSubnet(pools: pools, avoiding: [CIDR("0.0.0.0/1")!, CIDR("128.0.0.0/1")!])
        }
        #expect(error?.code == .exhausted)
        #expect(GatewayBridgeOptions(bridgeName: "gw-br.0").effectiveTableName == "gw_br_0")
        let m = PortMapping(hostPort: 80, containerAddress: IPv4Address(172, 18, 0, 2), containerPort: 8080)
        #expect(m.description == "0.0.0.0:80->172.18.0.2:8080/tcp")
        #expect(m.clashes(with: PortMapping(hostPort: 80, containerAddress: IPv4Address(172, 18, 0, 3), containerPort: 1, hostAddress: IPv4Address(1, 2, 3, 4))))
        #expect(!m.clashes(with: PortMapping(hostPort: 80, protocol: .udp, containerAddress: IPv4Address(172, 18, 0, 2), containerPort: 8080)))
    }
}
