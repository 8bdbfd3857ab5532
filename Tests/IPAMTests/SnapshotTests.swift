import Foundation
import OverlayModel
import Testing

@testable import IPAM

func encode<T: Encodable>(_ v: T) throws -> String {
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try e.encode(v), as: UTF8.self)
}

func decode<T: Decodable>(_ t: T.Type, _ s: String) throws -> T {
    try JSONDecoder().decode(t, from: Data(s.utf8))
}

@Suite struct SnapshotTests {
    @Test func stableJSON() throws {
        var ipam = IPAM()
        try ipam.createNetwork(
            "front",
            subnets: [SubnetRequest(subnet: cidr("10.0.0.0/24"), ipRange: cidr("10.0.0.0/25"), auxAddresses: ["r": ip("10.0.0.3")])])
        for _ in 0..<4 { _ = try ipam.allocateAddress(in: "front") }
        try ipam.requestAddress(ip("10.0.0.200"), in: "front")
        try ipam.releaseAddress(ip("10.0.0.4"), in: "front")
        let json = try encode(ipam.snapshot())
        #expect(json == """
            {"networks":[{"name":"front","subnets":[{"allocated":["10.0.0.2","10.0.0.5-10.0.0.6","10.0.0.200"],\
            "auxAddresses":[{"address":"10.0.0.3","name":"r"}],"gateway":"10.0.0.1","ipRange":"10.0.0.0/25",\
            "lastAllocated":"10.0.0.6","strategy":"serial","subnet":"10.0.0.0/24"}]}],\
            "pools":[{"base":"10.0.0.0/8","size":24}],"strategy":"serial","version":1}
            """)
        let restored = try IPAM(restoring: decode(IPAMSnapshot.self, json))
        #expect(try encode(restored.snapshot()) == json)
    }

    @Test func restoreIsIdentityIncludingTheSerialCursor() throws {
        for strategy in [AllocationStrategy.serial, .firstFree] {
            var rng = SeededRandom(seed: 42)
            var ipam = IPAM(pools: AddressPool.globalDefaults + [try AddressPool(base: cidr("fd00::/48"), size: 64)], strategy: strategy)
            try ipam.createNetwork("a", subnets: [SubnetRequest(subnet: cidr("10.0.0.0/22"), auxAddresses: ["x": ip("10.0.1.1")])])
            try ipam.createNetwork("b", subnets: [SubnetRequest(), SubnetRequest(family: .v6)])
            var live: [IPAddress] = []
            for _ in 0..<800 {
                if live.isEmpty || Int.random(in: 0..<3, using: &rng) != 0 {
                    live.append(try ipam.allocateAddress(in: "a"))
                } else {
                    try ipam.releaseAddress(live.remove(at: Int.random(in: 0..<live.count, using: &rng)), in: "a")
                }
            }
            _ = try ipam.allocateAddress(in: "b", family: .v6)
            var restored = try IPAM(restoring: decode(IPAMSnapshot.self, encode(ipam.snapshot())))
            #expect(restored.snapshot() == ipam.snapshot())
            for _ in 0..<500 {
                let x = try ipam.allocateAddress(in: "a")
                let y = try restored.allocateAddress(in: "a")
                #expect(x == y)
                if x != y { break }
            }
            #expect(try ipam.allocateAddress(in: "b", family: .v6) == restored.allocateAddress(in: "b", family: .v6))
            #expect(try ipam.createNetwork("c")[0].subnet == restored.createNetwork("c")[0].subnet)
        }
    }

    @Test func refusesInconsistentSnapshots() throws {
        var ipam = IPAM()
        try ipam.createNetwork("a", subnets: [SubnetRequest(subnet: cidr("10.0.0.0/24"))])
        var s = ipam.snapshot()
        s.version = 2
        expectError(.invalidSnapshot, "snapshot version 2 is not supported (this build reads 1)") { _ = try IPAM(restoring: s) }

        s = ipam.snapshot()
        s.networks[0].subnets[0].allocated = ["10.0.0.1-10.0.0.3"]
        expectError(.invalidSnapshot, "snapshot of 10.0.0.0/24: '10.0.0.1-10.0.0.3' includes a reserved address") {
            _ = try IPAM(restoring: s)
        }
        s.networks[0].subnets[0].allocated = ["10.0.0.5", "10.0.0.4"]
        expectError(.invalidSnapshot, "snapshot of 10.0.0.0/24: '10.0.0.4' is out of order or overlaps the range before it") {
            _ = try IPAM(restoring: s)
        }
        s.networks[0].subnets[0].allocated = ["10.0.1.5"]
        expectError(.invalidSnapshot, "snapshot of 10.0.0.0/24: '10.0.1.5' is not an ascending range inside the subnet") {
            _ = try IPAM(restoring: s)
        }
        s.networks[0].subnets[0].allocated = ["garbage"]
        expectError(.invalidSnapshot, "snapshot of 10.0.0.0/24: 'garbage' is not an address or a range a-b") {
            _ = try IPAM(restoring: s)
        }
        s = ipam.snapshot()
        s.networks.append(NetworkSnapshot(name: "b", subnets: [s.networks[0].subnets[0]]))
        expectError(.invalidSnapshot, "snapshot of network 'b': subnet 10.0.0.0/24 overlaps 10.0.0.0/24 of network 'a'") {
            _ = try IPAM(restoring: s)
        }
        #expect(throws: DecodingError.self) {
            _ = try decode(AddressPool.self, #"{"base":"10.0.0.0/16","size":8}"#)
        }
    }
}
