import COverlayShims
import Glibc
import Synchronization

/// `struct mmsghdr` (glibc declares it only under _GNU_SOURCE, which Swift's Glibc module lacks):
/// a `msghdr` and the byte count the kernel fills in, padded to 64 bytes on LP64.
struct MMsgHdr {
    var hdr = msghdr()
    var len: UInt32 = 0
    var pad: UInt32 = 0
}

/// `sendmmsg`/`recvmmsg`, looked up once at run time (same reason as ``MMsgHdr``).
enum MMsg {
    typealias SendFn = @convention(c) (Int32, UnsafeMutableRawPointer?, UInt32, Int32) -> Int32
    typealias RecvFn = @convention(c) (Int32, UnsafeMutableRawPointer?, UInt32, Int32, UnsafeMutableRawPointer?) -> Int32

    static let send: SendFn? = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "sendmmsg").map { unsafeBitCast($0, to: SendFn.self) }
    static let recv: RecvFn? = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "recvmmsg").map { unsafeBitCast($0, to: RecvFn.self) }
}

/// A joinable POSIX thread running one closure (worker loops must not live on the cooperative pool).
final class WorkerThread: @unchecked Sendable {
    // @unchecked: `thread` is written once in init and read in join, both by the owner.
    private final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    private var thread = pthread_t()
    private var joined = false
    private final class KernelID: Sendable {
        let value = Atomic<Int32>(0)
    }

    private let kernelID = KernelID()
    /// The thread's name, as given.
    let name: String
    /// The thread's kernel ID (`/proc/self/task/<tid>`), 0 until it has started.
    var tid: Int32 { kernelID.value.load(ordering: .acquiring) }

    /// Starts `body` on a new thread named `name` (what `top -H`, `ps -L` and `perf` show; the
    /// kernel keeps 15 bytes of it); nil if the system cannot make one.
    init?(name: String, _ body: @escaping @Sendable () -> Void) {
        self.name = name
        let box = Unmanaged.passRetained(Box { [kernelID] in
            _ = ovl_set_thread_name(name)
            kernelID.value.store(ovl_gettid(), ordering: .releasing)
            body()
        }).toOpaque()
        let rc = pthread_create(&thread, nil, { arg in
            let b = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
            b.body()
            return nil
        }, box)
        guard rc == 0 else {
            Unmanaged<Box>.fromOpaque(box).release()
            return nil
        }
    }

    /// Waits for the thread to finish (once).
    func join() {
        guard !joined else { return }
        joined = true
        pthread_join(thread, nil)
    }
}

@inline(__always) func loadBE16(_ p: UnsafeRawPointer, _ at: Int) -> UInt16 {
    UInt16(bigEndian: p.loadUnaligned(fromByteOffset: at, as: UInt16.self))
}

@inline(__always) func loadBE32(_ p: UnsafeRawPointer, _ at: Int) -> UInt32 {
    UInt32(bigEndian: p.loadUnaligned(fromByteOffset: at, as: UInt32.self))
}

@inline(__always) func storeBE16(_ v: UInt16, _ p: UnsafeMutableRawPointer, _ at: Int) {
    p.storeBytes(of: v.bigEndian, toByteOffset: at, as: UInt16.self)
}

@inline(__always) func storeBE32(_ v: UInt32, _ p: UnsafeMutableRawPointer, _ at: Int) {
    p.storeBytes(of: v.bigEndian, toByteOffset: at, as: UInt32.self)
}

/// The 48-bit MAC at `p + at` as an integer (first byte most significant), as `MACAddress.value`.
@inline(__always) func loadMAC(_ p: UnsafeRawPointer, _ at: Int) -> UInt64 {
    UInt64(loadBE16(p, at)) << 32 | UInt64(loadBE32(p, at + 2))
}

@inline(__always) func storeMAC(_ v: UInt64, _ p: UnsafeMutableRawPointer, _ at: Int) {
    storeBE16(UInt16(truncatingIfNeeded: v >> 32), p, at)
    storeBE32(UInt32(truncatingIfNeeded: v), p, at + 2)
}
