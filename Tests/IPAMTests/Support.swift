import OverlayModel
import Testing

@testable import IPAM

/// SplitMix64: a small seeded generator so every property test replays the same sequence.
struct SeededRandom: RandomNumberGenerator {
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

func ip(_ s: String) -> IPAddress { IPAddress(s)! }
func cidr(_ s: String) -> CIDR { CIDR(s)! }

/// Runs `body` and checks it throws an IPAMError with exactly this code and message.
func expectError(
    _ code: IPAMError.Code, _ message: String, sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws -> Void
) {
    do {
        try body()
        Issue.record("expected \(code): \(message)", sourceLocation: sourceLocation)
    } catch let error as IPAMError {
        #expect(error.code == code, sourceLocation: sourceLocation)
        #expect(error.message == message, sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected IPAMError, got \(error)", sourceLocation: sourceLocation)
    }
}

/// The offset of an address in a subnet as an Int (for small test subnets).
func off(_ a: IPAddress, _ s: CIDR) -> Int { Int(s.offset(of: a)!) }
