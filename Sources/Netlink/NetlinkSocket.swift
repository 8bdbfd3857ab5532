import CNetlink
import COverlayShims
import Glibc
import OverlayModel

/// A netlink route socket bound to one network namespace: the handle for links, addresses, routes,
/// neighbours and FDB entries there.
///
/// The socket is created on a thread inside the namespace and stays in that namespace afterwards,
/// so it can be used from any thread. libnl sockets are not thread-safe; every call takes this
/// object's lock, so one socket may be shared, but calls on it run one at a time. Open one socket
/// per task that needs parallelism. The libnl handle is freed in `deinit`.
///
/// `@unchecked Sendable`: the C handle is only used while holding `lock`.
public final class NetlinkSocket: @unchecked Sendable {
    private let handle: OpaquePointer
    private let lock = Lock()
    /// The namespace this socket talks to.
    public let namespace: NetworkNamespace

    /// Opens a route socket inside `namespace`.
    public init(namespace: NetworkNamespace) throws(NetlinkError) {
        let op = "open netlink socket in namespace \(namespace.name)"
        let address = try namespace.runTyped(op) { () throws(NetlinkError) -> Int in
            guard let sock = nl_socket_alloc() else {
                throw NetlinkError(.system, operation: op, reason: "libnl could not allocate a socket (out of memory)")
            }
            let rc = nl_connect(sock, NETLINK_ROUTE)
            if rc < 0 {
                nl_socket_free(sock)
                throw NetlinkError.libnl(rc, op)
            }
            return Int(bitPattern: UnsafeMutableRawPointer(sock))
        }
        self.handle = OpaquePointer(bitPattern: address)!
        self.namespace = namespace
    }

    /// Opens a route socket in the namespace the calling thread is in.
    public convenience init() throws(NetlinkError) {
        try self.init(namespace: NetworkNamespace.current())
    }

    deinit { nl_socket_free(handle) }

    /// ` in namespace NAME`, appended to every operation description.
    var inNamespace: String { " in namespace \(namespace.name)" }

    /// Runs `body` with the libnl socket while holding the lock.
    func withSocket<T>(_ body: (OpaquePointer) throws(NetlinkError) -> T) throws(NetlinkError) -> T {
        try lock.withLock { () throws(NetlinkError) -> T in try body(handle) }
    }

    /// The index of link `name`; must be called while holding the lock.
    func index(of name: String, _ sock: OpaquePointer, for operation: String) throws(NetlinkError) -> Int32 {
        try validateLinkName(name, operation)
        var result: OpaquePointer?
        let rc = rtnl_link_get_kernel(sock, 0, name, &result)
        if rc < 0 {
            if rc == -NLE_OBJ_NOTFOUND || rc == -NLE_NODEV {
                throw NetlinkError(.notFound, operation: operation, reason: "no link named \(name)\(inNamespace)")
            }
            throw NetlinkError.libnl(rc, operation)
        }
        defer { rtnl_link_put(result) }
        return rtnl_link_get_ifindex(result)
    }

    /// Dumps a cache made by `alloc` and calls `body` on each object in it.
    func forEachObject(
        _ sock: OpaquePointer, _ operation: String,
        alloc: (OpaquePointer, UnsafeMutablePointer<OpaquePointer?>) -> Int32,
        _ body: (OpaquePointer) throws(NetlinkError) -> Void
    ) throws(NetlinkError) {
        var cache: OpaquePointer?
        try nlCheck(alloc(sock, &cache), operation)
        guard let cache else { return }
        defer { nl_cache_free(cache) }
        var object = nl_cache_get_first(cache)
        while let o = object {
            try body(o)
            object = nl_cache_get_next(o)
        }
    }

    /// A map from link index to link name, for listings that name devices.
    func linkNames(_ sock: OpaquePointer, _ operation: String) throws(NetlinkError) -> [Int32: String] {
        var names: [Int32: String] = [:]
        try forEachObject(sock, operation, alloc: { rtnl_link_alloc_cache($0, AF_UNSPEC, $1) }) { link in
            if let n = rtnl_link_get_name(link) { names[rtnl_link_get_ifindex(link)] = String(cString: n) }
        }
        return names
    }
}

// MARK: - Conversions between OverlayModel values and libnl addresses

/// Builds a libnl address for an IP address with a prefix length (the full width when nil).
func makeAddress(_ ip: IPAddress, prefixLength: Int? = nil, _ operation: @autoclosure () -> String) throws(NetlinkError) -> OpaquePointer {
    let family = ip.family == .v4 ? AF_INET : AF_INET6
    let bytes = ip.bytes
    let address = bytes.withUnsafeBytes { nl_addr_build(Int32(family), $0.baseAddress, $0.count) }
    guard let address else {
        throw NetlinkError(.system, operation: operation(), reason: "libnl could not allocate an address (out of memory)")
    }
    nl_addr_set_prefixlen(address, Int32(prefixLength ?? ip.family.bitWidth))
    return address
}

/// Builds a libnl link-layer address for a MAC address.
func makeAddress(_ mac: MACAddress, _ operation: @autoclosure () -> String) throws(NetlinkError) -> OpaquePointer {
    let bytes = mac.bytes
    let address = bytes.withUnsafeBytes { nl_addr_build(ovl_af_llc, $0.baseAddress, $0.count) }
    guard let address else {
        throw NetlinkError(.system, operation: operation(), reason: "libnl could not allocate an address (out of memory)")
    }
    return address
}

/// Reads a libnl address as an IP address; nil for other families or a missing address.
func ipAddress(_ address: OpaquePointer?) -> IPAddress? {
    guard let address, let raw = nl_addr_get_binary_addr(address) else { return nil }
    let length = Int(nl_addr_get_len(address))
    let bytes = UnsafeRawBufferPointer(start: raw, count: length)
    switch nl_addr_get_family(address) {
    case Int32(AF_INET): return IPv4Address(bytes: bytes).map(IPAddress.v4)
    case Int32(AF_INET6): return IPv6Address(bytes: bytes).map(IPAddress.v6)
    default: return nil
    }
}

/// Reads a libnl address as a MAC address; nil unless it is six bytes long.
func macAddress(_ address: OpaquePointer?) -> MACAddress? {
    guard let address, let raw = nl_addr_get_binary_addr(address), nl_addr_get_len(address) == 6 else { return nil }
    return MACAddress(bytes: UnsafeRawBufferPointer(start: raw, count: 6))
}

/// Refuses names the kernel would refuse (or libnl would silently truncate).
func validateLinkName(_ name: String, _ operation: String) throws(NetlinkError) {
    let bytes = name.utf8
    guard !bytes.isEmpty, bytes.count < Int(ovl_ifnamsiz), name != ".", name != "..",
          !bytes.contains(where: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: ":") || $0 <= 0x20 || $0 == 0x7F })
    else {
        throw NetlinkError.invalid(operation, "'\(name)' is not a valid link name (1-15 bytes, no '/', ':' or spaces)")
    }
}
