import Foundation
import IPsecKeys
import Logging
import Netlink
import OverlayModel

/// The overlay data plane of one host, built the way Docker's overlay driver builds it.
///
/// Per network, on the first local endpoint, a network sandbox (a namespace `sb-<vni>` in
/// `<stateDirectory>/netns`) with, per subnet, a tunnel device `vx-<vni>` from the ``Datapath``;
/// removed with the last endpoint. How endpoints join it is ``endpointLink``: by default each is a
/// MACVLAN (bridge mode) on the tunnel device, created in the container's namespace, with the
/// gateway address on a MACVLAN `gw-<vni>` in the sandbox; in the veth + bridge fallback (Docker's
/// layout) a bridge `br-<vni>` holds the gateway address and the tunnel device, and each endpoint
/// is a veth pair from that bridge into the container. Peers (remote endpoints) are given
/// through ``addPeer(_:network:)`` and kept even while no sandbox exists, and replayed when one is
/// built. At start-up, sandboxes and host links a crashed run left are removed.
///
/// Single owner: every call takes one lock, so calls run one at a time; kernel work happens through
/// netlink sockets bound to the host, sandbox and container namespaces. Nothing is torn down when
/// the driver is released; call ``shutdown()`` for that.
///
/// ```swift
/// let driver = try OverlayDriver(configuration: .init(
///     nodeID: "h1", stateDirectory: "/run/overlayd-h1", dataPathAddress: IPAddress("198.18.0.1")!))
/// try driver.createNetwork(OverlayNetworkSpec(name: "front", subnet: "10.0.1.0/24", vni: 4096))
/// let ep = try driver.attach(EndpointSpec(id: "c1", network: "front",
///     namespace: .path("/run/netns/c1"), address: IPAddress("10.0.1.2")!))
/// try otherHostDriver.addPeer(ep.peer, network: "front")
/// ```
public final class OverlayDriver: @unchecked Sendable {
    // @unchecked: all mutable state is in `state`, read and written only while holding `lock`; the
    // other stored properties are lets of Sendable types.

    /// The configuration the driver was made with.
    public let configuration: OverlayDriverConfiguration
    /// The datapath carrying plain networks' frames between hosts.
    public let datapath: any Datapath
    /// The datapath carrying encrypted networks' frames (ESP in userspace); made at start, it
    /// opens its raw socket and threads only with the first encrypted tunnel.
    public let userspaceDatapath: UserspaceDatapath
    /// Where the sandbox namespace handles live: `<stateDirectory>/netns`.
    public let handleDirectory: String
    /// The short tag (from the node ID) that prefixes host-namespace kernel objects.
    public let nodeTag: String
    /// What start-up found from an earlier run and removed (`sandbox sb-4096`, `link h1x1000`).
    public let removedStale: [String]

    /// How many endpoints one subnet can have on one host in veth + bridge mode: a Linux bridge
    /// has 1,024 port numbers (BR_MAX_PORTS), port 0 is reserved, and the VXLAN device takes one.
    /// MACVLAN mode has no such limit (see ``maxEndpoints(on:)``).
    public static let maxEndpointsPerBridge = 1022

    /// How endpoints are linked on this driver: ``EndpointLink/macvlan`` or
    /// ``EndpointLink/vethBridge``, never ``EndpointLink/auto`` (resolved at start-up).
    public let endpointLink: EndpointLink
    /// Why ``EndpointLink/auto`` chose the veth + bridge fallback (the probe's error); nil otherwise.
    public let endpointLinkFallbackReason: String?

    private let host: NetlinkSocket
    private let lock = NSLock()
    private var state = DriverState()
    private let logger: Logger

    /// Starts a driver with the kernel datapath, removing what an earlier run left behind.
    public convenience init(configuration: OverlayDriverConfiguration) throws(OverlayDriverError) {
        let tag = try OverlayDriver.tag(for: configuration.nodeID)
        let host = try OverlayDriver.hostSocket(configuration)
        try self.init(configuration: configuration, host: host, datapath: KernelDatapath(host: host, nodeTag: tag))
    }

    /// Starts a driver with another datapath for plain networks (a recording one in tests, or a
    /// ``UserspaceDatapath``, which then carries every network), removing what an earlier run left.
    public convenience init(configuration: OverlayDriverConfiguration, datapath: any Datapath) throws(OverlayDriverError) {
        try self.init(configuration: configuration, host: OverlayDriver.hostSocket(configuration), datapath: datapath)
    }

    private init(configuration: OverlayDriverConfiguration, host: NetlinkSocket, datapath: any Datapath) throws(OverlayDriverError) {
        self.configuration = configuration
        self.nodeTag = try OverlayDriver.tag(for: configuration.nodeID)
        self.host = host
        self.datapath = datapath
        self.logger = configuration.logger
        self.userspaceDatapath = (datapath as? UserspaceDatapath)
            ?? UserspaceDatapath(host: host, nodeTag: nodeTag, espEncapsulation: configuration.espEncapsulation,
                                 bootID: configuration.bootID, logger: configuration.logger)
        var dir = configuration.stateDirectory
        while dir.count > 1 && dir.hasSuffix("/") { dir.removeLast() }
        guard dir.hasPrefix("/") else {
            throw OverlayDriverError(.invalidName, "state directory '\(configuration.stateDirectory)' must be an absolute path")
        }
        self.handleDirectory = dir + "/netns"
        guard configuration.underlayMTU >= 68 + OverlayDriverConfiguration.vxlanOverhead else {
            throw OverlayDriverError(.invalidMTU, "underlay MTU \(configuration.underlayMTU) leaves no room for VXLAN (need at least \(68 + OverlayDriverConfiguration.vxlanOverhead))")
        }
        var removed = try OverlayDriver.removeStale(handleDirectory: handleDirectory, datapath: datapath)
        if !(datapath is UserspaceDatapath) { removed += try userspaceDatapath.removeStale() }
        self.removedStale = removed
        if !removedStale.isEmpty {
            logger.notice("removed what an earlier run left", metadata: ["removed": "\(removedStale.joined(separator: ", "))"])
        }
        switch configuration.endpointLink {
        case .vethBridge:
            endpointLink = .vethBridge
            endpointLinkFallbackReason = nil
        case .macvlan, .auto:
            if let failure = OverlayDriver.probeMacvlan(handleDirectory: handleDirectory, nodeTag: nodeTag) {
                guard configuration.endpointLink == .auto else {
                    throw OverlayDriverError(.kernel, "endpoint link 'macvlan' was asked for, but this kernel cannot make a MACVLAN (\(failure)); load the macvlan module or use endpoint link 'vethBridge'")
                }
                endpointLink = .vethBridge
                endpointLinkFallbackReason = failure
                logger.notice("MACVLAN unavailable; endpoints use veth + bridge", metadata: ["reason": "\(failure)"])
            } else {
                endpointLink = .macvlan
                endpointLinkFallbackReason = nil
            }
        }
        logger.debug("endpoint link chosen", metadata: ["link": "\(endpointLink)"])
    }

    /// Whether the kernel can make a MACVLAN (on a bridge device, in a scratch namespace
    /// `probe-<tag>` in the handle directory, removed again); nil when it can, else why not.
    static func probeMacvlan(handleDirectory: String, nodeTag: String) -> String? {
        let name = "probe-\(nodeTag)"
        do throws(NetlinkError) {
            let ns = try NetworkNamespace.create(named: name, handleDirectory: handleDirectory)
            defer { try? NetworkNamespace.delete(named: name, handleDirectory: handleDirectory) }
            let socket = try NetlinkSocket(namespace: ns)
            try socket.createBridge(named: "lower")  // any Ethernet device will do; not every kernel has dummy
            try socket.createMacvlan(named: "probe", lower: "lower", mode: .bridge)
            try socket.deleteLink(named: "lower")  // takes the MACVLAN with it
            return nil
        } catch {
            return error.message
        }
    }

    /// The host's `net.core.netdev_max_backlog` (the per-CPU receive backlog every broadcast copy
    /// to a sibling endpoint passes through), when readable.
    static func netdevMaxBacklog() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/sys/net/core/netdev_max_backlog", encoding: .utf8) else { return nil }
        return Int(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// How many endpoints a subnet can have on this host: ``maxEndpointsPerBridge`` in veth +
    /// bridge mode; in MACVLAN mode every address but the network, broadcast and gateway ones.
    public func maxEndpoints(on subnet: OverlayNetwork.Subnet) -> Int {
        switch endpointLink {
        case .vethBridge: return OverlayDriver.maxEndpointsPerBridge
        case .auto, .macvlan:
            guard let count = subnet.cidr.addressCount, count < UInt128(Int.max) else { return Int.max }
            return Int(count) - (subnet.cidr.family == .v4 ? 3 : 2)
        }
    }

    static func tag(for nodeID: String) throws(OverlayDriverError) -> String {
        let tag = String(nodeID.lowercased().unicodeScalars.filter {
            ("a"..."z").contains($0) || ("0"..."9").contains($0)
        }.prefix(6).map(Character.init))
        guard !tag.isEmpty else {
            throw OverlayDriverError(.invalidName, "node ID '\(nodeID)' has no letters or digits to name kernel objects with")
        }
        return tag
    }

    static func hostSocket(_ configuration: OverlayDriverConfiguration) throws(OverlayDriverError) -> NetlinkSocket {
        try kernel("open the host namespace \(configuration.hostNamespacePath ?? "(current)")") { () throws(NetlinkError) in
            let ns: NetworkNamespace
            if let p = configuration.hostNamespacePath { ns = try NetworkNamespace.open(path: p) } else { ns = try NetworkNamespace.current() }
            return try NetlinkSocket(namespace: ns)
        }
    }

    /// Removes every `sb-*` sandbox handle (deleting its links first, so containers lose their veths
    /// and the VXLAN ports are freed at once) and the datapath's host-side leftovers.
    static func removeStale(handleDirectory: String, datapath: any Datapath) throws(OverlayDriverError) -> [String] {
        var removed: [String] = []
        for name in NetworkNamespace.list(handleDirectory: handleDirectory) where name.hasPrefix("probe-") {
            try? NetworkNamespace.delete(named: name, handleDirectory: handleDirectory)
        }
        for name in NetworkNamespace.list(handleDirectory: handleDirectory) where name.hasPrefix("sb-") {
            if let ns = try? NetworkNamespace.open(named: name, handleDirectory: handleDirectory),
               let socket = try? NetlinkSocket(namespace: ns), let links = try? socket.links() {
                // VXLAN devices first (their UDP ports; the containers' MACVLANs on them go with
                // them), then veths (the container ends), then bridges and gateway MACVLANs.
                let order: [String?] = ["vxlan", "veth", "bridge", "macvlan"]
                for kind in order {
                    for link in links where link.kind == kind { try? socket.deleteLink(named: link.name) }
                }
            }
            try kernel("remove stale sandbox \(name)") { () throws(NetlinkError) in
                try NetworkNamespace.delete(named: name, handleDirectory: handleDirectory)
            }
            removed.append("sandbox \(name)")
        }
        removed += try datapath.removeStale()
        return removed
    }

    private func locked<T>(_ body: () throws(OverlayDriverError) -> T) throws(OverlayDriverError) -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    // MARK: Networks

    /// Validates and registers a network. Nothing is built in the kernel until its first endpoint.
    @discardableResult
    public func createNetwork(_ spec: OverlayNetworkSpec) throws(OverlayDriverError) -> OverlayNetwork {
        try locked { () throws(OverlayDriverError) in
            let network = try validate(spec)
            state.networks[network.name] = NetworkState(network: network)
            logger.debug("network created", metadata: ["network": "\(network.name)", "vni": "\(network.subnets.map(\.vni))"])
            return network
        }
    }

    /// Removes a network that has no endpoints left (its peers are forgotten).
    public func removeNetwork(named name: String) throws(OverlayDriverError) {
        try locked { () throws(OverlayDriverError) in
            let net = try networkState(name)
            guard net.endpoints.isEmpty else {
                throw OverlayDriverError(.networkInUse, "network '\(name)' has \(net.endpoints.count) endpoint(s); detach them first")
            }
            state.networks[name] = nil
        }
    }

    /// The networks this driver knows, sorted by name.
    public func networks() -> [OverlayNetwork] {
        lock.withLock { state.networks.values.map(\.network).sorted { $0.name < $1.name } }
    }

    /// The handle path of a network's sandbox namespace, while it exists.
    public func sandboxPath(network name: String) -> String? {
        lock.withLock { state.networks[name]?.sandbox?.namespace.path }
    }

    func validate(_ spec: OverlayNetworkSpec) throws(OverlayDriverError) -> OverlayNetwork {
        try OverlayDriver.validateName(spec.name, what: "network name")
        guard state.networks[spec.name] == nil else {
            throw OverlayDriverError(.duplicateNetwork, "a network named '\(spec.name)' already exists on this host; pick another name or remove it first")
        }
        guard !spec.subnets.isEmpty else {
            throw OverlayDriverError(.invalidSubnet, "network '\(spec.name)' has no subnet; give at least one (like 10.0.1.0/24)")
        }
        var subnets: [OverlayNetwork.Subnet] = []
        for s in spec.subnets {
            let cidr: CIDR
            do { cidr = try CIDR.parse(s.subnet) } catch {
                throw OverlayDriverError(.invalidSubnet, "network '\(spec.name)': \(error.message)")
            }
            guard cidr.family == .v4 ? cidr.prefixLength <= 30 : cidr.prefixLength <= 126 else {
                throw OverlayDriverError(.invalidSubnet, "network '\(spec.name)': subnet \(cidr) is too small for a gateway and an endpoint")
            }
            if let other = subnets.first(where: { $0.cidr.overlaps(cidr) }) {
                throw OverlayDriverError(.invalidSubnet, "network '\(spec.name)': subnet \(cidr) overlaps its subnet \(other.cidr)")
            }
            let gateway: IPAddress
            if let g = s.gateway {
                guard let parsed = IPAddress(g) else {
                    throw OverlayDriverError(.invalidSubnet, "network '\(spec.name)': gateway '\(g)' is not an IP address")
                }
                guard cidr.contains(parsed), parsed != cidr.first, cidr.family == .v6 || parsed != cidr.last else {
                    throw OverlayDriverError(.invalidSubnet, "network '\(spec.name)': gateway \(parsed) is not a usable address of \(cidr)")
                }
                gateway = parsed
            } else {
                gateway = cidr.address(at: 1)!
            }
            let vni: VNI
            do { vni = try VNI(s.vni) } catch {
                throw OverlayDriverError(.invalidVNI, "network '\(spec.name)': \(error.message)")
            }
            if subnets.contains(where: { $0.vni == vni }) {
                throw OverlayDriverError(.duplicateVNI, "network '\(spec.name)' uses VXLAN ID \(vni) for two subnets; give each subnet its own")
            }
            if let other = state.networks.values.first(where: { $0.network.subnets.contains { $0.vni == vni } }) {
                throw OverlayDriverError(.duplicateVNI, "VXLAN ID \(vni) is already used by network '\(other.network.name)'; pick another VXLAN ID")
            }
            subnets.append(OverlayNetwork.Subnet(cidr: cidr, gateway: gateway, vni: vni))
        }
        let maxMTU = spec.encrypted
            ? userspaceDatapath.espEncapsulation.containerMTU(underlayMTU: configuration.underlayMTU)
            : configuration.underlayMTU - OverlayDriverConfiguration.vxlanOverhead
        let mtu = spec.mtu ?? maxMTU
        guard maxMTU >= 68, (68...maxMTU).contains(mtu) else {
            let why = spec.encrypted ? "minus \(OverlayDriverConfiguration.vxlanOverhead) for VXLAN and ESP's overhead" : "minus \(OverlayDriverConfiguration.vxlanOverhead) for VXLAN"
            throw OverlayDriverError(.invalidMTU, "network '\(spec.name)': MTU \(mtu) must be 68...\(maxMTU) (underlay MTU \(configuration.underlayMTU) \(why))")
        }
        if spec.encrypted && configuration.dataPathAddress.v4 == nil {
            throw OverlayDriverError(.invalidSubnet, "network '\(spec.name)' is encrypted, but the userspace ESP datapath needs an IPv4 data-path address (this host has \(configuration.dataPathAddress))")
        }
        return OverlayNetwork(name: spec.name, subnets: subnets, mtu: mtu, encrypted: spec.encrypted)
    }

    static func validateName(_ name: String, what: String) throws(OverlayDriverError) {
        let ok = !name.isEmpty && name.utf8.count <= 64 && name.unicodeScalars.allSatisfy {
            ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || "_.-".unicodeScalars.contains($0)
        }
        guard ok else {
            throw OverlayDriverError(.invalidName, "\(what) '\(name)' must be 1-64 of A-Z a-z 0-9 _ . -")
        }
    }

    private func networkState(_ name: String) throws(OverlayDriverError) -> NetworkState {
        guard let net = state.networks[name] else {
            throw OverlayDriverError(.unknownNetwork, "no network named '\(name)' on this host; create it first")
        }
        return net
    }

    // MARK: Endpoints

    /// Attaches a namespace to a network: its interface gets the name, MAC, address and MTU asked
    /// for, and routes to the network's other subnets via its gateway. The interface is a MACVLAN on
    /// the subnet's tunnel device, or (veth + bridge mode) a veth whose sandbox end joins the
    /// subnet's bridge. Builds the sandbox on the network's first endpoint. On failure nothing of
    /// this call remains.
    @discardableResult
    public func attach(_ spec: EndpointSpec) throws(OverlayDriverError) -> OverlayEndpoint {
        try locked { () throws(OverlayDriverError) in try attachLocked(spec) }
    }

    private func attachLocked(_ spec: EndpointSpec) throws(OverlayDriverError) -> OverlayEndpoint {
        try OverlayDriver.validateName(spec.id, what: "endpoint ID")
        var net = try networkState(spec.network)
        guard state.endpointNetwork[spec.id] == nil else {
            throw OverlayDriverError(.duplicateEndpoint, "endpoint '\(spec.id)' is already attached; detach it first or use another ID")
        }
        guard spec.interfaceName.utf8.count < 16, !spec.interfaceName.isEmpty,
              !spec.interfaceName.contains("/"), !spec.interfaceName.contains(" ")
        else {
            throw OverlayDriverError(.invalidName, "interface name '\(spec.interfaceName)' must be 1-15 bytes without '/' or spaces")
        }
        guard let index = net.network.subnetIndex(of: spec.address) else {
            throw OverlayDriverError(.addressNotInNetwork, "address \(spec.address) is in none of network '\(net.network.name)'s subnets (\(net.network.subnets.map { "\($0.cidr)" }.joined(separator: ", ")))")
        }
        let subnet = net.network.subnets[index]
        guard spec.address != subnet.gateway, spec.address != subnet.cidr.first,
              subnet.cidr.family == .v6 || spec.address != subnet.cidr.last
        else {
            throw OverlayDriverError(.addressNotInNetwork, "address \(spec.address) is the network, broadcast or gateway address of \(subnet.cidr); use another")
        }
        let onSubnet = net.endpoints.values.reduce(0) { $0 + (subnet.cidr.contains($1.address) ? 1 : 0) }
        guard onSubnet < maxEndpoints(on: subnet) else {
            let why = endpointLink == .vethBridge
                ? "as many as one Linux bridge takes (1,023 ports, one for the VXLAN device); add another subnet to the network, or use MACVLAN endpoints"
                : "every usable address of the subnet; add another subnet to the network"
            throw OverlayDriverError(.capacityExceeded, "subnet \(subnet.cidr) of network '\(net.network.name)' already has \(onSubnet) endpoints on this host, \(why)")
        }
        if let backlog = OverlayDriver.netdevMaxBacklog(), onSubnet + 1 == backlog {
            // A broadcast (ARP) from one endpoint is copied to every sibling MACVLAN or bridge port
            // into the sender CPU's backlog before the VXLAN device's proxy-ARP reply is queued
            // behind them; with as many siblings as the backlog holds, that reply is dropped.
            logger.warning("endpoints on one subnet reach net.core.netdev_max_backlog; ARP replies will be lost", metadata: [
                "network": "\(net.network.name)", "subnet": "\(subnet.cidr)", "endpoints": "\(onSubnet + 1)",
                "netdev_max_backlog": "\(backlog)", "fix": "raise net.core.netdev_max_backlog above the endpoint count",
            ])
        }
        if let other = net.endpoints.values.first(where: { $0.address == spec.address }) {
            throw OverlayDriverError(.duplicateAddress, "address \(spec.address) is already used by endpoint '\(other.id)' on network '\(net.network.name)'")
        }
        if let peer = net.peers[spec.address] {
            throw OverlayDriverError(.duplicateAddress, "address \(spec.address) is already used by peer \(peer) on network '\(net.network.name)'")
        }
        let mac = spec.mac ?? spec.address.v4.map { MACAddress(derivedFrom: $0) } ?? MACAddress.randomLocallyAdministered()
        let container: NetworkNamespace
        do {
            switch spec.namespace {
            case .path(let p): container = try NetworkNamespace.open(path: p)
            case .pid(let pid): container = try NetworkNamespace.open(pid: pid)
            }
        } catch {
            let code: OverlayDriverError.Code = error.code == .notFound || error.code == .invalidArgument ? .namespaceNotFound : .kernel
            throw OverlayDriverError(code, "cannot attach endpoint '\(spec.id)': namespace \(spec.namespace) \(code == .namespaceNotFound ? "does not exist or is not a network namespace" : "cannot be opened") (\(error.message))")
        }

        let builtSandbox = net.sandbox == nil
        if builtSandbox {
            net.sandbox = try buildSandbox(net)
        }
        let sandbox = net.sandbox!
        var sandboxInterface: String?
        do throws(OverlayDriverError) {
            switch endpointLink {
            case .vethBridge:
                let veth = "ve\(sandbox.nextVeth)"
                sandbox.nextVeth += 1
                sandboxInterface = veth
                try kernel("attach endpoint '\(spec.id)' to network '\(net.network.name)'") { () throws(NetlinkError) in
                    try sandbox.socket.createVeth(named: veth, peerName: spec.interfaceName, peerNamespace: container, mtu: net.network.mtu)
                    try sandbox.socket.setMaster(subnet.bridgeName, of: veth)
                    try sandbox.socket.setUp(veth)
                    let c = try NetlinkSocket(namespace: container)
                    try c.setMAC(mac, of: spec.interfaceName)
                    if spec.configuresInterface { try configureContainer(c, container, spec, net.network, subnet) }
                }
            case .auto, .macvlan:
                var created = false
                do throws(OverlayDriverError) {
                    try kernel("attach endpoint '\(spec.id)' to network '\(net.network.name)'") { () throws(NetlinkError) in
                        let c = try NetlinkSocket(namespace: container)
                        try sandbox.socket.createMacvlan(
                            named: spec.interfaceName, lower: subnet.tunnelName, mode: .bridge, mac: mac, mtu: net.network.mtu,
                            namespace: container)
                        created = true
                        if spec.configuresInterface { try configureContainer(c, container, spec, net.network, subnet) }
                    }
                } catch {
                    // Only what this call made: an existing interface of that name is the caller's.
                    if created, let c = try? NetlinkSocket(namespace: container) { try? c.deleteLink(named: spec.interfaceName) }
                    throw error
                }
            }
        } catch {
            if let sandboxInterface { try? sandbox.socket.deleteLink(named: sandboxInterface) }
            if builtSandbox { teardownSandbox(net.network, sandbox) }
            throw mapAttachError(error, spec)
        }
        if let v4 = spec.address.v4, spec.configuresInterface {
            Announce.gratuitousARP(v4, mac: mac, interface: spec.interfaceName, in: container)
        }
        let endpoint = OverlayEndpoint(
            id: spec.id, network: net.network.name, namespace: spec.namespace, address: spec.address,
            prefixLength: subnet.cidr.prefixLength, mac: mac, interfaceName: spec.interfaceName, mtu: net.network.mtu,
            gateway: subnet.gateway, link: endpointLink, sandboxInterface: sandboxInterface, vtep: configuration.dataPathAddress)
        net.endpoints[spec.id] = endpoint
        state.networks[net.network.name] = net
        state.endpointNetwork[spec.id] = net.network.name
        logger.debug("endpoint attached", metadata: ["endpoint": "\(spec.id)", "network": "\(net.network.name)", "address": "\(spec.address)"])
        return endpoint
    }

    /// Addresses a new endpoint interface in its container, brings it up and adds routes to the
    /// network's other subnets.
    private func configureContainer(
        _ c: NetlinkSocket, _ container: NetworkNamespace, _ spec: EndpointSpec, _ network: OverlayNetwork,
        _ subnet: OverlayNetwork.Subnet
    ) throws(NetlinkError) {
        if spec.address.family == .v6 {
            // The address is ours by IPAM: no duplicate detection (Docker adds it NODAD), so
            // it is usable at once instead of tentative for a second.
            try container.setSysctl("net/ipv6/conf/\(spec.interfaceName)/accept_dad", to: "0")
        }
        try c.addAddress(InterfaceAddress(spec.address, prefixLength: subnet.cidr.prefixLength)!, to: spec.interfaceName)
        try c.setUp(spec.interfaceName)
        for other in network.subnets where other.vni != subnet.vni && other.cidr.family == subnet.cidr.family {
            try c.replaceRoute(Route(destination: other.cidr, gateway: subnet.gateway, device: spec.interfaceName))
        }
    }

    private func mapAttachError(_ error: OverlayDriverError, _ spec: EndpointSpec) -> OverlayDriverError {
        if error.message.contains("exists") && error.message.contains(spec.interfaceName) {
            return OverlayDriverError(.kernel, "\(error.message) (is there already an interface \(spec.interfaceName) in \(spec.namespace)? pick another interface name)")
        }
        return error
    }

    /// Detaches an endpoint: deletes its veth pair or MACVLAN (the container's interface and
    /// routes go with it). Removes the sandbox when it was the network's last endpoint.
    ///
    /// A MACVLAN lives only in the container's namespace: when that namespace can no longer be
    /// opened (its handle was removed), its interface went with it or goes when the sandbox's
    /// tunnel device does; an interface of that name that is not this endpoint's MACVLAN is left
    /// alone.
    public func detach(endpoint id: String) throws(OverlayDriverError) {
        try locked { () throws(OverlayDriverError) in
            guard let name = state.endpointNetwork[id], var net = state.networks[name],
                  let endpoint = net.endpoints[id], let sandbox = net.sandbox
            else {
                throw OverlayDriverError(.unknownEndpoint, "no endpoint '\(id)' is attached on this host")
            }
            if let veth = endpoint.sandboxInterface {
                try ignoringNotFound("detach endpoint '\(id)' (delete \(veth) in \(sandbox.namespace.name))") {
                    () throws(NetlinkError) in try sandbox.socket.deleteLink(named: veth)
                }
            } else {
                try detachMacvlan(endpoint)
            }
            net.endpoints[id] = nil
            state.endpointNetwork[id] = nil
            if net.endpoints.isEmpty {
                teardownSandbox(net.network, sandbox)
                net.sandbox = nil
            }
            state.networks[name] = net
        }
    }

    private func detachMacvlan(_ endpoint: OverlayEndpoint) throws(OverlayDriverError) {
        let container: NetworkNamespace
        do {
            switch endpoint.namespace {
            case .path(let p): container = try NetworkNamespace.open(path: p)
            case .pid(let pid): container = try NetworkNamespace.open(pid: pid)
            }
        } catch {
            logger.debug("endpoint namespace is gone", metadata: ["endpoint": "\(endpoint.id)", "error": "\(error)"])
            return
        }
        try ignoringNotFound("detach endpoint '\(endpoint.id)' (delete \(endpoint.interfaceName) in \(endpoint.namespace))") {
            () throws(NetlinkError) in
            let c = try NetlinkSocket(namespace: container)
            let link = try c.link(named: endpoint.interfaceName)
            guard link.kind == "macvlan", link.mac == endpoint.mac else {
                logger.warning("endpoint interface was replaced; leaving it", metadata: [
                    "endpoint": "\(endpoint.id)", "interface": "\(endpoint.interfaceName)", "kind": "\(link.kind ?? "-")",
                ])
                return
            }
            try c.deleteLink(named: endpoint.interfaceName)
        }
    }

    /// The endpoints attached on this host, on one network or all, sorted by ID.
    public func endpoints(network: String? = nil) -> [OverlayEndpoint] {
        lock.withLock {
            state.networks.values.filter { network == nil || $0.network.name == network }
                .flatMap(\.endpoints.values).sorted { $0.id < $1.id }
        }
    }

    // MARK: Peers

    /// Adds or replaces a remote endpoint of a network: its address answers with its MAC (proxy
    /// ARP) and frames to its MAC go to its VTEP. Idempotent; a new MAC or VTEP for the same address
    /// replaces the old entry. Kept while no sandbox exists and programmed when one is built.
    /// Peers on this host's own VTEP are recorded but not programmed.
    public func addPeer(_ peer: PeerEntry, network name: String) throws(OverlayDriverError) {
        try locked { () throws(OverlayDriverError) in
            var net = try networkState(name)
            guard let index = net.network.subnetIndex(of: peer.address) else {
                throw OverlayDriverError(.addressNotInNetwork, "peer \(peer) is in none of network '\(name)'s subnets")
            }
            if let local = net.endpoints.values.first(where: { $0.address == peer.address }) {
                throw OverlayDriverError(.duplicateAddress, "peer \(peer) has the address of local endpoint '\(local.id)' on network '\(name)'")
            }
            if let old = net.peers[peer.address] {
                if old == peer { return }
                try unprogram(old, &net)
            }
            net.peers[peer.address] = peer
            do throws(OverlayDriverError) {
                try program(peer, index, &net)
            } catch {
                // Undo the reference and any partial entry, so a retry programs it afresh.
                try? unprogram(peer, &net)
                net.peers[peer.address] = nil
                state.networks[name] = net
                throw error
            }
            state.networks[name] = net
        }
    }

    /// Adds many peers at once (what a gossip table sync delivers); stops at the first failure.
    public func addPeers(_ peers: [PeerEntry], network name: String) throws(OverlayDriverError) {
        for peer in peers { try addPeer(peer, network: name) }
    }

    /// Removes a remote endpoint if the driver has exactly this entry for its address (a stale
    /// removal after a replace is ignored). Returns whether anything was removed.
    @discardableResult
    public func removePeer(_ peer: PeerEntry, network name: String) throws(OverlayDriverError) -> Bool {
        try locked { () throws(OverlayDriverError) in
            var net = try networkState(name)
            guard net.peers[peer.address] == peer else { return false }
            net.peers[peer.address] = nil
            try unprogram(peer, &net)
            state.networks[name] = net
            return true
        }
    }

    /// The peers a network has, sorted by address.
    public func peers(network name: String) throws(OverlayDriverError) -> [PeerEntry] {
        try locked { () throws(OverlayDriverError) in try networkState(name).peers.values.sorted { $0.address < $1.address } }
    }

    private func isLocal(_ peer: PeerEntry) -> Bool { peer.vtep == configuration.dataPathAddress }

    private func program(_ peer: PeerEntry, _ index: Int, _ net: inout NetworkState) throws(OverlayDriverError) {
        guard !isLocal(peer) else { return }
        let key = VTEPKey(subnet: index, vtep: peer.vtep)
        let count = net.vtepRefs[key, default: 0]
        net.vtepRefs[key] = count + 1
        guard let sandbox = net.sandbox else { return }
        let tunnel = tunnelSpec(net.network, index)
        let datapath = datapath(for: net.network)
        if count == 0 { try datapath.addRemoteVTEP(peer.vtep, on: tunnel, in: sandbox.socket) }
        try datapath.programPeer(peer, on: tunnel, in: sandbox.socket)
    }

    private func unprogram(_ peer: PeerEntry, _ net: inout NetworkState) throws(OverlayDriverError) {
        guard !isLocal(peer), let index = net.network.subnetIndex(of: peer.address) else { return }
        let key = VTEPKey(subnet: index, vtep: peer.vtep)
        let count = net.vtepRefs[key, default: 0]
        net.vtepRefs[key] = count > 1 ? count - 1 : nil
        guard let sandbox = net.sandbox else { return }
        let tunnel = tunnelSpec(net.network, index)
        let datapath = datapath(for: net.network)
        try datapath.unprogramPeer(peer, on: tunnel, in: sandbox.socket)
        if count <= 1 { try datapath.removeRemoteVTEP(peer.vtep, on: tunnel, in: sandbox.socket) }
    }

    // MARK: Encryption

    /// Installs the managers' IPsec keyring for every encrypted network (nil removes the keys:
    /// encrypted networks then send nothing). See ``UserspaceDatapath/setKeys(_:)``.
    public func setIPsecKeys(_ ring: IPsecKeyring?) {
        userspaceDatapath.setKeys(ring)
    }

    /// Whether an encrypted network can send (ok, no keys yet, or a sealing error); nil for a
    /// plain network. For `network inspect` and `node ls`.
    public func encryptionStatus(network name: String) throws(OverlayDriverError) -> EncryptionStatus? {
        let network = try locked { () throws(OverlayDriverError) in try networkState(name).network }
        guard network.encrypted else { return nil }
        var worst = EncryptionStatus.ok
        for s in network.subnets {
            let status = userspaceDatapath.encryptionStatus(vni: s.vni)
            if status != .ok { worst = status }
        }
        return network.subnets.isEmpty ? userspaceDatapath.encryptionStatus(vni: nil) : worst
    }

    /// Cleartext VXLAN packets for an encrypted network's VNIs dropped by its nftables rule in the
    /// host namespace (0 while it has no tunnel); nil for a plain network.
    public func cleartextDrops(network name: String) throws(OverlayDriverError) -> UInt64? {
        let network = try locked { () throws(OverlayDriverError) in try networkState(name).network }
        guard network.encrypted else { return nil }
        return network.subnets.reduce(0) { $0 + (userspaceDatapath.cleartextDrops(vni: $1.vni) ?? 0) }
    }

    // MARK: Sandboxes

    func tunnelSpec(_ network: OverlayNetwork, _ index: Int) -> TunnelSpec {
        let s = network.subnets[index]
        return TunnelSpec(
            vni: s.vni, port: configuration.dataPathPort, localVTEP: configuration.dataPathAddress, mtu: network.mtu,
            deviceName: s.tunnelName, bridge: endpointLink == .vethBridge ? s.bridgeName : nil, network: network.name)
    }

    /// The datapath a network's tunnels use: the userspace one for encrypted networks.
    func datapath(for network: OverlayNetwork) -> any Datapath {
        network.encrypted ? userspaceDatapath : datapath
    }

    private func buildSandbox(_ net: NetworkState) throws(OverlayDriverError) -> Sandbox {
        let network = net.network
        let datapath = datapath(for: network)
        let name = network.sandboxName
        let started = ContinuousClock.now
        let namespace = try kernel("create sandbox \(name) for network '\(network.name)' in \(handleDirectory)") {
            () throws(NetlinkError) in try NetworkNamespace.create(named: name, handleDirectory: handleDirectory)
        }
        var socket: NetlinkSocket?
        var tunnels: [TunnelSpec] = []
        do {
            let sb = try kernel("open sandbox \(name)") { () throws(NetlinkError) in try NetlinkSocket(namespace: namespace) }
            socket = sb
            try kernel("set up sandbox \(name)") { () throws(NetlinkError) in
                try sb.setUp("lo")
                // An IPv4-only network needs no IPv6 on its bridges and veth ends (no DAD, MLD or
                // router solicitations on every port).
                if !network.subnets.contains(where: { $0.cidr.family == .v6 }) {
                    try namespace.setSysctl("net.ipv6.conf.default.disable_ipv6", to: "1")
                    try namespace.setSysctl("net.ipv6.conf.all.disable_ipv6", to: "1")
                } else {
                    try namespace.setSysctl("net.ipv6.conf.default.accept_dad", to: "0")
                }
                // Bridged overlay frames need not pass iptables/arptables (br_netfilter, when the
                // host has it loaded, turns these on in every new namespace): a per-packet cost
                // for nothing, since the overlay's own filtering lives in nftables tables.
                for key in ["net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables",
                            "net.bridge.bridge-nf-call-arptables"] where (try? namespace.sysctl(key)) != nil {
                    try namespace.setSysctl(key, to: "0")
                }
                if network.subnets.count > 1 {
                    try namespace.setSysctl("net.ipv4.ip_forward", to: "1")
                    try namespace.setSysctl("net.ipv6.conf.all.forwarding", to: "1")
                }
            }
            for (i, s) in network.subnets.enumerated() {
                let tunnel = tunnelSpec(network, i)
                if endpointLink == .vethBridge {
                    try kernel("create bridge \(s.bridgeName) in sandbox \(name)") { () throws(NetlinkError) in
                        try sb.createBridge(named: s.bridgeName, mtu: network.mtu)
                        try sb.addAddress(InterfaceAddress(s.gateway, prefixLength: s.cidr.prefixLength)!, to: s.bridgeName)
                        try sb.setUp(s.bridgeName)
                    }
                    try datapath.createTunnel(tunnel, in: sb)
                    tunnels.append(tunnel)
                } else {
                    try datapath.createTunnel(tunnel, in: sb)
                    tunnels.append(tunnel)
                    // The gateway: a MACVLAN sibling of the endpoints, so they reach it directly.
                    try kernel("create gateway \(s.gatewayLinkName) on \(s.tunnelName) in sandbox \(name)") { () throws(NetlinkError) in
                        try sb.createMacvlan(named: s.gatewayLinkName, lower: s.tunnelName, mode: .bridge, mtu: network.mtu)
                        try sb.addAddress(InterfaceAddress(s.gateway, prefixLength: s.cidr.prefixLength)!, to: s.gatewayLinkName)
                        try sb.setUp(s.gatewayLinkName)
                    }
                }
            }
            // Replay what was learned before the sandbox existed.
            for (key, _) in net.vtepRefs {
                try datapath.addRemoteVTEP(key.vtep, on: tunnels[key.subnet], in: sb)
            }
            for peer in net.peers.values where !isLocal(peer) {
                guard let i = network.subnetIndex(of: peer.address) else { continue }
                try datapath.programPeer(peer, on: tunnels[i], in: sb)
            }
        } catch {
            if let socket {
                for s in network.subnets { try? socket.deleteLink(named: s.gatewayLinkName) }
                for t in tunnels { try? datapath.removeTunnel(t, in: socket) }
                for s in network.subnets { try? socket.deleteLink(named: s.bridgeName) }
            }
            try? NetworkNamespace.delete(named: name, handleDirectory: handleDirectory)
            throw error
        }
        logger.debug("sandbox created", metadata: [
            "network": "\(network.name)", "sandbox": "\(handleDirectory)/\(name)",
            "peers": "\(net.peers.count)", "took": "\(ContinuousClock.now - started)",
        ])
        return Sandbox(namespace: namespace, socket: socket!)
    }

    /// Deletes a sandbox's links and its handle. Never throws: teardown must finish.
    private func teardownSandbox(_ network: OverlayNetwork, _ sandbox: Sandbox) {
        let datapath = datapath(for: network)
        for i in network.subnets.indices {
            do { try datapath.removeTunnel(tunnelSpec(network, i), in: sandbox.socket) } catch {
                logger.warning("tunnel removal failed", metadata: ["error": "\(error)"])
            }
        }
        // Bridges (or gateway MACVLANs) go now; veth ends go with the namespace when its last
        // reference (this sandbox's socket and descriptor) is released, in one kernel batch rather
        // than one by one. Endpoint MACVLANs went with their tunnel device, their lower device.
        for s in network.subnets {
            let link = endpointLink == .vethBridge ? s.bridgeName : s.gatewayLinkName
            do throws(NetlinkError) { try sandbox.socket.deleteLink(named: link) } catch {
                if error.code != .notFound { logger.warning("bridge or gateway removal failed", metadata: ["error": "\(error)"]) }
            }
        }
        do {
            try NetworkNamespace.delete(named: network.sandboxName, handleDirectory: handleDirectory)
        } catch {
            logger.warning("sandbox removal failed", metadata: ["error": "\(error)"])
        }
        logger.debug("sandbox removed", metadata: ["network": "\(network.name)"])
    }

    /// Detaches every endpoint and removes every sandbox (peers and networks are kept), then the
    /// handle directory's mount and the directory itself when nothing else is in it. For an orderly
    /// stop; a driver that is simply released leaves its sandboxes for the next start-up.
    public func shutdown() {
        lock.withLock {
            for (name, var net) in state.networks {
                if let sandbox = net.sandbox { teardownSandbox(net.network, sandbox) }
                for id in net.endpoints.keys { state.endpointNetwork[id] = nil }
                net.endpoints = [:]
                net.sandbox = nil
                state.networks[name] = net
            }
            userspaceDatapath.stop()
            if NetworkNamespace.list(handleDirectory: handleDirectory).isEmpty {
                do { try NetworkNamespace.removeHandleDirectory(handleDirectory) } catch {
                    logger.warning("could not remove the handle directory", metadata: ["error": "\(error)"])
                }
            }
        }
    }
}

// MARK: - State

struct VTEPKey: Hashable {
    let subnet: Int
    let vtep: IPAddress
}

/// A built sandbox: its namespace, a socket in it, and the counter naming its veths.
final class Sandbox {
    let namespace: NetworkNamespace
    let socket: NetlinkSocket
    var nextVeth = 0

    init(namespace: NetworkNamespace, socket: NetlinkSocket) {
        self.namespace = namespace
        self.socket = socket
    }
}

struct NetworkState {
    let network: OverlayNetwork
    var endpoints: [String: OverlayEndpoint] = [:]
    var peers: [IPAddress: PeerEntry] = [:]
    /// How many programmed (non-local) peers each (subnet, VTEP) has: the flood entry exists while > 0.
    var vtepRefs: [VTEPKey: Int] = [:]
    var sandbox: Sandbox?
}

struct DriverState {
    var networks: [String: NetworkState] = [:]
    var endpointNetwork: [String: String] = [:]
}
