import CNetlink
import COverlayShims
import Glibc
import OverlayModel

/// A unicast route: where packets for `destination` go.
public struct Route: Hashable, Sendable, CustomStringConvertible {
    /// The destination subnet; nil for the default route.
    public var destination: CIDR?
    /// The next-hop router; nil for a directly connected destination.
    public var gateway: IPAddress?
    /// The output device name; nil to let the kernel pick it from the gateway.
    public var device: String?
    /// The routing table (254 is `main`).
    public var table: UInt32
    /// Whether the gateway is used even when no route says it is on the device's link (`onlink`).
    public var onLink: Bool
    /// Which family the route is for, when `destination` or `gateway` says (nil for neither).
    public var family: IPFamily? { destination?.family ?? gateway?.family }

    /// The `main` routing table.
    public static let mainTable: UInt32 = 254

    /// Makes a route. Give a gateway, a device or both.
    public init(
        destination: CIDR?, gateway: IPAddress? = nil, device: String? = nil, table: UInt32 = Route.mainTable,
        onLink: Bool = false
    ) {
        self.destination = destination
        self.gateway = gateway
        self.device = device
        self.table = table
        self.onLink = onLink
    }

    /// `ip route` style: `default via 10.0.0.1 dev eth0 table 254`.
    public var description: String {
        var s = destination.map(\.description) ?? "default"
        if let gateway { s += " via \(gateway)" }
        if let device { s += " dev \(device)" }
        if table != Route.mainTable { s += " table \(table)" }
        if onLink { s += " onlink" }
        return s
    }
}

extension NetlinkSocket {
    /// Adds `route` (`ip route add`); `.exists` when a route for the destination is there already.
    public func addRoute(_ route: Route) throws(NetlinkError) {
        try changeRoute(route, "add route \(route)", needsNextHop: true) { sock, r in rtnl_route_add(sock, r, NLM_F_EXCL) }
    }

    /// Adds `route` or replaces the route for the same destination (`ip route replace`).
    public func replaceRoute(_ route: Route) throws(NetlinkError) {
        try changeRoute(route, "replace route \(route)", needsNextHop: true) { sock, r in rtnl_route_add(sock, r, NLM_F_REPLACE) }
    }

    /// Deletes `route` (`ip route del`), whoever added it; gateway and device narrow the match when
    /// given.
    public func deleteRoute(_ route: Route) throws(NetlinkError) {
        try changeRoute(route, "delete route \(route)") { sock, r in ovl_rtnl_route_delete(sock, r) }
    }

    /// The unicast routes in `table`, optionally of one family, with device names resolved.
    public func routes(table: UInt32 = Route.mainTable, family: IPFamily? = nil) throws(NetlinkError) -> [Route] {
        let op = "list routes in table \(table)\(inNamespace)"
        return try withSocket { sock throws(NetlinkError) in
            let names = try linkNames(sock, op)
            var result: [Route] = []
            let af: Int32 = family == nil ? Int32(AF_UNSPEC) : family == .v4 ? Int32(AF_INET) : Int32(AF_INET6)
            try forEachObject(sock, op, alloc: { rtnl_route_alloc_cache($0, af, 0, $1) }) { r in
                guard rtnl_route_get_table(r) == table, rtnl_route_get_type(r) == ovl_rtn_unicast else { return }
                let dst = rtnl_route_get_dst(r)
                var destination: CIDR?
                if let ip = ipAddress(dst) {
                    let prefix = Int(nl_addr_get_prefixlen(dst))
                    destination = prefix == 0 ? nil : try? CIDR(containing: ip, prefixLength: prefix)
                } else if let dst, nl_addr_get_prefixlen(dst) != 0 {
                    return
                }
                var gateway: IPAddress?
                var device: String?
                var onLink = false
                if rtnl_route_get_nnexthops(r) > 0, let nh = rtnl_route_nexthop_n(r, 0) {
                    gateway = ipAddress(rtnl_route_nh_get_gateway(nh))
                    let index = rtnl_route_nh_get_ifindex(nh)
                    device = index > 0 ? names[Int32(index)] : nil
                    onLink = rtnl_route_nh_get_flags(nh) & ovl_rtnh_f_onlink != 0
                }
                let routeFamily: IPFamily = rtnl_route_get_family(r) == UInt8(AF_INET) ? .v4 : .v6
                if destination == nil, let family, family != routeFamily { return }
                if destination == nil && routeFamily == .v6 && gateway == nil && device == nil { return }
                result.append(Route(destination: destination, gateway: gateway, device: device, table: table, onLink: onLink))
            }
            return result
        }
    }

    private func changeRoute(
        _ route: Route, _ what: String, needsNextHop: Bool = false, _ send: (OpaquePointer, OpaquePointer) -> Int32
    ) throws(NetlinkError) {
        let op = what + inNamespace
        guard let family = route.family else {
            throw NetlinkError.invalid(op, "a default route needs a gateway to say its family")
        }
        if needsNextHop && route.gateway == nil && route.device == nil {
            throw NetlinkError.invalid(op, "a route needs a gateway, a device or both")
        }
        if let gateway = route.gateway, gateway.family != family {
            throw NetlinkError.invalid(op, "gateway \(gateway) is not \(family) like the destination")
        }
        try withSocket { sock throws(NetlinkError) in
            let index = try route.device.map { d throws(NetlinkError) in try self.index(of: d, sock, for: op) }
            try withObject(rtnl_route_alloc, free: { rtnl_route_put($0) }, op) { r throws(NetlinkError) in
                rtnl_route_set_family(r, UInt8(family == .v4 ? AF_INET : AF_INET6))
                let zero: IPAddress = family == .v4 ? .v4(.any) : .v6(.any)
                let dst = try makeAddress(
                    route.destination?.network ?? zero, prefixLength: route.destination?.prefixLength ?? 0, op)
                defer { nl_addr_put(dst) }
                try nlCheck(rtnl_route_set_dst(r, dst), op)
                rtnl_route_set_table(r, route.table)
                try nlCheck(rtnl_route_set_type(r, ovl_rtn_unicast), op)
                if route.gateway == nil && route.device == nil {
                    try nlCheck(send(sock, r), op)
                    return
                }
                guard let nh = rtnl_route_nh_alloc() else {
                    throw NetlinkError(.system, operation: op, reason: "libnl could not allocate a next hop (out of memory)")
                }
                if let index { rtnl_route_nh_set_ifindex(nh, index) }
                if let gateway = route.gateway {
                    let gw = try makeAddress(gateway, op)
                    rtnl_route_nh_set_gateway(nh, gw)
                    nl_addr_put(gw)
                }
                if route.onLink { rtnl_route_nh_set_flags(nh, ovl_rtnh_f_onlink) }
                rtnl_route_add_nexthop(r, nh)  // the route owns the next hop from here on
                let rc = send(sock, r)
                if rc == -NLE_OBJ_NOTFOUND {
                    throw NetlinkError(.notFound, operation: op, reason: "no such route")
                }
                try nlCheck(rc, op)
            }
        }
    }
}
