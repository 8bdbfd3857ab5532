import IPsecKeys
import OverlayCrypto
import OverlayModel

func hex(_ s: String) -> [UInt8] {
    var out: [UInt8] = []
    var it = s.filter { !$0.isWhitespace }.makeIterator()
    while let a = it.next(), let b = it.next() { out.append(UInt8(String([a, b]), radix: 16)!) }
    return out
}

func hexString(_ b: [UInt8]) -> String { b.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined() }

/// Key bytes 00 01 02 ... 0f (the vectors' key).
let vectorKeyBytes = [UInt8](0..<16)

func key(_ tag: UInt32, fill: UInt8? = nil) -> IPsecKey {
    let bytes = fill.map { [UInt8](repeating: $0, count: 16) } ?? vectorKeyBytes
    return try! IPsecKey(tag: tag, material: SecretKey(bytes: bytes))
}

func ip(_ s: String) -> IPAddress { IPAddress(s)! }

/// The error code `body` throws, or nil when it does not throw.
func errorCode(_ body: () throws -> Void) -> IPsecError.Code? {
    do { try body() } catch let e as IPsecError { return e.code } catch { return IPsecError.Code(rawValue: "not an IPsecError: \(error)") }
    return nil
}

/// SplitMix64: a small seeded generator so random tests replay the same inputs.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// An inner packet as the datapath seals it: UDP to 4789, VXLAN VNI 4096, Ethernet, IPv4, ICMP
/// echo (70 bytes); the payload of the Docker-SA vector in ESPVectorTests.
let vxlanICMPDatagram = hex(
    "9c4012b500460000080000000010000002420a00000302420a00000208004500002800010000400166d00a0000020a000003080049581234000170696e6770696e6770696e67")
