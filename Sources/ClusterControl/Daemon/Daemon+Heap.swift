import COverlayShims
import Foundation

/// This process's C heap. glibc's malloc keeps what is freed inside its arenas (one per thread
/// that allocated, up to eight per core) and gives back to the kernel only what is free at the
/// top of one. A daemon whose work moves between threads, as a swarm leave and join moves every
/// network, container and service of a node, then holds more free memory after each: its RSS
/// steps up though what it uses does not (chaos-soak: 3-5 MiB at each leave and join, with about
/// 8.5 MiB in use throughout). A trim gives back only whole free pages, and spread over 16 arenas
/// the free space is mostly partial pages: overlayd keeps the arenas to two
/// (``OverlayDaemon/limitHeapArenas()``), and gives the free pages back after a leave and every
/// ``OverlayDaemon/heapTrimInterval``.
enum ProcessHeap {
    /// Bytes of live allocations, and free bytes inside the arenas (freed chunks and each
    /// arena's top), kept for reuse. A trim gives their whole pages back to the kernel but keeps
    /// the chunks: it leaves `heldFree` mostly as it was.
    struct Usage: Sendable {
        var inUse: UInt64
        var heldFree: UInt64
    }

    static func usage() -> Usage {
        var inUse: UInt64 = 0
        var heldFree: UInt64 = 0
        ovl_heap_usage(&inUse, &heldFree)
        return Usage(inUse: inUse, heldFree: heldFree)
    }

    /// Gives the whole free pages inside every arena back to the kernel (`malloc_trim(0)`: a
    /// walk of the free chunks, about a millisecond for tens of MiB). Whether any was released.
    @discardableResult
    static func trim() -> Bool { ovl_heap_trim() != 0 }

    /// The arenas overlayd lets glibc make (glibc's default is eight per core). Threads share
    /// them; each thread's small-allocation cache (tcache) still takes most allocations without
    /// a lock.
    static let arenas = 2
}

extension OverlayDaemon {
    /// Keeps the C heap to two arenas, unless the environment sets
    /// `MALLOC_ARENA_MAX` (glibc's own tunable, which then decides). Call it first thing, before
    /// the threads that would each make an arena start. With glibc's default of 16 arenas on 2
    /// cores, a leave/join loop held 39 MiB of arena memory for 8.6 MiB in use; with 2, 17 MiB.
    public static func limitHeapArenas() {
        guard ProcessInfo.processInfo.environment["MALLOC_ARENA_MAX"] == nil else { return }
        _ = ovl_heap_limit_arenas(Int32(ProcessHeap.arenas))
    }

    /// How often the daemon gives the heap's free pages back (``ProcessHeap``).
    static let heapTrimInterval: Duration = .seconds(60)

    /// Trims the heap every ``heapTrimInterval`` until cancelled.
    static func trimHeapPeriodically() async {
        while (try? await Task.sleep(for: heapTrimInterval)) != nil {
            ProcessHeap.trim()
        }
    }
}
