import Foundation
import OverlayModel
import Testing

@testable import IPAM

/// Random allocate/release/request sequences checked against a plain reference model.
@Suite struct PropertyTests {
    /// The reference: a Bool per offset of a small subnet.
    struct Model {
        let size: Int
        let lo: Int
        let hi: Int
        var reserved: Set<Int>
        var live = Set<Int>()
        var cursor: Int?
        let serial: Bool

        func taken(_ o: Int) -> Bool { reserved.contains(o) || live.contains(o) }

        func expectedNext() -> Int? {
            var start = lo
            if serial, let c = cursor, c >= lo, c < hi { start = c + 1 }
            for o in start...hi where !taken(o) { return o }
            if start > lo { for o in lo..<start where !taken(o) { return o } }
            return nil
        }
    }

    @Test(arguments: [
        (AllocationStrategy.firstFree, UInt64(1)), (.firstFree, 2), (.serial, 3), (.serial, 4),
    ])
    func addressSpaceMatchesModel(strategy: AllocationStrategy, seed: UInt64) throws {
        var rng = SeededRandom(seed: seed)
        let subnet = cidr("10.0.0.0/22")
        let withRange = seed % 2 == 0
        var space = try AddressSpace(
            subnet: subnet, gateway: ip("10.0.0.10"), ipRange: withRange ? cidr("10.0.1.0/24") : nil,
            auxAddresses: ["a": ip("10.0.1.7"), "b": ip("10.0.3.254")], strategy: strategy, networkName: "p")
        var model = Model(
            size: 1024, lo: withRange ? 256 : 0, hi: withRange ? 511 : 1023, reserved: [0, 1023, 10, 263, 1022],
            serial: strategy == .serial)
        var exhaustions = 0
        var wraps = 0
        for step in 0..<6000 {
            let roll = Int.random(in: 0..<10, using: &rng)
            // Phases: mostly allocate, then mostly release, then mixed, so exhaustion and wrap happen.
            let allocateBias = [8, 2, 5][(step / 2000) % 3]
            if roll < allocateBias {
                let expected = model.expectedNext()
                do {
                    let a = try space.allocate()
                    let o = off(a, subnet)
                    #expect(o == expected)
                    #expect(!model.taken(o), "handed out a live or reserved address \(a)")
                    #expect(o >= model.lo && o <= model.hi, "outside the ip-range: \(a)")
                    if let c = model.cursor, o <= c { wraps += 1 }
                    model.live.insert(o)
                    model.cursor = o
                } catch {
                    #expect(expected == nil, "exhaustion reported with \(String(describing: expected)) free")
                    #expect(error.code == .addressesExhausted)
                    exhaustions += 1
                }
            } else if roll < 9 {
                // Release: usually a live address, sometimes any address.
                let o = !model.live.isEmpty && roll < 8 ? model.live.randomElement(using: &rng)! : Int.random(in: 0..<1024, using: &rng)
                let a = subnet.address(at: UInt128(o))!
                do {
                    try space.release(a)
                    #expect(model.live.remove(o) != nil)
                } catch {
                    #expect(!model.live.contains(o))
                    #expect(error.code == (model.reserved.contains(o) ? .addressReserved : .addressNotAllocated))
                }
            } else {
                let o = Int.random(in: 0..<1024, using: &rng)
                let a = subnet.address(at: UInt128(o))!
                do {
                    try space.request(a)
                    #expect(!model.taken(o))
                    model.live.insert(o)
                } catch {
                    #expect(model.taken(o))
                    #expect(error.code == (model.reserved.contains(o) ? .addressReserved : .addressInUse))
                }
            }
            #expect(Int(space.allocatedCount) == model.live.count)
            if step % 500 == 499 {
                // Snapshot/restore in the middle of the run: the restored space must carry on identically.
                let restored = try AddressSpace(restoring: decode(AddressSpaceSnapshot.self, encode(space.snapshot())), networkName: "p")
                #expect(restored == space)
                space = restored
            }
        }
        for o in model.reserved { #expect(!space.isAllocated(subnet.address(at: UInt128(o))!)) }
        #expect(exhaustions > 0, "the sequence must reach exhaustion")
        if strategy == .serial { #expect(wraps > 0, "the sequence must wrap") }
    }

    /// Serial never reuses a released address before every other free address has been used.
    @Test func serialDelaysReuseUntilWrap() throws {
        var rng = SeededRandom(seed: 9)
        var space = try AddressSpace(subnet: cidr("10.0.0.0/24"), strategy: .serial)
        var live: [IPAddress] = []
        for _ in 0..<100 { live.append(try space.allocate()) }
        var released: [IPAddress] = []
        for _ in 0..<30 {
            let a = live.remove(at: Int.random(in: 0..<live.count, using: &rng))
            try space.release(a)
            released.append(a)
        }
        // 253 usable - 70 live = 183 free; the 153 never used come first, in order.
        var next: [IPAddress] = []
        for _ in 0..<153 { next.append(try space.allocate()) }
        #expect(next.first == ip("10.0.0.102"))
        #expect(next.last == ip("10.0.0.254"))
        #expect(Set(next).isDisjoint(with: released))
        // Then it wraps and reuses the released ones, lowest first.
        let again = try space.allocate()
        #expect(again == released.min())
    }

    /// Sparse random work in huge IPv6 subnets: offsets far beyond 64 bits, never materialised.
    @Test(arguments: ["2001:db8::/48", "fd00:1:2:3::/64", "8000::/1"])
    func ipv6HugeSubnets(subnetText: String) throws {
        var rng = SeededRandom(seed: 77)
        let subnet = cidr(subnetText)
        var space = try AddressSpace(subnet: subnet, strategy: .firstFree)
        var live = Set<IPAddress>()
        for _ in 0..<3000 {
            switch Int.random(in: 0..<3, using: &rng) {
            case 0:
                let a = try space.allocate()
                #expect(!live.contains(a))
                #expect(subnet.contains(a))
                live.insert(a)
            case 1:
                var r = UInt128(rng.next()) << 64 | UInt128(rng.next())
                r &= subnet.lastOffset
                let a = subnet.address(at: r)!
                if space.reservation(of: a) != nil || live.contains(a) { continue }
                try space.request(a)
                live.insert(a)
            default:
                guard let a = live.randomElement(using: &rng) else { continue }
                try space.release(a)
                live.remove(a)
            }
        }
        #expect(Int(space.allocatedCount) == live.count)
        for a in live { #expect(space.isAllocated(a)) }
        #expect(space.runCount <= live.count + 1)
        #expect(space.allocatorBytes < 64 * 1024 + live.count * 64)
    }

    /// Random networks with explicit and pool subnets: never two overlapping live subnets, an
    /// explicit request is refused exactly when it overlaps, the pool gives the lowest free /24.
    @Test(arguments: [5, 6] as [UInt64])
    func subnetsNeverOverlap(seed: UInt64) throws {
        var rng = SeededRandom(seed: seed)
        let pool = try AddressPool(base: cidr("10.0.0.0/16"), size: 24)
        var ipam = IPAM(pools: [pool])
        var live: [String: CIDR] = [:]
        var exhausted = 0
        var refused = 0
        for step in 0..<3000 {
            let roll = Int.random(in: 0..<10, using: &rng)
            let name = "n\(step)"
            if roll < 4 {
                let prefix = Int.random(in: 20...28, using: &rng)
                let base = UInt32(0x0A00_0000) | UInt32.random(in: 0...0xFFFF, using: &rng)
                let s = try CIDR(containing: .v4(IPv4Address(base)), prefixLength: prefix)
                let conflict = live.values.contains { $0.overlaps(s) }
                do {
                    try ipam.createNetwork(name, subnets: [SubnetRequest(subnet: s)])
                    #expect(!conflict)
                    live[name] = s
                } catch {
                    #expect(conflict)
                    #expect(error.code == .subnetOverlap)
                    refused += 1
                }
            } else if roll < 7 {
                var expected: CIDR?
                for c in pool.base.subnets(prefixLength: 24) where !live.values.contains(where: { $0.overlaps(c) }) {
                    expected = c
                    break
                }
                do {
                    let got = try ipam.createNetwork(name)[0].subnet
                    #expect(got == expected)
                    live[name] = got
                } catch {
                    #expect(expected == nil)
                    #expect(error.code == .poolExhausted)
                    exhausted += 1
                }
            } else if let victim = live.keys.randomElement(using: &rng) {
                try ipam.removeNetwork(victim)
                live[victim] = nil
            }
        }
        let subnets = ipam.allocatedSubnets.map(\.subnet)
        #expect(Set(subnets) == Set(live.values))
        for (i, a) in subnets.enumerated() {
            for b in subnets[(i + 1)...] { #expect(!a.overlaps(b), "\(a) overlaps \(b)") }
        }
        #expect(refused > 0)
        // Fill the pool: it must end in a pool-exhausted error.
        var filled = 0
        while true {
            do { try ipam.createNetwork("fill\(filled)"); filled += 1 } catch {
                #expect(error.code == .poolExhausted)
                break
            }
            if filled > 256 { Issue.record("pool never exhausted"); break }
        }
        _ = exhausted
    }
}
