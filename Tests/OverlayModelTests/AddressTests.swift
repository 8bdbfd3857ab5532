import Foundation
import OverlayModel
import Testing

@Suite struct IPv4AddressTests {
    @Test func parsesAndPrints() throws {
        let a = try #require(IPv4Address("10.0.0.1"))
        #expect(a.value == 0x0A00_0001)
        #expect(a.description == "10.0.0.1")
        #expect(a.bytes == [10, 0, 0, 1])
        #expect(IPv4Address(bytes: [192, 168, 1, 254])?.description == "192.168.1.254")
        #expect(IPv4Address("255.255.255.255") == .broadcast)
        #expect(IPv4Address("0.0.0.0") == .any)
    }

    @Test(arguments: ["", "1", "1.2.3", "1.2.3.4.5", "256.0.0.1", "1..2.3", "01.2.3.4", "1.2.3.4 ", "a.b.c.d",
                      "1.2.3.-4", ".1.2.3", "1.2.3.", "1.2.3.1000", "１.2.3.4"])
    func refusesMalformed(_ text: String) {
        #expect(IPv4Address(text) == nil)
    }

    @Test func ordersNumerically() {
        #expect(IPv4Address("9.255.255.255")! < IPv4Address("10.0.0.0")!)
    }
}

@Suite struct IPv6AddressTests {
    @Test(arguments: [
        ("::", "::"), ("::1", "::1"), ("2001:db8::1", "2001:db8::1"),
        ("2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),  // RFC 5952 4.2.3: first longest run
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),  // RFC 5952 4.2.2: a single 0 is not shortened
        ("fe80::", "fe80::"), ("::ffff:10.0.0.1", "::ffff:10.0.0.1"), ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"),
        ("1::", "1::"), ("::2:3:4:5:6:7:8", "0:2:3:4:5:6:7:8"), ("64:ff9b::192.0.2.33", "64:ff9b::c000:221"),
    ])
    func parsesAndPrintsCanonically(_ input: String, _ canonical: String) throws {
        let a = try #require(IPv6Address(input))
        #expect(a.description == canonical)
        #expect(IPv6Address(a.description) == a)
        #expect(IPv6Address(bytes: a.bytes) == a)
    }

    @Test(arguments: [":", ":::", "1:::2", "1::2::3", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "12345::", "g::",
                      "1:", ":1", "::1:", "fe80::1%eth0", "::1.2.3", "1.2.3.4::", "1:2:3:4:5:6:7::8"])
    func refusesMalformed(_ text: String) {
        #expect(IPv6Address(text) == nil)
    }

    @Test func mapsIPv4() {
        let m = IPv6Address(mapping: IPv4Address(10, 1, 2, 3))
        #expect(m.mappedIPv4 == IPv4Address(10, 1, 2, 3))
        #expect(IPv6Address("2001:db8::1")!.mappedIPv4 == nil)
    }
}

@Suite struct IPAddressTests {
    @Test func picksFamilyAndRoundTrips() throws {
        #expect(IPAddress("10.0.0.1")?.family == .v4)
        #expect(IPAddress("fd00::1")?.family == .v6)
        #expect(IPAddress("nonsense") == nil)
        #expect(IPAddress(family: .v4, integer: UInt128(UInt32.max) + 1) == nil)
        let all: [IPAddress] = [IPAddress("10.0.0.1")!, IPAddress("fd00::1")!]
        let json = try JSONEncoder().encode(all)
        #expect(String(decoding: json, as: UTF8.self) == #"["10.0.0.1","fd00::1"]"#)
        #expect(try JSONDecoder().decode([IPAddress].self, from: json) == all)
        #expect(throws: DecodingError.self) { try JSONDecoder().decode([IPAddress].self, from: Data(#"["10.0.0.300"]"#.utf8)) }
        #expect(IPAddress("10.0.0.1")! < IPAddress("::1")!)
    }
}

@Suite struct CIDRTests {
    @Test func parsesAndDerives() throws {
        let c = try CIDR.parse("10.0.0.0/24")
        #expect(c.family == .v4)
        #expect(c.first.description == "10.0.0.0")
        #expect(c.last.description == "10.0.0.255")
        #expect(c.netmask.description == "255.255.255.0")
        #expect(c.addressCount == 256)
        #expect(c.address(at: 1)?.description == "10.0.0.1")
        #expect(c.address(at: 256) == nil)
        #expect(c.offset(of: IPAddress("10.0.0.9")!) == 9)
        #expect(c.offset(of: IPAddress("10.0.1.9")!) == nil)
        #expect(c.description == "10.0.0.0/24")
    }

    @Test func errorsSayWhatIsWrong() {
        #expect(throws: ModelError(.invalidCIDR, "10.0.0.1/24 has host bits set; did you mean 10.0.0.0/24?")) {
            try CIDR.parse("10.0.0.1/24")
        }
        #expect(throws: ModelError(.invalidCIDR, "prefix length /33 is out of range for IPv4 (0...32)")) {
            try CIDR.parse("10.0.0.0/33")
        }
        #expect(throws: ModelError(.invalidCIDR, "'10.0.0.0' is not a subnet in CIDR notation (like 10.0.0.0/24)")) {
            try CIDR.parse("10.0.0.0")
        }
        #expect(throws: ModelError(.invalidCIDR, "'x' in 'x/8' is not an IP address")) { try CIDR.parse("x/8") }
        #expect(throws: ModelError(.invalidCIDR, "'+8' in '10.0.0.0/+8' is not a prefix length")) {
            try CIDR.parse("10.0.0.0/+8")
        }
        #expect(CIDR("10.0.0.0/-1") == nil)
        #expect(CIDR("10.0.0.0/") == nil)
        #expect(CIDR("/8") == nil)
    }

    @Test func containsAndOverlaps() throws {
        let a = try CIDR.parse("10.0.0.0/16"), b = try CIDR.parse("10.0.5.0/24"), c = try CIDR.parse("10.1.0.0/24")
        #expect(a.contains(b) && !b.contains(a))
        #expect(a.overlaps(b) && b.overlaps(a))
        #expect(!a.overlaps(c) && !c.overlaps(a))
        #expect(!a.contains(IPAddress("::a00:1")!))
        let v6 = try CIDR.parse("fd00::/8")
        #expect(!v6.overlaps(a))
        #expect(v6.contains(IPAddress("fdff::1")!))
        #expect(try CIDR.parse("0.0.0.0/0").contains(IPAddress("255.255.255.255")!))
    }

    @Test func subnetsTileTheParentLazily() throws {
        let pool = try CIDR.parse("10.0.0.0/8")
        let s = pool.subnets(prefixLength: 24)
        #expect(s.count == 65536)
        #expect(s[0]?.description == "10.0.0.0/24")
        #expect(s[257]?.description == "10.1.1.0/24")
        #expect(s[65535]?.description == "10.255.255.0/24")
        #expect(s[65536] == nil)
        #expect(Array(s.prefix(2)).map(\.description) == ["10.0.0.0/24", "10.0.1.0/24"])
        #expect(pool.subnets(prefixLength: 7).count == 0)
        #expect(Array(pool.subnets(prefixLength: 7)).isEmpty)
        let huge = try CIDR.parse("::/0").subnets(prefixLength: 128)
        #expect(huge.count == nil)
        #expect(huge[UInt128.max]?.description == "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128")
    }

    @Test func largeIPv6Subnets() throws {
        let c = try CIDR.parse("fd00::/48")
        #expect(c.hostBits == 80)
        #expect(c.addressCount == UInt128(1) << 80)
        #expect(c.last.description == "fd00::ffff:ffff:ffff:ffff:ffff")
        #expect(try CIDR.parse("::/0").addressCount == nil)
        #expect(try CIDR.parse("::/0").lastOffset == .max)
    }

    @Test func iteratesAddresses() throws {
        let c = try CIDR.parse("192.168.1.252/30")
        #expect(c.addresses.map(\.description) == ["192.168.1.252", "192.168.1.253", "192.168.1.254", "192.168.1.255"])
        #expect(try CIDR.parse("255.255.255.255/32").addresses.map(\.description) == ["255.255.255.255"])
    }

    @Test func containingMasks() throws {
        #expect(try CIDR(containing: IPAddress("10.1.2.3")!, prefixLength: 16).description == "10.1.0.0/16")
    }
}

@Suite struct MACAndVNITests {
    @Test func macParsesPrintsAndDerives() throws {
        let m = try #require(MACAddress("02:42:0A:00:00:02"))
        #expect(m.description == "02:42:0a:00:00:02")
        #expect(MACAddress("02-42-0a-00-00-02") == m)
        #expect(MACAddress(derivedFrom: IPv4Address(10, 0, 0, 2)) == m)
        #expect(m.isLocallyAdministered && !m.isMulticast)
        #expect(MACAddress.broadcast.isMulticast)
        for bad in ["02:42:0a:00:00", "02:42:0a:00:00:0g", "02:42-0a:00:00:02", "0242.0a00.0002", ""] {
            #expect(MACAddress(bad) == nil, "\(bad)")
        }
        var g = SplitMix64(seed: 7)
        for _ in 0..<100 {
            let r = MACAddress.randomLocallyAdministered(using: &g)
            #expect(r.isLocallyAdministered && !r.isMulticast)
        }
    }

    @Test func vniIs24Bits() throws {
        #expect(try VNI(4096).value == 4096)
        #expect(try VNI(16_777_215).value == 16_777_215)
        #expect(throws: ModelError(.invalidVNI, "VXLAN ID 16777216 is out of range (1...16777215)")) { try VNI(16_777_216) }
        #expect(throws: ModelError(.invalidVNI, "VXLAN ID 0 is out of range (1...16777215)")) { try VNI(0) }
        #expect(throws: ModelError(.invalidVNI, "VXLAN ID 'abc' is not a number in 1...16777215")) { try VNI(parsing: "abc") }
        #expect(VNI.firstAllocated.value == 4096)
    }

    @Test func idsHaveDockerShapes() throws {
        var g = SplitMix64(seed: 1)
        let n = NetworkID.random(using: &g)
        #expect(n.text.count == 64 && n.short.count == 12)
        #expect(NetworkID(n.text) == n)
        #expect(NetworkID("ABC") == nil)
        #expect(throws: ModelError(.invalidID, "'xyz' is not a node ID (25 characters of 0-9 and a-z)")) {
            try NodeID(parsing: "xyz")
        }
        let node = NodeID.random(using: &g)
        #expect(node.text.count == 25)
        let json = try JSONEncoder().encode([node])
        #expect(try JSONDecoder().decode([NodeID].self, from: json) == [node])
        #expect(EndpointID.random() != EndpointID.random())
    }
}

/// A small deterministic generator so property tests reproduce.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
