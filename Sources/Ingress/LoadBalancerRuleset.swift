import OverlayModel
import PacketFilter

/// Where a balanced flow goes: an address and a port.
public struct LBTarget: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The target's address (a task, or the ingress namespace).
    public var address: IPv4Address
    /// The target's port.
    public var port: UInt16

    /// Makes a target.
    public init(_ address: IPv4Address, port: UInt16) {
        self.address = address
        self.port = port
    }

    /// Orders by address, then port.
    public static func < (lhs: LBTarget, rhs: LBTarget) -> Bool {
        (lhs.address, lhs.port) < (rhs.address, rhs.port)
    }

    /// `address:port`.
    public var description: String { "\(address):\(port)" }
}

/// A service's virtual IP: new flows to `vip` go to one of `backends` (ports unchanged).
public struct VIPEntry: Hashable, Sendable {
    /// The service's name (for messages only).
    public var service: String
    /// The virtual IP.
    public var vip: IPv4Address
    /// The task addresses; empty means the VIP is left out (its traffic reaches the local stack).
    public var backends: [IPv4Address]

    /// Makes an entry.
    public init(service: String, vip: IPv4Address, backends: [IPv4Address]) {
        self.service = service
        self.vip = vip
        self.backends = backends
    }
}

/// A published port: new flows for protocol/port go to one of `targets`.
public struct PortEntry: Hashable, Sendable {
    /// The service's name (for messages only).
    public var service: String
    /// TCP, UDP or SCTP.
    public var `protocol`: PortProtocol
    /// The published port.
    public var port: UInt16
    /// Where flows go (address and port; the port may differ from the published one). Empty
    /// means the port is left out.
    public var targets: [LBTarget]

    /// Makes an entry.
    public init(service: String, protocol: PortProtocol, port: UInt16, targets: [LBTarget]) {
        self.service = service
        self.protocol = `protocol`
        self.port = port
        self.targets = targets
    }
}

/// What a balancer matches and whether it rewrites sources; fixed for the balancer's life.
public struct LoadBalancerOptions: Hashable, Sendable {
    /// Which packets count as "for a published port".
    public enum PortMatch: Hashable, Sendable {
        /// Any local address (`fib daddr type local`), in prerouting and, for locally made
        /// traffic except to 127.0.0.0/8, in output: the host namespace.
        case localAddresses
        /// Only this destination address, in prerouting: the ingress namespace.
        case address(IPv4Address)
    }

    /// The nft table (family ip) this balancer owns and replaces.
    public var tableName: String
    /// Which destinations published ports are matched at.
    public var portMatch: PortMatch
    /// The address DNATed flows are SNATed to on their way out (so replies come back through this
    /// namespace); nil for no SNAT.
    public var snat: IPv4Address?

    /// Makes options.
    public init(tableName: String, portMatch: PortMatch = .localAddresses, snat: IPv4Address? = nil) {
        self.tableName = tableName
        self.portMatch = portMatch
        self.snat = snat
    }
}

/// Pure: the state as nft text (full table) and the minimal commands from one state to another.
///
/// The table's shape (family ip, table `T`), with a slot k for each k below the largest backend
/// count:
///
/// ```
/// map vips        { type ipv4_addr : verdict }                      VIP : jump vip_<N>
/// map vip_slot<k> { type ipv4_addr : ipv4_addr }                    VIP : its k-th backend
/// map ports       { type inet_proto . inet_service : verdict }      tcp . 80 : jump tcp_<N>
/// map tcp_addr<k> { type inet_service : ipv4_addr }                 80 : k-th target's address
/// map tcp_port<k> { type inet_service : inet_service }              80 : k-th target's port
/// (udp_*, sctp_* alike)
/// chain vip_<N>  { numgen random mod N vmap { 0 : goto vs0, ..., N-1 : goto vs<N-1> } }
/// chain vs<k>    { dnat ip to ip daddr map @vip_slot<k> }
/// chain tcp_<N>  { numgen random mod N vmap { 0 : goto tcp_s0, ... } }
/// chain tcp_s<k> { meta l4proto tcp dnat ip to tcp dport map @tcp_addr<k> : tcp dport map @tcp_port<k> }
/// chain prerouting (dstnat):  meta l4proto { tcp, udp, sctp } ip daddr vmap @vips
///                             <match> meta l4proto . th dport vmap @ports
/// chain output (dstnat):      the same, the port rule only for `.localAddresses`
/// chain postrouting (srcnat): ct status dnat snat to <snat>            (when `snat` is set)
/// ```
///
/// Per-slot maps with plain keys load about a third faster in nft than one map keyed by
/// `VIP . slot` (no concatenated keys to parse and hash), and much faster again as JSON.
///
/// Only TCP, UDP and SCTP are balanced; anything else to a VIP (a ping) is answered by the
/// namespace itself, which holds the VIP as a local address, as with IPVS.
///
/// A service with N backends has N slot elements (2N for a port) and one dispatch element pointing to the chain
/// for N (one chain per distinct N, made on demand), so a new flow picks each backend with
/// probability exactly 1/N, and changing one service touches only its own elements. Only a flow's
/// first packet passes the nat hooks; conntrack keeps later packets on the backend first chosen,
/// so removing a backend stops new flows to it while existing ones continue.
///
/// Entries are kept normalised: sorted by VIP (ports by protocol and port), backends without
/// duplicates, sorted by the initialiser (``aligned(to:)`` reorders them to keep slots stable
/// across updates); entries with no backends are kept but render nothing.
public struct LoadBalancerRuleset: Hashable, Sendable {
    /// The balancer's options.
    public var options: LoadBalancerOptions
    /// The VIPs, sorted by address; backends unique, in slot order.
    public var vips: [VIPEntry]
    /// The published ports, sorted by protocol and port; targets unique, in slot order.
    public var ports: [PortEntry]

    /// Validates and normalises a state. Throws `.invalidTableName`, `.duplicateVIP`,
    /// `.duplicatePort` or `.invalidArgument` (a port 0) with a message naming the services.
    public init(options: LoadBalancerOptions, vips: [VIPEntry], ports: [PortEntry]) throws(IngressError) {
        guard PacketFilter.isValidName(options.tableName) else {
            throw IngressError(
                .invalidTableName,
                "'\(options.tableName)' is not a usable nft table name (1 to 64 letters, digits or '_', not starting with a digit)")
        }
        // Sorted, then duplicates are neighbours (no hashing: this runs on every update).
        var sortedVIPs = vips.sorted { $0.vip < $1.vip }
        for i in sortedVIPs.indices {
            if i > 0 && sortedVIPs[i - 1].vip == sortedVIPs[i].vip {
                let (a, b) = (sortedVIPs[i - 1], sortedVIPs[i])
                throw IngressError(
                    .duplicateVIP,
                    "services '\(a.service)' and '\(b.service)' both claim VIP \(b.vip); give each service its own VIP")
            }
            sortedVIPs[i].backends = Self.sortedUnique(sortedVIPs[i].backends)
        }
        let key = { (p: PortEntry) in PortKey(proto: p.protocol, port: p.port) }
        var sortedPorts = ports.sorted { key($0) < key($1) }
        for i in sortedPorts.indices {
            let p = sortedPorts[i]
            guard p.port != 0 else {
                throw IngressError(.invalidArgument, "service '\(p.service)' publishes port 0; publish a port in 1...65535")
            }
            if let bad = p.targets.first(where: { $0.port == 0 }) {
                throw IngressError(
                    .invalidArgument, "service '\(p.service)' sends \(p.protocol.rawValue)/\(p.port) to \(bad.address) port 0; use a port in 1...65535")
            }
            if i > 0 && key(sortedPorts[i - 1]) == key(p) {
                throw IngressError(
                    .duplicatePort,
                    "services '\(sortedPorts[i - 1].service)' and '\(p.service)' both publish \(p.protocol.rawValue) port \(p.port); publish each port once")
            }
            sortedPorts[i].targets = Self.sortedUnique(p.targets)
        }
        self.options = options
        self.vips = sortedVIPs
        self.ports = sortedPorts
    }

    // MARK: Rendering

    /// The whole table as one nft text transaction that creates it from scratch (an older table of
    /// the same name is deleted first, in the same transaction). ``fullJSON`` is the same table as
    /// a libnftables JSON document, which nft parses about twice as fast; ``LoadBalancer`` sends that.
    public var fullText: String {
        let t = "ip \(options.tableName)"
        var s = "add table \(t)\ndelete table \(t)\ntable \(t) {\n"
        for m in maps {
            s += "    map \(m.name) {\n        type \(m.keyType) : \(m.valueType)\n        size \(capacity(m))\n"
            s += Self.elements(elementTexts(m))
            s += "    }\n"
        }
        for chain in chains.sorted() {
            s += "    chain \(chain.name) {\n        \(chain.rule)\n    }\n"
        }
        s += "    chain prerouting {\n        type nat hook prerouting priority dstnat; policy accept;\n"
        s += "        meta l4proto { tcp, udp, sctp } ip daddr vmap @vips\n"
        switch options.portMatch {
        case .localAddresses: s += "        fib daddr type local meta l4proto . th dport vmap @ports\n"
        case .address(let a): s += "        ip daddr \(a) meta l4proto . th dport vmap @ports\n"
        }
        s += "    }\n"
        s += "    chain output {\n        type nat hook output priority -100; policy accept;\n"
        s += "        meta l4proto { tcp, udp, sctp } ip daddr vmap @vips\n"
        if options.portMatch == .localAddresses {
            s += "        ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @ports\n"
        }
        s += "    }\n"
        if let snat = options.snat {
            s += "    chain postrouting {\n        type nat hook postrouting priority srcnat; policy accept;\n"
            s += "        ct status dnat snat to \(snat)\n    }\n"
        }
        s += "}\n"
        return s
    }

    /// The whole table as one libnftables JSON document (for `nft -j -f`, or `PacketFilter`'s
    /// `run(_:json: true)`): one transaction that deletes an older table of the same name and
    /// creates this one, the same table as ``fullText`` describes.
    public var fullJSON: String {
        let t = "\"family\":\"ip\",\"table\":\"\(options.tableName)\""
        let table = "{\"family\":\"ip\",\"name\":\"\(options.tableName)\"}"
        var cmds: [String] = [
            "{\"add\":{\"table\":\(table)}}", "{\"delete\":{\"table\":\(table)}}", "{\"add\":{\"table\":\(table)}}",
        ]
        for m in maps {
            cmds.append("{\"add\":{\"map\":{\(t),\"name\":\"\(m.name)\",\"type\":\(m.keyTypeJSON),\"map\":\"\(m.valueType)\",\"size\":\(capacity(m))}}}")
        }
        let sortedChains = chains.sorted()
        for c in sortedChains { cmds.append("{\"add\":{\"chain\":{\(t),\"name\":\"\(c.name)\"}}}") }
        func hook(_ name: String, _ prio: Int) {
            cmds.append("{\"add\":{\"chain\":{\(t),\"name\":\"\(name)\",\"type\":\"nat\",\"hook\":\"\(name)\",\"prio\":\(prio),\"policy\":\"accept\"}}}")
        }
        hook("prerouting", -100)
        hook("output", -100)
        if options.snat != nil { hook("postrouting", 100) }
        func rule(_ chain: String, _ exprs: [String]) {
            cmds.append("{\"add\":{\"rule\":{\(t),\"chain\":\"\(chain)\",\"expr\":[\(exprs.joined(separator: ","))]}}}")
        }
        for c in sortedChains { rule(c.name, c.ruleJSON) }
        let l4 = "{\"match\":{\"op\":\"==\",\"left\":{\"meta\":{\"key\":\"l4proto\"}},\"right\":{\"set\":[\"tcp\",\"udp\",\"sctp\"]}}}"
        let vipVmap = "{\"vmap\":{\"key\":{\"payload\":{\"protocol\":\"ip\",\"field\":\"daddr\"}},\"data\":\"@vips\"}}"
        let portVmap =
            "{\"vmap\":{\"key\":{\"concat\":[{\"meta\":{\"key\":\"l4proto\"}},{\"payload\":{\"protocol\":\"th\",\"field\":\"dport\"}}]},\"data\":\"@ports\"}}"
        let local = "{\"match\":{\"op\":\"==\",\"left\":{\"fib\":{\"result\":\"type\",\"flags\":[\"daddr\"]}},\"right\":\"local\"}}"
        rule("prerouting", [l4, vipVmap])
        switch options.portMatch {
        case .localAddresses: rule("prerouting", [local, portVmap])
        case .address(let a):
            rule("prerouting", ["{\"match\":{\"op\":\"==\",\"left\":{\"payload\":{\"protocol\":\"ip\",\"field\":\"daddr\"}},\"right\":\"\(a)\"}}", portVmap])
        }
        rule("output", [l4, vipVmap])
        if options.portMatch == .localAddresses {
            let notLoopback =
                "{\"match\":{\"op\":\"!=\",\"left\":{\"payload\":{\"protocol\":\"ip\",\"field\":\"daddr\"}},\"right\":{\"prefix\":{\"addr\":\"127.0.0.0\",\"len\":8}}}}"
            rule("output", [notLoopback, local, portVmap])
        }
        if let snat = options.snat {
            rule("postrouting", ["{\"match\":{\"op\":\"in\",\"left\":{\"ct\":{\"key\":\"status\"}},\"right\":\"dnat\"}}", "{\"snat\":{\"addr\":\"\(snat)\"}}"])
        }
        var out = JSONBytes()
        out.bytes.reserveCapacity(40 * fullCount + 65_536)
        out.raw("{\"nftables\":[\n" + cmds.joined(separator: ",\n"))
        // Slot maps before the dispatch maps (a dispatch element needs its chain, which exists).
        for m in maps.reversed() {
            let mark = out.bytes.count
            out.raw(",\n{\"add\":{\"element\":{\(t),\"name\":\"\(m.name)\",\"elem\":[\n")
            if appendElementJSON(m, to: &out) {
                out.raw("\n]}}}")
            } else {
                out.bytes.removeSubrange(mark...)
            }
        }
        out.raw("\n]}\n")
        return String(decoding: out.bytes, as: UTF8.self)
    }

    /// The commands that turn `old` (what the kernel holds) into this state, in one transaction:
    /// new chains, then element deletions, then element additions, then chains no longer used.
    /// Only services that changed are touched. Empty when nothing changed; `fullText` when the
    /// options differ.
    ///
    /// Backends keep the slots `old` gave them (see ``aligned(to:)``), so replacing one backend
    /// changes one slot element; the kernel then holds `aligned(to: old)`, which is the state to
    /// pass as `old` next time.
    public func commands(from old: LoadBalancerRuleset) -> String {
        aligned(to: old).diff(from: old).text
    }

    /// This state with each service's backends (and each port's targets) in the slots `old` had
    /// them in where they remain, survivors from dropped slots and newcomers filling the freed
    /// ones: the layout with the fewest slot changes. Same services, same backends; only the
    /// order (which is the slot order) differs.
    public func aligned(to old: LoadBalancerRuleset) -> LoadBalancerRuleset {
        var copy = self
        var i = 0
        Self.merge(old.vips, vips, key: \.vip) { _, o, n in
            guard n != nil else { return }
            if let o { copy.vips[i].backends = Self.align(copy.vips[i].backends, to: o.backends) }
            i += 1
        }
        i = 0
        Self.merge(old.ports, ports, key: { PortKey(proto: $0.protocol, port: $0.port) }) { _, o, n in
            guard n != nil else { return }
            if let o { copy.ports[i].targets = Self.align(copy.ports[i].targets, to: o.targets) }
            i += 1
        }
        return copy
    }

    /// Walks two lists sorted by `key` together, calling `body` once per key with the entry of
    /// each list that has it.
    static func merge<E, K: Comparable>(_ old: [E], _ new: [E], key: (E) -> K, _ body: (K, E?, E?) -> Void) {
        var i = 0, j = 0
        while i < old.count || j < new.count {
            if j == new.count || (i < old.count && key(old[i]) < key(new[j])) {
                body(key(old[i]), old[i], nil)
                i += 1
            } else if i == old.count || key(new[j]) < key(old[i]) {
                body(key(new[j]), nil, new[j])
                j += 1
            } else {
                body(key(new[j]), old[i], new[j])
                i += 1
                j += 1
            }
        }
    }

    /// `new` (unique items) ordered so that items also in `old` keep their index where it is
    /// still below `new.count`.
    static func align<T: Hashable & Comparable>(_ new: [T], to old: [T]) -> [T] {
        let n = new.count
        guard n > 0, !old.isEmpty else { return new }
        // Most services do not change: same items, keep the old order (no hashing).
        if old.count == n && (old == new || old.sorted() == new.sorted()) { return old }
        let wanted = Set(new)
        var slots = [T?](repeating: nil, count: n)
        var placed = Set<T>()
        for (i, item) in old.enumerated() where i < n && wanted.contains(item) {
            slots[i] = item
            placed.insert(item)
        }
        if placed.count == n { return slots.map { $0! } }
        var fill: [T] = []
        for item in old.dropFirst(n) where wanted.contains(item) && placed.insert(item).inserted { fill.append(item) }
        for item in new where placed.insert(item).inserted { fill.append(item) }
        var next = fill.makeIterator()
        for i in 0..<n where slots[i] == nil { slots[i] = next.next() }
        return slots.map { $0! }
    }

    /// The number of element and chain operations in ``fullText`` (each element counts one).
    public var fullCount: Int {
        var n = chains.count
        for v in vips where !v.backends.isEmpty { n += 1 + v.backends.count }
        for p in ports where !p.targets.isEmpty { n += 1 + 2 * p.targets.count }
        return n
    }

    // MARK: Diff

    /// A diff's text and how many element or chain operations it holds (0: nothing to do);
    /// `full` when options differ and the diff is the full text.
    struct Diff {
        var text: String
        var count: Int
        var full: Bool
    }

    func diff(from old: LoadBalancerRuleset) -> Diff {
        if old.options != options { return Diff(text: fullText, count: fullCount, full: true) }
        var deletes: [String: [String]] = [:]  // map -> keys
        var adds: [String: [String]] = [:]  // map -> key : value
        var count = 0

        // VIPs (both lists sorted by VIP: walked together, no hashing of unchanged services).
        Self.merge(old.vips, vips, key: \.vip) { vip, o, n in
            let before = o?.backends ?? [], after = n?.backends ?? []
            if before == after { return }
            if before.count != after.count {
                if !before.isEmpty { deletes["vips", default: []].append("\(vip)") }
                if !after.isEmpty { adds["vips", default: []].append(Self.vipDispatch(vip, after.count)) }
                count += (before.isEmpty ? 0 : 1) + (after.isEmpty ? 0 : 1)
            }
            for slot in 0..<max(before.count, after.count) {
                let b = slot < before.count ? before[slot] : nil
                let a = slot < after.count ? after[slot] : nil
                if b == a { continue }
                let map = SlotMap.vipSlot(slot).name
                if b != nil {
                    deletes[map, default: []].append("\(vip)")
                    count += 1
                }
                if let a {
                    adds[map, default: []].append("\(vip) : \(a)")
                    count += 1
                }
            }
        }

        // Ports (sorted by protocol and port): two maps per slot, address and port.
        Self.merge(old.ports, ports, key: { PortKey(proto: $0.protocol, port: $0.port) }) { key, o, n in
            let before = o?.targets ?? [], after = n?.targets ?? []
            if before == after { return }
            let p = key.proto.rawValue
            if before.count != after.count {
                if !before.isEmpty { deletes["ports", default: []].append("\(p) . \(key.port)") }
                if !after.isEmpty { adds["ports", default: []].append(Self.portDispatch(key.proto, key.port, after.count)) }
                count += (before.isEmpty ? 0 : 1) + (after.isEmpty ? 0 : 1)
            }
            for slot in 0..<max(before.count, after.count) {
                let b = slot < before.count ? before[slot] : nil
                let a = slot < after.count ? after[slot] : nil
                if b == a { continue }
                let addrMap = SlotMap.portAddress(key.proto, slot).name, portMap = SlotMap.portPort(key.proto, slot).name
                if b != nil {
                    deletes[addrMap, default: []].append("\(key.port)")
                    deletes[portMap, default: []].append("\(key.port)")
                    count += 2
                }
                if let a {
                    adds[addrMap, default: []].append("\(key.port) : \(a.address)")
                    adds[portMap, default: []].append("\(key.port) : \(a.port)")
                    count += 2
                }
            }
        }

        let oldChains = old.chains, newChains = chains
        // Slot chains are added before the dispatch chains that jump to them, and removed after.
        let addedChains = newChains.subtracting(oldChains).sorted { ($0.slot ? 0 : 1, $0) < ($1.slot ? 0 : 1, $1) }
        let removedChains = oldChains.subtracting(newChains).sorted { ($0.slot ? 1 : 0, $0) < ($1.slot ? 1 : 0, $1) }
        let oldMaps = old.maps, newMaps = maps
        let addedMaps = newMaps.filter { !oldMaps.contains($0) }
        let removedMaps = oldMaps.filter { !newMaps.contains($0) }
        count += addedChains.count + removedChains.count
        if count == 0 && addedMaps.isEmpty && removedMaps.isEmpty { return Diff(text: "", count: 0, full: false) }

        let t = "ip \(options.tableName)"
        var s = ""
        for m in addedMaps {
            s += "add map \(t) \(m.name) { type \(m.keyType) : \(m.valueType); size \(capacity(m)); }\n"
        }
        for c in addedChains {
            s += "add chain \(t) \(c.name)\nadd rule \(t) \(c.name) \(c.rule)\n"
        }
        let order = (oldMaps + addedMaps).map(\.name)
        for map in order {
            if let keys = deletes[map], !keys.isEmpty {
                s += "delete element \(t) \(map) { \(keys.joined(separator: ", ")) }\n"
            }
        }
        // Slots before dispatch elements, so a dispatch never points at a missing slot (the
        // transaction is atomic anyway; this keeps the text readable in that order).
        for map in newMaps.reversed().map(\.name) {
            if let items = adds[map], !items.isEmpty {
                s += "add element \(t) \(map) { \(items.joined(separator: ", ")) }\n"
            }
        }
        for c in removedChains {
            s += "delete chain \(t) \(c.name)\n"
        }
        for m in removedMaps {
            s += "delete map \(t) \(m.name)\n"
        }
        return Diff(text: s, count: max(count, 1), full: false)
    }

    // MARK: Pieces

    /// One of the table's maps: the two dispatch maps and, per slot k below the largest backend
    /// count, one VIP slot map (VIP : backend) and per protocol two port slot maps (port :
    /// address, port : target port).
    enum SlotMap: Hashable {
        case vips, ports
        case vipSlot(Int)
        case portAddress(PortProtocol, Int)
        case portPort(PortProtocol, Int)

        var name: String {
            switch self {
            case .vips: "vips"
            case .ports: "ports"
            case .vipSlot(let k): "vip_slot\(k)"
            case .portAddress(let p, let k): "\(p.rawValue)_addr\(k)"
            case .portPort(let p, let k): "\(p.rawValue)_port\(k)"
            }
        }

        var keyType: String {
            switch self {
            case .vips, .vipSlot: "ipv4_addr"
            case .ports: "inet_proto . inet_service"
            case .portAddress, .portPort: "inet_service"
            }
        }

        var keyTypeJSON: String {
            self == .ports ? "[\"inet_proto\",\"inet_service\"]" : "\"\(keyType)\""
        }

        var valueType: String {
            switch self {
            case .vips, .ports: "verdict"
            case .vipSlot, .portAddress: "ipv4_addr"
            case .portPort: "inet_service"
            }
        }
    }

    /// The largest backend count among VIPs (`nil`) or among one protocol's ports.
    func slotCount(_ proto: PortProtocol?) -> Int {
        guard let proto else { return vips.reduce(0) { max($0, $1.backends.count) } }
        return ports.reduce(0) { $1.protocol == proto ? max($0, $1.targets.count) : $0 }
    }

    /// The element limit `map` is made with: room to double (at least 1,024). A map with a size
    /// gets the kernel's fixed-size hash instead of the resizable one: the kernel's share of a
    /// full 10,000-service table (its `sendmsg`) fell from 0.21-0.28 s to 0.14-0.20 s, and
    /// `ingress-bench --load` in fresh namespaces from 613-817 ms to 475-704 ms. A diff that would pass the limit
    /// is refused by the kernel (ENFILE) and ``LoadBalancer`` falls back to a full replace, which
    /// sizes the maps afresh.
    func capacity(_ map: SlotMap) -> Int {
        let n: Int
        switch map {
        case .vips, .vipSlot: n = vips.count
        case .ports, .portAddress, .portPort: n = ports.count
        }
        var size = 1_024
        while size < 2 * n { size *= 2 }
        return size
    }

    /// The maps this state needs, dispatch maps first.
    var maps: [SlotMap] {
        var out: [SlotMap] = [.vips, .ports]
        out += (0..<slotCount(nil)).map { .vipSlot($0) }
        for proto in PortProtocol.allCases {
            for k in 0..<slotCount(proto) { out += [.portAddress(proto, k), .portPort(proto, k)] }
        }
        return out
    }

    /// The elements of `map` as nft text (`key : value`).
    func elementTexts(_ map: SlotMap) -> [String] {
        switch map {
        case .vips: vips.filter { !$0.backends.isEmpty }.map { Self.vipDispatch($0.vip, $0.backends.count) }
        case .ports: ports.filter { !$0.targets.isEmpty }.map { Self.portDispatch($0.protocol, $0.port, $0.targets.count) }
        case .vipSlot(let k): vips.filter { $0.backends.count > k }.map { "\($0.vip) : \($0.backends[k])" }
        case .portAddress(let p, let k): ports.filter { $0.protocol == p && $0.targets.count > k }.map { "\($0.port) : \($0.targets[k].address)" }
        case .portPort(let p, let k): ports.filter { $0.protocol == p && $0.targets.count > k }.map { "\($0.port) : \($0.targets[k].port)" }
        }
    }

    /// Appends the elements of `map` as libnftables JSON (`[key, value]` items, comma-separated,
    /// one a line) to `out`; returns whether it wrote any. Bytes, not string interpolation: at
    /// 100,000 elements this is the bulk of the rendering time.
    func appendElementJSON(_ map: SlotMap, to out: inout JSONBytes) -> Bool {
        var first = true
        func item(_ body: (inout JSONBytes) -> Void) {
            if !first { out.raw(",\n") }
            first = false
            out.raw("[")
            body(&out)
            out.raw("]")
        }
        switch map {
        case .vips:
            for v in vips where !v.backends.isEmpty {
                item { o in o.address(v.vip); o.raw(",{\"jump\":{\"target\":\"vip_"); o.int(v.backends.count); o.raw("\"}}") }
            }
        case .ports:
            for p in ports where !p.targets.isEmpty {
                item { o in
                    o.raw("{\"concat\":[\"\(p.protocol.rawValue)\","); o.int(Int(p.port)); o.raw("]},{\"jump\":{\"target\":\"\(p.protocol.rawValue)_")
                    o.int(p.targets.count); o.raw("\"}}")
                }
            }
        case .vipSlot(let k):
            for v in vips where v.backends.count > k {
                item { o in o.address(v.vip); o.raw(","); o.address(v.backends[k]) }
            }
        case .portAddress(let proto, let k):
            for p in ports where p.protocol == proto && p.targets.count > k {
                item { o in o.int(Int(p.port)); o.raw(","); o.address(p.targets[k].address) }
            }
        case .portPort(let proto, let k):
            for p in ports where p.protocol == proto && p.targets.count > k {
                item { o in o.int(Int(p.port)); o.raw(","); o.int(Int(p.targets[k].port)) }
            }
        }
        return !first
    }

    /// A helper chain: a dispatch chain per distinct backend count N (`vip_<N>`, `tcp_<N>`...)
    /// that picks slot k with `numgen random mod N`, and a slot chain per slot k (`vs<k>`,
    /// `tcp_s<k>`...) that DNATs through slot k's map(s).
    struct Chain: Hashable, Comparable {
        /// `nil` for VIPs.
        var proto: PortProtocol?
        /// The backend count (dispatch) or the slot index (slot chain).
        var n: Int
        var slot: Bool = false

        var name: String { slot ? Self.slotName(proto, n) : "\(proto?.rawValue ?? "vip")_\(n)" }

        static func slotName(_ proto: PortProtocol?, _ k: Int) -> String {
            proto.map { "\($0.rawValue)_s\(k)" } ?? "vs\(k)"
        }

        var rule: String {
            if !slot {
                let arms = (0..<n).map { "\($0) : goto \(Self.slotName(proto, $0))" }.joined(separator: ", ")
                return "numgen random mod \(n) vmap { \(arms) }"
            }
            guard let proto else { return "dnat ip to ip daddr map @vip_slot\(n)" }
            let p = proto.rawValue
            // Explicit `meta l4proto`: with only `th` in the hook rules, nft 1.0.6 would
            // otherwise report conflicting protocols.
            return "meta l4proto \(p) dnat ip to \(p) dport map @\(p)_addr\(n) : \(p) dport map @\(p)_port\(n)"
        }

        /// The rule's expressions as libnftables JSON.
        var ruleJSON: [String] {
            if !slot {
                let arms = (0..<n).map { "[\($0),{\"goto\":{\"target\":\"\(Self.slotName(proto, $0))\"}}]" }.joined(separator: ",")
                return ["{\"vmap\":{\"key\":{\"numgen\":{\"mode\":\"random\",\"mod\":\(n),\"offset\":0}},\"data\":{\"set\":[\(arms)]}}}"]
            }
            guard let proto else {
                return ["{\"dnat\":{\"addr\":{\"map\":{\"key\":{\"payload\":{\"protocol\":\"ip\",\"field\":\"daddr\"}},\"data\":\"@vip_slot\(n)\"}}}}"]
            }
            let p = proto.rawValue
            let key = "{\"payload\":{\"protocol\":\"\(p)\",\"field\":\"dport\"}}"
            // Address and port from two maps: libnftables 1.0.6 crashes on JSON for a map with
            // concatenated `address . port` values in a dnat statement.
            return [
                "{\"match\":{\"op\":\"==\",\"left\":{\"meta\":{\"key\":\"l4proto\"}},\"right\":\"\(p)\"}}",
                "{\"dnat\":{\"addr\":{\"map\":{\"key\":\(key),\"data\":\"@\(p)_addr\(n)\"}},\"port\":{\"map\":{\"key\":\(key),\"data\":\"@\(p)_port\(n)\"}}}}",
            ]
        }

        static func < (l: Chain, r: Chain) -> Bool {
            (l.proto?.rawValue ?? "", l.slot ? 0 : 1, l.n) < (r.proto?.rawValue ?? "", r.slot ? 0 : 1, r.n)
        }
    }

    /// The helper chains this state needs.
    var chains: Set<Chain> {
        var set = Set<Chain>()
        var last: Chain?
        for v in vips where !v.backends.isEmpty {
            let c = Chain(proto: nil, n: v.backends.count)
            if c != last { set.insert(c); last = c }  // runs of equal counts hash once
        }
        for k in 0..<slotCount(nil) { set.insert(Chain(proto: nil, n: k, slot: true)) }
        for p in ports where !p.targets.isEmpty { set.insert(Chain(proto: p.protocol, n: p.targets.count)) }
        for proto in PortProtocol.allCases {
            for k in 0..<slotCount(proto) { set.insert(Chain(proto: proto, n: k, slot: true)) }
        }
        return set
    }

    static func vipDispatch(_ vip: IPv4Address, _ n: Int) -> String { "\(vip) : jump vip_\(n)" }
    static func portDispatch(_ proto: PortProtocol, _ port: UInt16, _ n: Int) -> String {
        "\(proto.rawValue) . \(port) : jump \(proto.rawValue)_\(n)"
    }

    static func sortedUnique<T: Comparable>(_ items: [T]) -> [T] {
        var out: [T] = []
        out.reserveCapacity(items.count)
        for item in items.sorted() where out.last != item { out.append(item) }
        return out
    }

    static func elements(_ items: [String]) -> String {
        guard !items.isEmpty else { return "" }
        // One element a line, unindented: at 100k elements, indentation alone costs nft's scanner
        // about a tenth of its parse time.
        return "        elements = {\n" + items.joined(separator: ",\n") + "\n        }\n"
    }
}

/// A growing UTF-8 buffer for rendering large JSON documents quickly.
struct JSONBytes {
    var bytes: [UInt8] = []

    mutating func raw(_ s: String) { bytes.append(contentsOf: s.utf8) }

    /// A non-negative decimal number.
    mutating func int(_ v: Int) {
        if v >= 10 { int(v / 10) }
        bytes.append(UInt8(ascii: "0") + UInt8(v % 10))
    }

    /// `"a.b.c.d"`, quoted.
    mutating func address(_ a: IPv4Address) {
        bytes.append(UInt8(ascii: "\""))
        int(Int(a.value >> 24))
        bytes.append(UInt8(ascii: "."))
        int(Int((a.value >> 16) & 0xFF))
        bytes.append(UInt8(ascii: "."))
        int(Int((a.value >> 8) & 0xFF))
        bytes.append(UInt8(ascii: "."))
        int(Int(a.value & 0xFF))
        bytes.append(UInt8(ascii: "\""))
    }
}

/// A published port's identity: protocol and port.
struct PortKey: Hashable, Comparable {
    var proto: PortProtocol
    var port: UInt16

    static func < (l: PortKey, r: PortKey) -> Bool { (l.proto.rawValue, l.port) < (r.proto.rawValue, r.port) }
}
