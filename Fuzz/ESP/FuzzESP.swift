// libFuzzer harness for the ESP receive path (IPsecKeys). See Documentation/Fuzzing.md.
import IPsecKeys
import OverlayCrypto
import OverlayModel

/// The SAs every input is opened with (the seeds in Fuzz/ESP/seeds are sealed under them, and
/// Tests/IPsecKeysTests/FuzzSeedTests.swift opens the seeds with the same ones):
/// Docker's SA from 192.168.0.2 to 192.168.0.3 under key 00 01 ... 0f with tag 1 (SPI
/// 0x9f86597d, salt = SPI, 8-byte ICV, no ESN), and SPI 0x1a2b3c4d with salt 0xcafef00d,
/// 16-byte ICV, ESN and a 1024-packet window.
func fuzzSAs() -> [ESPSecurityAssociation] {
    let key = try! IPsecKey(tag: 1, material: SecretKey(bytes: [UInt8](0..<16)))
    let docker = try! ESPSecurityAssociation.derive(
        local: .v4(IPv4Address(192, 168, 0, 3)), remote: .v4(IPv4Address(192, 168, 0, 2)), key: key, extendedSequenceNumbers: false)
    let esn = try! ESPSecurityAssociation(
        spi: SPI(rawValue: 0x1a2b_3c4d)!, key: key.material, salt: 0xcafe_f00d, icvLength: .sixteen,
        extendedSequenceNumbers: true, replayWindowSize: 1024)
    return [docker.inbound, esn]
}

let sas = fuzzSAs()

/// Opens one input as an ESP packet (twice: the second must be refused as a replay if the first
/// opened), in place and copied; then seals the input as a payload under each SA and requires the
/// round trip to give it back. Bad input must throw, never crash.
func fuzzESP(_ bytes: [UInt8]) {
    let opener = try! ESPOpener(sas)
    if let first = try? opener.open(bytes) {
        precondition(first.payload.count <= bytes.count)
        do {
            _ = try opener.open(bytes)
            fatalError("an opened packet was accepted twice")
        } catch {
            precondition(error.code == .replayed, "second open: \(error)")
        }
    }
    var copy = bytes
    let fresh = try! ESPOpener(sas)
    _ = copy.withUnsafeMutableBytes { try? fresh.open(inPlace: $0) }

    for sa in sas {
        let sealer = try! ESPSealer(sa, ivMask: 0)
        let rx = try! ESPOpener([sa])
        let nextHeader = bytes.first ?? 17
        let sealed = try! sealer.seal(payload: bytes, nextHeader: nextHeader)
        let back = try! rx.open(sealed)
        precondition(back.payload == bytes && back.nextHeader == nextHeader, "seal/open round trip changed the payload")
    }
}

/// The libFuzzer entry point.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    fuzzESP(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

/// Under Scripts/fuzz.sh (-DFUZZING) runs libFuzzer; in a plain build replays the files named as
/// arguments (a corpus or a crash input) through the same function.
@main struct Main {
    static func main() {
        #if FUZZING
        runLibFuzzer(fuzzOneInput)
        #else
        replayFiles(name: "fuzz-esp", fuzzESP)
        #endif
    }
}
