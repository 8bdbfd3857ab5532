import OverlayModel

/// What happened to a table entry, as a watcher sees it.
public enum TableChangeKind: String, Sendable, Hashable {
    /// The entry became visible.
    case create
    /// A visible entry got a new value (or owner).
    case update
    /// The entry went away (deleted, its owner failed or left the network).
    case delete
}

/// One change of a table entry, as delivered to watchers.
public struct TableChange: Sendable, Hashable, CustomStringConvertible {
    /// Create, update or delete.
    public var kind: TableChangeKind
    /// The network the table belongs to.
    public var network: String
    /// The table name (e.g. `endpoint_table`).
    public var table: String
    /// The entry key.
    public var key: String
    /// The value (for a delete: the last value seen).
    public var value: [UInt8]
    /// The node that owns (wrote) the entry.
    public var owner: String
    /// A delete because the owner failed or left gossip (the entry is withdrawn, and comes back
    /// if the owner does), not one the owner made.
    public var withdrawn: Bool
    /// Makes a change.
    public init(kind: TableChangeKind, network: String, table: String, key: String, value: [UInt8], owner: String,
                withdrawn: Bool = false) {
        self.withdrawn = withdrawn
        self.kind = kind
        self.network = network
        self.table = table
        self.key = key
        self.value = value
        self.owner = owner
    }
    /// `create demo/endpoint_table/k by h1`.
    public var description: String { "\(kind.rawValue) \(network)/\(table)/\(key) by \(owner)" }
}

/// A visible table entry.
public struct TableEntry: Sendable, Hashable {
    /// The network the table belongs to.
    public var network: String
    /// The table name.
    public var table: String
    /// The entry key.
    public var key: String
    /// The value bytes.
    public var value: [UInt8]
    /// The node that owns the entry.
    public var owner: String
    /// The Lamport time of the last write.
    public var ltime: UInt64
}

/// A node joined or left one network (as this node learned it).
public enum NetworkMembershipEvent: Sendable, Hashable {
    /// `node` is now a live member of `network` (joined it, or came back).
    case joined(network: String, node: String)
    /// `node` left `network`, or failed.
    case left(network: String, node: String)
}

/// Settings of the network-scoped tables.
public struct NetworkDBConfig: Sendable, Equatable {
    /// This node's name (the gossip member name).
    public var nodeName: String
    /// How long deleted or withdrawn entries are kept (as tombstones) before they are forgotten; Docker uses 30 min.
    public var reapInterval: Duration
    /// How often every network's own entries are re-sent to the network's members; Docker uses 30 s.
    public var bulkSyncInterval: Duration
    /// How often the shell calls `onTick` (reaping and bulk sync checks).
    public var tickInterval: Duration
    /// How far ahead of this node's Lamport clock a message's time may be. Clocks are seeded with
    /// Unix milliseconds, so honest nodes are within days of each other; a message further ahead
    /// (a time of UInt64.max would wrap every clock it reached) is dropped and counted.
    public var maxClockLead: UInt64
    /// Makes settings with Docker's defaults.
    public init(nodeName: String, reapInterval: Duration = .seconds(1800), bulkSyncInterval: Duration = .seconds(30),
                tickInterval: Duration = .seconds(1), maxClockLead: UInt64 = 1 << 44) {
        self.nodeName = nodeName
        self.reapInterval = reapInterval
        self.bulkSyncInterval = bulkSyncInterval
        self.tickInterval = tickInterval
        self.maxClockLead = maxClockLead
    }
}

/// What the tables core asks its shell to do.
public enum NetworkDBDirective: Sendable, Hashable {
    /// Send `bytes` reliably (a TCP user message) to the node `node` at `address`.
    case send(node: String, address: NodeAddress, bytes: [UInt8])
    /// Gossip `bytes` to the whole cluster (a user broadcast).
    case broadcast([UInt8])
    /// Tell watchers about an entry change.
    case change(TableChange)
    /// Tell watchers about a network membership change.
    case membership(NetworkMembershipEvent)
}

/// The sans-IO core of the network-scoped replicated tables, modelled on Docker's NetworkDB: per
/// network tables of key → bytes with Lamport clocks, network membership per node, tombstones,
/// withdrawal of a failed node's entries. Time (`now`) is injected; messages come in as bytes.
public struct NetworkDBCore: Sendable {
    struct EntryID: Hashable, Sendable {
        var network: String
        var table: String
        var key: String
    }
    struct EntryState: Sendable {
        var value: [UInt8]
        var owner: String
        var ltime: UInt64
        var deleted: Bool
        /// Hidden because the owner failed; restored if the owner re-announces it.
        var withdrawn: Bool
        var reapAt: Duration?
        /// The owner's signature of a tombstone, passed on in bulk syncs.
        var signature: [UInt8] = []
        var visible: Bool { !deleted && !withdrawn }
    }
    struct Membership: Sendable, Equatable {
        var ltime: UInt64
        var leaving: Bool
        /// The node's signature of a leave, passed on in push-pull state.
        var signature: [UInt8] = []
    }

    /// The settings.
    public let config: NetworkDBConfig
    /// The Lamport clock.
    public private(set) var clock: UInt64 = 0
    /// The clock as this node alone would have moved it (its seed and its own ticks, never a
    /// time it was told): what a message's time is measured against, so that a run of messages,
    /// each as far ahead as allowed of the last, cannot carry the clock up step by step.
    public private(set) var ownClock: UInt64 = 0
    /// Table messages from the wire that could not be decoded (dropped).
    public private(set) var malformedMessages = 0
    /// Table messages dropped because their Lamport time was too far ahead (see `maxClockLead`).
    public private(set) var rejectedClocks = 0
    /// Signs this node's deletes, leaves and bulk syncs and checks other nodes' (nil: none are).
    public var authenticator: TableAuthenticator?
    /// Deletes and leaves dropped, and bulk syncs whose implicit deletes were skipped, because
    /// their signature did not verify (see ``authenticator``).
    public private(set) var unauthenticated = 0
    var entries: [EntryID: EntryState] = [:]
    var memberships: [String: [String: Membership]] = [:]   // node -> network -> state
    var alive: [String: NodeAddress] = [:]                   // other nodes believed alive
    var nextBulkSync: Duration?

    /// Makes a core. `clock` seeds the Lamport clock: pass a wall-clock value (e.g. Unix
    /// milliseconds) so that a restarted node's writes are newer than its earlier ones.
    public init(config: NetworkDBConfig, clock: UInt64 = 0) {
        self.config = config
        self.clock = clock
        self.ownClock = clock
    }

    var me: String { config.nodeName }

    mutating func tick() -> UInt64 {
        clock &+= 1
        ownClock &+= 1
        return clock
    }

    /// No Lamport time above this is ever taken: far below the wrap, whatever messages arrive.
    public static let clockCeiling: UInt64 = 1 << 62

    /// Takes a message's Lamport time; false (and counted in `rejectedClocks`) when it is more
    /// than `maxClockLead` ahead of this node's own clock (``ownClock``) to be honest, and then
    /// the message is dropped.
    mutating func witness(_ t: UInt64) -> Bool {
        guard t <= Self.clockCeiling, t <= ownClock || t - ownClock <= config.maxClockLead else {
            rejectedClocks += 1
            return false
        }
        // Taken, but the clock moves at most half the lead past this node's own: one message far
        // ahead must not carry it where every node started before this one refuses its writes.
        if t > clock { clock = max(clock, min(t, ownClock &+ config.maxClockLead / 2)) }
        return true
    }

    // MARK: - Queries

    /// The networks this node is a member of.
    public var networks: [String] {
        (memberships[me] ?? [:]).filter { !$0.value.leaving }.keys.sorted()
    }

    /// Whether this node is a member of `network`.
    public func isMember(_ network: String) -> Bool {
        memberships[me]?[network].map { !$0.leaving } ?? false
    }

    /// Live nodes (this one included) that are members of `network`.
    public func members(of network: String) -> [String] {
        memberships.filter { node, nets in
            (node == me || alive[node] != nil) && nets[network].map { !$0.leaving } == true
        }.keys.sorted()
    }

    /// Visible entries, optionally limited to one network and table, sorted by network, table, key.
    public func visibleEntries(network: String? = nil, table: String? = nil) -> [TableEntry] {
        entries.compactMap { id, e -> TableEntry? in
            guard e.visible, network == nil || id.network == network, table == nil || id.table == table else { return nil }
            return TableEntry(network: id.network, table: id.table, key: id.key, value: e.value, owner: e.owner, ltime: e.ltime)
        }.sorted { ($0.network, $0.table, $0.key) < ($1.network, $1.table, $1.key) }
    }

    /// How many entries (visible, deleted or withdrawn) are stored; tombstones count until reaped.
    public var storedEntries: Int { entries.count }

    // MARK: - Local operations

    /// Joins a network: announces it cluster-wide and bulk-syncs with its known members.
    public mutating func joinNetwork(_ network: String, now: Duration) -> [NetworkDBDirective] {
        if isMember(network) { return [] }
        let record = NetworkRecord(node: me, network: network, ltime: tick(), leaving: false)
        memberships[me, default: [:]][network] = Membership(ltime: record.ltime, leaving: false)
        var out: [NetworkDBDirective] = [.broadcast(TableWire.encode(.network(record))), .membership(.joined(network: network, node: me))]
        for node in members(of: network) where node != me {
            out.append(contentsOf: bulk(network: network, to: node, reply: true))
        }
        return out
    }

    /// Leaves a network: announces it and forgets the network's entries locally (watchers see deletes).
    public mutating func leaveNetwork(_ network: String, now: Duration) -> [NetworkDBDirective] {
        guard isMember(network) else { return [] }
        var record = NetworkRecord(node: me, network: network, ltime: tick(), leaving: true)
        record.signature = authenticator?.sign(TableAuthenticator.leave(record)) ?? []
        memberships[me, default: [:]][network] = Membership(ltime: record.ltime, leaving: true, signature: record.signature)
        var out: [NetworkDBDirective] = [.broadcast(TableWire.encode(.network(record)))]
        for (id, e) in entries where id.network == network {
            if e.visible { out.append(.change(TableChange(kind: .delete, network: id.network, table: id.table, key: id.key, value: e.value, owner: e.owner))) }
            entries[id] = nil
        }
        out.append(.membership(.left(network: network, node: me)))
        return out
    }

    /// Creates an entry owned by this node; throws if the network is not joined or the key is visible.
    public mutating func createEntry(network: String, table: String, key: String, value: [UInt8], now: Duration) throws -> [NetworkDBDirective] {
        let id = EntryID(network: network, table: table, key: key)
        if entries[id]?.visible == true {
            throw GossipError(.tableEntryExists, "\(network)/\(table)/\(key) exists (owner \(entries[id]!.owner)); update or delete it instead")
        }
        return try write(id, value: value, deleted: false, now: now)
    }

    /// Updates a visible entry (this node becomes its owner); throws if it does not exist.
    public mutating func updateEntry(network: String, table: String, key: String, value: [UInt8], now: Duration) throws -> [NetworkDBDirective] {
        let id = EntryID(network: network, table: table, key: key)
        guard entries[id]?.visible == true else {
            throw GossipError(.tableEntryNotFound, "\(network)/\(table)/\(key) does not exist; create it first")
        }
        return try write(id, value: value, deleted: false, now: now)
    }

    /// Deletes a visible entry (leaves a tombstone until reaped); throws if it does not exist.
    public mutating func deleteEntry(network: String, table: String, key: String, now: Duration) throws -> [NetworkDBDirective] {
        let id = EntryID(network: network, table: table, key: key)
        guard let e = entries[id], e.visible else {
            throw GossipError(.tableEntryNotFound, "\(network)/\(table)/\(key) does not exist")
        }
        return try write(id, value: e.value, deleted: true, now: now)
    }

    private mutating func write(_ id: EntryID, value: [UInt8], deleted: Bool, now: Duration) throws -> [NetworkDBDirective] {
        guard isMember(id.network) else {
            throw GossipError(.notNetworkMember, "this node is not a member of network \(id.network); join it first")
        }
        let old = entries[id]
        var record = EntryRecord(owner: me, network: id.network, table: id.table, key: id.key, value: value, ltime: tick(), deleted: deleted)
        if deleted { record.signature = authenticator?.sign(TableAuthenticator.tombstone(record)) ?? [] }
        entries[id] = EntryState(value: value, owner: me, ltime: record.ltime, deleted: deleted, withdrawn: false,
                                 reapAt: deleted ? now + config.reapInterval : nil, signature: record.signature)
        var out: [NetworkDBDirective] = []
        if let kind = Self.changeKind(wasVisible: old?.visible ?? false, isVisible: !deleted) {
            out.append(.change(TableChange(kind: kind, network: id.network, table: id.table, key: id.key, value: value, owner: me)))
        }
        let bytes = TableWire.encode(.entry(record))
        for node in members(of: id.network) where node != me {
            if let a = alive[node] { out.append(.send(node: node, address: a, bytes: bytes)) }
        }
        return out
    }

    static func changeKind(wasVisible: Bool, isVisible: Bool) -> TableChangeKind? {
        switch (wasVisible, isVisible) {
        case (false, true): return .create
        case (true, true): return .update
        case (true, false): return .delete
        case (false, false): return nil
        }
    }

    // MARK: - Cluster membership (from the gossip layer)

    /// A cluster member is alive (first seen or back): bulk-sync every network we share with it.
    public mutating func nodeAlive(_ node: String, address: NodeAddress, now: Duration) -> [NetworkDBDirective] {
        guard node != me else { return [] }
        let wasAlive = alive[node] != nil
        alive[node] = address
        if wasAlive { return [] }
        var out: [NetworkDBDirective] = []
        for network in networks where memberships[node]?[network].map({ !$0.leaving }) == true {
            out.append(.membership(.joined(network: network, node: node)))
            out.append(contentsOf: bulk(network: network, to: node, reply: true))
        }
        return out
    }

    /// A cluster member failed or left: its entries are withdrawn (watchers see deletes) and
    /// reaped after `reapInterval` unless it comes back and re-announces them.
    public mutating func nodeGone(_ node: String, now: Duration) -> [NetworkDBDirective] {
        guard node != me, alive.removeValue(forKey: node) != nil else { return [] }
        var out: [NetworkDBDirective] = []
        for network in networks where memberships[node]?[network].map({ !$0.leaving }) == true {
            out.append(.membership(.left(network: network, node: node)))
        }
        for (id, e) in entries.sorted(by: { ($0.key.network, $0.key.table, $0.key.key) < ($1.key.network, $1.key.table, $1.key.key) })
        where e.owner == node && e.visible {
            entries[id]?.withdrawn = true
            entries[id]?.reapAt = now + config.reapInterval
            out.append(.change(TableChange(kind: .delete, network: id.network, table: id.table, key: id.key, value: e.value, owner: node,
                                           withdrawn: true)))
        }
        return out
    }

    // MARK: - Timers

    /// Reaps old tombstones and, every `bulkSyncInterval`, re-sends this node's entries to every
    /// live member of each joined network.
    public mutating func onTick(now: Duration) -> [NetworkDBDirective] {
        for (id, e) in entries where !e.visible {
            if let r = e.reapAt, r <= now { entries[id] = nil }
        }
        guard let next = nextBulkSync else {
            nextBulkSync = now + config.bulkSyncInterval
            return []
        }
        guard now >= next else { return [] }
        nextBulkSync = now + config.bulkSyncInterval
        var out: [NetworkDBDirective] = []
        for network in networks {
            for node in members(of: network) where node != me {
                out.append(contentsOf: bulk(network: network, to: node, reply: false))
            }
        }
        return out
    }

    // MARK: - Push-pull state

    /// Every node's network memberships, for the gossip push-pull user state.
    public func localState() -> [UInt8] {
        var records: [NetworkRecord] = []
        for (node, nets) in memberships {
            for (network, m) in nets {
                records.append(NetworkRecord(node: node, network: network, ltime: m.ltime, leaving: m.leaving, signature: m.signature))
            }
        }
        return TableWire.encode(.networks(records))
    }

    // MARK: - Receiving

    /// Handles one table message from the wire (a user message or push-pull state). Bytes that do
    /// not decode are counted in `malformedMessages` and dropped.
    public mutating func receive(_ bytes: [UInt8], now: Duration) -> [NetworkDBDirective] {
        guard let message = TableWire.decode(bytes) else {
            malformedMessages += 1
            return []
        }
        switch message {
        case .network(let r): return apply(r, now: now)
        case .networks(let rs): return rs.flatMap { apply($0, now: now) }
        case .entry(let r): return apply(r, now: now)
        case .bulk(let b): return apply(b, now: now)
        }
    }

    mutating func apply(_ r: NetworkRecord, now: Duration) -> [NetworkDBDirective] {
        guard witness(r.ltime) else { return [] }
        guard r.node != me else { return [] }
        if let old = memberships[r.node]?[r.network], old.ltime >= r.ltime { return [] }
        // A leave takes the node's entries away: only the node itself may say it.
        if r.leaving, let auth = authenticator, !auth.verify(r.node, TableAuthenticator.leave(r), r.signature) {
            unauthenticated += 1
            return []
        }
        let wasMember = memberships[r.node]?[r.network].map { !$0.leaving } ?? false
        memberships[r.node, default: [:]][r.network] = Membership(ltime: r.ltime, leaving: r.leaving, signature: r.leaving ? r.signature : [])
        guard isMember(r.network), alive[r.node] != nil else { return [] }
        var out: [NetworkDBDirective] = []
        if !r.leaving {
            // A (re)join: the node may be a restarted process that knows nothing; sync both ways.
            if !wasMember { out.append(.membership(.joined(network: r.network, node: r.node))) }
            out.append(contentsOf: bulk(network: r.network, to: r.node, reply: true))
        } else if r.leaving && wasMember {
            out.append(.membership(.left(network: r.network, node: r.node)))
            for (id, e) in entries where id.network == r.network && e.owner == r.node && !e.deleted {
                entries[id]?.deleted = true
                entries[id]?.reapAt = now + config.reapInterval
                if e.visible {
                    out.append(.change(TableChange(kind: .delete, network: id.network, table: id.table, key: id.key, value: e.value, owner: e.owner)))
                }
            }
        }
        return out
    }

    mutating func apply(_ r: EntryRecord, now: Duration) -> [NetworkDBDirective] {
        guard witness(r.ltime) else { return [] }
        // Only live owners write: a late message from a node declared dead must not resurrect
        // its entries (it re-announces them in a bulk sync when it is back).
        guard r.owner != me, isMember(r.network), alive[r.owner] != nil else { return [] }
        // A delete takes the entry away: only its owner may say it.
        if r.deleted, let auth = authenticator, !auth.verify(r.owner, TableAuthenticator.tombstone(r), r.signature) {
            unauthenticated += 1
            return []
        }
        let id = EntryID(network: r.network, table: r.table, key: r.key)
        let old = entries[id]
        if let old {
            let restore = old.withdrawn && r.ltime == old.ltime && !r.deleted && old.owner == r.owner
            guard r.ltime > old.ltime || restore else { return [] }
        }
        entries[id] = EntryState(value: r.value, owner: r.owner, ltime: r.ltime, deleted: r.deleted, withdrawn: false,
                                 reapAt: r.deleted ? now + config.reapInterval : nil, signature: r.deleted ? r.signature : [])
        guard let kind = Self.changeKind(wasVisible: old?.visible ?? false, isVisible: !r.deleted) else { return [] }
        let value = r.deleted ? (old?.value ?? r.value) : r.value
        return [.change(TableChange(kind: kind, network: r.network, table: r.table, key: r.key, value: value, owner: r.owner))]
    }

    mutating func apply(_ b: BulkRecord, now: Duration) -> [NetworkDBDirective] {
        guard witness(b.ltime) else { return [] }
        guard b.node != me, isMember(b.network) else { return [] }
        var out: [NetworkDBDirective] = []
        var present = Set<EntryID>()
        for r in b.entries where r.owner == b.node && r.network == b.network {
            present.insert(EntryID(network: r.network, table: r.table, key: r.key))
            out.append(contentsOf: apply(r, now: now))
        }
        // A bulk sync is the owner's full state for the network: what it no longer has is gone, if
        // the node itself says so.
        var complete = b.entries.allSatisfy { $0.owner == b.node && $0.network == b.network }
        if complete, let auth = authenticator, !auth.verify(b.node, TableAuthenticator.bulk(b), b.signature) {
            unauthenticated += 1
            complete = false
        }
        for (id, e) in entries.sorted(by: { ($0.key.table, $0.key.key) < ($1.key.table, $1.key.key) })
        where complete && id.network == b.network && e.owner == b.node && !e.deleted && e.ltime < b.ltime && !present.contains(id) {
            entries[id]?.deleted = true
            entries[id]?.withdrawn = false
            entries[id]?.reapAt = now + config.reapInterval
            if e.visible {
                out.append(.change(TableChange(kind: .delete, network: id.network, table: id.table, key: id.key, value: e.value, owner: e.owner)))
            }
        }
        if b.reply, let a = alive[b.node] {
            out.append(contentsOf: bulk(network: b.network, to: b.node, reply: false, address: a))
        }
        return out
    }

    /// This node's own entries (and tombstones) of `network`, addressed to `node`.
    mutating func bulk(network: String, to node: String, reply: Bool, address: NodeAddress? = nil) -> [NetworkDBDirective] {
        guard let a = address ?? alive[node] else { return [] }
        let own = entries.filter { $0.key.network == network && $0.value.owner == me }.map { id, e in
            EntryRecord(owner: me, network: network, table: id.table, key: id.key, value: e.value, ltime: e.ltime, deleted: e.deleted,
                        signature: e.deleted ? e.signature : [])
        }
        var record = BulkRecord(node: me, network: network, ltime: tick(), reply: reply, entries: own)
        record.signature = authenticator?.sign(TableAuthenticator.bulk(record)) ?? []
        return [.send(node: node, address: a, bytes: TableWire.encode(.bulk(record)))]
    }
}

extension GossipError.Code {
    /// A table entry to create exists already.
    public static let tableEntryExists = GossipError.Code(rawValue: "tableEntryExists")
    /// A table entry to update or delete does not exist.
    public static let tableEntryNotFound = GossipError.Code(rawValue: "tableEntryNotFound")
    /// The node is not a member of the network a table operation names.
    public static let notNetworkMember = GossipError.Code(rawValue: "notNetworkMember")
}
