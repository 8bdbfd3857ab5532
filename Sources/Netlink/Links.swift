import CNetlink
import COverlayShims
import Glibc
import OverlayModel

/// A network device as the kernel reported it when it was read.
public struct Link: Hashable, Sendable {
    /// The interface index (stable while the link exists in its namespace).
    public let index: Int32
    /// The interface name.
    public let name: String
    /// The rtnetlink kind (`bridge`, `vxlan`, `veth`, `tun`, `dummy`), nil for devices without one
    /// (loopback, physical NICs).
    public let kind: String?
    /// The MTU in bytes.
    public let mtu: UInt32
    /// The hardware address, when the device has a six-byte one.
    public let mac: MACAddress?
    /// Whether the device is administratively up (IFF_UP).
    public let isUp: Bool
    /// The index of the bridge (or other master) this device is enslaved to, if any.
    public let masterIndex: Int32?
    /// The VXLAN network identifier, for `vxlan` links.
    public let vni: VNI?

    init(_ link: OpaquePointer) {
        index = rtnl_link_get_ifindex(link)
        name = rtnl_link_get_name(link).map { String(cString: $0) } ?? ""
        let type = rtnl_link_get_type(link).map { String(cString: $0) }
        kind = type
        mtu = rtnl_link_get_mtu(link)
        mac = macAddress(rtnl_link_get_addr(link))
        isUp = rtnl_link_get_flags(link) & ovl_iff_up != 0
        let master = rtnl_link_get_master(link)
        masterIndex = master > 0 ? master : nil
        var id: UInt32 = 0
        if type == "vxlan", rtnl_link_vxlan_get_id(link, &id) == 0 { vni = try? VNI(id) } else { vni = nil }
    }
}

/// How to make a VXLAN device. Defaults follow Docker's overlay driver (port 4789, learning,
/// proxy ARP and L2/L3 miss notifications on).
public struct VXLANOptions: Hashable, Sendable {
    /// The VXLAN network identifier.
    public var vni: VNI
    /// The UDP destination port.
    public var port: UInt16
    /// The local (source) VTEP address; nil lets the kernel choose.
    public var local: IPAddress?
    /// The underlay device name to send through; nil for any.
    public var underlay: String?
    /// Whether the device learns remote MACs from received packets.
    public var learning: Bool
    /// Whether the device answers ARP/ND from its neighbour table (proxy ARP).
    public var proxyARP: Bool
    /// Whether the kernel sends L2 miss notifications (unknown destination MAC).
    public var l2miss: Bool
    /// Whether the kernel sends L3 miss notifications (unknown IP in proxy ARP).
    public var l3miss: Bool
    /// The outer TTL; nil for the kernel default (inherit).
    public var ttl: UInt8?
    /// The device MTU; nil for the kernel default.
    public var mtu: UInt32?

    /// Makes VXLAN options with Docker's defaults.
    public init(
        vni: VNI, port: UInt16 = 4789, local: IPAddress? = nil, underlay: String? = nil, learning: Bool = true,
        proxyARP: Bool = true, l2miss: Bool = true, l3miss: Bool = true, ttl: UInt8? = nil, mtu: UInt32? = nil
    ) {
        self.vni = vni
        self.port = port
        self.local = local
        self.underlay = underlay
        self.learning = learning
        self.proxyARP = proxyARP
        self.l2miss = l2miss
        self.l3miss = l3miss
        self.ttl = ttl
        self.mtu = mtu
    }
}

/// What the reader of a TAP device with a virtio-net header can take from the kernel
/// (TUNSETOFFLOAD): the device then advertises checksum offload and TSO to the stack above it.
public struct TapOffloads: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Frames may carry a partial checksum (`VIRTIO_NET_HDR_F_NEEDS_CSUM`): the reader fills it in.
    public static let checksum = TapOffloads(rawValue: ovl_tun_f_csum)
    /// IPv4 TCP super-frames (up to 64 KiB, `VIRTIO_NET_HDR_GSO_TCPV4`): the reader segments them.
    public static let tso4 = TapOffloads(rawValue: ovl_tun_f_tso4)
    /// IPv6 TCP super-frames (`VIRTIO_NET_HDR_GSO_TCPV6`).
    public static let tso6 = TapOffloads(rawValue: ovl_tun_f_tso6)
    /// TCP super-frames with ECN (CWR) set (`VIRTIO_NET_HDR_GSO_ECN`).
    public static let tsoECN = TapOffloads(rawValue: ovl_tun_f_tso_ecn)
}

/// A TAP device made by ``NetlinkSocket/createTap(named:persistent:virtioNetHeader:offloads:)``.
///
/// A non-persistent device exists while this object holds its file descriptor: frames are read and
/// written there, and `deinit` (or ``close()``) closes it, which deletes the device. A persistent
/// device has no descriptor here and stays until deleted with ``NetlinkSocket/deleteLink(named:)``.
///
/// `@unchecked Sendable`: the descriptor is guarded by `lock`.
public final class TapDevice: @unchecked Sendable {
    /// The device name the kernel gave.
    public let name: String
    /// Bytes of `struct virtio_net_hdr` before every frame read or written: 10, or 0 without one.
    public let virtioNetHeaderLength: Int
    /// The offloads the device was given (empty without a virtio-net header).
    public let offloads: TapOffloads
    private var fd: Int32?
    private let lock = Lock()

    init(name: String, fileDescriptor: Int32?, virtioNetHeaderLength: Int = 0, offloads: TapOffloads = []) {
        self.name = name
        self.fd = fileDescriptor
        self.virtioNetHeaderLength = virtioNetHeaderLength
        self.offloads = offloads
    }

    deinit { if let fd { Glibc.close(fd) } }

    /// The descriptor for reading and writing Ethernet frames (no packet-info header); nil for a
    /// persistent device or after ``close()``.
    public var fileDescriptor: Int32? { lock.withLock { fd } }

    /// Closes the descriptor now, which deletes a non-persistent device.
    public func close() {
        lock.withLock {
            if let fd { Glibc.close(fd) }
            fd = nil
        }
    }
}

extension NetlinkSocket {
    // MARK: Creating links

    /// Creates a Linux bridge.
    public func createBridge(named name: String, mtu: UInt32? = nil) throws(NetlinkError) {
        try addLink(name, kind: "bridge") { link, op throws(NetlinkError) in
            if let mtu { rtnl_link_set_mtu(link, mtu) }
        }
    }

    /// Creates a dummy device.
    public func createDummy(named name: String, mtu: UInt32? = nil) throws(NetlinkError) {
        try addLink(name, kind: "dummy") { link, op throws(NetlinkError) in
            if let mtu { rtnl_link_set_mtu(link, mtu) }
        }
    }

    /// Creates a VXLAN device. Create it in the namespace whose underlay it should use: the device
    /// keeps its UDP socket there even after it is moved into another namespace.
    public func createVXLAN(named name: String, options: VXLANOptions) throws(NetlinkError) {
        try addLink(name, kind: "vxlan", alloc: { rtnl_link_vxlan_alloc() }) { link, op, sock throws(NetlinkError) in
            try nlCheck(rtnl_link_vxlan_set_id(link, options.vni.value), op)
            try nlCheck(rtnl_link_vxlan_set_port(link, UInt32(options.port)), op)
            if let local = options.local {
                let address = try makeAddress(local, op)
                defer { nl_addr_put(address) }
                try nlCheck(rtnl_link_vxlan_set_local(link, address), op)
            }
            if let underlay = options.underlay {
                let index = try self.index(of: underlay, sock, for: op + " (underlay \(underlay))")
                try nlCheck(rtnl_link_vxlan_set_link(link, UInt32(index)), op)
            }
            try nlCheck(rtnl_link_vxlan_set_learning(link, options.learning ? 1 : 0), op)
            try nlCheck(rtnl_link_vxlan_set_proxy(link, options.proxyARP ? 1 : 0), op)
            try nlCheck(rtnl_link_vxlan_set_l2miss(link, options.l2miss ? 1 : 0), op)
            try nlCheck(rtnl_link_vxlan_set_l3miss(link, options.l3miss ? 1 : 0), op)
            if let ttl = options.ttl { try nlCheck(rtnl_link_vxlan_set_ttl(link, ttl), op) }
            if let mtu = options.mtu { rtnl_link_set_mtu(link, mtu) }
        }
    }

    /// Creates a veth pair `name` <-> `peerName`. The peer is created directly in `peerNamespace`
    /// when one is given (a container's end), otherwise next to `name`.
    public func createVeth(
        named name: String, peerName: String, peerNamespace: NetworkNamespace? = nil, mtu: UInt32? = nil
    ) throws(NetlinkError) {
        let peerWhere = peerNamespace.map { " in namespace \($0.name)" } ?? ""
        try validateLinkName(peerName, "add link \(name) (veth, peer \(peerName))")
        try withExtendedLifetime(peerNamespace) { () throws(NetlinkError) in
            try addLink(name, kind: "veth", detail: "peer \(peerName)\(peerWhere)", alloc: { rtnl_link_veth_alloc() }) {
                link, op, _ throws(NetlinkError) in
                guard let peer = rtnl_link_veth_get_peer(link) else {
                    throw NetlinkError(.system, operation: op, reason: "libnl made a veth link without a peer")
                }
                defer { rtnl_link_put(peer) }
                rtnl_link_set_name(peer, peerName)
                if let peerNamespace { rtnl_link_set_ns_fd(peer, peerNamespace.fileDescriptor) }
                if let mtu {
                    rtnl_link_set_mtu(link, mtu)
                    rtnl_link_set_mtu(peer, mtu)
                }
            }
        }
    }

    /// Creates a TAP device (TUNSETIFF with IFF_TAP|IFF_NO_PI) in this socket's namespace.
    /// Persistent devices outlive the returned object; others are deleted when it closes its fd.
    ///
    /// With `virtioNetHeader` (IFF_VNET_HDR, header size 10) every frame read or written starts
    /// with a `struct virtio_net_hdr`, and `offloads` (TUNSETOFFLOAD) says what the reader takes:
    /// partial checksums and TCP super-frames, which the device then advertises upwards. Offloads
    /// need the header and a non-persistent device (they are set on its descriptor).
    public func createTap(
        named name: String, persistent: Bool = false, virtioNetHeader: Bool = false, offloads: TapOffloads = []
    ) throws(NetlinkError) -> TapDevice {
        let op = "add link \(name) (tap\(persistent ? ", persistent" : "")\(virtioNetHeader ? ", vnet header" : ""))\(inNamespace)"
        try validateLinkName(name, op)
        if !offloads.isEmpty && (!virtioNetHeader || persistent) {
            throw NetlinkError(.invalidArgument, operation: op, reason: "TAP offloads need a virtio-net header and a non-persistent device")
        }
        let (rc, kernelName) = try namespace.runTyped(op) { () -> (Int32, String) in
            var buffer = [CChar](repeating: 0, count: Int(ovl_ifnamsiz))
            let rc = ovl_tap_create_vnet(name, persistent ? 1 : 0, virtioNetHeader ? 1 : 0, &buffer, buffer.count)
            return (rc, String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        if rc == -EBUSY {
            throw NetlinkError(.exists, operation: op, reason: "a device named \(name) exists and is not a free TAP device")
        }
        try shimCheck(rc, op)
        let tap = TapDevice(name: kernelName, fileDescriptor: persistent ? nil : rc,
                            virtioNetHeaderLength: virtioNetHeader ? 10 : 0, offloads: offloads)
        if !offloads.isEmpty {
            let orc = ovl_tap_set_offload(rc, offloads.rawValue)
            if orc < 0 {
                tap.close()
                try shimCheck(orc, op + " (TUNSETOFFLOAD 0x\(String(offloads.rawValue, radix: 16)))")
            }
        }
        return tap
    }

    // MARK: Reading links

    /// The link named `name`; throws `.notFound` when there is none.
    public func link(named name: String) throws(NetlinkError) -> Link {
        let op = "get link \(name)\(inNamespace)"
        try validateLinkName(name, op)
        return try getLink(index: 0, name: name, op)
    }

    /// The link with interface index `index`; throws `.notFound` when there is none.
    public func link(index: Int32) throws(NetlinkError) -> Link {
        try getLink(index: index, name: nil, "get link #\(index)\(inNamespace)")
    }

    /// Every link in the namespace, by index.
    public func links() throws(NetlinkError) -> [Link] {
        let op = "list links\(inNamespace)"
        return try withSocket { sock throws(NetlinkError) in
            var result: [Link] = []
            try forEachObject(sock, op, alloc: { rtnl_link_alloc_cache($0, AF_UNSPEC, $1) }) { result.append(Link($0)) }
            return result.sorted { $0.index < $1.index }
        }
    }

    private func getLink(index: Int32, name: String?, _ op: String) throws(NetlinkError) -> Link {
        try withSocket { sock throws(NetlinkError) in
            var result: OpaquePointer?
            let rc = rtnl_link_get_kernel(sock, index, name, &result)
            if rc == -NLE_OBJ_NOTFOUND || rc == -NLE_NODEV {
                throw NetlinkError(.notFound, operation: op, reason: "no such link")
            }
            try nlCheck(rc, op)
            guard let result else { throw NetlinkError(.notFound, operation: op, reason: "no such link") }
            defer { rtnl_link_put(result) }
            return Link(result)
        }
    }

    // MARK: Changing links

    /// Brings link `name` up.
    public func setUp(_ name: String) throws(NetlinkError) {
        try changeLink(name, "set link \(name) up") { changes, _, _ throws(NetlinkError) in
            rtnl_link_set_flags(changes, ovl_iff_up)
        }
    }

    /// Takes link `name` down.
    public func setDown(_ name: String) throws(NetlinkError) {
        try changeLink(name, "set link \(name) down") { changes, _, _ throws(NetlinkError) in
            rtnl_link_unset_flags(changes, ovl_iff_up)
        }
    }

    /// Sets the MTU of link `name`.
    public func setMTU(_ mtu: UInt32, of name: String) throws(NetlinkError) {
        try changeLink(name, "set link \(name) mtu \(mtu)") { changes, _, _ throws(NetlinkError) in
            rtnl_link_set_mtu(changes, mtu)
        }
    }

    /// Enslaves link `name` to bridge `master`, or releases it from its master when `master` is nil
    /// (`ip link set NAME nomaster`).
    public func setMaster(_ master: String?, of name: String) throws(NetlinkError) {
        let what = master.map { "set link \(name) master \($0)" } ?? "set link \(name) nomaster"
        try changeLink(name, what) { changes, sock, op throws(NetlinkError) in
            let index = try master.map { m throws(NetlinkError) in try self.index(of: m, sock, for: op) } ?? 0
            rtnl_link_set_master(changes, index)
        }
    }

    /// Renames link `name` to `newName` (the kernel refuses this while the link is up).
    public func renameLink(_ name: String, to newName: String) throws(NetlinkError) {
        let what = "rename link \(name) to \(newName)"
        try validateLinkName(newName, what + inNamespace)
        try changeLink(name, what) { changes, _, _ throws(NetlinkError) in
            rtnl_link_set_name(changes, newName)
        }
    }

    /// Sets the hardware address of link `name`.
    public func setMAC(_ mac: MACAddress, of name: String) throws(NetlinkError) {
        try changeLink(name, "set link \(name) address \(mac)") { changes, _, op throws(NetlinkError) in
            let address = try makeAddress(mac, op)
            defer { nl_addr_put(address) }
            rtnl_link_set_addr(changes, address)
        }
    }

    /// Moves link `name` into `target` (`ip link set NAME netns ...`). Its index and addresses there
    /// may differ; use a socket in `target` to configure it afterwards.
    public func moveLink(_ name: String, to target: NetworkNamespace) throws(NetlinkError) {
        try withExtendedLifetime(target) { () throws(NetlinkError) in
            try changeLink(name, "move link \(name) to namespace \(target.name)") { changes, _, _ throws(NetlinkError) in
                rtnl_link_set_ns_fd(changes, target.fileDescriptor)
            }
        }
    }

    /// Deletes link `name` (for veth, both ends go).
    public func deleteLink(named name: String) throws(NetlinkError) {
        let op = "delete link \(name)\(inNamespace)"
        try validateLinkName(name, op)
        try withSocket { sock throws(NetlinkError) in
            try withObject(rtnl_link_alloc, free: { rtnl_link_put($0) }, op) { link throws(NetlinkError) in
                rtnl_link_set_name(link, name)
                let rc = rtnl_link_delete(sock, link)
                if rc == -NLE_OBJ_NOTFOUND || rc == -NLE_NODEV {
                    throw NetlinkError(.notFound, operation: op, reason: "no link named \(name)")
                }
                try nlCheck(rc, op)
            }
        }
    }

    // MARK: Plumbing

    private func addLink(
        _ name: String, kind: String, detail: String? = nil,
        configure: (OpaquePointer, String) throws(NetlinkError) -> Void
    ) throws(NetlinkError) {
        try addLink(name, kind: kind, detail: detail, alloc: {
            guard let link = rtnl_link_alloc() else { return nil }
            if rtnl_link_set_type(link, kind) < 0 {
                rtnl_link_put(link)
                return nil
            }
            return link
        }) { link, op, _ throws(NetlinkError) in try configure(link, op) }
    }

    private func addLink(
        _ name: String, kind: String, detail: String? = nil, alloc: () -> OpaquePointer?,
        configure: (OpaquePointer, String, OpaquePointer) throws(NetlinkError) -> Void
    ) throws(NetlinkError) {
        let op = "add link \(name) (\(kind)\(detail.map { ", " + $0 } ?? ""))\(inNamespace)"
        try validateLinkName(name, op)
        try withSocket { sock throws(NetlinkError) in
            try withObject(alloc, free: { rtnl_link_put($0) }, op) { link throws(NetlinkError) in
                rtnl_link_set_name(link, name)
                try configure(link, op, sock)
                let rc = rtnl_link_add(sock, link, NLM_F_CREATE | NLM_F_EXCL)
                if rc == -NLE_OPNOTSUPP {
                    throw NetlinkError(
                        .unsupported, operation: op,
                        reason: "this kernel has no '\(kind)' link type (built without it, or its module is not loaded)")
                }
                try nlCheck(rc, op)
            }
        }
    }

    private func changeLink(
        _ name: String, _ what: String, _ configure: (OpaquePointer, OpaquePointer, String) throws(NetlinkError) -> Void
    ) throws(NetlinkError) {
        let op = what + inNamespace
        try withSocket { sock throws(NetlinkError) in
            let index = try self.index(of: name, sock, for: op)
            try withObject(rtnl_link_alloc, free: { rtnl_link_put($0) }, op) { orig throws(NetlinkError) in
                rtnl_link_set_ifindex(orig, index)
                try withObject(rtnl_link_alloc, free: { rtnl_link_put($0) }, op) { changes throws(NetlinkError) in
                    try configure(changes, sock, op)
                    try nlCheck(rtnl_link_change(sock, orig, changes, 0), op)
                }
            }
        }
    }
}
