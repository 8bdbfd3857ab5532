import Testing

@testable import IPAM

@Suite struct RunSetTests {
    /// The runs as Int pairs (small universes only).
    func pairs(_ s: RunSet) -> [[Int]] { s.runs.map { [Int($0.lo), Int($0.hi)] } }

    @Test func mergesAdjacentAndSplitsOnRemoval() {
        var s = RunSet()
        s.insert(5, 5)
        s.insert(7, 7)
        #expect(pairs(s) == [[5, 5], [7, 7]])
        s.insert(6, 6)
        #expect(pairs(s) == [[5, 7]])
        s.insert(0, 3)
        s.insert(4, 4)
        #expect(pairs(s) == [[0, 7]])
        s.remove(3, 4)
        #expect(pairs(s) == [[0, 2], [5, 7]])
        s.remove(0, 0)
        s.remove(7, 7)
        #expect(pairs(s) == [[1, 2], [5, 6]])
        #expect(s.runCount == 2)
        #expect(Int(s.covered) == 4)
        #expect(s.isValid())
    }

    @Test func firstFreeAndIntersects() {
        var s = RunSet()
        s.insert(10, 19)
        s.insert(30, 39)
        #expect(s.firstFree(atOrAfter: 0).map { Int($0) } == 0)
        #expect(s.firstFree(atOrAfter: 10).map { Int($0) } == 20)
        #expect(s.firstFree(atOrAfter: 35).map { Int($0) } == 40)
        #expect(s.intersects(20, 29) == false)
        #expect(s.intersects(20, 30) == true)
        #expect(s.intersects(0, 9) == false)
        #expect(s.intersects(39, 100) == true)
    }

    @Test func extremesOf128Bits() {
        var s = RunSet()
        s.insert(UInt128.max - 1, UInt128.max)
        #expect(s.firstFree(atOrAfter: UInt128.max - 1) == nil)
        s.insert(0, UInt128.max - 2)
        #expect(s.runCount == 1)
        #expect(s.covered == 0)  // all 2^128 offsets: the count wraps, documented
        s.remove(UInt128.max, UInt128.max)
        #expect(s.firstFree(atOrAfter: 0) == UInt128.max)
        #expect(s.isValid())
    }

    /// Thousands of random inserts and removals against a plain Bool array, crossing block splits
    /// and merges (thousands of runs).
    @Test(arguments: [1, 2, 3] as [UInt64])
    func matchesReferenceModel(seed: UInt64) {
        var rng = SeededRandom(seed: seed)
        let n = 6000
        var model = [Bool](repeating: false, count: n)
        var s = RunSet()
        var maxRuns = 0
        for step in 0..<40_000 {
            let x = Int.random(in: 0..<n, using: &rng)
            let len = Int.random(in: 0..<4, using: &rng) == 0 ? Int.random(in: 1...8, using: &rng) : 1
            let hi = min(n - 1, x + len - 1)
            let anySet = model[x...hi].contains(true)
            let allSet = !model[x...hi].contains(false)
            // Bias towards filling for the first half, emptying in the second.
            let wantInsert = step < 20_000 ? Int.random(in: 0..<3, using: &rng) != 0 : Int.random(in: 0..<3, using: &rng) == 0
            #expect(s.intersects(UInt128(x), UInt128(hi)) == anySet)
            if wantInsert && !anySet {
                s.insert(UInt128(x), UInt128(hi))
                for i in x...hi { model[i] = true }
            } else if !wantInsert && allSet, let r = s.run(containing: UInt128(x)), r.hi >= UInt128(hi) {
                s.remove(UInt128(x), UInt128(hi))
                for i in x...hi { model[i] = false }
            }
            let probe = Int.random(in: 0..<n, using: &rng)
            #expect(s.contains(UInt128(probe)) == model[probe])
            let expectedFree = model[probe...].firstIndex(of: false) ?? n
            #expect(Int(s.firstFree(atOrAfter: UInt128(probe))!) == expectedFree)
            maxRuns = max(maxRuns, s.runCount)
            if step % 1000 == 0 { #expect(s.isValid()) }
        }
        #expect(s.isValid())
        #expect(maxRuns > RunSet.maxBlock * 4, "the test must exercise many blocks")
        var expectedRuns = 0
        for i in 0..<n where model[i] && (i == 0 || !model[i - 1]) { expectedRuns += 1 }
        #expect(s.runCount == expectedRuns)
        #expect(Int(s.covered) == model.filter { $0 }.count)
    }
}
