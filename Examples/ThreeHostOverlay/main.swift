// three-host-overlay: a 3-host lab with one overlay network between them, built with the SDK
// alone (OverlayTestKit for the lab, IPAM for addresses, Netlink for the kernel objects).
//
// Each host gets what Docker's overlay driver builds: a network sandbox (a namespace) holding a
// bridge with the gateway address and a VXLAN device (created in the host namespace, so its UDP
// socket is on the underlay, then moved in); a container namespace attached by veth; and, for
// every container on another host, a permanent neighbour entry and an FDB entry pointing at that
// host's VTEP. Then every container pings every other, and the underlay is checked for VXLAN.
//
// Run as root: `make demo`. Everything is named `ovl-demo-…` and removed at the end, also on failure.

import Foundation
import IPAM
import Netlink
import OverlayModel
import OverlayTestKit

struct Container {
    let host: Lab.Host
    let name: String
    let namespace: NetworkNamespace
    let address: IPv4Address
    var mac: MACAddress { MACAddress(derivedFrom: address) }
}

func say(_ line: String) {
    print(line)
    fflush(nil)
}

func runDemo() throws -> Bool {
    let vni = try VNI(4096)
    let mtu: UInt32 = 1450

    say("== lab: 3 hosts on 198.18.0.0/15 (a bridge in its own namespace, no uplink)")
    let lab = try Lab.create(name: "ovl-demo", hosts: 3)
    defer {
        lab.destroy()
        say("== teardown: removed every ovl-demo-* namespace")
    }
    for h in lab.hosts { say("   \(h.name)  \(h.address)") }

    // Addresses come from IPAM, as the manager would hand them out: a /24 from the global pool,
    // the gateway reserved, containers serially.
    var ipam = try DemoAddressing()
    say("== network 'demo': subnet \(ipam.subnet), gateway \(ipam.gateway), VXLAN ID \(vni), MTU \(mtu)")

    var containers: [Container] = []
    for host in lab.hosts {
        let socket = try NetlinkSocket(namespace: host.namespace)
        // The network sandbox: bridge + VXLAN device, like Docker's "1-<netid>" namespace.
        let sandbox = try lab.makeNamespace("\(host.name)-sb\(vni)")
        let sb = try NetlinkSocket(namespace: sandbox)
        try sb.setUp("lo")
        try sb.createBridge(named: "br0", mtu: mtu)
        try sb.addAddress(InterfaceAddress(.v4(ipam.gateway), prefixLength: ipam.subnet.prefixLength)!, to: "br0")
        try sb.setUp("br0")
        // Created in the host namespace so its socket binds there (on the underlay), then moved.
        try socket.createVXLAN(named: "vx\(vni)", options: VXLANOptions(
            vni: vni, local: .v4(host.address), learning: false, proxyARP: true, l2miss: false, l3miss: false, mtu: mtu))
        try socket.moveLink("vx\(vni)", to: sandbox)
        try sb.renameLink("vx\(vni)", to: "vxlan0")
        try sb.setMaster("br0", of: "vxlan0")
        try sb.setUp("vxlan0")

        // One container on this host, attached by a veth pair.
        let name = "c\(containers.count + 1)"
        let ns = try lab.makeNamespace("\(host.name)-\(name)")
        let address = try ipam.nextAddress()
        let container = Container(host: host, name: name, namespace: ns, address: address)
        try sb.createVeth(named: "veth-\(name)", peerName: "eth0", peerNamespace: ns, mtu: mtu)
        try sb.setMaster("br0", of: "veth-\(name)")
        try sb.setUp("veth-\(name)")
        let cs = try NetlinkSocket(namespace: ns)
        try cs.setUp("lo")
        try cs.setMAC(container.mac, of: "eth0")
        try cs.addAddress(InterfaceAddress(.v4(address), prefixLength: ipam.subnet.prefixLength)!, to: "eth0")
        try cs.setUp("eth0")
        containers.append(container)
        say("   \(host.name): sandbox \(sandbox.name), container \(name) \(address) \(container.mac)")
    }

    say("== peers: each host learns the other hosts' containers (neighbour + FDB -> VTEP)")
    for host in lab.hosts {
        let sb = try NetlinkSocket(namespace: NetworkNamespace.open(named: "ovl-demo-\(host.name)-sb\(vni)"))
        for peer in containers where peer.host.name != host.name {
            try sb.replaceNeighbor(Neighbor(address: .v4(peer.address), mac: peer.mac, device: "vxlan0"))
            try sb.replaceFDB(FDBEntry(mac: peer.mac, destination: .v4(peer.host.address), device: "vxlan0"))
        }
    }

    say("== ping matrix (3 packets each, across hosts over VXLAN)")
    let capture = try PacketCapture(namespace: lab.switchNamespace, interface: "p-h1")
    var allOK = true
    for from in containers {
        for to in containers where to.name != from.name {
            let r = try lab.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", to.address.description], in: from.namespace)
            let summary = r.output.split(separator: "\n").first { $0.contains("packet loss") }.map(String.init) ?? r.output
            say("   \(from.name)@\(from.host.name) -> \(to.name)@\(to.host.name) \(to.address): \(r.succeeded ? "ok" : "FAILED")  \(summary)")
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
