import Foundation
import IPAM
import IPsecKeys
import OverlayAPI
import OverlayModel
import Testing

@testable import ClusterManager

/// `network create` as the manager decides it: checks, subnets from the pools, VNIs.
struct NetworkAllocatorTests {
    func pools() throws -> IPAM { IPAM(pools: [try AddressPool(base: CIDR("10.0.0.0/8")!, size: 24)]) }

    func make(_ r: NetworkCreateRequest, _ ipam: inout IPAM, existing: [NetworkRecord] = []) throws -> NetworkRecord {
        try NetworkAllocator.make(r, ipam: &ipam, existing: existing, encryptedMTU: 1416)
    }

    func status(_ body: () throws -> Void) -> Int? {
        do { try body() } catch let e as APIError { return e.status } catch { return -1 }
        return nil
    }

    @Test func aNetworkGetsTheFirstFreeSubnetAndVNIAndTheDefaultMTU() throws {
        var ipam = try pools()
        let a = try make(NetworkCreateRequest(name: "a"), &ipam)
        let b = try make(NetworkCreateRequest(name: "b"), &ipam, existing: [a])
        #expect(a.subnets.map(\.subnet.description) == ["10.0.0.0/24"])
        #expect(a.subnets.map(\.gateway.description) == ["10.0.0.1"])
        #expect(b.subnets.map(\.subnet.description) == ["10.0.1.0/24"])
        #expect(a.subnets.map(\.vni) == [4096] && b.subnets.map(\.vni) == [4097])
        #expect(a.mtu == 1450 && a.options[NetworkAllocator.optVNI] == "4096")
    }

    @Test func encryptedNetworksGetTheSwarmsESPMTUAndAGivenMTUWins() throws {
        var ipam = try pools()
        var r = NetworkCreateRequest(name: "secret")
        r.options = ["encrypted"]
        #expect(try make(r, &ipam).mtu == 1416)
        r = NetworkCreateRequest(name: "jumbo")
        r.options = ["\(NetworkAllocator.optMTU)=8950"]
        #expect(try make(r, &ipam).mtu == 8950)
        r.options = ["\(NetworkAllocator.optMTU)=20"]
        #expect(status { _ = try make(r, &ipam) } == 400)
    }

    @Test func givenVNIsAreCheckedAgainstTheNetworksThatHoldThem() throws {
        var ipam = try pools()
        var r = NetworkCreateRequest(name: "a")
        r.options = ["\(NetworkAllocator.optVNI)=5000"]
        let a = try make(r, &ipam)
        #expect(a.subnets.map(\.vni) == [5000])
        r.name = "b"
        #expect(status { _ = try make(r, &ipam, existing: [a]) } == 409)
        r.options = ["\(NetworkAllocator.optVNI)=0"]
        #expect(status { _ = try make(r, &ipam, existing: [a]) } == 400)
        r.options = ["\(NetworkAllocator.optVNI)=6000,6001"]
        #expect(status { _ = try make(r, &ipam, existing: [a]) } == 400)   // two VNIs, one subnet
    }

    @Test func badRequestsChangeNothingInTheIPAM() throws {
        var ipam = try pools()
        let before = ipam.snapshot()
        var r = NetworkCreateRequest(name: "-bad")
        #expect(status { _ = try make(r, &ipam) } == 400)
        r = NetworkCreateRequest(name: "ok", driver: "macvlan")
        #expect(status { _ = try make(r, &ipam) } == 400)
        r = NetworkCreateRequest(name: "ok")
        r.options = ["nonsense=1"]
        #expect(status { _ = try make(r, &ipam) } == 400)
        r = NetworkCreateRequest(name: "ok")
        r.subnets = ["10.9.0.0/24"]
        r.auxAddresses = ["printer=10.8.0.5"]
        #expect(status { _ = try make(r, &ipam) } == 400)
        #expect(ipam.snapshot() == before)
        let a = try make(NetworkCreateRequest(name: "taken"), &ipam)
        #expect(status { _ = try make(NetworkCreateRequest(name: "taken"), &ipam, existing: [a]) } == 409)
    }

    @Test func onlyOneIngressNetworkAndItIsNeverEncrypted() throws {
        var ipam = try pools()
        var r = NetworkCreateRequest(name: "ingress")
        r.ingress = true
        let first = try make(r, &ipam)
        r.name = "ingress2"
        #expect(status { _ = try make(r, &ipam, existing: [first]) } == 409)
        r.options = ["encrypted"]
        #expect(status { _ = try make(r, &ipam) } == 400)
    }
}

/// The gossip keyring's rotation, as the manager schedules it.
struct KeyRotationTests {
    func state(rotatedAt: Date, every seconds: Int = 3600) throws -> ManagerState {
        let settings = ManagerSettings(workerToken: "", managerToken: "", gossipKeys: ["a"], keysRotatedAt: rotatedAt,
                                       rotationSeconds: seconds, pools: [], maskLength: 24)
        return ManagerState(ipam: IPAM(), settings: settings, ipsec: try IPsecKeyring(keys: [IPsecKey.random(tag: 1), IPsecKey.random(tag: 2)]))
    }

    @Test func theRingKeepsThreeKeysAndTheNewestComesLast() {
        #expect(ManagerSettings.rotated(["a"], adding: "b") == ["a", "b"])
        #expect(ManagerSettings.rotated(["a", "b", "c"], adding: "d") == ["b", "c", "d"])
    }

    @Test func aScheduledRotationIsDueOnlyOnceTheIntervalHasPassed() throws {
        let t0 = Date(timeIntervalSince1970: 1_000_000)
        var m = try state(rotatedAt: t0)
        #expect(m.takeDueRotation(now: t0.addingTimeInterval(3599), spacing: 10) == nil)
        #expect(m.takeDueRotation(now: t0.addingTimeInterval(3600), spacing: 10) == .scheduled)
    }

    @Test func aNodesRemovalIsFollowedByTwoMoreRotationsSpacedApart() throws {
        let t0 = Date(timeIntervalSince1970: 1_000_000)
        var m = try state(rotatedAt: t0)
        m.scheduleRotationsAfterRemoval(now: t0, spacing: 10)
        #expect(m.takeDueRotation(now: t0.addingTimeInterval(9), spacing: 10) == nil)
        #expect(m.takeDueRotation(now: t0.addingTimeInterval(10), spacing: 10) == .afterNodeRemoval)
        #expect(m.takeDueRotation(now: t0.addingTimeInterval(19), spacing: 10) == nil)
        #expect(m.takeDueRotation(now: t0.addingTimeInterval(20), spacing: 10) == .afterNodeRemoval)
        #expect(m.takeDueRotation(now: t0.addingTimeInterval(100), spacing: 10) == nil)
    }
}
