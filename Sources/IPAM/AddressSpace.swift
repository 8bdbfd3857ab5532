import OverlayModel

/// How dynamic addresses are picked.
public enum AllocationStrategy: String, Hashable, Sendable, Codable {
    /// The lowest free address: a released address is handed out again next (Docker's local default).
    case firstFree
    /// The next free address after the last one handed out, wrapping at the end of the range, so
    /// a released address is reused as late as possible (what Docker swarm uses).
    case serial
}

/// The addresses of one subnet of one network: reservations (network, broadcast, gateway, aux
/// addresses) and the addresses handed out, dynamically or by explicit request.
///
/// State is a `RunSet` of offsets from the subnet's network address, so memory follows the
/// number of contiguous allocated ranges, never the subnet's size: an IPv6 `/48` or `::/0` is as
/// cheap as a `/24`. Every operation is O(log runs).
public struct AddressSpace: Sendable, Hashable {
    /// The network this subnet belongs to (used in messages; may be empty).
    public let networkName: String
    /// The subnet addresses come from.
    public let subnet: CIDR
    /// The gateway address, reserved: `--gateway`, or the first usable address of the subnet.
    public let gateway: IPAddress
    /// The sub-range dynamic allocation is limited to (`--ip-range`), if any.
    public let ipRange: CIDR?
    /// Named addresses that are never handed out (`--aux-address name=IP`).
    public let auxAddresses: [String: IPAddress]
    /// How dynamic addresses are picked.
    public let strategy: AllocationStrategy

    /// Why an offset is reserved.
    enum Reservation: Hashable, Sendable {
        case network, broadcast, gateway
        case aux(String)
    }

    private let reservedOffsets: [Wide: Reservation]
    private var used: RunSet
    private let dynLoW: Wide
    private let dynHiW: Wide
    private var cursorW: Wide?
    private var allocatedW: Wide

    private var dynLo: UInt128 { dynLoW.value }
    private var dynHi: UInt128 { dynHiW.value }

    /// Builds the address space of `subnet` with Docker's rules: the network address (and, for
    /// IPv4, the broadcast address) is reserved when the subnet is larger than two addresses; the
    /// gateway defaults to the first usable address; the gateway and aux addresses must lie in the
    /// subnet and are reserved; `ipRange` must lie in the subnet.
    public init(
        subnet: CIDR, gateway: IPAddress? = nil, ipRange: CIDR? = nil, auxAddresses: [String: IPAddress] = [:],
        strategy: AllocationStrategy = .firstFree, networkName: String = ""
    ) throws(IPAMError) {
        self.networkName = networkName
        self.subnet = subnet
        self.ipRange = ipRange
        self.auxAddresses = auxAddresses
        self.strategy = strategy
        let of = networkName.isEmpty ? "" : " of network '\(networkName)'"
        let last = subnet.lastOffset
        var reserved: [Wide: Reservation] = [:]
        var firstUsable: UInt128 = 0
        if subnet.hostBits >= 2 || (subnet.family == .v6 && subnet.hostBits >= 1) {
            reserved[Wide(0)] = .network
            firstUsable = 1
        }
        if subnet.family == .v4 && subnet.hostBits >= 2 { reserved[Wide(last)] = .broadcast }

        func describe(_ r: Reservation) -> String {
            switch r {
            case .network: return "the network address of \(subnet)"
            case .broadcast: return "the broadcast address of \(subnet)"
            case .gateway: return "the gateway\(of)"
            case .aux(let name): return "aux address '\(name)'\(of)"
            }
        }

        // Gateway.
        let gatewayOffset: UInt128
        if let gateway {
            guard let o = subnet.offset(of: gateway) else {
                throw IPAMError(.addressOutsideSubnet, "--gateway \(gateway) is not in --subnet \(subnet)")
            }
            if let r = reserved[Wide(o)] {
                throw IPAMError(.addressReserved, "--gateway \(gateway) is \(describe(r)); use an address inside the subnet")
            }
            gatewayOffset = o
        } else {
            gatewayOffset = firstUsable
        }
        reserved[Wide(gatewayOffset)] = .gateway
        self.gateway = subnet.address(at: gatewayOffset)!

        // Aux addresses, in name order so the first conflict reported is stable.
        for name in auxAddresses.keys.sorted() {
            let address = auxAddresses[name]!
            guard !name.isEmpty else {
                throw IPAMError(.invalidConfiguration, "--aux-address =\(address) needs a name (name=address)")
            }
            guard let o = subnet.offset(of: address) else {
                throw IPAMError(.addressOutsideSubnet, "--aux-address \(name)=\(address) is not in --subnet \(subnet)")
            }
            if let r = reserved[Wide(o)] {
                throw IPAMError(.addressReserved, "--aux-address \(name)=\(address) is \(describe(r)); use another address")
            }
            reserved[Wide(o)] = .aux(name)
        }

        // Dynamic range.
        if let ipRange {
            guard subnet.contains(ipRange) else {
                throw IPAMError(.invalidConfiguration, "--ip-range \(ipRange) is not inside --subnet \(subnet)")
            }
            dynLoW = Wide(subnet.offset(of: ipRange.first)!)
            dynHiW = Wide(subnet.offset(of: ipRange.last)!)
        } else {
            dynLoW = Wide(0)
            dynHiW = Wide(last)
        }

        var used = RunSet()
        for o in reserved.keys.sorted(by: { $0.high != $1.high ? $0.high < $1.high : $0.low < $1.low }) {
            used.insert(o.value, o.value)
        }
        self.used = used
        self.reservedOffsets = reserved
        self.cursorW = nil
        self.allocatedW = Wide(0)
    }

    // MARK: Queries

    /// How many addresses are handed out (reservations not counted).
    public var allocatedCount: UInt128 { allocatedW.value }

    /// The last address handed out dynamically (the serial cursor), if any.
    public var lastAllocated: IPAddress? {
        guard let c = cursorW else { return nil }
        return subnet.address(at: c.value)
    }

    /// Whether `address` is handed out (false for reserved addresses and outsiders).
    public func isAllocated(_ address: IPAddress) -> Bool {
        guard let o = subnet.offset(of: address) else { return false }
        return reservedOffsets[Wide(o)] == nil && used.contains(o)
    }

    /// What `address` is reserved as ("gateway", "network", "broadcast", or "aux:NAME"), if it is.
    public func reservation(of address: IPAddress) -> String? {
        guard let o = subnet.offset(of: address), let r = reservedOffsets[Wide(o)] else { return nil }
        switch r {
        case .network: return "network"
        case .broadcast: return "broadcast"
        case .gateway: return "gateway"
        case .aux(let name): return "aux:\(name)"
        }
    }

    /// The number of contiguous taken ranges the allocator holds (reservations included).
    public var runCount: Int { used.runCount }

    /// The bytes the allocator's run structure holds (its own accounting, by capacity).
    public var allocatorBytes: Int { used.memoryBytes }

    private var of: String { networkName.isEmpty ? "" : " of network '\(networkName)'" }

    private func describe(_ r: Reservation) -> String {
        switch r {
        case .network: return "the network address of \(subnet)"
        case .broadcast: return "the broadcast address of \(subnet)"
        case .gateway: return "the gateway\(of)"
        case .aux(let name): return "aux address '\(name)'\(of)"
        }
    }

    // MARK: Allocation

    /// Hands out a free address of the dynamic range (the ip-range, or the whole subnet) by the
    /// strategy; throws `addressesExhausted` when none is left.
    public mutating func allocate() throws(IPAMError) -> IPAddress {
        let lo = dynLo, hi = dynHi
        var start = lo
        if strategy == .serial, let c = cursorW?.value, c >= lo, c < hi { start = c + 1 }
        var found = freeOffset(atOrAfter: start, limit: hi)
        if found == nil && start != lo { found = freeOffset(atOrAfter: lo, limit: hi) }
        guard let o = found else {
            if let ipRange {
                throw IPAMError(
                    .addressesExhausted,
                    "ip-range \(ipRange)\(of) has no free address left; release one or use a larger --ip-range")
            }
            throw IPAMError(
                .addressesExhausted, "subnet \(subnet)\(of) has no free address left; release one or use a larger --subnet")
        }
        used.insert(o, o)
        allocatedW = Wide(allocatedW.value &+ 1)
        cursorW = Wide(o)
        return subnet.address(at: o)!
    }

    @inline(__always)
    private func freeOffset(atOrAfter x: UInt128, limit: UInt128) -> UInt128? {
        guard x <= limit, let f = used.firstFree(atOrAfter: x), f <= limit else { return nil }
        return f
    }

    /// Takes `address` (`--ip`): it must be in the subnet (not necessarily in the ip-range), not
    /// reserved and not already handed out. Does not move the serial cursor.
    public mutating func request(_ address: IPAddress) throws(IPAMError) {
        guard let o = subnet.offset(of: address) else {
            throw IPAMError(.addressOutsideSubnet, "address \(address) is not in subnet \(subnet)\(of)")
        }
        if let r = reservedOffsets[Wide(o)] {
            throw IPAMError(.addressReserved, "address \(address) is reserved as \(describe(r)); pick another --ip")
        }
        guard !used.contains(o) else {
            throw IPAMError(.addressInUse, "address \(address) is already allocated")
        }
        used.insert(o, o)
        allocatedW = Wide(allocatedW.value &+ 1)
    }

    /// Gives `address` back. Releasing a reserved address or one that is not allocated is an error.
    public mutating func release(_ address: IPAddress) throws(IPAMError) {
        guard let o = subnet.offset(of: address) else {
            throw IPAMError(.addressOutsideSubnet, "address \(address) is not in subnet \(subnet)\(of)")
        }
        if let r = reservedOffsets[Wide(o)] {
            throw IPAMError(
                .addressReserved, "address \(address) is \(describe(r)); it is released only with the network")
        }
        guard used.removeIfPresent(o) else {
            throw IPAMError(.addressNotAllocated, "address \(address) is not allocated; nothing to release")
        }
        allocatedW = Wide(allocatedW.value &- 1)
    }

    // MARK: Snapshot

    /// The handed-out addresses as closed offset ranges, ascending, reservations cut out.
    func allocatedOffsetRanges() -> [RunSet.Run] {
        let points = reservedOffsets.keys.map(\.value).sorted()
        var out: [RunSet.Run] = []
        var k = 0
        for r in used.runs {
            var lo = r.lo
            var done = false
            while k < points.count && points[k] < r.lo { k += 1 }
            while k < points.count && points[k] <= r.hi {
                let p = points[k]
                k += 1
                if p > lo { out.append(RunSet.Run(lo: lo, hi: p - 1)) }
                if p == r.hi { done = true; break }
                lo = p + 1
            }
            if !done { out.append(RunSet.Run(lo: lo, hi: r.hi)) }
        }
        return out
    }

    /// The state as a value that encodes to stable JSON and restores exactly.
    public func snapshot() -> AddressSpaceSnapshot {
        let ranges = allocatedOffsetRanges().map { r -> String in
            let a = subnet.address(at: r.lo)!
            return r.lo == r.hi ? a.description : "\(a)-\(subnet.address(at: r.hi)!)"
        }
        return AddressSpaceSnapshot(
            subnet: subnet, gateway: gateway, ipRange: ipRange,
            auxAddresses: auxAddresses.keys.sorted().map { AuxAddress(name: $0, address: auxAddresses[$0]!) },
            strategy: strategy, lastAllocated: lastAllocated, allocated: ranges)
    }

    /// Restores a space from ``snapshot()``: same reservations, same addresses handed out, same
    /// serial cursor, so it hands out the same addresses next.
    public init(restoring s: AddressSpaceSnapshot, networkName: String = "") throws(IPAMError) {
        var aux: [String: IPAddress] = [:]
        for a in s.auxAddresses {
            guard aux[a.name] == nil else {
                throw IPAMError(.invalidSnapshot, "snapshot of \(s.subnet) names aux address '\(a.name)' twice")
            }
            aux[a.name] = a.address
        }
        try self.init(
            subnet: s.subnet, gateway: s.gateway, ipRange: s.ipRange, auxAddresses: aux, strategy: s.strategy,
            networkName: networkName)
        var previousHi: UInt128?
        for text in s.allocated {
            let parts = text.split(separator: "-", omittingEmptySubsequences: false)
            guard (1...2).contains(parts.count), let a = IPAddress(String(parts[0])),
                let b = parts.count == 2 ? IPAddress(String(parts[1])) : a
            else {
                throw IPAMError(.invalidSnapshot, "snapshot of \(subnet): '\(text)' is not an address or a range a-b")
            }
            guard let lo = subnet.offset(of: a), let hi = subnet.offset(of: b), lo <= hi else {
                throw IPAMError(.invalidSnapshot, "snapshot of \(subnet): '\(text)' is not an ascending range inside the subnet")
            }
            if let p = previousHi, p >= lo {
                throw IPAMError(.invalidSnapshot, "snapshot of \(subnet): '\(text)' is out of order or overlaps the range before it")
            }
            guard !used.intersects(lo, hi) else {
                throw IPAMError(.invalidSnapshot, "snapshot of \(subnet): '\(text)' includes a reserved address")
            }
            used.insert(lo, hi)
            allocatedW = Wide(allocatedW.value &+ (hi - lo) &+ 1)
            previousHi = hi
        }
        if let last = s.lastAllocated {
            guard let o = subnet.offset(of: last), o >= dynLo, o <= dynHi else {
                throw IPAMError(.invalidSnapshot, "snapshot of \(subnet): last allocated \(last) is outside the dynamic range")
            }
            cursorW = Wide(o)
        }
    }
}

/// A named reserved address (`--aux-address name=IP`), as stored in a snapshot.
public struct AuxAddress: Hashable, Sendable, Codable {
    /// The name the address is reserved under.
    public var name: String
    /// The reserved address.
    public var address: IPAddress

    /// Makes a named address.
    public init(name: String, address: IPAddress) {
        self.name = name
        self.address = address
    }
}

/// The persisted state of one ``AddressSpace``: configuration, handed-out ranges, serial cursor.
/// Encodes to stable JSON (use `JSONEncoder` with `.sortedKeys`): aux addresses sorted by name,
/// ranges ascending as `"10.0.0.2"` or `"10.0.0.2-10.0.0.9"`.
public struct AddressSpaceSnapshot: Hashable, Sendable, Codable {
    /// The subnet.
    public var subnet: CIDR
    /// The gateway (reserved).
    public var gateway: IPAddress
    /// The dynamic range, if restricted.
    public var ipRange: CIDR?
    /// The aux addresses, sorted by name.
    public var auxAddresses: [AuxAddress]
    /// The allocation strategy.
    public var strategy: AllocationStrategy
    /// The serial cursor: the last address handed out dynamically.
    public var lastAllocated: IPAddress?
    /// The handed-out addresses as ascending single addresses or `first-last` ranges.
    public var allocated: [String]

    /// Makes a snapshot value (normally you get one from ``AddressSpace/snapshot()``).
    public init(
        subnet: CIDR, gateway: IPAddress, ipRange: CIDR?, auxAddresses: [AuxAddress], strategy: AllocationStrategy,
        lastAllocated: IPAddress?, allocated: [String]
    ) {
        self.subnet = subnet
        self.gateway = gateway
        self.ipRange = ipRange
        self.auxAddresses = auxAddresses
        self.strategy = strategy
        self.lastAllocated = lastAllocated
        self.allocated = allocated
    }
}
