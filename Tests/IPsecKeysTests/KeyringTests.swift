import Foundation
import IPsecKeys
import OverlayCrypto
import OverlayModel
import Testing

@Suite struct KeyringTests {
    @Test func primaryIsTheMiddleKeyByAgeAndNewestIsReceiveOnly() throws {
        let ring = try IPsecKeyring(keys: [key(30), key(10), key(20)])
        #expect(ring.tags == [10, 20, 30])
        #expect(ring.primary.tag == 20)
        #expect(ring.receiveOnly?.tag == 30)
        #expect(ring.oldest.tag == 10)
        let two = try IPsecKeyring(keys: [key(5), key(4)])
        #expect(two.primary.tag == 5)
        #expect(two.receiveOnly == nil)
    }

    @Test func badRingsAreRefused() {
        #expect(errorCode { _ = try IPsecKeyring(keys: [key(1)]) } == .invalidKeyring)
        #expect(errorCode { _ = try IPsecKeyring(keys: [key(1), key(2), key(3), key(4)]) } == .invalidKeyring)
        #expect(errorCode { _ = try IPsecKeyring(keys: [key(1), key(1), key(3)]) } == .invalidKeyring)
        #expect(errorCode { _ = try IPsecKey(tag: 1, material: SecretKey(bytes: [1, 2, 3])) } == .invalidKey)
    }

    @Test func rotationShiftsTheRing() throws {
        var ring = try IPsecKeyring(keys: [key(1), key(2), key(3)])
        try ring.rotate(newKey: key(4))
        #expect(ring.tags == [2, 3, 4])
        #expect(ring.primary.tag == 3)
        #expect(ring.receiveOnly?.tag == 4)
        #expect(errorCode { try ring.rotate(newKey: key(4)) } == .invalidKeyring)
        #expect(errorCode { try ring.rotate(newKey: key(2)) } == .invalidKeyring)
        #expect(ring.tags == [2, 3, 4])
        let two = try IPsecKeyring(keys: [key(1), key(2)]).rotated(newKey: key(3))
        #expect(two.tags == [1, 2, 3])
    }

    @Test func rotationPlanOrder() throws {
        let old = try IPsecKeyring(keys: [key(1), key(2), key(3)])
        let new = try old.rotated(newKey: key(4))
        let plan = IPsecRotationPlan(from: old, to: new)
        // Receive first, then switch transmit, then remove: never a moment without the SA a peer uses.
        #expect(plan.steps == [.addRx(key(4)), .setPrimaryTx(key(3)), .removeTx(tag: 2), .removeRx(tag: 1)])
        #expect(plan.description == "addRx(4), setPrimaryTx(3), removeTx(2), removeRx(1)")
        #expect(IPsecRotationPlan(from: nil, to: old).steps == [.addRx(key(1)), .addRx(key(2)), .addRx(key(3)), .setPrimaryTx(key(2))])
        #expect(IPsecRotationPlan(from: old, to: old).steps.isEmpty)
        // A node that missed a rotation catches up in one plan.
        let twice = try new.rotated(newKey: key(5))
        #expect(IPsecRotationPlan(from: old, to: twice).steps
            == [.addRx(key(4)), .addRx(key(5)), .setPrimaryTx(key(4)), .removeTx(tag: 2), .removeRx(tag: 1), .removeRx(tag: 2)])
    }

    @Test func keyMaterialIsNeverPrinted() throws {
        let k = try IPsecKey(tag: 7, material: SecretKey(bytes: [UInt8](repeating: 0xAB, count: 16)))
        let ring = try IPsecKeyring(keys: [k, key(8, fill: 0xCD), key(9, fill: 0xEF)])
        let sa = try ESPSecurityAssociation.derive(local: ip("10.0.0.1"), remote: ip("10.0.0.2"), key: k).outbound
        for text in [k.description, k.debugDescription, "\(k)", String(reflecting: k), ring.description, "\(ring)", "\(sa)",
                     String(reflecting: sa), "\(IPsecRotationPlan(from: nil, to: ring))"]
        {
            for needle in ["abab", "ABAB", "171, 171", "171,171", "cdcd", "CDCD", "205, 205", "efef", "EFEF", "239, 239", "q6urq6ur"] where text.contains(needle) {
                Issue.record("key bytes may show in \(text)")
            }
        }
        #expect(k.description == "IPsecKey(tag: 7, <redacted>, 16 bytes)")
        #expect(ring.description == "IPsecKeyring(tags: [7, 8*, 9])")
    }

    @Test func keyringCodableRoundTrip() throws {
        let ring = try IPsecKeyring(keys: [key(1), key(2, fill: 9), key(3, fill: 200)])
        let data = try JSONEncoder().encode(ring)
        let back = try JSONDecoder().decode(IPsecKeyring.self, from: data)
        #expect(back == ring)
        #expect(back.keys.map(\.material) == ring.keys.map(\.material))
        let bad = Data(#"{"keys":[{"tag":1,"key":[1,2,3]},{"tag":2,"key":[1,2,3]}]}"#.utf8)
        #expect(throws: (any Error).self) { try JSONDecoder().decode(IPsecKeyring.self, from: bad) }
    }

    /// Expected values: an independent Python reimplementation of moby's `buildSPI`
    /// (daemon/libnetwork/drivers/overlay/encryption.go: FNV-1a 32 over `As16(src) || BE32(tag) ||
    /// As16(dst)`), run on the cases of moby's own `TestBuildSPI` (encryption_test.go), which
    /// asserts the same result for 16-byte `net.ParseIP` forms, plus a lab pair in both directions.
    @Test(arguments: [
        ("1.2.3.4", "5.6.7.8", UInt32(1234), UInt32(0x5de6_2c5b)),
        ("::ffff:1.2.3.4", "::ffff:5.6.7.8", 1234, 0x5de6_2c5b),
        ("10.0.0.1", "2001:db8::1", 5678, 0x8c1e_a943),
        ("2002::abcd:1", "172.15.14.13", 54321, 0x4079_9b91),
        ("2002:db8::42", "2002:db8::69", 9999, 0x342a_609e),
        ("192.168.0.2", "192.168.0.3", 1, 0x9f86_597d),
        ("192.168.0.3", "192.168.0.2", 1, 0x3197_b5dd),
    ])
    func spiMatchesDocker(src: String, dst: String, tag: UInt32, expected: UInt32) {
        #expect(SPI.derive(source: ip(src), destination: ip(dst), tag: tag).rawValue == expected)
    }

    @Test func spiReservedRangeAndPairs() throws {
        #expect(SPI(rawValue: 0) == nil)
        #expect(SPI(rawValue: 255) == nil)
        #expect(SPI(rawValue: 256)?.description == "0x00000100")
        #expect(throws: (any Error).self) { try JSONDecoder().decode([SPI].self, from: Data("[12]".utf8)) }
        let pair = try ESPSecurityAssociation.derive(local: ip("192.168.0.2"), remote: ip("192.168.0.3"), key: key(1))
        #expect(pair.outbound.spi.rawValue == 0x9f86_597d)
        #expect(pair.outbound.salt == 0x9f86_597d)
        #expect(pair.inbound.spi.rawValue == 0x3197_b5dd)
        #expect(pair.outbound.icvLength == .eight)
        // Over many pairs and tags no derived SPI falls in the reserved range.
        for t in UInt32(0)..<300 {
            for last in UInt8(1)...20 {
                #expect(SPI.derive(source: .v4(IPv4Address(10, 0, 0, last)), destination: .v4(IPv4Address(10, 0, 1, 1)), tag: t).rawValue > 255)
            }
        }
    }
}
