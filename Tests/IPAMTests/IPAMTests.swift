import OverlayModel
import Testing

@testable import IPAM

@Suite struct PoolTests {
    @Test func dockerDefaults() throws {
        let local = AddressPool.localDefaults
        #expect(local.count == 16)
        #expect(local.first == (try AddressPool(base: cidr("172.17.0.0/16"), size: 16)))
        #expect(local[14] == (try AddressPool(base: cidr("172.31.0.0/16"), size: 16)))
        #expect(local.last == (try AddressPool(base: cidr("192.168.0.0/16"), size: 20)))
        #expect(AddressPool.globalDefaults == [try AddressPool(base: cidr("10.0.0.0/8"), size: 24)])
    }

    @Test func defaultAddrPoolFlags() throws {
        #expect(try AddressPool.pools(defaultAddrPools: [String](), maskLength: nil) == AddressPool.globalDefaults)
        #expect(
            try AddressPool.pools(defaultAddrPools: ["10.10.0.0/16", "10.20.0.0/16"], maskLength: "26")
                == [try AddressPool(base: cidr("10.10.0.0/16"), size: 26), try AddressPool(base: cidr("10.20.0.0/16"), size: 26)])
        #expect(try AddressPool.pools(defaultAddrPools: ["10.10.0.0/16"], maskLength: nil) == [try AddressPool(base: cidr("10.10.0.0/16"), size: 24)])
        #expect(try AddressPool.pools(defaultAddrPools: [CIDR](), maskLength: 16) == [try AddressPool(base: cidr("10.0.0.0/8"), size: 16)])
        expectError(.invalidConfiguration, "--default-addr-pool-mask-length 8 does not fit --default-addr-pool 10.10.0.0/16; use a length between 16 and 32") {
            _ = try AddressPool.pools(defaultAddrPools: ["10.10.0.0/16"], maskLength: "8")
        }
        expectError(.invalidConfiguration, "--default-addr-pool: 10.10.0.1/16 has host bits set; did you mean 10.10.0.0/16?") {
            _ = try AddressPool.pools(defaultAddrPools: ["10.10.0.1/16"], maskLength: nil)
        }
        expectError(.invalidConfiguration, "--default-addr-pool-mask-length 'x' is not a prefix length (like 24)") {
            _ = try AddressPool.pools(defaultAddrPools: ["10.10.0.0/16"], maskLength: "x")
        }
    }
}

@Suite struct SubnetAllocationTests {
    @Test func globalDefaultHandsOutConsecutive24s() throws {
        var ipam = IPAM()
        #expect(try ipam.createNetwork("a")[0].subnet == cidr("10.0.0.0/24"))
        #expect(try ipam.createNetwork("b")[0].subnet == cidr("10.0.1.0/24"))
        #expect(ipam.network("b")?[0].gateway == ip("10.0.1.1"))
        #expect(ipam.owner(of: cidr("10.0.1.0/24")) == "b")
    }

    @Test func localDefaultsWalkThe172sThen192168() throws {
        var ipam = IPAM(pools: AddressPool.localDefaults, strategy: .firstFree)
        for i in 17...31 {
            #expect(try ipam.createNetwork("n\(i)")[0].subnet == cidr("172.\(i).0.0/16"))
        }
        #expect(try ipam.createNetwork("x")[0].subnet == cidr("192.168.0.0/20"))
        #expect(try ipam.createNetwork("y")[0].subnet == cidr("192.168.16.0/20"))
    }

    @Test func explicitSubnetsAreCheckedAgainstEverything() throws {
        var ipam = IPAM()
        try ipam.createNetwork("front", subnets: [SubnetRequest(subnet: cidr("10.0.0.0/16"))])
        expectError(.subnetOverlap, "subnet 10.0.1.0/24 overlaps 10.0.0.0/16 of network 'front'") {
            try ipam.createNetwork("back", subnets: [SubnetRequest(subnet: cidr("10.0.1.0/24"))])
        }
        expectError(.subnetOverlap, "subnet 10.0.0.0/8 overlaps 10.0.0.0/16 of network 'front'") {
            try ipam.createNetwork("back", subnets: [SubnetRequest(subnet: cidr("10.0.0.0/8"))])
        }
        // Outside every pool is fine, and is checked too.
        try ipam.createNetwork("doc", subnets: [SubnetRequest(subnet: cidr("192.0.2.0/24"))])
        expectError(.subnetOverlap, "subnet 192.0.2.128/25 overlaps 192.0.2.0/24 of network 'doc'") {
            try ipam.createNetwork("doc2", subnets: [SubnetRequest(subnet: cidr("192.0.2.128/25"))])
        }
        // The pool skips the explicit /16.
        #expect(try ipam.createNetwork("dyn")[0].subnet == cidr("10.1.0.0/24"))
        // A dynamic subnet is refused to a later explicit request.
        expectError(.subnetOverlap, "subnet 10.1.0.0/16 overlaps 10.1.0.0/24 of network 'dyn'") {
            try ipam.createNetwork("late", subnets: [SubnetRequest(subnet: cidr("10.1.0.0/16"))])
        }
    }

    @Test func poolSkipsUnalignedExplicitSubnets() throws {
        var ipam = IPAM()
        try ipam.createNetwork("half", subnets: [SubnetRequest(subnet: cidr("10.0.0.128/25"))])
        try ipam.createNetwork("small", subnets: [SubnetRequest(subnet: cidr("10.0.2.4/30"))])
        #expect(try ipam.createNetwork("a")[0].subnet == cidr("10.0.1.0/24"))
        #expect(try ipam.createNetwork("b")[0].subnet == cidr("10.0.3.0/24"))
    }

    @Test func removeGivesTheSubnetBack() throws {
        var ipam = IPAM()
        try ipam.createNetwork("a")
        try ipam.createNetwork("b")
        try ipam.removeNetwork("a")
        #expect(ipam.owner(of: cidr("10.0.0.0/24")) == nil)
        #expect(try ipam.createNetwork("c")[0].subnet == cidr("10.0.0.0/24"))
        expectError(.unknownNetwork, "network 'a' does not exist") { try ipam.removeNetwork("a") }
        expectError(.networkExists, "network 'b' already exists; pick another name or remove it first") {
            try ipam.createNetwork("b")
        }
        expectError(.invalidConfiguration, "a network needs a name") { try ipam.createNetwork("") }
    }

    @Test func exhaustion() throws {
        var ipam = IPAM(pools: [try AddressPool(base: cidr("10.0.0.0/22"), size: 24)])
        for i in 0..<4 { try ipam.createNetwork("n\(i)") }
        expectError(.poolExhausted, "pool 10.0.0.0/22 is exhausted: no free /24 left; add a --default-addr-pool") {
            try ipam.createNetwork("more")
        }
        var two = IPAM(pools: [try AddressPool(base: cidr("10.0.0.0/24"), size: 24), try AddressPool(base: cidr("10.1.0.0/24"), size: 25)])
        try two.createNetwork("a")
        #expect(try two.createNetwork("b")[0].subnet == cidr("10.1.0.0/25"))
        try two.createNetwork("c")
        expectError(.poolExhausted, "all IPv4 pools are exhausted: no free subnet left in 10.0.0.0/24 (/24), 10.1.0.0/24 (/25); add a --default-addr-pool") {
            try two.createNetwork("d")
        }
        expectError(.noPool, "no IPv6 address pool is configured; pass --subnet or add a --default-addr-pool") {
            try two.createNetwork("v6", subnets: [SubnetRequest(family: .v6)])
        }
    }

    @Test func optionsWithoutSubnetAreRefused() throws {
        var ipam = IPAM()
        expectError(.invalidConfiguration, "--gateway needs a --subnet to go with it") {
            try ipam.createNetwork("x", subnets: [SubnetRequest(gateway: ip("10.0.0.1"))])
        }
        expectError(.invalidConfiguration, "--ip-range needs a --subnet to go with it") {
            try ipam.createNetwork("x", subnets: [SubnetRequest(ipRange: cidr("10.0.0.0/25"))])
        }
        expectError(.invalidConfiguration, "--aux-address needs a --subnet to go with it") {
            try ipam.createNetwork("x", subnets: [SubnetRequest(auxAddresses: ["a": ip("10.0.0.3")])])
        }
    }

    @Test func createIsAllOrNothing() throws {
        var ipam = IPAM()
        expectError(.addressOutsideSubnet, "--gateway 10.9.0.1 is not in --subnet 10.5.0.0/24") {
            try ipam.createNetwork("x", subnets: [SubnetRequest(), SubnetRequest(subnet: cidr("10.5.0.0/24"), gateway: ip("10.9.0.1"))])
        }
        #expect(ipam.networkNames.isEmpty)
        #expect(ipam.allocatedSubnets.isEmpty)
        expectError(.subnetOverlap, "subnet 10.0.0.0/25 overlaps 10.0.0.0/24 of network 'x'") {
            try ipam.createNetwork("x", subnets: [SubnetRequest(), SubnetRequest(subnet: cidr("10.0.0.0/25"))])
        }
        #expect(try ipam.createNetwork("y")[0].subnet == cidr("10.0.0.0/24"))
    }

    @Test func dualStackAndIPv6Pools() throws {
        var ipam = IPAM(pools: AddressPool.globalDefaults + [try AddressPool(base: cidr("fd00::/48"), size: 64)])
        let spaces = try ipam.createNetwork("ds", subnets: [SubnetRequest(), SubnetRequest(family: .v6)])
        #expect(spaces.map(\.subnet) == [cidr("10.0.0.0/24"), cidr("fd00::/64")])
        #expect(try ipam.createNetwork("v6", subnets: [SubnetRequest(family: .v6)])[0].subnet == cidr("fd00:0:0:1::/64"))
        #expect(try ipam.allocateAddress(in: "ds") == ip("10.0.0.2"))
        #expect(try ipam.allocateAddress(in: "ds", family: .v6) == ip("fd00::2"))
        try ipam.requestAddress(ip("fd00::ffff:1"), in: "ds")
        try ipam.releaseAddress(ip("fd00::ffff:1"), in: "ds")
        expectError(.addressOutsideSubnet, "address 10.9.9.9 is not in any subnet of network 'ds' (10.0.0.0/24, fd00::/64)") {
            try ipam.requestAddress(ip("10.9.9.9"), in: "ds")
        }
        expectError(.addressOutsideSubnet, "network 'v6' has no IPv4 subnet") { _ = try ipam.allocateAddress(in: "v6") }
        expectError(.unknownNetwork, "network 'nope' does not exist") { _ = try ipam.allocateAddress(in: "nope") }
        // /48 subnets of a huge pool: the pool's offsets are far beyond 64 bits.
        var wide = IPAM(pools: [try AddressPool(base: cidr("2001:db8::/32"), size: 48)])
        #expect(try wide.createNetwork("a", subnets: [SubnetRequest(family: .v6)])[0].subnet == cidr("2001:db8::/48"))
        #expect(try wide.createNetwork("b", subnets: [SubnetRequest(family: .v6)])[0].subnet == cidr("2001:db8:1::/48"))
    }

    @Test func multipleV4SubnetsFillInOrder() throws {
        var ipam = IPAM(strategy: .firstFree)
        try ipam.createNetwork("m", subnets: [SubnetRequest(subnet: cidr("10.0.0.0/30")), SubnetRequest(subnet: cidr("10.0.1.0/30"))])
        #expect(try ipam.allocateAddress(in: "m") == ip("10.0.0.2"))
        #expect(try ipam.allocateAddress(in: "m") == ip("10.0.1.2"))
        expectError(.addressesExhausted, "subnet 10.0.1.0/30 of network 'm' has no free address left; release one or use a larger --subnet") {
            _ = try ipam.allocateAddress(in: "m")
        }
        try ipam.releaseAddress(ip("10.0.0.2"), in: "m")
        #expect(try ipam.allocateAddress(in: "m") == ip("10.0.0.2"))
    }
}
