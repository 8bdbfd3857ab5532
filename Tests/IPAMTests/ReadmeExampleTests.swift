import Foundation
import OverlayModel
import Testing

@testable import IPAM

/// The README's example, kept compiling and true.
@Test func readmeExample() throws {
    var ipam = IPAM(pools: try AddressPool.pools(defaultAddrPools: ["10.10.0.0/16"], maskLength: "24"))

    let front = try ipam.createNetwork("front")
    #expect(front[0].subnet == cidr("10.10.0.0/24"))
    #expect(front[0].gateway == ip("10.10.0.1"))
    try ipam.createNetwork("back", subnets: [SubnetRequest(
        subnet: CIDR("192.168.50.0/24")!, ipRange: CIDR("192.168.50.128/25")!,
        auxAddresses: ["router": IPAddress("192.168.50.2")!])])

    let a = try ipam.allocateAddress(in: "front")
    #expect(a == ip("10.10.0.2"))
    try ipam.requestAddress(IPAddress("192.168.50.10")!, in: "back")
    try ipam.releaseAddress(a, in: "front")

    expectError(.subnetOverlap, "subnet 10.10.0.0/16 overlaps 10.10.0.0/24 of network 'front'") {
        try ipam.createNetwork("clash", subnets: [SubnetRequest(subnet: CIDR("10.10.0.0/16")!)])
    }

    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    let json = try encoder.encode(ipam.snapshot())
    var restored = try IPAM(restoring: JSONDecoder().decode(IPAMSnapshot.self, from: json))
    #expect(try restored.allocateAddress(in: "back") == ipam.allocateAddress(in: "back"))
    #expect(try restored.allocateAddress(in: "back") == ip("192.168.50.129"))
}
