import Glibc
import IPAM
import Netlink
import OverlayModel
import PacketFilter

/// The host gateway bridge (docker_gwbridge's role) in one host namespace: containers on
/// non-internal overlay networks get a second interface here for egress (masqueraded) and for
/// published ports (`-p`).
///
/// ```swift
/// let gw = GatewayBridge(namespace: host)
/// let info = try gw.ensure()                                // ovl_gwbridge, 172.17.0.0/16 (first free)
/// let a = try gw.attach(container: c)                        // eth1 172.17.0.2/16, default via 172.17.0.1
/// try gw.publish(PortMapping(hostPort: 8080, containerAddress: a.address, containerPort: 80))
/// // ... later, after a restart:
/// let again = GatewayBridge(namespace: host)
/// try again.ensure()                                         // reuses the bridge as it is
/// try again.restore(addresses: [a.address], publications: [mapping])
/// ```
///
/// Kernel state it owns: the bridge (when it made it), veth pairs `ovgw<hex address>`, and two
/// nftables tables named after the bridge (`ip` and `bridge` families), re-rendered from this
/// object's state and replaced in one transaction on every change. It also sets
/// `net.ipv4.ip_forward=1` in the host namespace. Bad input is refused before anything changes.
///
/// `@unchecked Sendable`: all mutable state is in `state`, read and written only under `lock`;
/// the namespace is itself Sendable. Operations run one at a time.
public final class GatewayBridge: @unchecked Sendable {
    /// The default bridge name.
    public static let defaultBridgeName = "ovl_gwbridge"
    /// The prefix of the host-side veth names (`ovgwac120002` for 172.18.0.2).
    public static let hostInterfacePrefix = "ovgw"

    /// The host namespace the bridge lives in.
    public let namespace: NetworkNamespace

    private struct State {
        var info: GatewayBridgeInfo?
        var space: AddressSpace?
        var ports: Set<String> = []
        var published: [PortMapping] = []
        var allocated: Set<IPv4Address> = []
    }

    private let lock = GWLock()
    private var state = State()

    /// A gateway bridge in `namespace` (nothing is done until ``ensure(_:)``).
    public init(namespace: NetworkNamespace) {
        self.namespace = namespace
    }

    /// A gateway bridge in the namespace pinned at `path` (`/run/netns/NAME`, `/proc/PID/ns/net`).
    public convenience init(namespacePath path: String) throws(GatewayBridgeError) {
        do throws(NetlinkError) {
            self.init(namespace: try NetworkNamespace.open(path: path))
        } catch {
            throw GatewayBridgeError(.invalidArgument, "cannot open network namespace \(path): \(error.message)")
        }
    }

    // MARK: Reading state

    /// What ``ensure(_:)`` set up; nil before it ran (or after ``teardown(removeBridge:)``).
    public var info: GatewayBridgeInfo? { lock.withLock { state.info } }

    /// The published ports, in the order they were published.
    public var publishedPorts: [PortMapping] { lock.withLock { state.published } }

    /// The addresses handed out on the bridge (attachments, `allocate`, `restore`), sorted.
    public var allocatedAddresses: [IPv4Address] {
        lock.withLock {
            state.allocated.sorted()
        }
    }

    // MARK: Ensure

    /// Makes the bridge (or reuses one of that name as it is: its subnet and gateway come from its
    /// first IPv4 address; it is only brought up if it was down), turns on `net.ipv4.ip_forward` in the host namespace, and installs the
    /// owned nftables tables. Calling it again is harmless: attachments and published ports are
    /// kept, and changed ICC / masquerade options take effect.
    @discardableResult
    public func ensure(_ options: GatewayBridgeOptions = GatewayBridgeOptions()) throws(GatewayBridgeError) -> GatewayBridgeInfo {
        try GatewayBridge.validate(options)
        return try lock.withLock { () throws(GatewayBridgeError) -> GatewayBridgeInfo in
            let sock = try kernel("open a netlink socket in \(namespace.name)") { () throws(NetlinkError) in try NetlinkSocket(namespace: namespace) }
            let name = options.bridgeName
            let existing: Link?
            do throws(NetlinkError) { existing = try sock.link(named: name) } catch where error.code == .notFound { existing = nil } catch {
                throw GatewayBridgeError(.kernel, error.message)
            }

            var created = false
            let subnet: CIDR
            let gateway: IPv4Address
            var mtu: UInt32
            if let existing {
                guard existing.kind == "bridge" else {
                    throw GatewayBridgeError(
                        .conflict,
                        "a link named \(name) exists in \(namespace.name) but is a \(existing.kind ?? "plain") device, not a bridge; remove it or pick another bridge name")
                }
                let addresses = try kernel("read addresses of \(name)") { () throws(NetlinkError) in try sock.addresses(on: name, family: .v4) }
                guard let first = addresses.first, let v4 = first.address.v4 else {
                    throw GatewayBridgeError(
                        .conflict, "bridge \(name) exists but has no IPv4 address; give it its gateway address (ip addr add 172.18.0.1/16 dev \(name)) or delete it")
                }
                subnet = first.subnet
                gateway = v4
                if let wanted = options.subnet, wanted != subnet {
                    throw GatewayBridgeError(
                        .conflict, "bridge \(name) exists with subnet \(subnet), not the requested \(wanted); omit --subnet to reuse it or delete the bridge")
                }
                if let wanted = options.gateway, wanted != gateway {
                    throw GatewayBridgeError(
                        .conflict, "bridge \(name) exists with gateway \(gateway), not the requested \(wanted); omit --gateway to reuse it or delete the bridge")
                }
                mtu = existing.mtu
                if !existing.isUp {
                    try kernel("set bridge \(name) up") { () throws(NetlinkError) in try sock.setUp(name) }
                }
            } else {
                let used = try usedSubnets(sock)
                if let wanted = options.subnet {
                    if let clash = used.first(where: { $0.overlaps(wanted) }) {
                        throw GatewayBridgeError(
                            .conflict, "subnet \(wanted) overlaps \(clash), already on an interface or route in \(namespace.name); pick another --subnet")
                    }
                    subnet = wanted
                } else {
                    subnet = try GatewayBridge.pickSubnet(pools: options.pools, avoiding: used)
                }
                gateway = options.gateway ?? IPv4Address(subnet.network.v4!.value + 1)
                let op = "create bridge \(name) with \(gateway)/\(subnet.prefixLength)"
                do throws(NetlinkError) {
                    try sock.createBridge(named: name, mtu: options.mtu)
                    created = true
                    try sock.addAddress(InterfaceAddress(.v4(gateway), prefixLength: subnet.prefixLength)!, to: name)
                    try sock.setUp(name)
                } catch {
                    if created { try? sock.deleteLink(named: name) }
                    throw GatewayBridgeError(.kernel, "\(op): \(error.message)")
                }
                mtu = try kernel("read bridge \(name)") { () throws(NetlinkError) in try sock.link(named: name).mtu }
            }
            if mtu == 0 { mtu = 1500 }

            let wasCreated = created || (state.info?.bridgeName == name && state.info?.createdBridge == true)
            let info = GatewayBridgeInfo(
                bridgeName: name, subnet: subnet, gateway: gateway, mtu: mtu, createdBridge: wasCreated, icc: options.icc,
                ipMasquerade: options.ipMasquerade, tableName: options.effectiveTableName)
            do throws(GatewayBridgeError) {
                try kernel("enable net.ipv4.ip_forward in \(namespace.name)") { () throws(NetlinkError) in
                    try namespace.setSysctl("net.ipv4.ip_forward", to: "1")
                }
                var next = state
                if next.info?.subnet != subnet || next.info?.gateway != gateway || next.space == nil {
                    next.space = try GatewayBridge.makeSpace(subnet: subnet, gateway: gateway, name: name)
                    next.ports = []
                    next.published = []
                    next.allocated = []
                }
                if let old = next.info, old.tableName != info.tableName { try? deleteTables(old.tableName) }
                next.info = info
                try apply(next)
                state = next
            } catch {
                if created { try? sock.deleteLink(named: name) }
                throw error
            }
            return info
        }
    }

    // MARK: Addresses

    /// Hands out an address on the bridge: `requested` when given (it must be free and in the
    /// subnet), otherwise the lowest free one. ``attach(container:interfaceName:address:defaultRoute:)``
    /// calls this itself; use it directly to reserve an address before attaching.
    public func allocate(_ requested: IPv4Address? = nil) throws(GatewayBridgeError) -> IPv4Address {
        try lock.withLock { () throws(GatewayBridgeError) -> IPv4Address in
            var space = try readySpace()
            let address = try GatewayBridge.take(requested, from: &space)
            state.space = space
            state.allocated.insert(address)
            return address
        }
    }

    /// Gives back an address handed out by ``allocate(_:)`` (attachments are released by
    /// ``detach(_:)``).
    public func release(_ address: IPv4Address) throws(GatewayBridgeError) {
        try lock.withLock { () throws(GatewayBridgeError) in
            var space = try readySpace()
            do throws(IPAMError) { try space.release(.v4(address)) } catch {
                throw GatewayBridgeError(error.code == .addressNotAllocated ? .notFound : .invalidArgument, error.message)
            }
            state.space = space
            state.allocated.remove(address)
        }
    }

    /// After a restart: marks `addresses` as in use (the containers attached before, whose veths
    /// are still there), counts their veth ports for the ICC rule, and publishes `publications`
    /// again, all in one ruleset update. Addresses already marked are accepted.
    public func restore(addresses: [IPv4Address], publications: [PortMapping] = []) throws(GatewayBridgeError) {
        try lock.withLock { () throws(GatewayBridgeError) in
            var next = state
            guard var space = next.space, let info = next.info else { throw GatewayBridge.notReady }
            for a in addresses {
                if space.isAllocated(.v4(a)) { continue }
                _ = try GatewayBridge.take(a, from: &space)
            }
            next.space = space
            next.allocated.formUnion(addresses)
            for a in addresses { next.ports.insert(GatewayBridge.hostInterfaceName(for: a)) }
            for m in publications where !next.published.contains(m) {
                try GatewayBridge.validate(m, info: info, against: next.published)
                next.published.append(m)
            }
            try apply(next)
            state = next
        }
    }

    // MARK: Attach and detach

    /// Connects a container to the bridge: a veth pair whose container end is `interfaceName` with
    /// `address` (or the next free one) on the bridge's subnet and, when `defaultRoute`, the
    /// default route via the gateway (replacing one that exists). All or nothing.
    public func attach(
        container: NetworkNamespace, interfaceName: String = "eth1", address requested: IPv4Address? = nil,
        defaultRoute: Bool = true
    ) throws(GatewayBridgeError) -> GatewayAttachment {
        guard GatewayBridge.isValidLinkName(interfaceName) else {
            throw GatewayBridgeError(.invalidArgument, "'\(interfaceName)' is not an interface name (1 to 15 bytes, no '/', ':' or spaces)")
        }
        return try lock.withLock { () throws(GatewayBridgeError) -> GatewayAttachment in
            var next = state
            guard var space = next.space, let info = next.info else { throw GatewayBridge.notReady }
            let address = try GatewayBridge.take(requested, from: &space)
            next.space = space
            next.allocated.insert(address)
            let hostName = GatewayBridge.hostInterfaceName(for: address)
            next.ports.insert(hostName)
            let attachment = GatewayAttachment(
                interfaceName: interfaceName, hostInterfaceName: hostName, address: address,
                prefixLength: info.subnet.prefixLength, gateway: info.gateway, mac: MACAddress(derivedFrom: address))

            // Rules first (the new port is already in the ICC set), then the port.
            try apply(next)
            var made = false
            do throws(NetlinkError) {
                let sock = try NetlinkSocket(namespace: namespace)
                let inside = try NetlinkSocket(namespace: container)
                try sock.createVeth(named: hostName, peerName: interfaceName, peerNamespace: container, mtu: info.mtu)
                made = true
                try sock.setMaster(info.bridgeName, of: hostName)
                try sock.setBridgePortHairpin(true, of: hostName)
                try sock.setUp(hostName)
                try inside.setMAC(attachment.mac, of: interfaceName)
                try inside.addAddress(InterfaceAddress(.v4(address), prefixLength: info.subnet.prefixLength)!, to: interfaceName)
                try inside.setUp(interfaceName)
                if defaultRoute {
                    try inside.replaceRoute(Route(destination: nil, gateway: .v4(info.gateway), device: interfaceName))
                }
            } catch {
                if made, let s = try? NetlinkSocket(namespace: namespace) { try? s.deleteLink(named: hostName) }
                try? apply(state)
                let code: GatewayBridgeError.Code = error.code == .exists ? .conflict : .kernel
                throw GatewayBridgeError(code, "attach \(container.name) to \(info.bridgeName) as \(interfaceName) \(address): \(error.message)")
            }
            state = next
            return attachment
        }
    }

    /// Disconnects the container that has `address` on the bridge: deletes its veth pair (both
    /// ends), releases the address, and unpublishes the ports that pointed at it.
    public func detach(address: IPv4Address) throws(GatewayBridgeError) {
        try lock.withLock { () throws(GatewayBridgeError) in
            var next = state
            guard var space = next.space, next.info != nil else { throw GatewayBridge.notReady }
            guard space.isAllocated(.v4(address)) else {
                throw GatewayBridgeError(.notFound, "no container has \(address) on the gateway bridge; nothing to detach")
            }
            let hostName = GatewayBridge.hostInterfaceName(for: address)
            do throws(NetlinkError) {
                let sock = try NetlinkSocket(namespace: namespace)
                do throws(NetlinkError) { try sock.deleteLink(named: hostName) } catch where error.code == .notFound {}
            } catch {
                throw GatewayBridgeError(.kernel, "detach \(address): \(error.message)")
            }
            try? space.release(.v4(address))
            next.space = space
            next.allocated.remove(address)
            next.ports.remove(hostName)
            next.published.removeAll { $0.containerAddress == address }
            try apply(next)
            state = next
        }
    }

    /// Disconnects `attachment` (see ``detach(address:)``).
    public func detach(_ attachment: GatewayAttachment) throws(GatewayBridgeError) {
        try detach(address: attachment.address)
    }

    // MARK: Published ports

    /// Publishes `mapping`: DNAT of the host port to the container, for traffic from outside and
    /// from the host itself. Refuses port 0, an address off the bridge's subnet, and a host port
    /// and protocol already published; nothing changes then.
    public func publish(_ mapping: PortMapping) throws(GatewayBridgeError) {
        try lock.withLock { () throws(GatewayBridgeError) in
            guard let info = state.info else { throw GatewayBridge.notReady }
            try GatewayBridge.validate(mapping, info: info, against: state.published)
            var next = state
            next.published.append(mapping)
            try apply(next)
            state = next
        }
    }

    /// Removes the published port with `mapping`'s protocol, host port and host address.
    public func unpublish(_ mapping: PortMapping) throws(GatewayBridgeError) {
        try lock.withLock { () throws(GatewayBridgeError) in
            guard state.info != nil else { throw GatewayBridge.notReady }
            guard let i = state.published.firstIndex(where: {
                $0.protocol == mapping.protocol && $0.hostPort == mapping.hostPort && $0.hostAddress == mapping.hostAddress
            }) else {
                throw GatewayBridgeError(.notFound, "port \(mapping.hostPort)/\(mapping.protocol.rawValue) is not published; nothing to unpublish")
            }
            var next = state
            next.published.remove(at: i)
            try apply(next)
            state = next
        }
    }

    // MARK: Teardown

    /// Removes the owned nftables tables and the veth pairs of attached containers, and deletes
    /// the bridge when `removeBridge` says so (nil: only when this object created it, so an
    /// operator's pre-made bridge stays). `ip_forward` is left on. Safe to call twice.
    public func teardown(removeBridge: Bool? = nil) throws(GatewayBridgeError) {
        try lock.withLock { () throws(GatewayBridgeError) in
            guard let info = state.info else { return }
            try deleteTables(info.tableName)
            let sock = try kernel("open a netlink socket in \(namespace.name)") { () throws(NetlinkError) in try NetlinkSocket(namespace: namespace) }
            for port in state.ports.sorted() {
                do throws(NetlinkError) { try sock.deleteLink(named: port) } catch where error.code == .notFound {} catch {
                    throw GatewayBridgeError(.kernel, error.message)
                }
            }
            if removeBridge ?? info.createdBridge {
                do throws(NetlinkError) { try sock.deleteLink(named: info.bridgeName) } catch where error.code == .notFound {} catch {
                    throw GatewayBridgeError(.kernel, error.message)
                }
            }
            state = State()
        }
    }

    // MARK: Helpers

    /// The host-side veth name for a container address: `ovgw` + 8 hex digits.
    public static func hostInterfaceName(for address: IPv4Address) -> String {
        let hex = String(address.value, radix: 16)
        return hostInterfacePrefix + String(repeating: "0", count: 8 - hex.count) + hex
    }

    /// Picks the first subnet of `pools` (in order) that overlaps none of `used`.
    public static func pickSubnet(pools: [AddressPool], avoiding used: [CIDR]) throws(GatewayBridgeError) -> CIDR {
        for pool in pools where pool.family == .v4 {
            for candidate in pool.base.subnets(prefixLength: pool.size) where !used.contains(where: { $0.overlaps(candidate) }) {
                return candidate
            }
        }
        throw GatewayBridgeError(
            .exhausted,
            "every subnet of the pools (\(pools.map(\.description).joined(separator: ", "))) overlaps an address or route of the host; give --subnet")
    }

    static let notReady = GatewayBridgeError(.notReady, "the gateway bridge is not set up; call ensure() first")

    private func readySpace() throws(GatewayBridgeError) -> AddressSpace {
        guard let space = state.space, state.info != nil else { throw GatewayBridge.notReady }
        return space
    }

    private static func take(_ requested: IPv4Address?, from space: inout AddressSpace) throws(GatewayBridgeError) -> IPv4Address {
        let result: IPAddress
        do throws(IPAMError) {
            if let requested {
                try space.request(.v4(requested))
                result = .v4(requested)
            } else {
                result = try space.allocate()
            }
        } catch {
            let code: GatewayBridgeError.Code
            switch error.code {
            case .addressesExhausted: code = .exhausted
            case .addressInUse, .addressReserved: code = .conflict
            default: code = .invalidArgument
            }
            throw GatewayBridgeError(code, error.message)
        }
        guard let a = result.v4 else {
            throw GatewayBridgeError(.invalidArgument, "the gateway bridge's subnet is not IPv4")
        }
        return a
    }

    private static func makeSpace(subnet: CIDR, gateway: IPv4Address, name: String) throws(GatewayBridgeError) -> AddressSpace {
        do throws(IPAMError) {
            return try AddressSpace(subnet: subnet, gateway: .v4(gateway), networkName: name)
        } catch {
            throw GatewayBridgeError(.invalidArgument, error.message)
        }
    }

    private func usedSubnets(_ sock: NetlinkSocket) throws(GatewayBridgeError) -> [CIDR] {
        let addresses = try kernel("list addresses in \(namespace.name)") { () throws(NetlinkError) in try sock.addresses(family: .v4) }
        let routes = try kernel("list routes in \(namespace.name)") { () throws(NetlinkError) in try sock.routes(family: .v4) }
        return addresses.map(\.subnet) + routes.compactMap(\.destination)
    }

    /// Replaces the owned tables with those rendered from `s`, in the host namespace.
    private func apply(_ s: State) throws(GatewayBridgeError) {
        guard let info = s.info else { return }
        let ruleset = GatewayRuleset(
            bridgeName: info.bridgeName, subnet: info.subnet, tableName: info.tableName, icc: info.icc,
            ipMasquerade: info.ipMasquerade, ports: s.ports, published: s.published)
        do {
            try namespace.run { try PacketFilter().replaceTables(ruleset.tables) }
        } catch let error as PacketFilterError {
            throw GatewayBridgeError(.kernel, "update nftables in \(namespace.name): \(error.message)")
        } catch {
            throw GatewayBridgeError(.kernel, "update nftables in \(namespace.name): \(error)")
        }
    }

    private func deleteTables(_ name: String) throws(GatewayBridgeError) {
        do {
            try namespace.run {
                let nft = try PacketFilter()
                try nft.deleteTable(family: .ip, name: name)
                try nft.deleteTable(family: .bridge, name: name)
            }
        } catch {
            throw GatewayBridgeError(.kernel, "delete nftables tables \(name) in \(namespace.name): \(error)")
        }
    }

    private func kernel<T>(_ what: String, _ body: () throws(NetlinkError) -> T) throws(GatewayBridgeError) -> T {
        do throws(NetlinkError) { return try body() } catch { throw GatewayBridgeError(.kernel, "\(what): \(error.message)") }
    }

    static func validate(_ o: GatewayBridgeOptions) throws(GatewayBridgeError) {
        guard isValidLinkName(o.bridgeName) else {
            throw GatewayBridgeError(.invalidArgument, "'\(o.bridgeName)' is not a bridge name (1 to 15 bytes, no '/', ':' or spaces)")
        }
        guard PacketFilter.isValidName(o.effectiveTableName) else {
            throw GatewayBridgeError(
                .invalidArgument, "'\(o.effectiveTableName)' is not an nftables table name (letters, digits, '_'); set tableName")
        }
        if let s = o.subnet {
            guard s.family == .v4 else {
                throw GatewayBridgeError(.invalidArgument, "subnet \(s) is not IPv4; the gateway bridge needs an IPv4 subnet like 172.18.0.0/16")
            }
            guard (8...30).contains(s.prefixLength) else {
                throw GatewayBridgeError(.invalidArgument, "subnet \(s) has a /\(s.prefixLength) prefix; use /8 to /30")
            }
            if let g = o.gateway {
                guard s.contains(.v4(g)), g != s.network.v4, .v4(g) != s.last else {
                    throw GatewayBridgeError(.invalidArgument, "gateway \(g) is not a usable address of subnet \(s)")
                }
            }
        } else if o.gateway != nil {
            throw GatewayBridgeError(.invalidArgument, "--gateway needs --subnet")
        }
        if let mtu = o.mtu, !(68...65535).contains(mtu) {
            throw GatewayBridgeError(.invalidArgument, "MTU \(mtu) is out of range (68 to 65535)")
        }
    }

    static func validate(_ m: PortMapping, info: GatewayBridgeInfo, against published: [PortMapping]) throws(GatewayBridgeError) {
        guard m.hostPort != 0 else {
            throw GatewayBridgeError(.invalidArgument, "host port 0 in \(m) is not a port; give 1 to 65535")
        }
        guard m.containerPort != 0 else {
            throw GatewayBridgeError(.invalidArgument, "container port 0 in \(m) is not a port; give 1 to 65535")
        }
        let a = IPAddress.v4(m.containerAddress)
        guard info.subnet.contains(a), m.containerAddress != info.gateway, a != info.subnet.network, a != info.subnet.last else {
            throw GatewayBridgeError(
                .invalidArgument, "container address \(m.containerAddress) in \(m) is not a container address on \(info.bridgeName) (\(info.subnet))")
        }
        if let clash = published.first(where: { $0.clashes(with: m) }) {
            throw GatewayBridgeError(.conflict, "port \(m.hostPort)/\(m.protocol.rawValue) is already published (\(clash)); unpublish it first or pick another host port")
        }
    }

    /// Linux's rule for a link name: 1 to 15 bytes, no '/', ':', spaces or control bytes.
    public static func isValidLinkName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 15 && name != "." && name != ".."
            && !name.utf8.contains(where: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: ":") || $0 <= 32 || $0 == 127 })
    }
}

/// A pthread mutex for the gateway bridge's state (held across kernel calls, which are short).
final class GWLock: @unchecked Sendable {
    // @unchecked: the mutex is only used through pthread calls, which are thread-safe.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    init() {
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func withLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}
