import Foundation
import Testing

@testable import ClusterControl

/// The resident set of this process, from /proc/self/status (bytes).
private func residentBytes() -> UInt64 {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return (UInt64(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0) * 1024
    }
    return 0
}

@Suite struct ProcessHeapTests {
    /// What a swarm leave does to the heap, on a small scale: memory allocated and used on
    /// several threads (each its own arena), then freed. The allocator keeps it; a trim gives
    /// its pages back, and the heap still serves allocations afterwards.
    @Test func freedMemoryOnManyThreadsIsGivenBackByATrim() async throws {
        let threads = 4
        let perThread = 24 << 20
        let chunk = 2048
        let before = ProcessHeap.usage()
        // Each thread allocates its share in small chunks (below the mmap threshold: they come
        // from an arena), touches them, frees all but one in 64 (what keeps the arena from
        // shrinking at its top), and reports.
        // (Addresses travel as integers: a pointer is not Sendable.)
        let kept = await withTaskGroup(of: [UInt].self) { group in
            for _ in 0..<threads {
                group.addTask {
                    await withCheckedContinuation { (c: CheckedContinuation<[UInt], Never>) in
                        Thread {
                            var all: [UnsafeMutableRawPointer] = []
                            for _ in 0..<(perThread / chunk) {
                                let p = malloc(chunk)!
                                memset(p, 0x5a, chunk)
                                all.append(p)
                            }
                            var keep: [UInt] = []
                            for (i, p) in all.enumerated() {
                                if i % 64 == 63 { keep.append(UInt(bitPattern: p)) } else { free(p) }
                            }
                            c.resume(returning: keep)
                        }.start()
                    }
                }
            }
            var out: [UInt] = []
            for await k in group { out += k }
            return out
        }
        defer { for p in kept { free(UnsafeMutableRawPointer(bitPattern: p)) } }
        let held = residentBytes()
        let usage = ProcessHeap.usage()
        // The freed 94 MiB is held free by the allocator (with room for what the suites running
        // alongside take from it meanwhile).
        #expect(usage.heldFree >= before.heldFree + UInt64(threads * perThread) / 2, "\(usage)")
        ProcessHeap.trim()
        let trimmed = residentBytes()
        #expect(held > trimmed + UInt64(threads * perThread) / 2,
                "RSS \(held >> 20) MiB before the trim, \(trimmed >> 20) MiB after (\(threads * perThread >> 20) MiB freed)")
        // The heap serves allocations after a trim.
        let p = malloc(1 << 20)!
        memset(p, 1, 1 << 20)
        free(p)
    }
}
