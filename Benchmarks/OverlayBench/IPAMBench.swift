import Foundation
import IPAM
import OverlayModel

/// `overlay-bench ipam`: 1M addresses in a /12 with both strategies: allocate all, release in
/// random order, churn on a fragmented space; prints ops/s and the memory the allocator holds (its
/// own accounting and the process RSS delta).
func runIPAMBenchmark() {
    print("IPAM: 1,000,000 addresses in 10.0.0.0/12 (1,048,576 addresses)")
    for strategy in [AllocationStrategy.firstFree, .serial] {
        benchIPAM(strategy: strategy)
    }
    benchIPAMNetworkPath()
}

private struct BenchRandom: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Resident set size in bytes, from /proc/self/statm (0 where it cannot be read).
private func residentBytes() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = text.split(separator: " ")
    guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}

private func seconds(_ d: Duration) -> Double {
    Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}

private func rate(_ ops: Int, _ d: Duration) -> String {
    let r = Double(ops) / seconds(d)
    return r >= 1e6 ? String(format: "%.2fM ops/s", r / 1e6) : String(format: "%.0fk ops/s", r / 1e3)
}

private func mib(_ bytes: Int) -> String { String(format: "%.2f MiB", Double(bytes) / 1_048_576) }

private func memoryLine(_ label: String, _ space: AddressSpace, rssBase: Int) {
    print("    \(label): \(space.runCount) runs, allocator \(mib(space.allocatorBytes)), RSS delta \(mib(residentBytes() - rssBase))")
}

private func benchIPAM(strategy: AllocationStrategy) {
    let n = 1_000_000
    let clock = ContinuousClock()
    var rng = BenchRandom(state: 0x1234)
    print("  strategy \(strategy.rawValue):")
    // The benchmark's own list of addresses is touched before the RSS baseline is read, so the
    // RSS delta is the allocator's (plus malloc slack), not the list's.
    var addresses = [IPAddress](repeating: .v4(.any), count: n)
    addresses.removeAll(keepingCapacity: true)
    let rssBase = residentBytes()
    var space = try! AddressSpace(subnet: CIDR("10.0.0.0/12")!, strategy: strategy)

    // 1. Allocate 1M.
    var t = clock.measure {
        for _ in 0..<n { addresses.append(try! space.allocate()) }
    }
    print("    allocate 1M: \(rate(n, t))")
    memoryLine("full (1M allocated)", space, rssBase: rssBase)

    // 2. Release half in random order: the most fragmented shape.
    addresses.shuffle(using: &rng)
    let half = n / 2
    t = clock.measure {
        for a in addresses[half...] { try! space.release(a) }
    }
    addresses.removeSubrange(half...)
    print("    release 500k in random order: \(rate(n - half, t))")
    memoryLine("after random release of half", space, rssBase: rssBase)

    // 3. Churn on the fragmented space: release a random live address, allocate one, 1M pairs.
    let pairs = 1_000_000
    t = clock.measure {
        for _ in 0..<pairs {
            let i = Int(rng.next() % UInt64(addresses.count))
            try! space.release(addresses[i])
            addresses[i] = try! space.allocate()
        }
    }
    print("    churn (release+allocate) on ~\(space.runCount) runs: \(rate(pairs * 2, t)) (\(pairs) pairs)")

    // 4. Allocate back to 1M, then release everything in random order.
    t = clock.measure {
        while addresses.count < n { addresses.append(try! space.allocate()) }
    }
    print("    allocate back to 1M: \(rate(n - half, t))")
    addresses.shuffle(using: &rng)
    t = clock.measure {
        for a in addresses { try! space.release(a) }
    }
    print("    release all 1M in random order: \(rate(n, t))")
    memoryLine("empty again", space, rssBase: rssBase)

    // 5. The headline: allocate 1M, release all 1M (in order, then in random order).
    addresses.removeAll(keepingCapacity: true)
    t = clock.measure {
        for _ in 0..<n { addresses.append(try! space.allocate()) }
        for a in addresses { try! space.release(a) }
    }
    print("    allocate 1M + release 1M in order: \(rate(2 * n, t))")
    var order = Array(0..<n)
    order.shuffle(using: &rng)  // a random release order, drawn outside the timing
    addresses.removeAll(keepingCapacity: true)
    t = clock.measure {
        for _ in 0..<n { addresses.append(try! space.allocate()) }
        for i in order { try! space.release(addresses[i]) }
    }
    print("    allocate 1M + release 1M in random order: \(rate(2 * n, t))")
}

/// The same through `IPAM` (a network lookup by name per operation).
private func benchIPAMNetworkPath() {
    let clock = ContinuousClock()
    var ipam = IPAM(pools: [try! AddressPool(base: CIDR("10.0.0.0/8")!, size: 12)], strategy: .serial)
    try! ipam.createNetwork("bench")
    let n = 1_000_000
    var addresses: [IPAddress] = []
    addresses.reserveCapacity(n)
    var rng = BenchRandom(state: 99)
    let t = clock.measure {
        for _ in 0..<n { addresses.append(try! ipam.allocateAddress(in: "bench")) }
        addresses.shuffle(using: &rng)
        for a in addresses { try! ipam.releaseAddress(a, in: "bench") }
    }
    print("  through IPAM (network 'bench', serial, random-order release): \(rate(2 * n, t)) incl. shuffle")
}
