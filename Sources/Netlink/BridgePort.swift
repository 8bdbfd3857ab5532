import CNetlink
import Glibc

extension NetlinkSocket {
    /// Turns hairpin mode on or off for bridge port `name` (`bridge link set dev NAME hairpin on`),
    /// so the bridge may send a frame back out of the port it came in on: needed when a container
    /// reaches its own published port through the host and br_netfilter bridges the DNATed packet.
    public func setBridgePortHairpin(_ on: Bool, of name: String) throws(NetlinkError) {
        let op = "set bridge port \(name) hairpin \(on ? "on" : "off")" + inNamespace
        try validateLinkName(name, op)
        try withSocket { sock throws(NetlinkError) in
            var port: OpaquePointer?
            let rc = rtnl_link_get_kernel(sock, 0, name, &port)
            if rc == -NLE_OBJ_NOTFOUND || rc == -NLE_NODEV {
                throw NetlinkError(.notFound, operation: op, reason: "no link named \(name)")
            }
            try nlCheck(rc, op)
            guard let port else { throw NetlinkError(.notFound, operation: op, reason: "no link named \(name)") }
            let index = rtnl_link_get_ifindex(port)
            let master = rtnl_link_get_master(port)
            rtnl_link_put(port)
            guard master > 0 else {
                throw NetlinkError(.invalidArgument, operation: op, reason: "\(name) is not a port of a bridge")
            }
            // Both objects in family AF_BRIDGE: libnl then loads its bridge operations (which the
            // flag setters assert) and sends RTM_SETLINK with IFLA_PROTINFO to the bridge code.
            try withObject(rtnl_link_alloc, free: { rtnl_link_put($0) }, op) { orig throws(NetlinkError) in
                rtnl_link_set_ifindex(orig, index)
                rtnl_link_set_family(orig, AF_BRIDGE)
                try withObject(rtnl_link_alloc, free: { rtnl_link_put($0) }, op) { changes throws(NetlinkError) in
                    rtnl_link_set_family(changes, AF_BRIDGE)
                    let flag = UInt32(RTNL_BRIDGE_HAIRPIN_MODE.rawValue)
                    try nlCheck(on ? rtnl_link_bridge_set_flags(changes, flag) : rtnl_link_bridge_unset_flags(changes, flag), op)
                    try nlCheck(rtnl_link_change(sock, orig, changes, 0), op)
                }
            }
        }
    }
}
