// two-host-overlay: a 2-host lab with one overlay network, built with the SDK alone:
// OverlayTestKit for the hosts, IPAM for addresses, one OverlayDriver per host, and the peers
// exchanged by hand (what gossip will do later). Each container pings the other across the
// underlay (VXLAN), including a 1450-byte packet with DF set; then everything is torn down.
//
// Run as root: `swift build --product two-host-overlay && .build/debug/two-host-overlay`.
// Everything is named `ovl-two-…` (namespaces) or lives in /run/ovl-two-state; removed at the end.

import Foundation
import IPAM
import OverlayDriver
import OverlayModel
import OverlayTestKit

func say(_ line: String) {
    print(line)
    fflush(nil)
}

func runDemo() throws -> Bool {
    let stateRoot = "/run/ovl-two-state"
    say("== lab: 2 hosts on 198.18.0.0/15")
    let lab = try Lab.create(name: "ovl-two", hosts: 2)
    var drivers: [OverlayDriver] = []
    defer {
        for d in drivers { d.shutdown() }
        lab.destroy()
        for h in lab.hosts { try? FileManager.default.removeItem(atPath: "\(stateRoot)/\(h.name)") }
        try? FileManager.default.removeItem(atPath: stateRoot)
        say("== teardown: sandboxes, containers and hosts removed")
    }

    // One driver per host, each with its own state directory (sandbox handles live there).
    for h in lab.hosts {
        drivers.append(try OverlayDriver(configuration: OverlayDriverConfiguration(
            nodeID: h.name, stateDirectory: "\(stateRoot)/\(h.name)", hostNamespacePath: h.namespace.path,
            dataPathAddress: .v4(h.address))))
    }

    // Addresses from IPAM, as a manager would hand them out; VNI 4096 (Docker's first).
    var ipam = IPAM(pools: AddressPool.globalDefaults, strategy: .serial)
    let space = try ipam.createNetwork("demo")[0]
    let spec = OverlayNetworkSpec(name: "demo", subnet: space.subnet.description, gateway: space.gateway.description, vni: 4096)
    for d in drivers { try d.createNetwork(spec) }
    say("== network demo: \(space.subnet), gateway \(space.gateway), VNI 4096, MTU \(drivers[0].networks()[0].mtu)")

    // One container (a namespace) per host, attached through the driver.
    var endpoints: [OverlayEndpoint] = []
    for (i, h) in lab.hosts.enumerated() {
        let container = try lab.makeNamespace("c\(i + 1)")
        let ep = try drivers[i].attach(EndpointSpec(
            id: "c\(i + 1)", network: "demo", namespace: .path(container.path!), address: try ipam.allocateAddress(in: "demo")))
        endpoints.append(ep)
        say("   \(h.name): container c\(i + 1) \(ep.address) \(ep.mac), sandbox \(drivers[i].sandboxPath(network: "demo")!)")
    }

    // Peers exchanged by hand: each host learns the other's endpoint.
    try drivers[0].addPeer(endpoints[1].peer, network: "demo")
    try drivers[1].addPeer(endpoints[0].peer, network: "demo")
    say("== peers: h1 knows \(endpoints[1].peer), h2 knows \(endpoints[0].peer)")

    var ok = true
    for (i, ep) in endpoints.enumerated() {
        let other = endpoints[1 - i]
        guard case .path(let path) = ep.namespace else { continue }
        let ns = lab.hosts[i].namespace  // only for the name in messages
        let r = try Lab.run(["nsenter", "--net=\(path)", "--", "ping", "-c", "3", "-i", "0.2", "-W", "2", "-M", "do", "-s", "1422", other.address.description])
        let summary = r.output.split(separator: "\n").first { $0.contains("packet loss") }.map(String.init) ?? r.output
        say("   c\(i + 1)@\(ns.name) -> \(other.address) (1450-byte packets, DF): \(r.succeeded ? "ok" : "FAILED")  \(summary)")
        ok = ok && r.succeeded
    }
    say(ok ? "== two-host-overlay: both containers reached each other over the overlay" : "== two-host-overlay: FAILED")
    return ok
}

do {
    exit(try runDemo() ? 0 : 1)
} catch {
    FileHandle.standardError.write(Data("two-host-overlay: \(error)\n".utf8))
    exit(1)
}
