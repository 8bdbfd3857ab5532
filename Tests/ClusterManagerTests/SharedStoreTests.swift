import Foundation
import Testing

@testable import ClusterManager

/// The shared store's compare-and-swap: the embedded SQLite file and the in-memory model of a
/// replicated store behave the same.
struct SharedStoreTests {
    static func stores() throws -> [(String, any SharedStore, () -> Void)] {
        let dir = NSTemporaryDirectory() + "ovlt-shared-\(UUID().uuidString)"
        let sqlite = try SQLiteClusterStore(path: dir + "/overlayd.db")
        return [("sqlite", sqlite, { try? FileManager.default.removeItem(atPath: dir) }), ("memory", MemoryStore(), {})]
    }

    @Test func conditionsDecideWhetherACommitHappens() async throws {
        for (name, store, cleanup) in try Self.stores() {
            defer { cleanup() }
            try await SharedStoreChecks.conditions(name, store)
        }
    }

    /// Two managers hand out addresses from one pool at once: every address goes once, and every
    /// attempt either wins or sees who did.
    @Test func concurrentAllocationsNeverCollide() async throws {
        for (name, store, cleanup) in try Self.stores() {
            defer { cleanup() }
            try await SharedStoreChecks.concurrentAllocations(name, [store, store, store])
        }
    }

    @Test func aWatchSeesEveryCommitOfItsKindsInOrder() async throws {
        for (name, store, cleanup) in try Self.stores() {
            defer { cleanup() }
            try await SharedStoreChecks.watchOrder(name, store)
        }
    }

    @Test func theEmbeddedStoreKeepsNoHistoryAndSaysSo() async throws {
        let dir = NSTemporaryDirectory() + "ovlt-shared-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try SQLiteClusterStore(path: dir + "/overlayd.db")
        _ = try await store.commit([], [.set(.network, "a", 1)])
        _ = try await store.commit([], [.set(.network, "b", 1)])
        var failed: (any Error)?
        do { for try await _ in store.watch([.network], after: 1) {} } catch { failed = error }
        #expect("\(failed.map { "\($0)" } ?? "")".contains("load it again"))
        #expect(!store.isReplicated)
    }

    @Test func theReplicatedModelRefusesBigTransactionsAndCanBeDown() async throws {
        let store = MemoryStore()
        let many = try (0..<129).map { try StoreChange.set(.task, "t\($0)", $0) }
        await #expect(throws: StoreError.self) { try await store.commit([], many) }
        store.setUnavailable("etcd has no leader")
        await #expect(throws: StoreUnavailable.self) { try await store.commit([], []) }
        store.setUnavailable(nil)
        _ = try await store.commit([], [.set(.task, "t", 1)])
        // A watch from an old revision replays what it missed.
        var it = store.watch([.task], after: 0).makeAsyncIterator()
        let first = try await it.next()
        #expect(first?.events.map(\.key) == ["t"])
    }
}

/// What every ``SharedStore`` must do, as checks any store's tests run (SQLite, the memory model,
/// etcd): the same expectations, so the stores agree.
enum SharedStoreChecks {
    static func conditions(_ name: String, _ store: any SharedStore) async throws {
        let a = try await store.commit([.absent(.allocation, "n/10.0.0.2")], [.set(.allocation, "n/10.0.0.2", "e1")])
        #expect(a.committed, "\(name)")
        // Create-only: the second writer of the same address loses and changes nothing.
        let b = try await store.commit([.absent(.allocation, "n/10.0.0.2")], [.set(.allocation, "n/10.0.0.2", "e2"), .set(.setting, "x", 1)])
        #expect(!b.committed && b.revision == a.revision, "\(name): \(b)")
        var view = try await store.load([.allocation, .setting])
        #expect(try view.get(.allocation, "n/10.0.0.2", as: String.self) == "e1" && view.entry(.setting, "x") == nil, "\(name)")
        let e = try #require(view.entry(.allocation, "n/10.0.0.2"))
        #expect(e.created == a.revision && e.modified == a.revision, "\(name): \(e)")
        // unchanged: only from the revision read.
        let c = try await store.commit([.unchanged(.allocation, "n/10.0.0.2", modified: e.modified)], [.set(.allocation, "n/10.0.0.2", "e1b")])
        #expect(c.committed, "\(name)")
        let stale = try await store.commit([.unchanged(.allocation, "n/10.0.0.2", modified: e.modified)], [.delete(.allocation, "n/10.0.0.2")])
        #expect(!stale.committed, "\(name)")
        #expect(try await store.commit([.unchanged(.setting, "none", modified: 0)], [.set(.setting, "none", 1)]).committed, "\(name): 0 means absent")
        // created: the same object, not one deleted and made again.
        view = try await store.load([.allocation])
        let created = try #require(view.entry(.allocation, "n/10.0.0.2")).created
        #expect(created == a.revision, "\(name): a change keeps created")
        #expect(try #require(view.entry(.allocation, "n/10.0.0.2")).modified == c.revision, "\(name): modified is the last change's")
        _ = try await store.commit([], [.delete(.allocation, "n/10.0.0.2")])
        _ = try await store.commit([], [.set(.allocation, "n/10.0.0.2", "again")])
        #expect(try await !store.commit([.created(.allocation, "n/10.0.0.2", at: created)], [.set(.setting, "fenced", 1)]).committed, "\(name)")
    }

    /// Three managers (`writers`: three clients of one store, or one store thrice) hand out
    /// addresses from one pool of 100 at once: every address goes once, and every attempt either
    /// wins or sees who did.
    static func concurrentAllocations(_ name: String, _ writers: [any SharedStore]) async throws {
        let pool = (2...101).map { "n/10.0.0.\($0)" }
        let winners = try await withThrowingTaskGroup(of: [String: String].self) { group in
            for (m, store) in writers.enumerated() {
                let manager = "m\(m + 1)"
                group.addTask {
                    var won: [String: String] = [:]
                    var view = try await store.load([.allocation])
                    var i = 0
                    while i < 60 {
                        guard let free = pool.shuffled().first(where: { view.entry(.allocation, $0) == nil }) else { break }
                        let r = try await store.commit([.absent(.allocation, free)], [.set(.allocation, free, "\(manager)-\(i)")])
                        if r.committed {
                            won[free] = "\(manager)-\(i)"
                            i += 1
                        }
                        view = try await store.load([.allocation])
                    }
                    return won
                }
            }
            var all: [[String: String]] = []
            for try await w in group { all.append(w) }
            return all
        }
        let total = winners.map(\.count).reduce(0, +)
        let distinct = Set(winners.flatMap(\.keys))
        #expect(total == 100 && distinct.count == 100, "\(name): \(total) wins over \(distinct.count) addresses")
        let view = try await writers[0].load([.allocation])
        for w in winners {
            for (address, holder) in w { #expect(try view.get(.allocation, address, as: String.self) == holder, "\(name): \(address)") }
        }
    }

    /// A watch from a view's revision sees every later commit, in order, as a batch each (one that
    /// changed only other kinds gives a batch without events): puts, deletes, other kinds
    /// filtered out.
    static func watchOrder(_ name: String, _ store: any SharedStore) async throws {
        _ = try await store.commit([], [.set(.network, "a", 1)])
        var view = try await store.load([.network])
        let start = view.revision
        let stream = store.watch([.network], after: view.revision)
        _ = try await store.commit([], [.set(.network, "b", 2), .set(.setting, "other", 0)])
        _ = try await store.commit([], [.delete(.network, "a")])
        _ = try await store.commit([], [.set(.setting, "only-other", 0)])
        // Batches as they come: one per commit, or (a replicated store's watch that started
        // after the commits) one of several.
        var kinds: Set<StoreKind> = []
        for try await batch in stream {
            view.apply(batch.events)
            view.advance(to: batch.revision)
            kinds.formUnion(batch.events.map(\.kind))
            if view.revision >= start + 3 { break }
        }
        #expect(view.all(.network).map(\.key) == ["b"] && view.revision == start + 3, "\(name): \(view.all(.network).map(\.key)) at \(view.revision)")
        #expect(kinds == [.network], "\(name): \(kinds)")
        let fresh = try await store.load([.network])
        #expect(fresh.all(.network).map(\.key) == view.all(.network).map(\.key), "\(name)")
    }
}
