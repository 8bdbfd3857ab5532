/// A set of 128-bit offsets held as sorted, disjoint, non-adjacent closed runs `[lo, hi]`.
///
/// This is what every allocator in IPAM stands on: the addresses taken in a subnet, and the
/// subnets taken in an address family. It never holds one entry per offset: a run of a million
/// allocated addresses is one 32-byte ``Run``.
///
/// Layout: a chunked sorted array (a two-level B-tree). Runs live in blocks of at most
/// ``maxBlock`` runs, each block sorted, blocks in order; `heads[i]` is the first `lo` of block
/// `i`, so a lookup is a binary search over `heads` and then one inside a block: O(log n).
/// An insert or removal moves at most ``maxBlock`` runs inside one block; a block that overflows
/// is split in two, one that falls under ``minBlock`` is merged with a neighbour (and re-split if
/// that overflows), so the `heads` array (n / 32 entries at worst) is shifted only once every
/// ~32 operations on that block. At 250,000 runs that is 2,000 to 8,000 blocks, and the spine
/// (`heads` plus block headers) is a few hundred KiB. 128 runs per block measured fastest for
/// random releases among 64, 128 and 256 (see IPAMBench).
///
/// Why memory stays proportional to runs: runs are merged on insert (an offset adjacent to a run
/// extends it, one that closes a gap joins two runs into one) and split on removal only when a
/// hole opens inside a run, so `runCount` is exactly the number of maximal allocated ranges. Every
/// block holds at least ``minBlock`` runs (except when there is a single block) in a buffer of
/// at most about 2 x ``maxBlock``, and the spine gives its capacity back when it empties, so
/// storage is O(`runCount`) with a constant bounded by the block fill: 32 bytes per run, plus
/// 16 bytes of `heads` and one array header per block. Measured: about 48 bytes per run at
/// 250,000 runs. Nothing depends on the size of the space the offsets come from: a `/12`, a
/// `/48` and `::/0` cost the same for the same runs.
struct RunSet: Sendable, Hashable {
    // Equality and hashing are by content (the runs), not by how they happen to be blocked.
    static func == (a: RunSet, b: RunSet) -> Bool {
        a.runCount == b.runCount && a.covered == b.covered && a.runs.elementsEqual(b.runs)
    }

    func hash(into hasher: inout Hasher) {
        hasher.combine(runCount)
        for r in runs { hasher.combine(r) }
    }

    /// A closed range of offsets, `lo...hi`, stored as 64-bit halves (see ``Wide``).
    struct Run: Hashable, Sendable {
        private var loW: Wide
        private var hiW: Wide

        init(lo: UInt128, hi: UInt128) {
            loW = Wide(lo)
            hiW = Wide(hi)
        }

        var lo: UInt128 {
            @inline(__always) get { loW.value }
            @inline(__always) set { loW = Wide(newValue) }
        }

        var hi: UInt128 {
            @inline(__always) get { hiW.value }
            @inline(__always) set { hiW = Wide(newValue) }
        }
    }

    /// The most runs one block holds before it is split.
    static let maxBlock = 128
    /// The fewest runs a block holds before it is merged with a neighbour.
    static let minBlock = 32

    private(set) var blocks: [[Run]] = []
    private(set) var heads: [Wide] = []
    /// The number of maximal runs.
    private(set) var runCount = 0
    private var coveredW = Wide(0)
    /// The number of offsets in the set (wraps to 0 only when all of `0...UInt128.max` is in it).
    var covered: UInt128 {
        get { coveredW.value }
        set { coveredW = Wide(newValue) }
    }

    init() {}

    /// A position: block index and index inside the block.
    struct Pos: Equatable {
        var b: Int
        var i: Int
    }

    var isEmpty: Bool { runCount == 0 }

    /// Every run in order.
    var runs: FlattenSequence<[[Run]]> { blocks.joined() }

    /// Bytes the structure holds: run storage (by capacity), block headers and heads.
    var memoryBytes: Int {
        var bytes = heads.capacity * MemoryLayout<Wide>.stride + blocks.capacity * MemoryLayout<[Run]>.stride
        for block in blocks { bytes += block.capacity * MemoryLayout<Run>.stride + 32 }
        return bytes
    }

    // MARK: Lookup

    /// The index of the last block whose first run starts at or before `x`, or -1.
    @inline(__always)
    private func blockIndex(atOrBefore x: UInt128) -> Int {
        // Plain loops, no closures: a closure capturing a UInt128 can crash on this toolchain.
        var lo = 0, hi = heads.count
        while lo < hi {
            let mid = (lo &+ hi) >> 1
            if heads[mid].value <= x { lo = mid &+ 1 } else { hi = mid }
        }
        return lo - 1
    }

    /// The position of the last run with `lo <= x`, or nil when every run starts after `x`.
    @inline(__always)
    func floor(_ x: UInt128) -> Pos? {
        let b = blockIndex(atOrBefore: x)
        guard b >= 0 else { return nil }
        var lo = 0, hi = blocks[b].count
        while lo < hi {
            let mid = (lo &+ hi) >> 1
            if blocks[b][mid].lo <= x { lo = mid &+ 1 } else { hi = mid }
        }
        return Pos(b: b, i: lo - 1)
    }

    @inline(__always)
    func run(at p: Pos) -> Run { blocks[p.b][p.i] }

    @inline(__always)
    func position(after p: Pos) -> Pos? {
        if p.i + 1 < blocks[p.b].count { return Pos(b: p.b, i: p.i + 1) }
        if p.b + 1 < blocks.count { return Pos(b: p.b + 1, i: 0) }
        return nil
    }

    var firstPosition: Pos? { blocks.isEmpty ? nil : Pos(b: 0, i: 0) }

    /// The run that contains `x`, if any.
    func run(containing x: UInt128) -> Run? {
        guard let p = floor(x) else { return nil }
        let r = run(at: p)
        return r.hi >= x ? r : nil
    }

    /// Whether `x` is in the set.
    func contains(_ x: UInt128) -> Bool { run(containing: x) != nil }

    /// The first run that ends at or after `x` (it may start after `x`).
    func firstRun(endingAtOrAfter x: UInt128) -> Run? {
        if let p = floor(x) {
            let r = run(at: p)
            if r.hi >= x { return r }
            guard let n = position(after: p) else { return nil }
            return run(at: n)
        }
        guard let f = firstPosition else { return nil }
        return run(at: f)
    }

    /// The smallest offset `>= x` that is not in the set, or nil when everything from `x` to
    /// `UInt128.max` is. Runs are maximal, so this is `x` or the end of the run holding `x` plus one.
    @inline(__always)
    func firstFree(atOrAfter x: UInt128) -> UInt128? {
        guard let r = run(containing: x) else { return x }
        return r.hi == .max ? nil : r.hi + 1
    }

    /// Whether any offset of `lo...hi` is in the set.
    func intersects(_ lo: UInt128, _ hi: UInt128) -> Bool {
        guard let r = firstRun(endingAtOrAfter: lo) else { return false }
        return r.lo <= hi
    }

    // MARK: Update

    /// Adds `lo...hi`, which must not intersect the set (callers check first).
    mutating func insert(_ lo: UInt128, _ hi: UInt128) {
        precondition(lo <= hi, "RunSet.insert of an empty range")
        assert(!intersects(lo, hi), "RunSet.insert of an overlapping range")
        covered &+= (hi - lo) &+ 1
        let p = floor(lo)
        let n = p != nil ? position(after: p!) : firstPosition
        // No overflow: a predecessor ends before lo, a successor starts after hi.
        let mergeLeft = p != nil && run(at: p!).hi + 1 == lo
        let mergeRight = n != nil && hi + 1 == run(at: n!).lo
        switch (mergeLeft, mergeRight) {
        case (true, true):
            let p = p!, n = n!
            blocks[p.b][p.i].hi = run(at: n).hi
            remove(at: n)
        case (true, false):
            let p = p!
            blocks[p.b][p.i].hi = hi
        case (false, true):
            let n = n!
            blocks[n.b][n.i].lo = lo
            if n.i == 0 { heads[n.b] = Wide(lo) }
        case (false, false):
            let run = Run(lo: lo, hi: hi)
            if let p {
                insert(run, block: p.b, index: p.i + 1)
            } else if blocks.isEmpty {
                blocks.append([run])
                heads.append(Wide(lo))
                runCount += 1
            } else {
                insert(run, block: 0, index: 0)
            }
        }
    }

    /// Removes `x` if it is in the set (one lookup); returns whether it was.
    mutating func removeIfPresent(_ x: UInt128) -> Bool {
        guard let p = floor(x) else { return false }
        let r = run(at: p)
        guard r.hi >= x else { return false }
        remove(x, x, at: p, in: r)
        return true
    }

    /// Removes `lo...hi`, which must lie inside one run (callers check first).
    mutating func remove(_ lo: UInt128, _ hi: UInt128) {
        guard let p = floor(lo) else { preconditionFailure("RunSet.remove of an absent range") }
        let r = run(at: p)
        precondition(lo <= hi && r.hi >= hi, "RunSet.remove of a range not inside one run")
        remove(lo, hi, at: p, in: r)
    }

    private mutating func remove(_ lo: UInt128, _ hi: UInt128, at p: Pos, in r: Run) {
        covered &-= (hi - lo) &+ 1
        switch (r.lo == lo, r.hi == hi) {
        case (true, true):
            remove(at: p)
        case (true, false):
            blocks[p.b][p.i].lo = hi + 1
            if p.i == 0 { heads[p.b] = Wide(hi + 1) }
        case (false, true):
            blocks[p.b][p.i].hi = lo - 1
        case (false, false):
            blocks[p.b][p.i].hi = lo - 1
            insert(Run(lo: hi + 1, hi: r.hi), block: p.b, index: p.i + 1)
        }
    }

    private mutating func insert(_ run: Run, block b: Int, index i: Int) {
        blocks[b].insert(run, at: i)
        if i == 0 { heads[b] = Wide(run.lo) }
        runCount += 1
        if blocks[b].count > RunSet.maxBlock { split(b) }
    }

    private mutating func split(_ b: Int) {
        let half = blocks[b].count / 2
        let tail = Array(blocks[b][half...])
        blocks[b].removeSubrange(half...)
        blocks.insert(tail, at: b + 1)
        heads.insert(Wide(tail[0].lo), at: b + 1)
    }

    private mutating func remove(at p: Pos) {
        blocks[p.b].remove(at: p.i)
        runCount -= 1
        if blocks[p.b].isEmpty {
            blocks.remove(at: p.b)
            heads.remove(at: p.b)
            shrinkIfSparse()
            return
        }
        if p.i == 0 { heads[p.b] = Wide(blocks[p.b][0].lo) }
        if blocks[p.b].count < RunSet.minBlock && blocks.count > 1 {
            let left = p.b > 0 ? p.b - 1 : p.b
            let right = blocks.remove(at: left + 1)
            heads.remove(at: left + 1)
            blocks[left].append(contentsOf: right)
            if blocks[left].count > RunSet.maxBlock { split(left) } else { shrinkIfSparse() }
        }
    }

    /// Gives back the spine's spare capacity once it is mostly empty, so memory follows the runs
    /// after mass releases too (amortised: it happens after the spine has lost 3/4 of its blocks).
    private mutating func shrinkIfSparse() {
        guard blocks.capacity > 64, blocks.count * 4 < blocks.capacity else { return }
        var newBlocks: [[Run]] = []
        newBlocks.reserveCapacity(blocks.count * 2)
        newBlocks.append(contentsOf: blocks)
        blocks = newBlocks
        var newHeads: [Wide] = []
        newHeads.reserveCapacity(heads.count * 2)
        newHeads.append(contentsOf: heads)
        heads = newHeads
    }

    // MARK: Checking

    /// Whether the internal invariants hold (sorted, disjoint, non-adjacent, heads right, block
    /// sizes in bounds, counts right). For tests.
    func isValid() -> Bool {
        guard heads.count == blocks.count else { return false }
        var previous: Run?
        var count = 0
        var total: UInt128 = 0
        for (b, block) in blocks.enumerated() {
            guard !block.isEmpty, block.count <= RunSet.maxBlock, heads[b].value == block[0].lo else { return false }
            if blocks.count > 1 && block.count < RunSet.minBlock { return false }
            for r in block {
                guard r.lo <= r.hi else { return false }
                if let previous, previous.hi == .max || previous.hi + 1 >= r.lo { return false }
                previous = r
                count += 1
                total &+= (r.hi - r.lo) &+ 1
            }
        }
        return count == runCount && total == covered
    }
}

/// A 128-bit value stored as two 64-bit halves, so that the structs holding it keep 8-byte
/// alignment. Values of 16-byte alignment captured in closures have crashed on this toolchain (a
/// misaligned `movaps`; OverlayModel's IPv6Address does the same), and IPAM's values end up in
/// closures (tests, callers). Arithmetic is done on `UInt128` locals.
struct Wide: Hashable, Sendable {
    var high: UInt64
    var low: UInt64

    @inline(__always)
    init(_ value: UInt128) {
        high = UInt64(truncatingIfNeeded: value >> 64)
        low = UInt64(truncatingIfNeeded: value)
    }

    var value: UInt128 {
        @inline(__always) get { UInt128(high) << 64 | UInt128(low) }
    }
}
