import Foundation
import Netlink
import OverlayDriver
import OverlayModel
import OverlayTestKit
import Testing

/// A datapath that records what the driver asks of it: proves the driver talks to its datapath
/// through the protocol alone, and pins down ref-counting and replay. Its tunnel device is a
/// persistent TAP device (what a userspace datapath would read and write), so endpoints can hang off it in either
/// endpoint-link mode.
final class RecordingDatapath: Datapath, @unchecked Sendable {
    // @unchecked: `calls` is guarded by `lock`.
    private let lock = NSLock()
    private var calls: [String] = []
    var name: String { "recording" }

    func record(_ s: String) { lock.withLock { calls.append(s) } }
    func take() -> [String] { lock.withLock { defer { calls = [] }; return calls } }

    func removeStale() throws(OverlayDriverError) -> [String] { record("removeStale"); return [] }
    func createTunnel(_ t: TunnelSpec, in sandbox: NetlinkSocket) throws(OverlayDriverError) {
        record("create \(t.deviceName) vni \(t.vni) mtu \(t.mtu) bridge \(t.bridge ?? "-")")
        do throws(NetlinkError) {
            _ = try sandbox.createTap(named: t.deviceName, persistent: true)
            try sandbox.setMTU(t.mtu, of: t.deviceName)
            if let bridge = t.bridge { try sandbox.setMaster(bridge, of: t.deviceName) }
            try sandbox.setUp(t.deviceName)
        } catch {
            throw OverlayDriverError(.kernel, error.message)
        }
    }
    func removeTunnel(_ t: TunnelSpec, in sandbox: NetlinkSocket) throws(OverlayDriverError) {
        record("remove \(t.deviceName)")
        try? sandbox.deleteLink(named: t.deviceName)
    }
    func addRemoteVTEP(_ v: IPAddress, on t: TunnelSpec, in sandbox: NetlinkSocket) throws(OverlayDriverError) { record("+vtep \(v)") }
    func removeRemoteVTEP(_ v: IPAddress, on t: TunnelSpec, in sandbox: NetlinkSocket) throws(OverlayDriverError) { record("-vtep \(v)") }
    func programPeer(_ p: PeerEntry, on t: TunnelSpec, in sandbox: NetlinkSocket) throws(OverlayDriverError) { record("+peer \(p.address)") }
    func unprogramPeer(_ p: PeerEntry, on t: TunnelSpec, in sandbox: NetlinkSocket) throws(OverlayDriverError) { record("-peer \(p.address)") }
}

@Suite("Datapath seam")
struct DatapathSeamTests {
    @Test("peers are ref-counted per VTEP, idempotent, replayed into a new sandbox; own VTEP skipped",
          arguments: [EndpointLink.macvlan, .vethBridge])
    func refCountingAndReplay(link: EndpointLink) throws {
        let lab = try Lab.create(name: "ovlt-dseam\(link.tag)", hosts: 1)
        let state = "/run/ovlt-dseam\(link.tag)-state"
        defer {
            lab.destroy()
            try? NetworkNamespace.removeHandleDirectory(state + "/netns")
            try? FileManager.default.removeItem(atPath: state)
        }
        let dp = RecordingDatapath()
        let d = try OverlayDriver(
            configuration: OverlayDriverConfiguration(
                nodeID: "seam", stateDirectory: state, hostNamespacePath: lab.hosts[0].namespace.path,
                dataPathAddress: .v4(lab.hosts[0].address), endpointLink: link),
            datapath: dp)
        #expect(d.endpointLink == link)
        #expect(dp.take() == ["removeStale"])
        try d.createNetwork(OverlayNetworkSpec(name: "n", subnet: "10.5.0.0/24", vni: 9000))
        let a = ip("198.18.0.10"), b = ip("198.18.0.11")
        func peer(_ n: Int, _ vtep: IPAddress) -> PeerEntry {
            PeerEntry(address: ip("10.5.0.\(n)"), mac: MACAddress(derivedFrom: IPv4Address(10, 5, 0, UInt8(n))), vtep: vtep)
        }
        // Before any endpoint: recorded, nothing programmed.
        try d.addPeers([peer(10, a), peer(11, a), peer(12, b)], network: "n")
        try d.addPeer(peer(10, a), network: "n")
        try d.addPeer(peer(13, .v4(lab.hosts[0].address)), network: "n")  // on our own VTEP
        #expect(dp.take().isEmpty)
        #expect(try d.peers(network: "n").count == 4)

        let c = try lab.makeNamespace("c")
        try d.attach(EndpointSpec(id: "c", network: "n", namespace: .path(c.path!), address: ip("10.5.0.2")))
        let replay = dp.take()
        #expect(replay.first == "create vx-9000 vni 9000 mtu 1450 bridge \(link == .vethBridge ? "br-9000" : "-")")
        // The endpoint hangs off whatever device the datapath made: a MACVLAN on it, or a veth
        // into the bridge it joined.
        let eth0 = try NetlinkSocket(namespace: c).link(named: "eth0")
        #expect(eth0.kind == (link == .macvlan ? "macvlan" : "veth"))
        #expect(replay.filter { $0.hasPrefix("+vtep") }.sorted() == ["+vtep 198.18.0.10", "+vtep 198.18.0.11"])
        #expect(replay.filter { $0.hasPrefix("+peer") }.sorted() == ["+peer 10.5.0.10", "+peer 10.5.0.11", "+peer 10.5.0.12"])

        try d.addPeer(peer(14, a), network: "n")
        #expect(dp.take() == ["+peer 10.5.0.14"])
        #expect(try d.removePeer(peer(10, a), network: "n"))
        #expect(try d.removePeer(peer(11, a), network: "n"))
        #expect(dp.take() == ["-peer 10.5.0.10", "-peer 10.5.0.11"])
        #expect(try d.removePeer(peer(14, a), network: "n"))
        #expect(dp.take() == ["-peer 10.5.0.14", "-vtep 198.18.0.10"])
        // A peer moving to another VTEP: the old VTEP's last reference goes, the new one's comes.
        try d.addPeer(peer(12, a), network: "n")
        #expect(dp.take() == ["-peer 10.5.0.12", "-vtep 198.18.0.11", "+vtep 198.18.0.10", "+peer 10.5.0.12"])

        try d.detach(endpoint: "c")
        #expect(dp.take() == ["remove vx-9000"])
        #expect(NetworkNamespace.list(handleDirectory: state + "/netns").isEmpty)
    }
}
