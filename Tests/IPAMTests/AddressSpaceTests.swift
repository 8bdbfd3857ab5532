import OverlayModel
import Testing

@testable import IPAM

@Suite struct AddressSpaceTests {
    @Test func ipv4ReservesNetworkBroadcastAndGateway() throws {
        var s = try AddressSpace(subnet: cidr("10.0.0.0/24"), networkName: "front")
        #expect(s.gateway == ip("10.0.0.1"))
        #expect(s.reservation(of: ip("10.0.0.0")) == "network")
        #expect(s.reservation(of: ip("10.0.0.255")) == "broadcast")
        #expect(s.reservation(of: ip("10.0.0.1")) == "gateway")
        var seen: [IPAddress] = []
        for _ in 0..<253 { seen.append(try s.allocate()) }
        #expect(seen.first == ip("10.0.0.2"))
        #expect(seen.last == ip("10.0.0.254"))
        #expect(Set(seen).count == 253)
        #expect(Int(s.allocatedCount) == 253)
        expectError(.addressesExhausted, "subnet 10.0.0.0/24 of network 'front' has no free address left; release one or use a larger --subnet") {
            _ = try s.allocate()
        }
    }

    @Test func explicitGateway() throws {
        var s = try AddressSpace(subnet: cidr("10.0.0.0/24"), gateway: ip("10.0.0.254"))
        #expect(s.gateway == ip("10.0.0.254"))
        #expect(try s.allocate() == ip("10.0.0.1"))
        expectError(.addressOutsideSubnet, "--gateway 10.0.1.1 is not in --subnet 10.0.0.0/24") {
            _ = try AddressSpace(subnet: cidr("10.0.0.0/24"), gateway: ip("10.0.1.1"))
        }
        expectError(.addressReserved, "--gateway 10.0.0.0 is the network address of 10.0.0.0/24; use an address inside the subnet") {
            _ = try AddressSpace(subnet: cidr("10.0.0.0/24"), gateway: ip("10.0.0.0"))
        }
        expectError(.addressReserved, "--gateway 10.0.0.255 is the broadcast address of 10.0.0.0/24; use an address inside the subnet") {
            _ = try AddressSpace(subnet: cidr("10.0.0.0/24"), gateway: ip("10.0.0.255"))
        }
        expectError(.addressOutsideSubnet, "--gateway fd00::1 is not in --subnet 10.0.0.0/24") {
            _ = try AddressSpace(subnet: cidr("10.0.0.0/24"), gateway: ip("fd00::1"))
        }
    }

    @Test func ipRangeRestrictsDynamicAllocationOnly() throws {
        var s = try AddressSpace(subnet: cidr("10.0.0.0/16"), ipRange: cidr("10.0.5.0/30"), networkName: "n")
        #expect(s.gateway == ip("10.0.0.1"))
        var got: [IPAddress] = []
        for _ in 0..<4 { got.append(try s.allocate()) }
        #expect(got == ["10.0.5.0", "10.0.5.1", "10.0.5.2", "10.0.5.3"].map(ip))
        expectError(.addressesExhausted, "ip-range 10.0.5.0/30 of network 'n' has no free address left; release one or use a larger --ip-range") {
            _ = try s.allocate()
        }
        // --ip outside the range but inside the subnet is allowed (Docker).
        try s.request(ip("10.0.9.9"))
        #expect(s.isAllocated(ip("10.0.9.9")))
        expectError(.invalidConfiguration, "--ip-range 10.1.0.0/24 is not inside --subnet 10.0.0.0/16") {
            _ = try AddressSpace(subnet: cidr("10.0.0.0/16"), ipRange: cidr("10.1.0.0/24"))
        }
        expectError(.invalidConfiguration, "--ip-range 10.0.0.0/15 is not inside --subnet 10.0.0.0/16") {
            _ = try AddressSpace(subnet: cidr("10.0.0.0/16"), ipRange: cidr("10.0.0.0/15"))
        }
    }

    @Test func auxAddressesAreNeverHandedOut() throws {
        var s = try AddressSpace(
            subnet: cidr("10.0.0.0/29"), auxAddresses: ["router": ip("10.0.0.2"), "dns": ip("10.0.0.4")], networkName: "n")
        #expect(s.reservation(of: ip("10.0.0.2")) == "aux:router")
        var got: [IPAddress] = []
        for _ in 0..<3 { got.append(try s.allocate()) }
        #expect(got == ["10.0.0.3", "10.0.0.5", "10.0.0.6"].map(ip))
        expectError(.addressReserved, "address 10.0.0.2 is reserved as aux address 'router' of network 'n'; pick another --ip") {
            try s.request(ip("10.0.0.2"))
        }
        expectError(.addressOutsideSubnet, "--aux-address x=10.0.1.2 is not in --subnet 10.0.0.0/29") {
            _ = try AddressSpace(subnet: cidr("10.0.0.0/29"), auxAddresses: ["x": ip("10.0.1.2")])
        }
        expectError(.addressReserved, "--aux-address x=10.0.0.1 is the gateway of network 'n'; use another address") {
            _ = try AddressSpace(subnet: cidr("10.0.0.0/29"), auxAddresses: ["x": ip("10.0.0.1")], networkName: "n")
        }
        expectError(.addressReserved, "--aux-address b=10.0.0.3 is aux address 'a'; use another address") {
            _ = try AddressSpace(subnet: cidr("10.0.0.0/29"), auxAddresses: ["a": ip("10.0.0.3"), "b": ip("10.0.0.3")])
        }
    }

    @Test func explicitRequestsAndTheirErrors() throws {
        var s = try AddressSpace(subnet: cidr("10.0.0.0/24"), networkName: "front")
        try s.request(ip("10.0.0.5"))
        expectError(.addressInUse, "address 10.0.0.5 is already allocated") { try s.request(ip("10.0.0.5")) }
        expectError(.addressReserved, "address 10.0.0.1 is reserved as the gateway of network 'front'; pick another --ip") {
            try s.request(ip("10.0.0.1"))
        }
        expectError(.addressReserved, "address 10.0.0.0 is reserved as the network address of 10.0.0.0/24; pick another --ip") {
            try s.request(ip("10.0.0.0"))
        }
        expectError(.addressReserved, "address 10.0.0.255 is reserved as the broadcast address of 10.0.0.0/24; pick another --ip") {
            try s.request(ip("10.0.0.255"))
        }
        expectError(.addressOutsideSubnet, "address 10.0.1.5 is not in subnet 10.0.0.0/24 of network 'front'") {
            try s.request(ip("10.0.1.5"))
        }
        // A requested address is skipped by dynamic allocation and does not move the cursor.
        #expect(try s.allocate() == ip("10.0.0.2"))
        #expect(try s.allocate() == ip("10.0.0.3"))
        #expect(try s.allocate() == ip("10.0.0.4"))
        #expect(try s.allocate() == ip("10.0.0.6"))
    }

    @Test func releaseErrors() throws {
        var s = try AddressSpace(subnet: cidr("10.0.0.0/24"), auxAddresses: ["r": ip("10.0.0.9")], networkName: "front")
        expectError(.addressNotAllocated, "address 10.0.0.5 is not allocated; nothing to release") {
            try s.release(ip("10.0.0.5"))
        }
        expectError(.addressReserved, "address 10.0.0.1 is the gateway of network 'front'; it is released only with the network") {
            try s.release(ip("10.0.0.1"))
        }
        expectError(.addressReserved, "address 10.0.0.9 is aux address 'r' of network 'front'; it is released only with the network") {
            try s.release(ip("10.0.0.9"))
        }
        expectError(.addressOutsideSubnet, "address 192.168.0.1 is not in subnet 10.0.0.0/24 of network 'front'") {
            try s.release(ip("192.168.0.1"))
        }
        let a = try s.allocate()
        try s.release(a)
        expectError(.addressNotAllocated, "address \(a) is not allocated; nothing to release") { try s.release(a) }
        #expect(Int(s.allocatedCount) == 0)
    }

    @Test func firstFreeReusesAReleasedAddressSerialDoesNot() throws {
        var ff = try AddressSpace(subnet: cidr("10.0.0.0/29"), strategy: .firstFree)
        var serial = try AddressSpace(subnet: cidr("10.0.0.0/29"), strategy: .serial)
        for _ in 0..<3 {
            _ = try ff.allocate()
            _ = try serial.allocate()
        }
        try ff.release(ip("10.0.0.3"))
        try serial.release(ip("10.0.0.3"))
        #expect(try ff.allocate() == ip("10.0.0.3"))
        #expect(try serial.allocate() == ip("10.0.0.5"))
        #expect(try serial.allocate() == ip("10.0.0.6"))
        #expect(serial.lastAllocated == ip("10.0.0.6"))
        // Wrap: past the end the search starts again at the bottom and finds the hole.
        #expect(try serial.allocate() == ip("10.0.0.3"))
        expectError(.addressesExhausted, "subnet 10.0.0.0/29 has no free address left; release one or use a larger --subnet") {
            _ = try serial.allocate()
        }
    }

    @Test func tinyIPv4Subnets() throws {
        var p2p = try AddressSpace(subnet: cidr("10.0.0.0/31"))
        #expect(p2p.gateway == ip("10.0.0.0"))
        #expect(try p2p.allocate() == ip("10.0.0.1"))
        var host = try AddressSpace(subnet: cidr("10.0.0.7/32"))
        #expect(host.gateway == ip("10.0.0.7"))
        expectError(.addressesExhausted, "subnet 10.0.0.7/32 has no free address left; release one or use a larger --subnet") {
            _ = try host.allocate()
        }
    }

    @Test func ipv6HasNoBroadcastAndHugeSubnetsWork() throws {
        var s = try AddressSpace(subnet: cidr("fd00::/126"), networkName: "v6")
        #expect(s.gateway == ip("fd00::1"))
        #expect(try s.allocate() == ip("fd00::2"))
        #expect(try s.allocate() == ip("fd00::3"))  // the last address: no broadcast in IPv6

        var big = try AddressSpace(subnet: cidr("2001:db8::/48"), strategy: .serial)
        #expect(try big.allocate() == ip("2001:db8::2"))
        try big.request(ip("2001:db8:0:ffff:ffff:ffff:ffff:ffff"))
        try big.request(ip("2001:db8:0:8000::"))
        #expect(big.runCount == 3)  // {0,1,2}, one in the middle, the last
        #expect(big.allocatorBytes < 4096)

        // An ip-range larger than 64 bits, near the top of a /0: offsets beyond UInt64.
        var all = try AddressSpace(subnet: cidr("::/0"), ipRange: cidr("ffff::/16"), strategy: .serial)
        #expect(try all.allocate() == ip("ffff::"))
        try all.request(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))
        try all.release(ip("ffff::"))
        #expect(try all.allocate() == ip("ffff::1"))
        #expect(Int(all.allocatedCount) == 2)
    }

    @Test func gatewayAndNamesInMessagesWithoutNetworkName() throws {
        var s = try AddressSpace(subnet: cidr("10.0.0.0/30"))
        expectError(.addressReserved, "address 10.0.0.1 is reserved as the gateway; pick another --ip") {
            try s.request(ip("10.0.0.1"))
        }
    }
}
