import Foundation
import Testing

@testable import ClusterManager

/// The managers' election on a real etcd: one leader at a time; a leader cut off from etcd steps
/// down on its own clock, and another leads once its lease has expired, never before; a deposed
/// leader's fenced write fails.
@Suite(.timeLimit(.minutes(1)))
struct ManagerElectionTests {
    @Test func oneLeaderAndAnotherWithinTheLeaseWhenItIsCutOff() async throws {
        try await withEtcd { lab in
            let cluster = "c-\(UUID().uuidString.prefix(6))"
            let s1 = try lab.store(clusterID: cluster), s2 = try lab.store(clusterID: cluster), s3 = try lab.store(clusterID: cluster)
            let e1 = ManagerElection(store: s1, nodeID: "m1", address: "10.0.0.1:2377")
            let e2 = ManagerElection(store: s2, nodeID: "m2", address: "10.0.0.2:2377")
            let e3 = ManagerElection(store: s3, nodeID: "m3", address: "10.0.0.3:2377")
            // m1 first: it leads.
            let events1 = e1.events()
            var it1 = events1.makeAsyncIterator()
            guard case .leading(let term1)? = await it1.next() else { Issue.record("m1 did not lead"); return }
            // m2 and m3 follow m1.
            let events2 = e2.events(), events3 = e3.events()
            var it2 = events2.makeAsyncIterator(), it3 = events3.makeAsyncIterator()
            #expect(await it2.next() == .following(.init(nodeID: "m1", address: "10.0.0.1:2377")))
            #expect(await it3.next() == .following(.init(nodeID: "m1", address: "10.0.0.1:2377")))
            _ = (it2, it3)

            // m1 is cut off from etcd (its client shut down): it steps down on its own clock, and
            // one of the others leads once m1's lease has expired, never before m1 stepped down.
            let cut = ContinuousClock.now
            try await s1.shutdown()
            guard case .steppedDown(let reason)? = await it1.next() else { Issue.record("m1 did not step down"); return }
            let steppedDown = ContinuousClock.now - cut
            #expect(reason.contains("no keepalive acknowledged") || reason.contains("lease"), "\(reason)")
            // The first of m2 and m3 to lead (or nil after 10 s).
            let newLeader: (String, UInt64)? = await withTaskGroup(of: (String, UInt64)?.self) { group in
                for (name, events) in [("m2", events2), ("m3", events3)] {
                    group.addTask {
                        for await e in events { if case .leading(let t) = e { return (name, t) } }
                        return nil
                    }
                }
                group.addTask {
                    try? await Task.sleep(for: .seconds(10))
                    return nil
                }
                var found: (String, UInt64)?
                for await r in group {
                    if let r { found = r }
                    if found != nil { break }
                }
                group.cancelAll()
                return found
            }
            let handedOver = ContinuousClock.now - cut
            #expect(newLeader != nil && newLeader!.1 > term1, "no new leader: \(String(describing: newLeader))")
            #expect(steppedDown < handedOver && handedOver < .seconds(6), "stepped down after \(steppedDown), new leader after \(handedOver)")
            print("election: m1 stepped down \(steppedDown) after it was cut off; \(newLeader?.0 ?? "?") led after \(handedOver)")

            // m1's fenced write, as a deposed leader's late write: refused.
            let late = try await s3.commit([.created(.leader, ManagerElection.key, at: term1)], [.set(.setting, "scheduled-by", "m1")])
            #expect(!late.committed)
            try await s2.shutdown()
            try await s3.shutdown()
        }
    }

    /// A leader whose events consumer stops (a manager shutting down) gives the leadership up at
    /// once: it revokes its lease, and the next manager leads well within the 3 s lease. (The
    /// revoke ran in the cancelled task and was refused unsent; the key lasted until the TTL.)
    @Test func aLeaderThatStopsGivesTheLeadershipUpAtOnce() async throws {
        try await withEtcd { lab in
            let cluster = "c-\(UUID().uuidString.prefix(6))"
            let s1 = try lab.store(clusterID: cluster), s2 = try lab.store(clusterID: cluster)
            let e1 = ManagerElection(store: s1, nodeID: "m1", address: "10.0.0.1:2377")
            let e2 = ManagerElection(store: s2, nodeID: "m2", address: "10.0.0.2:2377")
            var it1: AsyncStream<ManagerElection.Event>.AsyncIterator? = e1.events().makeAsyncIterator()
            guard case .leading? = await it1?.next() else { Issue.record("m1 did not lead"); return }
            var it2 = e2.events().makeAsyncIterator()
            #expect(await it2.next() == .following(.init(nodeID: "m1", address: "10.0.0.1:2377")))
            let stopped = ContinuousClock.now
            it1 = nil  // the stream ends with its last iterator: m1 stops
            guard case .leading? = await it2.next() else { Issue.record("m2 did not lead"); return }
            let handedOver = ContinuousClock.now - stopped
            #expect(handedOver < .milliseconds(2500), "m2 led \(handedOver) after m1 stopped (the lease is 3 s)")
            print("election: m2 led \(handedOver) after m1 stopped")
            try await s1.shutdown()
            try await s2.shutdown()
        }
    }

    /// A leader that steps down on its own clock (keepalives unanswered past the margin) gives
    /// its lease back at once and leads again under a new one as soon as the store answers. One
    /// driver makes every store call: a step-down decided in the keep-alive loop used to run
    /// its revoke and grant in that loop's task, which the revoke had just cancelled, so both
    /// were refused unsent and the old lease held the key until its TTL.
    @Test func aLeaderThatStepsDownRevokesAtOnceAndLeadsAgain() async throws {
        try await withEtcd { lab in
            let cluster = "c-\(UUID().uuidString.prefix(6))"
            let s1 = try lab.store(clusterID: cluster)
            let e1 = ManagerElection(store: s1, nodeID: "m1", address: "10.0.0.1:2377")
            var it1: AsyncStream<ManagerElection.Event>.AsyncIterator? = e1.events().makeAsyncIterator()
            guard case .leading(let term1)? = await it1?.next() else { Issue.record("m1 did not lead"); return }
            guard let old = await e1.lease else { Issue.record("m1 leads without a lease"); return }
            let start = ContinuousClock.now
            // As if no keepalive had been acknowledged for 5 s: past the step-down margin.
            await e1.signal(.input(.storeUnavailable(at: await e1.now + .seconds(5))))
            guard case .steppedDown? = await it1?.next() else { Issue.record("m1 did not step down"); return }
            guard case .leading(let term2)? = await it1?.next() else { Issue.record("m1 did not lead again"); return }
            let back = ContinuousClock.now - start
            #expect(term2 > term1)
            // Had the old lease not been revoked, its key would have stood until the TTL (3 s).
            #expect(back < .milliseconds(1500), "m1 led again \(back) after stepping down")
            #expect(await old.renew() == .expired)
            let new = await e1.lease
            #expect(new != nil && new != old)
            print("election: m1 stepped down and led again (term \(term1) -> \(term2)) after \(back)")
            // Stopping gives the new lease back too.
            it1 = nil
            var given = false
            for _ in 0..<40 where !given {
                try await Task.sleep(for: .milliseconds(50))
                if let new, await new.renew() == .expired { given = true }
            }
            #expect(given, "the lease outlived the election")
            try await s1.shutdown()
        }
    }

    /// The leadership key already names this manager, on a lease it does not renew (an earlier
    /// run's, or a commit that timed out after etcd applied it): the manager neither follows
    /// itself nor leads on it unknowingly; it leads once that key is gone.
    @Test func aKeyThatAlreadyNamesThisManagerIsWaitedOutNotFollowed() async throws {
        try await withEtcd { lab in
            let cluster = "c-\(UUID().uuidString.prefix(6))"
            let s1 = try lab.store(clusterID: cluster)
            let me = ManagerElection.Leader(nodeID: "m1", address: "10.0.0.1:2377")
            let earlier = try await EtcdLease.grant(ttl: 30, on: s1)
            let put = try await s1.commit([.absent(.leader, ManagerElection.key)], [try StoreChange.set(.leader, ManagerElection.key, me)],
                                          lease: earlier)
            #expect(put.committed)
            let e1 = ManagerElection(store: s1, nodeID: me.nodeID, address: me.address)
            var it1: AsyncStream<ManagerElection.Event>.AsyncIterator? = e1.events().makeAsyncIterator()
            let releaser = Task {
                try? await Task.sleep(for: .milliseconds(500))
                try? await earlier.revoke()
            }
            let start = ContinuousClock.now
            let first = await it1?.next()
            guard case .leading(let term)? = first else { Issue.record("first event \(String(describing: first))"); return }
            #expect(term > put.revision)
            #expect(ContinuousClock.now - start >= .milliseconds(400), "led on the earlier key")
            _ = await releaser.value
            it1 = nil
            try await Task.sleep(for: .milliseconds(200))
            try await s1.shutdown()
        }
    }
}

