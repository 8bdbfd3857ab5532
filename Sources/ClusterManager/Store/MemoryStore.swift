import Foundation
import Synchronization

/// A ``SharedStore`` in memory, with etcd's semantics (revisions, conditional transactions of at
/// most 128 operations, watches that replay history from a revision): what tests of several
/// managers share, and a model of the replicated store to check others against.
public final class MemoryStore: SharedStore {
    private struct State {
        var snapshot = StoreSnapshot(revision: 0)
        var history: [StoreEvent] = []
        var watchers: [UUID: (kinds: Set<StoreKind>, continuation: AsyncThrowingStream<StoreEventBatch, any Error>.Continuation)] = [:]
        var unavailable: String?
    }

    private let state = Mutex(State())
    /// etcd's default limit of operations (conditions and changes each) in one transaction.
    public static let maxOperations = 128

    /// An empty store.
    public init() {}

    /// Replicated, as the store it models.
    public var isReplicated: Bool { true }

    /// Makes every call fail with ``StoreUnavailable`` (`message`), or work again (nil).
    public func setUnavailable(_ message: String?) {
        state.withLock { $0.unavailable = message }
    }

    public func load(_ kinds: [StoreKind]) async throws -> StoreSnapshot {
        try state.withLock { s in
            if let m = s.unavailable { throw StoreUnavailable(m) }
            var entries: [StoreKind: [String: StoreEntry]] = [:]
            for k in kinds { entries[k] = Dictionary(uniqueKeysWithValues: s.snapshot.all(k).map { ($0.key, $0.entry) }) }
            return StoreSnapshot(revision: s.snapshot.revision, entries: entries)
        }
    }

    public func commit(_ conditions: [StoreCondition], _ changes: [StoreChange]) async throws -> StoreCommit {
        try state.withLock { s in
            if let m = s.unavailable { throw StoreUnavailable(m) }
            guard conditions.count <= Self.maxOperations, changes.count <= Self.maxOperations else {
                throw StoreError("too many operations in txn request (\(conditions.count) conditions, \(changes.count) changes; at most \(Self.maxOperations))")
            }
            guard s.snapshot.holds(conditions) else { return StoreCommit(committed: false, revision: s.snapshot.revision) }
            let revision = s.snapshot.revision + 1
            var events: [StoreEvent] = []
            for c in changes {
                switch c {
                case .put(let kind, let key, let value):
                    let created = s.snapshot.entry(kind, key)?.created ?? revision
                    events.append(.put(kind, key, StoreEntry(value: value, created: created, modified: revision)))
                case .delete(let kind, let key):
                    if s.snapshot.entry(kind, key) != nil { events.append(.delete(kind, key, revision: revision)) }
                }
            }
            s.snapshot.apply(events)
            s.snapshot.advance(to: revision)
            s.history += events
            for w in s.watchers.values {
                w.continuation.yield(StoreEventBatch(events: events.filter { w.kinds.contains($0.kind) }, revision: revision))
            }
            return StoreCommit(committed: true, revision: revision)
        }
    }

    public func watch(_ kinds: [StoreKind], after revision: UInt64) -> AsyncThrowingStream<StoreEventBatch, any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: StoreEventBatch.self, throwing: (any Error).self)
        let id = UUID()
        let wanted = Set(kinds)
        state.withLock { s in
            if let m = s.unavailable {
                continuation.finish(throwing: StoreUnavailable(m))
                return
            }
            let missed = s.history.filter { $0.revision > revision && wanted.contains($0.kind) }
            if !missed.isEmpty || s.snapshot.revision > revision {
                continuation.yield(StoreEventBatch(events: missed, revision: s.snapshot.revision))
            }
            s.watchers[id] = (wanted, continuation)
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.watchers.removeValue(forKey: id) }
        }
        return stream
    }
}

extension StoreEvent {
    /// The kind of the object changed.
    public var kind: StoreKind {
        switch self {
        case .put(let k, _, _), .delete(let k, _, _): k
        }
    }

    /// The key of the object changed.
    public var key: String {
        switch self {
        case .put(_, let k, _), .delete(_, let k, _): k
        }
    }
}
