import CNetlink
import Glibc
import OverlayModel

/// An address assigned to an interface, with its prefix length (`10.0.0.2/24`). Unlike `CIDR`,
/// host bits are the point here.
public struct InterfaceAddress: Hashable, Sendable, CustomStringConvertible, LosslessStringConvertible {
    /// The address itself.
    public let address: IPAddress
    /// The prefix length of the subnet it is on: 0...32 for IPv4, 0...128 for IPv6.
    public let prefixLength: Int

    /// Makes an interface address; nil when the prefix length is out of range for the family.
    public init?(_ address: IPAddress, prefixLength: Int) {
        guard (0...address.family.bitWidth).contains(prefixLength) else { return nil }
        self.address = address
        self.prefixLength = prefixLength
    }

    /// Parses `address/prefix` (`10.0.0.2/24`, `fd00::2/64`); nil when malformed.
    public init?(_ description: String) {
        let parts = description.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let address = IPAddress(String(parts[0])), parts[1].allSatisfy(\.isASCII),
              let prefix = Int(parts[1])
        else { return nil }
        self.init(address, prefixLength: prefix)
    }

    /// The subnet the address is on (`10.0.0.0/24` for `10.0.0.2/24`).
    public var subnet: CIDR {
        // In range by construction, so this cannot throw.
        try! CIDR(containing: address, prefixLength: prefixLength)
    }

    public var description: String { "\(address)/\(prefixLength)" }
}

extension NetlinkSocket {
    /// Assigns `address` to link `name` (`ip addr add`); `.exists` when it is already there.
    public func addAddress(_ address: InterfaceAddress, to name: String) throws(NetlinkError) {
        try changeAddress(address, name, "add address \(address) to \(name)") { sock, addr throws(NetlinkError) in
            rtnl_addr_add(sock, addr, NLM_F_EXCL)
        }
    }

    /// Removes `address` from link `name` (`ip addr del`).
    public func deleteAddress(_ address: InterfaceAddress, from name: String) throws(NetlinkError) {
        try changeAddress(address, name, "delete address \(address) from \(name)") { sock, addr throws(NetlinkError) in
            rtnl_addr_delete(sock, addr, 0)
        }
    }

    /// The addresses on link `name` (all links when nil), optionally of one family, sorted.
    public func addresses(on name: String? = nil, family: IPFamily? = nil) throws(NetlinkError) -> [InterfaceAddress] {
        let op = "list addresses\(name.map { " on " + $0 } ?? "")\(inNamespace)"
        return try withSocket { sock throws(NetlinkError) in
            let index = try name.map { n throws(NetlinkError) in try self.index(of: n, sock, for: op) }
            var result: [InterfaceAddress] = []
            try forEachObject(sock, op, alloc: { rtnl_addr_alloc_cache($0, $1) }) { object in
                if let index, rtnl_addr_get_ifindex(object) != index { return }
                guard let ip = ipAddress(rtnl_addr_get_local(object)) else { return }
                if let family, ip.family != family { return }
                if let a = InterfaceAddress(ip, prefixLength: Int(rtnl_addr_get_prefixlen(object))) { result.append(a) }
            }
            return result.sorted { ($0.address, $0.prefixLength) < ($1.address, $1.prefixLength) }
        }
    }

    private func changeAddress(
        _ address: InterfaceAddress, _ name: String, _ what: String,
        _ send: (OpaquePointer, OpaquePointer) throws(NetlinkError) -> Int32
    ) throws(NetlinkError) {
        let op = what + inNamespace
        try withSocket { sock throws(NetlinkError) in
            let index = try self.index(of: name, sock, for: op)
            try withObject(rtnl_addr_alloc, free: { rtnl_addr_put($0) }, op) { addr throws(NetlinkError) in
                rtnl_addr_set_ifindex(addr, index)
                let local = try makeAddress(address.address, prefixLength: address.prefixLength, op)
                defer { nl_addr_put(local) }
                try nlCheck(rtnl_addr_set_local(addr, local), op)
                rtnl_addr_set_prefixlen(addr, Int32(address.prefixLength))
                try nlCheck(try send(sock, addr), op)
            }
        }
    }
}
