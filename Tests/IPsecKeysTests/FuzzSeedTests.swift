import Foundation
import IPsecKeys
import OverlayCrypto
import OverlayModel
import Testing

/// Replays Fuzz/ESP/seeds through the same SAs as the fuzz-esp harness (Fuzz/ESP/FuzzESP.swift):
/// the `valid-*` seeds must open (so the fuzzer starts from inputs that reach decryption and the
/// trailer checks) and the `bad-*` ones must be refused with the reason their name gives.
@Suite struct FuzzSeedTests {
    static let seedDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../Fuzz/ESP/seeds").standardizedFileURL

    func harnessSAs() throws -> [ESPSecurityAssociation] {
        let key = try IPsecKey(tag: 1, material: SecretKey(bytes: [UInt8](0..<16)))
        let docker = try ESPSecurityAssociation.derive(
            local: .v4(IPv4Address(192, 168, 0, 3)), remote: .v4(IPv4Address(192, 168, 0, 2)), key: key, extendedSequenceNumbers: false)
        let esn = try ESPSecurityAssociation(
            spi: SPI(rawValue: 0x1a2b_3c4d)!, key: key.material, salt: 0xcafe_f00d, icvLength: .sixteen,
            extendedSequenceNumbers: true, replayWindowSize: 1024)
        return [docker.inbound, esn]
    }

    @Test func seedsOpenOrFailAsNamed() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.seedDir.path).filter { !$0.hasPrefix(".") }.sorted()
        #expect(names.count >= 7)
        let expected: [String: IPsecError.Code] = [
            "bad-unknown-spi": .unknownSPI, "bad-short": .tooShort, "bad-seq-zero": .outsideWindow, "bad-tampered-icv": .authFailed,
        ]
        for name in names {
            let bytes = try [UInt8](Data(contentsOf: Self.seedDir.appendingPathComponent(name)))
            let opener = try ESPOpener(harnessSAs())
            if name.hasPrefix("valid-") {
                let r = try opener.open(bytes)
                #expect(errorCode { _ = try opener.open(bytes) } == .replayed, "\(name)")
                if name == "valid-docker-vxlan-icmp" { #expect(r.payload == vxlanICMPDatagram) }
            } else {
                #expect(errorCode { _ = try opener.open(bytes) } == expected[name], "\(name)")
            }
        }
    }
}
