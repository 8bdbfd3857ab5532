import COverlayShims

/// This process's C heap. glibc's malloc keeps what is freed inside its arenas (one per thread
/// that allocated, up to eight per core) and gives back to the kernel only what is free at the
/// top of one. A daemon whose work moves between threads, as a swarm leave and join moves every
/// network, container and service of a node, then holds more free memory after each: its RSS
/// steps up though what it uses does not (chaos-soak: 3-5 MiB at each leave and join, with about
/// 8.5 MiB in use throughout). overlayd gives the free pages back after a leave and every
/// ``OverlayDaemon/heapTrimInterval``.
enum ProcessHeap {
    /// Bytes of live allocations, and bytes of freed chunks the allocator keeps for reuse (a
    /// trim gives their whole pages back to the kernel but keeps the chunks: it does not lower
    /// `heldFree`).
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
}

extension OverlayDaemon {
    /// How often the daemon gives the heap's free pages back (``ProcessHeap``).
    static let heapTrimInterval: Duration = .seconds(60)

    /// Trims the heap every ``heapTrimInterval`` until cancelled.
    nonisolated static func trimHeapPeriodically() async {
        while (try? await Task.sleep(for: heapTrimInterval)) != nil {
            ProcessHeap.trim()
        }
    }
}
