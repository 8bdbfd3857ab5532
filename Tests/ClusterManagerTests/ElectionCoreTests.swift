import Testing

@testable import ClusterManager

/// The election's decisions, with the driver's clock in hand.
struct ElectionCoreTests {
    func s(_ x: Double) -> Duration { .milliseconds(Int(x * 1000)) }

    @Test func aCandidateWithALeaseCampaignsAndLeads() {
        var e = ElectionCore()
        #expect(ElectionCore.start == [.grantLease])
        #expect(e.handle(.leaseGranted(at: s(0))) == [.campaign])
        #expect(e.handle(.campaignWon(term: 42)) == [.startLeading(term: 42), .watchLeader])
        #expect(e.role == .leader(term: 42))
        // Acknowledged keepalives keep it leading, however long.
        for t in stride(from: 1.0, through: 30.0, by: 1.0) {
            #expect(e.handle(.keepAliveAcknowledged(at: s(t))) == [])
            #expect(e.handle(.tick(at: s(t + 0.5))) == [])
        }
        #expect(e.role == .leader(term: 42))
    }

    /// On a quorum loss calls hang: the leader steps down on its own clock, before the lease can
    /// have expired and another manager can lead.
    @Test func aLeaderCutOffStepsDownBeforeItsLeaseCouldEnd() {
        var e = ElectionCore(ttl: .seconds(3), margin: .seconds(1))
        _ = e.handle(.leaseGranted(at: s(0)))
        _ = e.handle(.campaignWon(term: 7))
        _ = e.handle(.keepAliveAcknowledged(at: s(10)))
        #expect(e.handle(.tick(at: s(11.9))) == [])
        let down = e.handle(.tick(at: s(12.0)))
        #expect(down.count == 3 && down[1...] == [.revokeLease, .grantLease], "\(down)")
        if case .stopLeading(let reason) = down.first { #expect(reason.contains("no keepalive acknowledged")) } else {
            Issue.record("no stopLeading: \(down)")
        }
        #expect(e.role == .candidate && e.lastAcknowledged == nil)
        // A failing call says the same, at the same point.
        var f = ElectionCore()
        _ = f.handle(.leaseGranted(at: s(0)))
        _ = f.handle(.campaignWon(term: 8))
        #expect(f.handle(.storeUnavailable(at: s(1))) == [])
        #expect(f.handle(.storeUnavailable(at: s(2.5))).first.map { if case .stopLeading = $0 { true } else { false } } == true)
    }

    @Test func aFollowerWatchesAndCampaignsWhenTheLeaderGoes() {
        var e = ElectionCore()
        _ = e.handle(.leaseGranted(at: s(0)))
        #expect(e.handle(.campaignLost(leader: "m1")) == [.watchLeader])
        #expect(e.role == .follower(leader: "m1"))
        _ = e.handle(.keepAliveAcknowledged(at: s(1)))
        #expect(e.handle(.leaderGone) == [.campaign])
        #expect(e.handle(.campaignWon(term: 99)) == [.startLeading(term: 99), .watchLeader])
    }

    @Test func aLostLeaseMeansStartingOver() {
        var e = ElectionCore()
        _ = e.handle(.leaseGranted(at: s(0)))
        _ = e.handle(.campaignWon(term: 3))
        let expired = e.handle(.leaseExpired)
        #expect(expired.count == 2 && expired.last == .grantLease, "\(expired)")
        #expect(e.role == .candidate)
        // A win that arrives after the lease went is not leadership: the key expires with it.
        #expect(e.handle(.campaignWon(term: 4)) == [.grantLease])
        #expect(e.role == .candidate)
        // A follower whose lease must have run out asks for a new one.
        var f = ElectionCore()
        _ = f.handle(.leaseGranted(at: s(0)))
        _ = f.handle(.campaignLost(leader: "m2"))
        #expect(f.handle(.tick(at: s(3))) == [.grantLease])
        #expect(f.handle(.leaderGone) == [.grantLease])
        // A candidate that cannot reach the store tries again later.
        var g = ElectionCore()
        #expect(g.handle(.storeUnavailable(at: s(0))) == [.retryLater])
    }
}
