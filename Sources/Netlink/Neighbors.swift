import CNetlink
import COverlayShims
import Glibc
import OverlayModel

/// A static IP-to-MAC entry in a device's neighbour (ARP/NDP) table.
public struct Neighbor: Hashable, Sendable {
    /// The IP address being resolved.
    public var address: IPAddress
    /// The MAC address it resolves to.
    public var mac: MACAddress
    /// The device the entry belongs to.
    public var device: String
    /// Whether the entry is permanent (never expires); otherwise it starts as reachable.
    public var permanent: Bool

    /// Makes a neighbour entry.
    public init(address: IPAddress, mac: MACAddress, device: String, permanent: Bool = true) {
        self.address = address
        self.mac = mac
        self.device = device
        self.permanent = permanent
    }
}

/// A forwarding database entry (AF_BRIDGE neighbour): frames for `mac` leave through `device`, and
/// for a VXLAN device are sent to the VTEP at `destination`.
public struct FDBEntry: Hashable, Sendable {
    /// The MAC address the entry forwards (00:00:00:00:00:00 is the flood list of a VXLAN device).
    public var mac: MACAddress
    /// The remote VTEP address (VXLAN devices); nil for plain bridge ports.
    public var destination: IPAddress?
    /// The device (a VXLAN device or a bridge port).
    public var device: String
    /// Whether the entry is permanent (never ages out).
    public var permanent: Bool
    /// Whether the entry lives in the device's own table (NTF_SELF, what VXLAN devices need) rather
    /// than in its master bridge's.
    public var isSelf: Bool

    /// Makes an FDB entry; by default permanent and on the device itself.
    public init(mac: MACAddress, destination: IPAddress?, device: String, permanent: Bool = true, isSelf: Bool = true) {
        self.mac = mac
        self.destination = destination
        self.device = device
        self.permanent = permanent
        self.isSelf = isSelf
    }
}

extension NetlinkSocket {
    // MARK: Neighbours

    /// Adds a neighbour entry; `.exists` when the device has one for that address already.
    public func addNeighbor(_ entry: Neighbor) throws(NetlinkError) {
        try changeNeighbor(entry, "add neighbour \(entry.address) lladdr \(entry.mac) dev \(entry.device)") { sock, n in
            rtnl_neigh_add(sock, n, NLM_F_CREATE | NLM_F_EXCL)
        }
    }

    /// Adds a neighbour entry or replaces the one for that address; never fails because it exists.
    public func replaceNeighbor(_ entry: Neighbor) throws(NetlinkError) {
        try changeNeighbor(entry, "replace neighbour \(entry.address) lladdr \(entry.mac) dev \(entry.device)") { sock, n in
            rtnl_neigh_add(sock, n, NLM_F_CREATE | NLM_F_REPLACE)
        }
    }

    /// Deletes the neighbour entry for `address` on `device`.
    public func deleteNeighbor(_ address: IPAddress, device: String) throws(NetlinkError) {
        let op = "delete neighbour \(address) dev \(device)\(inNamespace)"
        try withSocket { sock throws(NetlinkError) in
            let index = try self.index(of: device, sock, for: op)
            try withObject(rtnl_neigh_alloc, free: { rtnl_neigh_put($0) }, op) { n throws(NetlinkError) in
                rtnl_neigh_set_ifindex(n, index)
                let dst = try makeAddress(address, op)
                defer { nl_addr_put(dst) }
                try nlCheck(rtnl_neigh_set_dst(n, dst), op)
                try nlCheck(rtnl_neigh_delete(sock, n, 0), op)
            }
        }
    }

    /// The IPv4/IPv6 neighbour entries that have a MAC address, on `device` or on every device;
    /// like `ip neigh show`, without the NOARP entries the kernel makes for multicast addresses.
    public func neighbors(device: String? = nil) throws(NetlinkError) -> [Neighbor] {
        let op = "list neighbours\(device.map { " on " + $0 } ?? "")\(inNamespace)"
        return try withSocket { sock throws(NetlinkError) in
            let names = try linkNames(sock, op)
            let index = try device.map { d throws(NetlinkError) in try self.index(of: d, sock, for: op) }
            var result: [Neighbor] = []
            try forEachObject(sock, op, alloc: { rtnl_neigh_alloc_cache($0, $1) }) { n in
                let family = rtnl_neigh_get_family(n)
                guard family == AF_INET || family == AF_INET6 else { return }
                let ifindex = Int32(rtnl_neigh_get_ifindex(n))
                if let index, ifindex != index { return }
                guard let ip = ipAddress(rtnl_neigh_get_dst(n)), let mac = macAddress(rtnl_neigh_get_lladdr(n)),
                      let name = names[ifindex]
                else { return }
                let state = rtnl_neigh_get_state(n)
                // Like `ip neigh show`: no NOARP entries (multicast, loopback), which the kernel makes itself.
                if state & ovl_nud_noarp != 0 { return }
                let permanent = state & ovl_nud_permanent != 0
                result.append(Neighbor(address: ip, mac: mac, device: name, permanent: permanent))
            }
            return result.sorted { ($0.device, $0.address) < ($1.device, $1.address) }
        }
    }

    private func changeNeighbor(
        _ entry: Neighbor, _ what: String, _ send: (OpaquePointer, OpaquePointer) -> Int32
    ) throws(NetlinkError) {
        let op = what + inNamespace
        try withSocket { sock throws(NetlinkError) in
            let index = try self.index(of: entry.device, sock, for: op)
            try withObject(rtnl_neigh_alloc, free: { rtnl_neigh_put($0) }, op) { n throws(NetlinkError) in
                rtnl_neigh_set_ifindex(n, index)
                let dst = try makeAddress(entry.address, op)
                defer { nl_addr_put(dst) }
                try nlCheck(rtnl_neigh_set_dst(n, dst), op)
                let ll = try makeAddress(entry.mac, op)
                defer { nl_addr_put(ll) }
                rtnl_neigh_set_lladdr(n, ll)
                rtnl_neigh_set_state(n, entry.permanent ? ovl_nud_permanent : ovl_nud_reachable)
                try nlCheck(send(sock, n), op)
            }
        }
    }

    // MARK: FDB

    /// Adds an FDB entry, keeping other destinations for the same MAC (`bridge fdb append`): how a
    /// VXLAN device's flood list (MAC 00:00:00:00:00:00) gets one entry per remote VTEP.
    public func appendFDB(_ entry: FDBEntry) throws(NetlinkError) {
        try changeFDB(entry, "append") { sock, n in rtnl_neigh_add(sock, n, NLM_F_CREATE | NLM_F_APPEND) }
    }

    /// Adds an FDB entry or replaces the one for that MAC (`bridge fdb replace`).
    public func replaceFDB(_ entry: FDBEntry) throws(NetlinkError) {
        try changeFDB(entry, "replace") { sock, n in rtnl_neigh_add(sock, n, NLM_F_CREATE | NLM_F_REPLACE) }
    }

    /// Deletes an FDB entry (`bridge fdb del`); with a destination, only that remote.
    public func deleteFDB(_ entry: FDBEntry) throws(NetlinkError) {
        try changeFDB(entry, "delete") { sock, n in rtnl_neigh_delete(sock, n, 0) }
    }

    /// The FDB entries on `device` (a VXLAN device or a bridge port).
    public func fdbEntries(device: String) throws(NetlinkError) -> [FDBEntry] {
        let op = "list fdb entries on \(device)\(inNamespace)"
        return try withSocket { sock throws(NetlinkError) in
            let index = try self.index(of: device, sock, for: op)
            var result: [FDBEntry] = []
            // A plain neighbour dump (AF_UNSPEC) has no FDB entries: dump family AF_BRIDGE.
            try forEachObject(sock, op, alloc: { sock, result in
                var cache: OpaquePointer?
                var rc = nl_cache_alloc_name("route/neigh", &cache)
                guard rc >= 0, let cache else { return rc }
                nl_cache_set_arg1(cache, ovl_af_bridge)
                rc = nl_cache_refill(sock, cache)
                if rc < 0 {
                    nl_cache_free(cache)
                    return rc
                }
                result.pointee = cache
                return 0
            }) { n in
                guard rtnl_neigh_get_family(n) == ovl_af_bridge, Int32(rtnl_neigh_get_ifindex(n)) == index,
                      let mac = macAddress(rtnl_neigh_get_lladdr(n))
                else { return }
                result.append(FDBEntry(
                    mac: mac, destination: ipAddress(rtnl_neigh_get_dst(n)), device: device,
                    permanent: rtnl_neigh_get_state(n) & ovl_nud_permanent != 0,
                    isSelf: rtnl_neigh_get_flags(n) & ovl_ntf_self != 0))
            }
            return result
        }
    }

    private func changeFDB(
        _ entry: FDBEntry, _ verb: String, _ send: (OpaquePointer, OpaquePointer) -> Int32
    ) throws(NetlinkError) {
        let op = "\(verb) fdb \(entry.mac)\(entry.destination.map { " dst \($0)" } ?? "") dev \(entry.device)\(inNamespace)"
        try withSocket { sock throws(NetlinkError) in
            let index = try self.index(of: entry.device, sock, for: op)
            try withObject(rtnl_neigh_alloc, free: { rtnl_neigh_put($0) }, op) { n throws(NetlinkError) in
                rtnl_neigh_set_ifindex(n, index)
                let ll = try makeAddress(entry.mac, op)
                defer { nl_addr_put(ll) }
                rtnl_neigh_set_lladdr(n, ll)
                // libnl refuses a destination whose family differs from the object's, so the IP
                // destination goes in first and the family becomes AF_BRIDGE after it.
                if let destination = entry.destination {
                    let dst = try makeAddress(destination, op)
                    defer { nl_addr_put(dst) }
                    try nlCheck(rtnl_neigh_set_dst(n, dst), op)
                }
                rtnl_neigh_set_family(n, ovl_af_bridge)
                rtnl_neigh_set_state(n, entry.permanent ? ovl_nud_permanent : ovl_nud_reachable)
                rtnl_neigh_set_flags(n, entry.isSelf ? ovl_ntf_self : ovl_ntf_master)
                try nlCheck(send(sock, n), op)
            }
        }
    }
}
