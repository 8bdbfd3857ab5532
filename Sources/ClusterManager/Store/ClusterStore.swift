import Foundation
import GRDB
import Synchronization

/// The kinds of objects the cluster and agent stores hold. Each object is a JSON document
/// under (kind, key).
public struct StoreKind: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    /// Manager: overlay networks, by ID.
    public static let network = StoreKind(rawValue: "network")
    /// Manager: nodes, by node ID.
    public static let node = StoreKind(rawValue: "node")
    /// Manager: address allocations, by "<networkID>/<address>".
    public static let allocation = StoreKind(rawValue: "allocation")
    /// Both: this node's own secrets and settings (swarm membership, node ID, the state last
    /// received), by name.
    public static let setting = StoreKind(rawValue: "setting")
    /// Manager: what every manager shares besides objects (the join tokens and gossip keyring,
    /// the IPAM, the write sequence), by name.
    public static let clusterSetting = StoreKind(rawValue: "cluster-setting")
    /// Manager: services, by ID.
    public static let service = StoreKind(rawValue: "service")
    /// Manager: tasks, by ID.
    public static let task = StoreKind(rawValue: "task")
    /// Agent: local containers, by name.
    public static let container = StoreKind(rawValue: "container")
    /// Agent: an address asked of the manager for an endpoint not yet in a container record,
    /// by endpoint ID (given back after a crash, when restarting finds no container holding it).
    public static let addressIntent = StoreKind(rawValue: "address-intent")
    /// Agent: an address to give back that the manager could not be told of yet, by endpoint ID.
    public static let pendingRelease = StoreKind(rawValue: "pending-release")
}

/// One change in an atomic write.
public enum StoreChange: Sendable {
    /// Sets (kind, key) to the value's JSON.
    case put(StoreKind, String, Data)
    /// Removes (kind, key) if present.
    case delete(StoreKind, String)

    /// A put of an `Encodable` value.
    public static func set<T: Encodable>(_ kind: StoreKind, _ key: String, _ value: T) throws -> StoreChange {
        .put(kind, key, try StoreCoding.encoder.encode(value))
    }
}

/// An error of the store, with the database's own message.
public struct StoreError: Error, Sendable, CustomStringConvertible {
    /// What went wrong, for a person.
    public var message: String
    /// Makes an error.
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Where the manager keeps what the cluster owns (networks, global IPAM, VNIs, nodes, keys) and
/// an agent keeps what is local (its containers and endpoints). A protocol so a distributed
/// store can replace the embedded SQLite one later; every write is atomic and bumps `version`.
public protocol ClusterStore: Sendable {
    /// The JSON of (kind, key), if present.
    func data(_ kind: StoreKind, _ key: String) throws -> Data?
    /// Every (key, JSON) of a kind, by key.
    func all(_ kind: StoreKind) throws -> [(String, Data)]
    /// Applies the changes in one transaction: all or none.
    func write(_ changes: [StoreChange]) throws
    /// A number that grows with every write (persisted).
    func version() throws -> UInt64
}

enum StoreCoding {
    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        e.dateEncodingStrategy = .iso8601
        return e
    }()
    static let decoder: JSONDecoder = {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return d
    }()
}

extension ClusterStore {
    /// The decoded value of (kind, key), if present.
    public func get<T: Decodable>(_ kind: StoreKind, _ key: String, as type: T.Type) throws -> T? {
        guard let d = try data(kind, key) else { return nil }
        do { return try StoreCoding.decoder.decode(T.self, from: d) } catch {
            throw StoreError("stored \(kind) '\(key)' cannot be read: \(error)")
        }
    }

    /// Every decoded value of a kind, in key order.
    public func all<T: Decodable>(_ kind: StoreKind, as type: T.Type) throws -> [T] {
        try all(kind).map { key, d in
            do { return try StoreCoding.decoder.decode(T.self, from: d) } catch {
                throw StoreError("stored \(kind) '\(key)' cannot be read: \(error)")
            }
        }
    }

    /// Sets one value.
    public func put<T: Encodable>(_ kind: StoreKind, _ key: String, _ value: T) throws {
        try write([.set(kind, key, value)])
    }

    /// Removes one value.
    public func delete(_ kind: StoreKind, _ key: String) throws {
        try write([.delete(kind, key)])
    }
}

/// The embedded store: one SQLite file through GRDB (WAL, synchronous=FULL), a table of JSON documents keyed
/// by (kind, key) and a version counter.
public final class SQLiteClusterStore: ClusterStore {
    private let queue: DatabaseQueue
    /// Watches of the shared kinds (``SharedStore``): told of each commit inside its transaction.
    private let watchers = Mutex<[UUID: Watcher]>([:])

    struct Watcher {
        var kinds: Set<StoreKind>
        var continuation: AsyncThrowingStream<StoreEventBatch, any Error>.Continuation
    }
    /// The database file.
    public let path: String

    /// How the connection writes: SQLite's `journal_mode` (`wal`) and `synchronous` (2: FULL,
    /// every commit on disk before it returns).
    public func durability() throws -> (journalMode: String, synchronous: Int) {
        try queue.read { db in
            (try String.fetchOne(db, sql: "PRAGMA journal_mode") ?? "", try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1)
        }
    }

    /// Opens (creating if needed) the store at `path`, migrating its schema.
    public init(path: String) throws {
        self.path = path
        do {
            try FileManager.default.createDirectory(
                atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            // SQLite gives the -wal and -shm files the database file's mode: made 0600 before
            // SQLite opens it, none of the three is ever readable by others (even for a moment).
            let fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw StoreError("cannot create \(path): \(String(cString: strerror(errno)))") }
            close(fd)
            for file in [path, path + "-wal", path + "-shm"] where FileManager.default.fileExists(atPath: file) {
                guard chmod(file, 0o600) == 0 else { throw StoreError("cannot chmod 0600 \(file): \(String(cString: strerror(errno)))") }
            }
            var config = Configuration()
            config.busyMode = .timeout(5)
            // WAL with synchronous=FULL: every commit is on disk before the call returns, so an
            // address a node was given (and uses) is never rolled back by a power loss and given
            // again. On WAL the fsync costs about 0.25 ms a commit here (0.04 ms with NORMAL).
            config.prepareDatabase { db in
                try db.execute(sql: "PRAGMA journal_mode = WAL")
                try db.execute(sql: "PRAGMA synchronous = FULL")
            }
            queue = try DatabaseQueue(path: path, configuration: config)
            var migrator = DatabaseMigrator()
            migrator.registerMigration("v1") { db in
                try db.create(table: "object") { t in
                    t.column("kind", .text).notNull()
                    t.column("key", .text).notNull()
                    t.column("json", .blob).notNull()
                    t.primaryKey(["kind", "key"])
                }
                try db.create(table: "meta") { t in
                    t.column("name", .text).primaryKey()
                    t.column("value", .integer).notNull()
                }
                try db.execute(sql: "INSERT INTO meta(name, value) VALUES ('version', 0)")
            }
            // Each object's revisions (``StoreEntry``): what compare-and-swap writes check.
            migrator.registerMigration("v2") { db in
                let version = try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE name = 'version'") ?? 0
                try db.alter(table: "object") { t in
                    t.add(column: "created", .integer).notNull().defaults(to: max(version, 1))
                    t.add(column: "modified", .integer).notNull().defaults(to: max(version, 1))
                }
            }
            try migrator.migrate(queue)
        } catch {
            throw StoreError("cannot open the store \(path): \(error)")
        }
    }

    public func data(_ kind: StoreKind, _ key: String) throws -> Data? {
        do {
            return try queue.read { db in
                try Data.fetchOne(db, sql: "SELECT json FROM object WHERE kind = ? AND key = ?", arguments: [kind.rawValue, key])
            }
        } catch { throw StoreError("store read \(kind) '\(key)': \(error)") }
    }

    public func all(_ kind: StoreKind) throws -> [(String, Data)] {
        do {
            return try queue.read { db in
                try Row.fetchAll(db, sql: "SELECT key, json FROM object WHERE kind = ? ORDER BY key", arguments: [kind.rawValue])
                    .map { ($0["key"] as String, $0["json"] as Data) }
            }
        } catch { throw StoreError("store read \(kind): \(error)") }
    }

    public func write(_ changes: [StoreChange]) throws {
        do {
            try queue.write { db in try apply(changes, db) }
        } catch { throw StoreError("store write: \(error)") }
    }

    /// Makes the changes at the next version and tells the watchers (inside the transaction, so a
    /// watch that starts sees every commit after the version it started from, and no other).
    private func apply(_ changes: [StoreChange], _ db: Database) throws {
        let revision = UInt64(try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE name = 'version'") ?? 0) + 1
        var events: [StoreEvent] = []
        for c in changes {
            switch c {
            case .put(let kind, let key, let json):
                try db.execute(
                    sql: """
                        INSERT INTO object(kind, key, json, created, modified) VALUES (?, ?, ?, ?, ?)
                        ON CONFLICT(kind, key) DO UPDATE SET json = excluded.json, modified = excluded.modified
                        """,
                    arguments: [kind.rawValue, key, json, Int64(revision), Int64(revision)])
                let created = try Int64.fetchOne(db, sql: "SELECT created FROM object WHERE kind = ? AND key = ?", arguments: [kind.rawValue, key])
                events.append(.put(kind, key, StoreEntry(value: json, created: UInt64(created ?? Int64(revision)), modified: revision)))
            case .delete(let kind, let key):
                try db.execute(sql: "DELETE FROM object WHERE kind = ? AND key = ?", arguments: [kind.rawValue, key])
                if db.changesCount > 0 { events.append(.delete(kind, key, revision: revision)) }
            }
        }
        try db.execute(sql: "UPDATE meta SET value = ? WHERE name = 'version'", arguments: [Int64(revision)])
        watchers.withLock { w in
            for watcher in w.values {
                watcher.continuation.yield(StoreEventBatch(events: events.filter { watcher.kinds.contains($0.kind) }, revision: revision))
            }
        }
    }

    public func version() throws -> UInt64 {
        do {
            return try queue.read { db in
                UInt64(try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE name = 'version'") ?? 0)
            }
        } catch { throw StoreError("store read version: \(error)") }
    }
}

extension SQLiteClusterStore: SharedStore {
    /// One file on one host: a single manager.
    public var isReplicated: Bool { false }

    public func load(_ kinds: [StoreKind]) async throws -> StoreSnapshot {
        do {
            return try await queue.read { db in
                let revision = UInt64(try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE name = 'version'") ?? 0)
                var entries: [StoreKind: [String: StoreEntry]] = [:]
                for kind in kinds {
                    var m: [String: StoreEntry] = [:]
                    for row in try Row.fetchAll(db, sql: "SELECT key, json, created, modified FROM object WHERE kind = ?", arguments: [kind.rawValue]) {
                        m[row["key"]] = StoreEntry(value: row["json"], created: UInt64(row["created"] as Int64), modified: UInt64(row["modified"] as Int64))
                    }
                    entries[kind] = m
                }
                return StoreSnapshot(revision: revision, entries: entries)
            }
        } catch { throw StoreError("store read: \(error)") }
    }

    public func commit(_ conditions: [StoreCondition], _ changes: [StoreChange]) async throws -> StoreCommit {
        do {
            return try await queue.write { db in
                let revision = UInt64(try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE name = 'version'") ?? 0)
                for c in conditions {
                    let (kind, key): (StoreKind, String)
                    switch c {
                    case .absent(let k, let kk), .unchanged(let k, let kk, _), .created(let k, let kk, _): (kind, key) = (k, kk)
                    }
                    let row = try Row.fetchOne(db, sql: "SELECT created, modified FROM object WHERE kind = ? AND key = ?", arguments: [kind.rawValue, key])
                    let created = row.map { UInt64($0["created"] as Int64) }, modified = row.map { UInt64($0["modified"] as Int64) }
                    let holds: Bool
                    switch c {
                    case .absent: holds = row == nil
                    case .unchanged(_, _, let m): holds = (modified ?? 0) == m
                    case .created(_, _, let at): holds = created == at
                    }
                    if !holds { return StoreCommit(committed: false, revision: revision) }
                }
                try apply(changes, db)
                return StoreCommit(committed: true, revision: revision + 1)
            }
        } catch { throw StoreError("store write: \(error)") }
    }

    /// Starts from now: a watch asked from an older revision than the store's ends at once with
    /// an error (this store keeps no history), and its reader loads again.
    public func watch(_ kinds: [StoreKind], after revision: UInt64) -> AsyncThrowingStream<StoreEventBatch, any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: StoreEventBatch.self, throwing: (any Error).self)
        let id = UUID()
        do {
            try queue.write { db in
                let now = UInt64(try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE name = 'version'") ?? 0)
                guard now <= revision else {
                    throw StoreError("the store is at version \(now), past \(revision): load it again")
                }
                watchers.withLock { $0[id] = Watcher(kinds: Set(kinds), continuation: continuation) }
            }
        } catch {
            continuation.finish(throwing: error)
            return stream
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.watchers.withLock { $0.removeValue(forKey: id) }
        }
        return stream
    }
}
