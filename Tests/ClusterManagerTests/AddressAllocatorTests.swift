import Foundation
import IPAM
import OverlayAPI
import OverlayModel
import Testing

@testable import ClusterManager

/// Endpoint addresses as the manager decides them: ownership, the per-node quota, `--ip`, retries
/// and releases.
struct AddressAllocatorTests {
    func setUp() throws -> (IPAM, NetworkRecord) {
        var ipam = IPAM(pools: [try AddressPool(base: CIDR("10.0.0.0/8")!, size: 24)])
        var req = NetworkCreateRequest(name: "web")
        req.subnets = ["10.5.0.0/29"]
        let n = try NetworkAllocator.make(req, ipam: &ipam, existing: [], encryptedMTU: 1416)
        return (ipam, n)
    }

    func status(_ body: () throws -> Void) -> Int? {
        do { try body() } catch let e as APIError { return e.status } catch { return -1 }
        return nil
    }

    func request(_ endpoint: String, ip: String? = nil) -> AllocateRequest {
        AllocateRequest(network: "web", endpointID: endpoint, nodeID: "whatever-the-request-says", address: ip, name: "c-\(endpoint)")
    }

    @Test func anAddressIsTheCallersWithItsSubnetsGatewayAndARetryGetsTheSameOne() throws {
        var (ipam, n) = try setUp()
        let a = try AddressAllocator.allocate(request("e1"), owner: "n1", network: n, existing: [], ipam: &ipam, maxPerNode: 10)
        let record = try #require(a.record)
        #expect(record.nodeID == "n1" && record.address == IPAddress("10.5.0.2") && record.name == "c-e1")
        #expect(a.reply == AllocateReply(address: IPAddress("10.5.0.2")!, prefixLength: 29, gateway: IPAddress("10.5.0.1")!, networkID: n.id))
        #expect(AddressAllocator.key(network: n.id, address: record.address) == "\(n.id)/10.5.0.2")
        let before = ipam.snapshot()
        let again = try AddressAllocator.allocate(request("e1"), owner: "n1", network: n, existing: [record], ipam: &ipam, maxPerNode: 10)
        #expect(again.record == nil && again.reply == a.reply && ipam.snapshot() == before)
        // Another node asking for the same endpoint is refused.
        #expect(status { _ = try AddressAllocator.allocate(request("e1"), owner: "n2", network: n, existing: [record], ipam: &ipam, maxPerNode: 10) } == 403)
    }

    @Test func aNodeHoldsAtMostItsQuota() throws {
        var (ipam, n) = try setUp()
        var held: [AllocationRecord] = []
        for i in 0..<2 {
            held.append(try #require(try AddressAllocator.allocate(request("e\(i)"), owner: "n1", network: n, existing: held, ipam: &ipam, maxPerNode: 2).record))
        }
        #expect(status { _ = try AddressAllocator.allocate(request("e9"), owner: "n1", network: n, existing: held, ipam: &ipam, maxPerNode: 2) } == 429)
        // Another node still gets one.
        #expect(try AddressAllocator.allocate(request("e9"), owner: "n2", network: n, existing: held, ipam: &ipam, maxPerNode: 2).record != nil)
    }

    @Test func aGivenAddressMustBeInTheNetworkAndFree() throws {
        var (ipam, n) = try setUp()
        let a = try AddressAllocator.allocate(request("e1", ip: "10.5.0.5"), owner: "n1", network: n, existing: [], ipam: &ipam, maxPerNode: 10)
        #expect(a.record?.address == IPAddress("10.5.0.5"))
        #expect(status { _ = try AddressAllocator.allocate(self.request("e2", ip: "10.5.0.5"), owner: "n1", network: n, existing: [a.record!], ipam: &ipam, maxPerNode: 10) } == 409)
        #expect(status { _ = try AddressAllocator.allocate(self.request("e3", ip: "10.6.0.5"), owner: "n1", network: n, existing: [], ipam: &ipam, maxPerNode: 10) } == 400)
        #expect(status { _ = try AddressAllocator.allocate(self.request("e4", ip: "ten"), owner: "n1", network: n, existing: [], ipam: &ipam, maxPerNode: 10) } == 400)
    }

    @Test func aFullNetworkSaysSo() throws {
        var (ipam, n) = try setUp()
        var held: [AllocationRecord] = []
        var last: Int?
        for i in 0..<8 {
            do {
                held.append(try #require(try AddressAllocator.allocate(request("e\(i)"), owner: "n1", network: n, existing: held, ipam: &ipam, maxPerNode: 100).record))
            } catch let e as APIError {
                last = e.status
                #expect(e.message.contains("web") && !e.message.contains(n.id))
                break
            }
        }
        #expect(held.count == 5 && last == 400)   // a /29: 6 hosts, one the gateway
    }

    @Test func aReleaseIsTheOwnersOnlyAndRepeatsQuietly() throws {
        var (ipam, n) = try setUp()
        let a = try #require(try AddressAllocator.allocate(request("e1"), owner: "n1", network: n, existing: [], ipam: &ipam, maxPerNode: 10).record)
        let release = ReleaseRequest(network: "web", address: "10.5.0.2", endpointID: "e1")
        #expect(try AddressAllocator.releasing(release, caller: "n1", network: n, found: a) == a)
        #expect(try AddressAllocator.releasing(release, caller: nil, network: n, found: a) == a)
        #expect(status { _ = try AddressAllocator.releasing(release, caller: "n2", network: n, found: a) } == 403)
        // Already gone, or the address is now another endpoint's: nothing to do.
        #expect(try AddressAllocator.releasing(release, caller: "n1", network: n, found: nil) == nil)
        let other = ReleaseRequest(network: "web", address: "10.5.0.2", endpointID: "e-old")
        #expect(try AddressAllocator.releasing(other, caller: "n2", network: n, found: a) == nil)
    }

    @Test func anAddressANodeNoLongerKnowsIsGivenBackAfterTwoReportsAGraceApart() {
        func record(_ endpoint: String, _ node: String, _ last: Int) -> AllocationRecord {
            AllocationRecord(networkID: "net", address: IPAddress("10.5.0.\(last)")!, endpointID: endpoint, nodeID: node)
        }
        let all = [record("e1", "n1", 2), record("e2", "n1", 3), record("e3", "n2", 4)]
        var orphans = OrphanedAddresses()
        let t0 = Date(timeIntervalSince1970: 1_000_000)
        // n1 holds e1 but says nothing of e2: noticed, not given back yet.
        #expect(orphans.report(node: "n1", holds: ["e1"], allocations: all, now: t0, grace: 60).isEmpty)
        #expect(orphans.waiting(node: "n1") == 1)
        // A second report within the grace (the address may have been given while the first was
        // on its way): still nothing.
        #expect(orphans.report(node: "n1", holds: ["e1"], allocations: all, now: t0 + 30, grace: 60).isEmpty)
        // Another node's allocations are never its business.
        #expect(orphans.report(node: "n2", holds: [], allocations: all, now: t0 + 30, grace: 60).isEmpty)
        // A report the grace after the first that still leaves e2 out: given back.
        #expect(orphans.report(node: "n1", holds: ["e1"], allocations: all, now: t0 + 61, grace: 60).map(\.endpointID) == ["e2"])
        #expect(orphans.waiting(node: "n1") == 0)
        // An endpoint that shows up again in time is forgotten.
        #expect(orphans.report(node: "n2", holds: ["e3"], allocations: all, now: t0 + 100, grace: 60).isEmpty)
        #expect(orphans.waiting(node: "n2") == 0)
        #expect(orphans.report(node: "n2", holds: [], allocations: all, now: t0 + 200, grace: 60).isEmpty)
    }
}
