import Testing
@testable import Gossip

/// Tables from memberlist's own util_test.go and suspicion_test.go.
@Suite struct SwimMathTests {
    @Test(arguments: [(5, 1000), (10, 1000), (50, 1698), (100, 2000), (500, 2698), (1000, 3000)])
    func suspicionTimeout(n: Int, ms: Int64) {
        #expect(SwimMath.suspicionTimeout(mult: 3, nodes: n, interval: .seconds(1)) / 3 == .milliseconds(ms))
    }

    @Test func retransmitLimit() {
        #expect(SwimMath.retransmitLimit(mult: 3, nodes: 0) == 0)
        #expect(SwimMath.retransmitLimit(mult: 3, nodes: 1) == 3)
        #expect(SwimMath.retransmitLimit(mult: 3, nodes: 99) == 6)
        #expect(SwimMath.retransmitLimit(mult: 4, nodes: 5) == 4)
    }

    @Test(arguments: [(0, 0, 30_000), (1, 2, 14_000), (2, 3, 4_810), (3, 4, -2_000), (4, 5, -3_000), (5, 10, -8_000)])
    func remainingSuspicionTime(n: Int, elapsedSeconds: Int, expectedMs: Int64) {
        let r = SwimMath.remainingSuspicionTime(confirmations: n, expected: 3, elapsed: .seconds(elapsedSeconds), min: .seconds(2), max: .seconds(30))
        #expect(r == .milliseconds(expectedMs))
    }

    @Test func pushPullScale() {
        for n in 0 ... 32 { #expect(SwimMath.pushPullScale(.seconds(1), nodes: n) == .seconds(1)) }
        for n in 33 ... 64 { #expect(SwimMath.pushPullScale(.seconds(1), nodes: n) == .seconds(2)) }
        for n in 65 ... 128 { #expect(SwimMath.pushPullScale(.seconds(1), nodes: n) == .seconds(3)) }
    }
}
