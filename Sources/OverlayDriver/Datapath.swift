import Netlink
import OverlayModel

/// One subnet's tunnel endpoint inside a network sandbox, as the driver asks a ``Datapath`` for it.
public struct TunnelSpec: Hashable, Sendable {
    /// The VXLAN ID.
    public let vni: VNI
    /// The UDP port (the driver's data-path port).
    public let port: UInt16
    /// This host's VTEP address on the underlay.
    public let localVTEP: IPAddress
    /// The container MTU, which the tunnel device must carry.
    public let mtu: UInt32
    /// The name the tunnel device must have inside the sandbox.
    public let deviceName: String
    /// The sandbox bridge the tunnel device becomes a port of; nil when endpoints are MACVLANs on
    /// the tunnel device itself (then it must be an Ethernet device that can be a MACVLAN's lower
    /// device: a VXLAN or TAP device is).
    public let bridge: String?
    /// The network's name, for messages (empty when not given).
    public var network: String = ""
}

/// The seam between the driver and whatever moves frames between hosts: the kernel's VXLAN device
/// (``KernelDatapath``) or a userspace one (TAP + VXLANCodec + ESP). The driver builds sandboxes,
/// bridges and endpoints itself and asks the datapath only for these operations, so a new datapath
/// plugs in without changing the driver. Calls come one at a time from the driver's lock.
public protocol Datapath: Sendable {
    /// A short name for messages (`kernel`, `userspace`).
    var name: String { get }
    /// Removes what an earlier run of a driver with the same node ID left in the host namespace;
    /// returns what it removed. Called once when the driver starts.
    func removeStale() throws(OverlayDriverError) -> [String]
    /// Creates the tunnel device `tunnel.deviceName` in the sandbox, makes it a port of
    /// `tunnel.bridge` when one is given, and sets it up. On failure, leaves nothing behind.
    func createTunnel(_ tunnel: TunnelSpec, in sandbox: NetlinkSocket) throws(OverlayDriverError)
    /// Removes the tunnel endpoint (idempotent).
    func removeTunnel(_ tunnel: TunnelSpec, in sandbox: NetlinkSocket) throws(OverlayDriverError)
    /// Starts sending broadcast/unknown frames for the tunnel to `vtep` (called when the first peer
    /// on that VTEP appears).
    func addRemoteVTEP(_ vtep: IPAddress, on tunnel: TunnelSpec, in sandbox: NetlinkSocket) throws(OverlayDriverError)
    /// Stops flooding to `vtep` (called when its last peer goes; idempotent).
    func removeRemoteVTEP(_ vtep: IPAddress, on tunnel: TunnelSpec, in sandbox: NetlinkSocket) throws(OverlayDriverError)
    /// Programs a peer: its address resolves to its MAC and its MAC is sent to its VTEP (replacing
    /// any earlier entry for the same address or MAC).
    func programPeer(_ peer: PeerEntry, on tunnel: TunnelSpec, in sandbox: NetlinkSocket) throws(OverlayDriverError)
    /// Removes a peer's entries (idempotent).
    func unprogramPeer(_ peer: PeerEntry, on tunnel: TunnelSpec, in sandbox: NetlinkSocket) throws(OverlayDriverError)
}

/// The kernel datapath: a VXLAN device per subnet (learning off, proxy ARP on, no miss
/// notifications), created in the host namespace so its UDP socket is bound on the underlay, then
/// moved into the sandbox; peers are permanent neighbour entries and FDB entries on it.
///
/// Host-side names: the device is created as `<prefix>x<vni in hex>` (at most 13 bytes) and
/// renamed once inside the sandbox, so a crashed run's leftovers are found by that prefix.
public struct KernelDatapath: Datapath {
    /// The host namespace's socket, where the VXLAN devices are created.
    public let host: NetlinkSocket
    /// The prefix of every link this datapath names in the host namespace.
    public let linkPrefix: String
    /// `kernel`.
    public var name: String { "kernel" }

    /// Makes a kernel datapath working in `host`; `nodeTag` is the driver's short node tag.
    public init(host: NetlinkSocket, nodeTag: String) {
        self.host = host
        self.linkPrefix = nodeTag + "x"
    }

    func hostName(_ tunnel: TunnelSpec) -> String { linkPrefix + String(tunnel.vni.value, radix: 16) }

    /// Deletes VXLAN links in the host namespace whose names carry this node's prefix.
    public func removeStale() throws(OverlayDriverError) -> [String] {
        let links = try kernel("list links in the host namespace") { () throws(NetlinkError) in try host.links() }
        var removed: [String] = []
        for link in links where link.kind == "vxlan" && link.name.hasPrefix(linkPrefix) {
            try kernel("remove stale link \(link.name)") { () throws(NetlinkError) in try host.deleteLink(named: link.name) }
            removed.append("link \(link.name)")
        }
        return removed
    }

    /// Creates the VXLAN device in the host namespace, moves it into the sandbox, renames it,
    /// enslaves it to the bridge (if any) and sets it up; deletes it again if any step fails.
    public func createTunnel(_ tunnel: TunnelSpec, in sandbox: NetlinkSocket) throws(OverlayDriverError) {
        let temp = hostName(tunnel)
        let options = VXLANOptions(
            vni: tunnel.vni, port: tunnel.port, local: tunnel.localVTEP, learning: false, proxyARP: true,
            l2miss: false, l3miss: false, mtu: tunnel.mtu)
        try kernel("create VXLAN device \(temp) (VNI \(tunnel.vni), port \(tunnel.port)) in the host namespace") {
            () throws(NetlinkError) in try host.createVXLAN(named: temp, options: options)
        }
        do {
            try kernel("move \(temp) into sandbox \(sandbox.namespace.name)") { () throws(NetlinkError) in
                try host.moveLink(temp, to: sandbox.namespace)
            }
        } catch {
            try? host.deleteLink(named: temp)
            throw error
        }
        do {
            try kernel("set up \(tunnel.deviceName) in sandbox \(sandbox.namespace.name)") { () throws(NetlinkError) in
                try sandbox.renameLink(temp, to: tunnel.deviceName)
                if let bridge = tunnel.bridge { try sandbox.setMaster(bridge, of: tunnel.deviceName) }
                try sandbox.setUp(tunnel.deviceName)
            }
        } catch {
            try? sandbox.deleteLink(named: temp)
            try? sandbox.deleteLink(named: tunnel.deviceName)
            throw error
        }
    }

    /// Deletes the VXLAN device from the sandbox (its entries go with it).
    public func removeTunnel(_ tunnel: TunnelSpec, in sandbox: NetlinkSocket) throws(OverlayDriverError) {
        try ignoringNotFound("remove \(tunnel.deviceName) from sandbox \(sandbox.namespace.name)") {
            () throws(NetlinkError) in try sandbox.deleteLink(named: tunnel.deviceName)
        }
    }

    /// Appends the flood entry `00:00:00:00:00:00 dst VTEP` on the VXLAN device.
    public func addRemoteVTEP(_ vtep: IPAddress, on tunnel: TunnelSpec, in sandbox: NetlinkSocket) throws(OverlayDriverError) {
        try kernel("add flood entry to \(vtep) on \(tunnel.deviceName)") { () throws(NetlinkError) in
            do throws(NetlinkError) {
                try sandbox.appendFDB(FDBEntry(mac: .zero, destination: vtep, device: tunnel.deviceName))
            } catch {
                if error.code != .exists { throw error }
            }
        }
    }

    /// Deletes the flood entry for `vtep`.
    public func removeRemoteVTEP(_ vtep: IPAddress, on tunnel: TunnelSpec, in sandbox: NetlinkSocket) throws(OverlayDriverError) {
        try ignoringNotFound("remove flood entry to \(vtep) on \(tunnel.deviceName)") { () throws(NetlinkError) in
            try sandbox.deleteFDB(FDBEntry(mac: .zero, destination: vtep, device: tunnel.deviceName))
        }
    }

    /// Replaces the permanent neighbour entry (IP -> MAC) and the FDB entry (MAC -> VTEP).
    public func programPeer(_ peer: PeerEntry, on tunnel: TunnelSpec, in sandbox: NetlinkSocket) throws(OverlayDriverError) {
        try kernel("program peer \(peer) on \(tunnel.deviceName)") { () throws(NetlinkError) in
            try sandbox.replaceNeighbor(Neighbor(address: peer.address, mac: peer.mac, device: tunnel.deviceName))
            try sandbox.replaceFDB(FDBEntry(mac: peer.mac, destination: peer.vtep, device: tunnel.deviceName))
        }
    }

    /// Deletes the peer's neighbour and FDB entries.
    public func unprogramPeer(_ peer: PeerEntry, on tunnel: TunnelSpec, in sandbox: NetlinkSocket) throws(OverlayDriverError) {
        try ignoringNotFound("remove peer \(peer) from \(tunnel.deviceName)") { () throws(NetlinkError) in
            try sandbox.deleteNeighbor(peer.address, device: tunnel.deviceName)
        }
        try ignoringNotFound("remove peer \(peer) from \(tunnel.deviceName)") { () throws(NetlinkError) in
            try sandbox.deleteFDB(FDBEntry(mac: peer.mac, destination: peer.vtep, device: tunnel.deviceName))
        }
    }
}

/// Runs a kernel deletion, treating "it is already gone" as success.
func ignoringNotFound(_ what: @autoclosure () -> String, _ body: () throws(NetlinkError) -> Void) throws(OverlayDriverError) {
    do { try body() } catch {
        if error.code == .notFound { return }
        throw OverlayDriverError.kernel(error, while: what())
    }
}
