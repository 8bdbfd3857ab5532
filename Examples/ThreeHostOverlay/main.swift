// three-host-overlay: a 3-host lab with one overlay network between them, built with the SDK
// alone (`make demo` runs the daemon's demo instead): OverlayTestKit for the hosts, IPAM for the
// addresses, one OverlayDriver per host (the network sandbox with its VXLAN device, the
// containers' MACVLANs, the peers), and VXLANCodec to decode what crossed the underlay.
//
// The peers are exchanged by hand: each host's driver is told where the other hosts' containers
// live, which is what gossip does in overlayd.
//
// Run as root: `make demo`. Everything is named `ovl-demo-…` or lives in /run/ovl-demo-state, and
// is removed at the end, also on failure.

import Foundation
import IPAM
import Netlink
import OverlayDriver
import OverlayModel
import OverlayTestKit

struct Container {
    let host: Lab.Host
    let name: String
    let namespace: NetworkNamespace
    let endpoint: OverlayEndpoint
}

func say(_ line: String) {
    print(line)
    fflush(nil)
}

func runDemo() throws -> Bool {
    let stateRoot = "/run/ovl-demo-state"
    say("== lab: 3 hosts on 198.18.0.0/15 (a bridge in its own namespace, no uplink)")
    let lab = try Lab.create(name: "ovl-demo", hosts: 3)
    var drivers: [OverlayDriver] = []
    defer {
        for d in drivers { d.shutdown() }
        lab.destroy()
        try? FileManager.default.removeItem(atPath: stateRoot)
        say("== teardown: sandboxes, containers and hosts removed")
    }
    for h in lab.hosts {
        drivers.append(try OverlayDriver(configuration: OverlayDriverConfiguration(
            nodeID: h.name, stateDirectory: "\(stateRoot)/\(h.name)", hostNamespacePath: h.namespace.path,
            dataPathAddress: .v4(h.address))))
        say("   \(h.name)  \(h.address)")
    }

    // Addresses come from IPAM, as the manager would hand them out: a /24 from the global pool,
    // the gateway reserved, containers serially. VXLAN ID 4096, Docker's first.
    var ipam = IPAM(pools: AddressPool.globalDefaults, strategy: .serial)
    let space = try ipam.createNetwork("demo")[0]
    let spec = OverlayNetworkSpec(name: "demo", subnet: space.subnet.description, gateway: space.gateway.description, vni: 4096)
    for d in drivers { try d.createNetwork(spec) }
    say("== network 'demo': subnet \(space.subnet), gateway \(space.gateway), VXLAN ID 4096, MTU \(drivers[0].networks()[0].mtu)")

    var containers: [Container] = []
    for (i, host) in lab.hosts.enumerated() {
        let name = "c\(i + 1)"
        let ns = try lab.makeNamespace("\(host.name)-\(name)")
        let endpoint = try drivers[i].attach(EndpointSpec(
            id: name, network: "demo", namespace: .path(ns.path!), address: try ipam.allocateAddress(in: "demo")))
        containers.append(Container(host: host, name: name, namespace: ns, endpoint: endpoint))
        say("   \(host.name): container \(name) \(endpoint.address) \(endpoint.mac), sandbox \(drivers[i].sandboxPath(network: "demo")!)")
    }

    say("== peers: each host learns the other hosts' containers (neighbour + FDB -> VTEP)")
    for (i, d) in drivers.enumerated() {
        for c in containers where c.host.name != lab.hosts[i].name {
            try d.addPeer(c.endpoint.peer, network: "demo")
        }
    }

    say("== ping matrix (3 packets each, across hosts over VXLAN)")
    let capture = try PacketCapture(namespace: lab.switchNamespace, interface: "p-h1")
    var allOK = true
    for from in containers {
        for to in containers where to.name != from.name {
            let r = try lab.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", to.endpoint.address.description], in: from.namespace)
            let summary = r.output.split(separator: "\n").first { $0.contains("packet loss") }.map(String.init) ?? r.output
            say("   \(from.name)@\(from.host.name) -> \(to.name)@\(to.host.name) \(to.endpoint.address): \(r.succeeded ? "ok" : "FAILED")  \(summary)")
            allOK = allOK && r.succeeded
        }
    }

    say("== underlay check: what crossed lab0 (decoded with VXLANCodec)")
    let seen = describeVXLAN(capture.drain())
    for line in seen.prefix(4) { say("   \(line)") }
    if seen.isEmpty {
        say("   no VXLAN frame was seen on the underlay")
        allOK = false
    }
    say(allOK ? "== demo: every container reached every other over the overlay" : "== demo: FAILED (see above)")
    return allOK
}

do {
    exit(try runDemo() ? 0 : 1)
} catch {
    FileHandle.standardError.write(Data("three-host-overlay: \(error)\n".utf8))
    exit(1)
}
