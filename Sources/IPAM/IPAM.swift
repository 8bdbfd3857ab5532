import OverlayModel

/// What a user asked for one subnet of a network: Docker's `--subnet`, `--gateway`, `--ip-range`
/// and `--aux-address`. With no subnet, one is allocated from the pools of `family`.
public struct SubnetRequest: Hashable, Sendable {
    /// The family to allocate from when `subnet` is nil.
    public var family: IPFamily
    /// An explicit subnet (`--subnet`), or nil to take the next free one from the pools.
    public var subnet: CIDR?
    /// An explicit gateway (`--gateway`); nil means the first usable address.
    public var gateway: IPAddress?
    /// The sub-range dynamic allocation is limited to (`--ip-range`).
    public var ipRange: CIDR?
    /// Names for addresses that are never handed out (`--aux-address name=IP`).
    public var auxAddresses: [String: IPAddress]

    /// Makes a request; `family` defaults to the subnet's family, or IPv4.
    public init(
        subnet: CIDR? = nil, gateway: IPAddress? = nil, ipRange: CIDR? = nil, auxAddresses: [String: IPAddress] = [:],
        family: IPFamily? = nil
    ) {
        self.family = family ?? subnet?.family ?? .v4
        self.subnet = subnet
        self.gateway = gateway
        self.ipRange = ipRange
        self.auxAddresses = auxAddresses
    }
}

/// The IP address manager of a cluster or host: pools to carve network subnets from, the subnets
/// taken (by any network, from a pool or given explicitly), and each network's addresses.
///
/// A value type with no I/O: persist it with ``snapshot()`` and ``init(restoring:)``. Subnets are
/// tracked per family in a `RunSet` of absolute addresses, so finding the next free subnet of
/// a pool skips whole allocated ranges instead of testing subnets one by one.
public struct IPAM: Sendable {
    /// The pools dynamic subnets come from, tried in order.
    public let pools: [AddressPool]
    /// How each network hands out addresses.
    public let strategy: AllocationStrategy

    private var networks: [String: [AddressSpace]] = [:]
    private var owners: [CIDR: String] = [:]
    private var v4Subnets = RunSet()
    private var v6Subnets = RunSet()

    /// Makes an empty manager. Defaults are Docker swarm's: 10.0.0.0/8 split into /24s, serial
    /// address allocation.
    public init(pools: [AddressPool] = AddressPool.globalDefaults, strategy: AllocationStrategy = .serial) {
        self.pools = pools
        self.strategy = strategy
    }

    // MARK: Queries

    /// The names of the networks, sorted.
    public var networkNames: [String] { networks.keys.sorted() }

    /// The address spaces (one per subnet) of a network, or nil when there is no such network.
    public func network(_ name: String) -> [AddressSpace]? { networks[name] }

    /// The name of the network that holds exactly `subnet`, if any.
    public func owner(of subnet: CIDR) -> String? { owners[subnet] }

    /// Every allocated subnet with its network, sorted by subnet.
    public var allocatedSubnets: [(subnet: CIDR, network: String)] {
        owners.keys.sorted().map { ($0, owners[$0]!) }
    }

    // MARK: Networks

    /// Creates a network with one address space per request (Docker's `network create` IPAM
    /// options; the default is one IPv4 subnet from the pools). Explicit subnets are checked against
    /// every allocated subnet, in any pool or none; dynamic ones are the first free subnet of a
    /// pool's size that overlaps nothing. All or nothing: on error nothing changes.
    @discardableResult
    public mutating func createNetwork(_ name: String, subnets requests: [SubnetRequest] = [SubnetRequest()])
        throws(IPAMError) -> [AddressSpace]
    {
        guard !name.isEmpty else { throw IPAMError(.invalidConfiguration, "a network needs a name") }
        guard networks[name] == nil else {
            throw IPAMError(.networkExists, "network '\(name)' already exists; pick another name or remove it first")
        }
        var work = self
        var spaces: [AddressSpace] = []
        for request in (requests.isEmpty ? [SubnetRequest()] : requests) {
            let subnet: CIDR
            if let explicit = request.subnet {
                try work.checkFree(explicit)
                subnet = explicit
            } else {
                for (flag, given) in [("--gateway", request.gateway != nil), ("--ip-range", request.ipRange != nil),
                                      ("--aux-address", !request.auxAddresses.isEmpty)] where given {
                    throw IPAMError(.invalidConfiguration, "\(flag) needs a --subnet to go with it")
                }
                subnet = try work.nextFreeSubnet(family: request.family)
            }
            work.take(subnet, for: name)
            spaces.append(
                try AddressSpace(
                    subnet: subnet, gateway: request.gateway, ipRange: request.ipRange,
                    auxAddresses: request.auxAddresses, strategy: strategy, networkName: name))
        }
        work.networks[name] = spaces
        self = work
        return spaces
    }

    /// Removes a network and gives its subnets (and so all its addresses) back.
    public mutating func removeNetwork(_ name: String) throws(IPAMError) {
        guard let spaces = networks.removeValue(forKey: name) else {
            throw IPAMError(.unknownNetwork, "network '\(name)' does not exist")
        }
        for space in spaces {
            let s = space.subnet
            owners[s] = nil
            if s.family == .v4 { v4Subnets.remove(s.first.integer, s.last.integer) }
            else { v6Subnets.remove(s.first.integer, s.last.integer) }
        }
    }

    private mutating func take(_ subnet: CIDR, for name: String) {
        owners[subnet] = name
        if subnet.family == .v4 { v4Subnets.insert(subnet.first.integer, subnet.last.integer) }
        else { v6Subnets.insert(subnet.first.integer, subnet.last.integer) }
    }

    /// Throws `subnetOverlap`, naming the conflicting subnet and network, when `subnet` overlaps
    /// anything allocated.
    private func checkFree(_ subnet: CIDR) throws(IPAMError) {
        let set = subnet.family == .v4 ? v4Subnets : v6Subnets
        guard set.intersects(subnet.first.integer, subnet.last.integer) else { return }
        let conflict = owners.keys.sorted().first { $0.overlaps(subnet) }!
        throw IPAMError(.subnetOverlap, "subnet \(subnet) overlaps \(conflict) of network '\(owners[conflict]!)'")
    }

    /// The first free subnet of the first pool of `family` that has one.
    private func nextFreeSubnet(family: IPFamily) throws(IPAMError) -> CIDR {
        let candidates = pools.filter { $0.family == family }
        guard !candidates.isEmpty else {
            throw IPAMError(
                .noPool, "no \(family.rawValue) address pool is configured; pass --subnet or add a --default-addr-pool")
        }
        for pool in candidates {
            if let s = freeSubnet(in: pool) { return s }
        }
        if candidates.count == 1 {
            let p = candidates[0]
            throw IPAMError(.poolExhausted, "pool \(p.base) is exhausted: no free /\(p.size) left; add a --default-addr-pool")
        }
        let list = candidates.map { "\($0.base) (/\($0.size))" }.joined(separator: ", ")
        throw IPAMError(
            .poolExhausted, "all \(family.rawValue) pools are exhausted: no free subnet left in \(list); add a --default-addr-pool")
    }

    /// The lowest subnet of `pool.size` inside `pool.base` that overlaps no allocated subnet.
    /// Each step jumps past one allocated run, so this is O(runs in the pool * log runs).
    func freeSubnet(in pool: AddressPool) -> CIDR? {
        let set = pool.family == .v4 ? v4Subnets : v6Subnets
        let hostBits = pool.family.bitWidth - pool.size
        let mask: UInt128 = hostBits >= 128 ? .max : (UInt128(1) << hostBits) - 1
        let last = pool.base.last.integer
        var a = pool.base.first.integer
        while true {
            let b = a | mask
            guard let r = set.firstRun(endingAtOrAfter: a), r.lo <= b else {
                return try? CIDR(network: IPAddress(family: pool.family, integer: a)!, prefixLength: pool.size)
            }
            guard r.hi < last else { return nil }
            let next = r.hi + 1
            let down = next & ~mask
            a = down == next ? next : down &+ mask &+ 1
            if a == 0 || a > last { return nil }
        }
    }

    // MARK: Addresses

    /// Hands out the next address of `family` in network `name` (first subnet of that family with
    /// room, in creation order).
    public mutating func allocateAddress(in name: String, family: IPFamily = .v4) throws(IPAMError) -> IPAddress {
        // Mutate in place through the dictionary: holding a copy of the spaces here would make
        // the run structure copy-on-write on every call.
        guard let count = networks[name]?.count else {
            throw IPAMError(.unknownNetwork, "network '\(name)' does not exist")
        }
        var lastError: IPAMError?
        for i in 0..<count where networks[name]![i].subnet.family == family {
            do {
                return try networks[name]![i].allocate()
            } catch {
                lastError = error
            }
        }
        throw lastError ?? IPAMError(.addressOutsideSubnet, "network '\(name)' has no \(family.rawValue) subnet")
    }

    /// Takes an explicit address (`--ip`) in network `name`.
    public mutating func requestAddress(_ address: IPAddress, in name: String) throws(IPAMError) {
        let i = try spaceIndex(for: address, in: name)
        try networks[name]![i].request(address)
    }

    /// Gives an address of network `name` back; an address that is not allocated is an error.
    public mutating func releaseAddress(_ address: IPAddress, in name: String) throws(IPAMError) {
        let i = try spaceIndex(for: address, in: name)
        try networks[name]![i].release(address)
    }

    private func spaceIndex(for address: IPAddress, in name: String) throws(IPAMError) -> Int {
        guard let spaces = networks[name] else {
            throw IPAMError(.unknownNetwork, "network '\(name)' does not exist")
        }
        guard let i = spaces.firstIndex(where: { $0.subnet.contains(address) }) else {
            let list = spaces.map(\.subnet.description).joined(separator: ", ")
            throw IPAMError(.addressOutsideSubnet, "address \(address) is not in any subnet of network '\(name)' (\(list))")
        }
        return i
    }

    // MARK: Snapshot

    /// The whole state as a value that encodes to stable JSON (with `.sortedKeys`) and restores
    /// exactly: networks sorted by name, subnets in creation order.
    public func snapshot() -> IPAMSnapshot {
        IPAMSnapshot(
            version: IPAMSnapshot.currentVersion, strategy: strategy, pools: pools,
            networks: networkNames.map { NetworkSnapshot(name: $0, subnets: networks[$0]!.map { $0.snapshot() }) })
    }

    /// Restores a manager from ``snapshot()``; it then behaves exactly like the one snapshotted
    /// (same subnets and addresses next, same serial cursors). Refuses inconsistent snapshots.
    public init(restoring s: IPAMSnapshot) throws(IPAMError) {
        guard s.version == IPAMSnapshot.currentVersion else {
            throw IPAMError(.invalidSnapshot, "snapshot version \(s.version) is not supported (this build reads \(IPAMSnapshot.currentVersion))")
        }
        self.init(pools: s.pools, strategy: s.strategy)
        for n in s.networks {
            guard !n.name.isEmpty, networks[n.name] == nil else {
                throw IPAMError(.invalidSnapshot, "snapshot names network '\(n.name)' twice or without a name")
            }
            var spaces: [AddressSpace] = []
            for sub in n.subnets {
                do { try checkFree(sub.subnet) } catch {
                    throw IPAMError(.invalidSnapshot, "snapshot of network '\(n.name)': \(error.message)")
                }
                take(sub.subnet, for: n.name)
                spaces.append(try AddressSpace(restoring: sub, networkName: n.name))
            }
            networks[n.name] = spaces
        }
    }
}

/// The persisted state of an ``IPAM``.
public struct IPAMSnapshot: Hashable, Sendable, Codable {
    /// The format version this build writes and reads.
    public static let currentVersion = 1

    /// The format version.
    public var version: Int
    /// The address allocation strategy.
    public var strategy: AllocationStrategy
    /// The pools, in order.
    public var pools: [AddressPool]
    /// The networks, sorted by name.
    public var networks: [NetworkSnapshot]

    /// Makes a snapshot value (normally you get one from ``IPAM/snapshot()``).
    public init(version: Int, strategy: AllocationStrategy, pools: [AddressPool], networks: [NetworkSnapshot]) {
        self.version = version
        self.strategy = strategy
        self.pools = pools
        self.networks = networks
    }
}

/// The persisted state of one network: its subnets' address spaces, in creation order.
public struct NetworkSnapshot: Hashable, Sendable, Codable {
    /// The network's name.
    public var name: String
    /// One entry per subnet.
    public var subnets: [AddressSpaceSnapshot]

    /// Makes a network snapshot.
    public init(name: String, subnets: [AddressSpaceSnapshot]) {
        self.name = name
        self.subnets = subnets
    }
}
