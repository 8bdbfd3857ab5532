import Foundation

/// One stored value and its revisions: the store revision of the commit that created it and of
/// the one that last changed it (etcd's `create_revision` and `mod_revision`; SQLite's version
/// counter). A value deleted and made again has a new `created`.
public struct StoreEntry: Sendable, Equatable {
    public var value: Data
    public var created: UInt64
    public var modified: UInt64

    /// Makes an entry.
    public init(value: Data, created: UInt64, modified: UInt64) {
        self.value = value
        self.created = created
        self.modified = modified
    }
}

/// What a writer read and decided on, which must still hold for its transaction to commit: the
/// compare half of a compare-and-swap. A transaction whose conditions do not all hold changes
/// nothing.
public enum StoreCondition: Sendable, Equatable {
    /// (kind, key) does not exist: create-only, so two managers never hand out the same thing.
    case absent(StoreKind, String)
    /// (kind, key) is as it was read: last changed at `modified` (0: it did not exist).
    case unchanged(StoreKind, String, modified: UInt64)
    /// (kind, key) is the very object read (created at `created`, not deleted and made again):
    /// how a leader's writes are fenced by its leadership key.
    case created(StoreKind, String, at: UInt64)
}

/// A change that a commit made, as a watcher sees it.
public enum StoreEvent: Sendable, Equatable {
    case put(StoreKind, String, StoreEntry)
    case delete(StoreKind, String, revision: UInt64)

    /// The revision of the commit that made it.
    public var revision: UInt64 {
        switch self {
        case .put(_, _, let e): e.modified
        case .delete(_, _, let r): r
        }
    }
}

/// The outcome of a commit: made at `revision`, or refused because a condition no longer held
/// (the store was at `revision`: read again at least that far and decide again).
public struct StoreCommit: Sendable, Equatable {
    public var committed: Bool
    public var revision: UInt64

    /// Makes an outcome.
    public init(committed: Bool, revision: UInt64) {
        self.committed = committed
        self.revision = revision
    }
}

/// The store cannot be reached or has no quorum: nothing was changed (or, after a timeout, it
/// cannot be known whether it was). One line, for the API's 503.
public struct StoreUnavailable: Error, Sendable, CustomStringConvertible {
    public var message: String
    /// Makes an error.
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Every entry of some kinds at one revision: what a manager decides from. Immutable; a watcher
/// makes the next one by applying events.
public struct StoreSnapshot: Sendable {
    /// The store revision this view is at.
    public private(set) var revision: UInt64
    private var kinds: [StoreKind: [String: StoreEntry]]

    /// A view of `entries` at `revision`.
    public init(revision: UInt64, entries: [StoreKind: [String: StoreEntry]] = [:]) {
        self.revision = revision
        kinds = entries
    }

    /// The entry of (kind, key), if present.
    public func entry(_ kind: StoreKind, _ key: String) -> StoreEntry? { kinds[kind]?[key] }

    /// Every (key, entry) of a kind, in key order.
    public func all(_ kind: StoreKind) -> [(key: String, entry: StoreEntry)] {
        (kinds[kind] ?? [:]).sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    /// How many entries a kind has.
    public func count(_ kind: StoreKind) -> Int { kinds[kind]?.count ?? 0 }

    /// The decoded value of (kind, key), if present.
    public func get<T: Decodable>(_ kind: StoreKind, _ key: String, as type: T.Type) throws -> T? {
        guard let e = entry(kind, key) else { return nil }
        do { return try StoreCoding.decoder.decode(T.self, from: e.value) } catch {
            throw StoreError("stored \(kind) '\(key)' cannot be read: \(error)")
        }
    }

    /// Every decoded value of a kind, in key order.
    public func all<T: Decodable>(_ kind: StoreKind, as type: T.Type) throws -> [T] {
        try all(kind).map { key, e in
            do { return try StoreCoding.decoder.decode(T.self, from: e.value) } catch {
                throw StoreError("stored \(kind) '\(key)' cannot be read: \(error)")
            }
        }
    }

    /// Whether every condition holds in this view.
    public func holds(_ conditions: [StoreCondition]) -> Bool {
        conditions.allSatisfy { c in
            switch c {
            case .absent(let kind, let key): entry(kind, key) == nil
            case .unchanged(let kind, let key, let modified): (entry(kind, key)?.modified ?? 0) == modified
            case .created(let kind, let key, let at): entry(kind, key)?.created == at
            }
        }
    }

    /// The view after `events` (older events than the view are ignored: a watch may repeat).
    public mutating func apply(_ events: [StoreEvent]) {
        for e in events where e.revision > revision || e.revision == 0 {
            switch e {
            case .put(let kind, let key, let entry): kinds[kind, default: [:]][key] = entry
            case .delete(let kind, let key, _): kinds[kind]?[key] = nil
            }
        }
        if let last = events.map(\.revision).max(), last > revision { revision = last }
    }

    /// The view moved to `revision` with no change of its own kinds (a watch's progress).
    public mutating func advance(to revision: UInt64) {
        if revision > self.revision { self.revision = revision }
    }
}

/// Where several managers keep what they share: networks, nodes, allocations, services, tasks
/// and the cluster's settings. Reads come from a view (``load(_:)``, then kept current with
/// ``watch(_:after:)``); every write is one transaction that commits only if what its writer read
/// still holds (``commit(_:_:)``), so two writers never both win. ``SQLiteClusterStore`` is the
/// embedded one (a single manager); an etcd cluster is the replicated one.
public protocol SharedStore: Sendable {
    /// Whether several managers can share it (false for the embedded SQLite file).
    var isReplicated: Bool { get }
    /// Every entry of `kinds`, at the store's current revision.
    func load(_ kinds: [StoreKind]) async throws -> StoreSnapshot
    /// Applies `changes` in one transaction if every condition holds; else changes nothing.
    /// Throws ``StoreUnavailable`` when the store cannot be reached.
    func commit(_ conditions: [StoreCondition], _ changes: [StoreChange]) async throws -> StoreCommit
    /// The changes to `kinds` after `revision`, in commit order, batched as they come; a batch
    /// may be empty (the store's revision moved on without them: ``StoreSnapshot/advance(to:)``
    /// with the batch's revision). Ends with an error when the watch breaks (then load again).
    func watch(_ kinds: [StoreKind], after revision: UInt64) -> AsyncThrowingStream<StoreEventBatch, any Error>
}

/// The changes one watch answer carries, and the revision the store was at.
public struct StoreEventBatch: Sendable, Equatable {
    public var events: [StoreEvent]
    public var revision: UInt64

    /// Makes a batch.
    public init(events: [StoreEvent], revision: UInt64) {
        self.events = events
        self.revision = revision
    }
}
