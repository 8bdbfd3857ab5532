import Foundation

/// The replicated ``SharedStore``: an etcd v3 cluster, through its JSON gateway. Several
/// managers share it; each object is the key `<prefix><kind>/<key>` (the prefix is
/// `/swift-overlay/<clusterID>/`; a key may contain `/`), its revisions etcd's `create_revision`
/// and `mod_revision`.
///
/// - ``load(_:)`` reads each kind at one revision (the first answer's), in pages.
/// - ``commit(_:_:)`` is one etcd transaction: a condition is a compare (absent:
///   `CREATE == 0`, unchanged: `MOD == m`, created: `CREATE == at`), a change a put or delete.
///   etcd takes at most 128 of each; more is a ``StoreError`` before anything is sent.
/// - ``watch(_:after:)`` is one etcd watch of the whole prefix from `after + 1`: every commit
///   under the prefix gives a batch (with no events when it changed other kinds), so a view
///   follows the store's revision. A member that goes away is replaced by the next without a
///   gap; a compacted start ends the watch ("load again").
/// - When etcd has no quorum or no member answers, every call throws ``StoreUnavailable`` with
///   one line, within the request timeout (3 s), and calls in the next second fail at once.
public final class EtcdStore: SharedStore {
    let client: EtcdClient
    /// The prefix of every key of this cluster, ending in "/".
    public let prefix: String
    private let prefixBytes: Data
    /// etcd's default limit of operations in each branch of a transaction (`--max-txn-ops`).
    public static let maxOperations = 128

    /// The prefix of a cluster's keys when none is given: `/swift-overlay/<clusterID>/`.
    public static func defaultPrefix(clusterID: String) -> String { "/swift-overlay/\(clusterID)/" }

    /// A store of cluster `clusterID` on the etcd cluster `configuration` names, under
    /// `prefix` (default ``defaultPrefix(clusterID:)``). Nothing is asked of etcd yet. Call
    /// ``shutdown()`` when done.
    public init(_ configuration: EtcdConfiguration, clusterID: String, prefix: String? = nil) throws {
        var prefix = prefix ?? Self.defaultPrefix(clusterID: clusterID)
        if !prefix.hasSuffix("/") { prefix += "/" }
        client = try EtcdClient(configuration)
        self.prefix = prefix
        prefixBytes = Data(prefix.utf8)
    }

    /// Closes the connections to etcd; open watches end.
    public func shutdown() async throws { try await client.shutdown() }

    /// Replicated: several managers share it.
    public var isReplicated: Bool { true }

    /// The members' host:port, comma-separated, as messages name them.
    public var members: String { client.members }

    private func kindPrefix(_ kind: StoreKind) -> Data { prefixBytes + Data("\(kind.rawValue)/".utf8) }

    func key(_ kind: StoreKind, _ key: String) -> Data { kindPrefix(kind) + Data(key.utf8) }

    /// (kind, key) of a stored key under the prefix, nil for one that is not this cluster's.
    func parse(_ stored: Data) -> (StoreKind, String)? {
        guard stored.starts(with: prefixBytes) else { return nil }
        let rest = stored.dropFirst(prefixBytes.count)
        guard let slash = rest.firstIndex(of: UInt8(ascii: "/")) else { return nil }
        let kind = String(decoding: rest[rest.startIndex..<slash], as: UTF8.self)
        let key = String(decoding: rest[(slash + 1)...], as: UTF8.self)
        return (StoreKind(rawValue: kind), key)
    }

    public func load(_ kinds: [StoreKind]) async throws -> StoreSnapshot {
        // A compaction between two kinds' reads would leave the pinned revision behind: read all
        // again, at the new revision.
        for attempt in 1...3 {
            do {
                return try await loadOnce(kinds)
            } catch let e as EtcdError where e.isCompacted && attempt < 3 {
                continue
            } catch let e as EtcdError {
                throw StoreError("etcd at \(members) refused a read: \(e.message)")
            }
        }
        preconditionFailure("unreachable")
    }

    private func loadOnce(_ kinds: [StoreKind]) async throws -> StoreSnapshot {
        var revision: Int64 = 0
        var entries: [StoreKind: [String: StoreEntry]] = [:]
        for kind in kinds {
            let from = kindPrefix(kind)
            let (kvs, at) = try await client.rangeAll(key: from, rangeEnd: from.etcdPrefixEnd, revision: revision)
            revision = at
            var m: [String: StoreEntry] = [:]
            for kv in kvs {
                let key = String(decoding: kv.key.dropFirst(from.count), as: UTF8.self)
                m[key] = StoreEntry(value: kv.value, created: UInt64(kv.createRevision), modified: UInt64(kv.modRevision))
            }
            entries[kind] = m
        }
        if kinds.isEmpty {
            revision = try await client.range(EtcdRangeRequest(key: prefixBytes, rangeEnd: prefixBytes.etcdPrefixEnd, countOnly: true)).header.revision
        }
        return StoreSnapshot(revision: UInt64(revision), entries: entries)
    }

    public func commit(_ conditions: [StoreCondition], _ changes: [StoreChange]) async throws -> StoreCommit {
        try await commit(conditions, changes, lease: nil)
    }

    /// ``commit(_:_:)`` whose puts are attached to `lease`: etcd deletes them when the lease
    /// ends (a leader's key, a manager's presence). Throws ``StoreError`` if the lease is gone.
    public func commit(_ conditions: [StoreCondition], _ changes: [StoreChange], lease: EtcdLease?) async throws -> StoreCommit {
        let request = try transaction(conditions, changes, lease: lease?.id)
        let answer: EtcdTxnResponse
        do {
            answer = try await client.txn(request)
        } catch let e as EtcdError {
            if e.code == 5 { throw StoreError("etcd refused the transaction: lease \(lease.map { String($0.id) } ?? "") is gone (\(e.message))") }
            let hint = e.message.contains("too large") ? " (etcd takes at most 1.5 MiB in one transaction: split it)" : ""
            throw StoreError("etcd refused the transaction: \(e.message)\(hint)")
        }
        return StoreCommit(committed: answer.succeeded, revision: UInt64(answer.header.revision))
    }

    /// The etcd transaction of a commit. A key changed twice keeps its last change (etcd refuses
    /// a key twice in one transaction).
    func transaction(_ conditions: [StoreCondition], _ changes: [StoreChange], lease: Int64?) throws -> EtcdTxnRequest {
        var last: [Data: Int] = [:]
        for (i, c) in changes.enumerated() {
            switch c {
            case .put(let kind, let k, _), .delete(let kind, let k): last[key(kind, k)] = i
            }
        }
        let kept = changes.indices.filter { i in
            switch changes[i] {
            case .put(let kind, let k, _), .delete(let kind, let k): last[key(kind, k)] == i
            }
        }
        guard conditions.count <= Self.maxOperations, kept.count <= Self.maxOperations else {
            throw StoreError(
                "a transaction of \(conditions.count) conditions and \(kept.count) changes is more than etcd takes (at most \(Self.maxOperations) of each): split it")
        }
        let compare = conditions.map { c -> EtcdCompare in
            switch c {
            case .absent(let kind, let k): .created(key(kind, k), at: 0)
            case .unchanged(let kind, let k, let modified): .modified(key(kind, k), at: Int64(modified))
            case .created(let kind, let k, let at): .created(key(kind, k), at: Int64(at))
            }
        }
        let success = kept.map { i -> EtcdOperation in
            switch changes[i] {
            case .put(let kind, let k, let value): .put(EtcdPutRequest(key: key(kind, k), value: value, lease: lease))
            case .delete(let kind, let k): .delete(EtcdDeleteRangeRequest(key: key(kind, k)))
            }
        }
        return EtcdTxnRequest(compare: compare, success: success)
    }

    /// The changes after `revision`, from one etcd watch of the prefix, filtered to `kinds`.
    /// The stream's end (the consumer stops or is cancelled) closes the watch's request.
    public func watch(_ kinds: [StoreKind], after revision: UInt64) -> AsyncThrowingStream<StoreEventBatch, any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: StoreEventBatch.self, throwing: (any Error).self)
        let wanted = Set(kinds)
        let task = Task {
            do {
                try await self.follow(wanted, from: revision, into: continuation)
            } catch is CancellationError {
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    /// Runs the watch until it breaks for good. A member that goes away mid-watch is replaced
    /// by the next, from the revision after the last one delivered: no change is missed or
    /// repeated. Throws ``StoreUnavailable`` when no member can serve, ``StoreError`` when the
    /// start was compacted away.
    private func follow(
        _ kinds: Set<StoreKind>, from revision: UInt64, into continuation: AsyncThrowingStream<StoreEventBatch, any Error>.Continuation
    ) async throws {
        var delivered = revision
        var breaks = 0
        while true {
            let messages: EtcdWatchStream
            do {
                messages = try await client.watch(
                    EtcdWatchCreateRequest(
                        createRequest: .init(
                            key: prefixBytes, rangeEnd: prefixBytes.etcdPrefixEnd, startRevision: Int64(delivered + 1), progressNotify: true)))
            } catch let e as EtcdError {
                throw StoreError("etcd at \(members) refused the watch: \(e.message)")
            }
            do {
                for try await message in messages {
                    if message.canceled {
                        if message.compactRevision > 0 {
                            throw StoreError(
                                "etcd compacted its history to revision \(message.compactRevision), past \(delivered) where the watch would start: load again")
                        }
                        throw StoreError("etcd cancelled the watch\(message.cancelReason.isEmpty ? "" : ": \(message.cancelReason)"): load again")
                    }
                    if message.created { continue }
                    breaks = 0
                    if let batch = batch(message, kinds, after: delivered) {
                        delivered = batch.revision
                        continuation.yield(batch)
                    }
                }
            } catch let e as EtcdError {
                // The member lost its leader (hasleader) or said something else went wrong.
                if EtcdClient.unavailability(e) != nil {
                    throw StoreUnavailable(
                        "cluster store unavailable: etcd at \(members) has no quorum (\(e.message)): the watch ended at revision \(delivered), load again")
                }
                throw StoreError("etcd ended the watch: \(e.message): load again")
            } catch let e as StoreError {
                throw e
            } catch {
                try Task.checkCancellation()
                // The connection broke (the member stopped): below, once per member in a row.
                _ = error
            }
            try Task.checkCancellation()
            breaks += 1
            if breaks > client.endpoints.count {
                throw StoreUnavailable("cluster store unavailable: the watch of etcd at \(members) broke \(breaks) times in a row: load again")
            }
        }
    }

    /// The batch of one watch message, nil for one that says nothing new: events of `kinds`
    /// at the revision of the last event (a replay has many revisions, and its header says the
    /// store's current one, not theirs); for a progress message, its header's revision.
    func batch(_ message: EtcdWatchResponse, _ kinds: Set<StoreKind>, after delivered: UInt64) -> StoreEventBatch? {
        var events: [StoreEvent] = []
        var revision = delivered
        if message.events.isEmpty {
            revision = max(revision, UInt64(max(0, message.header.revision)))
        }
        for e in message.events {
            let at = UInt64(max(0, e.kv.modRevision))
            revision = max(revision, at)
            guard at > delivered, let (kind, key) = parse(e.kv.key), kinds.contains(kind) else { continue }
            if e.isDelete {
                events.append(.delete(kind, key, revision: at))
            } else {
                events.append(.put(kind, key, StoreEntry(value: e.kv.value, created: UInt64(e.kv.createRevision), modified: at)))
            }
        }
        guard revision > delivered || !events.isEmpty else { return nil }
        return StoreEventBatch(events: events, revision: revision)
    }
}
