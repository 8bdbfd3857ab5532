import Glibc

/// Work handed to exactly one new pthread. `@unchecked Sendable`: the starting thread writes the
/// closure before `pthread_create` and only reads results after `pthread_join`, so the two threads
/// never touch it at the same time.
private final class ThreadJob: @unchecked Sendable {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}

/// Runs a closure on a fresh pthread that exits afterwards. Namespace work (`setns`, `unshare`)
/// happens on such a thread, never on a Swift-concurrency pool thread, so no other code ever runs
/// in a namespace it did not ask for.
enum NamespaceThread {
    /// Runs `body` on a new thread and waits for it to finish.
    static func run(_ operation: @autoclosure () -> String, _ body: () -> Void) throws(NetlinkError) {
        try withoutActuallyEscaping(body) { (escapable: @escaping () -> Void) throws(NetlinkError) in
            let job = Unmanaged.passRetained(ThreadJob(escapable)).toOpaque()
            var thread = pthread_t()
            let rc = pthread_create(&thread, nil, { arg in
                let job = Unmanaged<ThreadJob>.fromOpaque(arg!).takeRetainedValue()
                job.body()
                return nil
            }, job)
            guard rc == 0 else {
                Unmanaged<ThreadJob>.fromOpaque(job).release()
                throw NetlinkError.posix(rc, operation() + " (starting a namespace thread)")
            }
            pthread_join(thread, nil)
        }
    }
}

/// A mutex for classes that own a C handle used from several threads.
final class Lock: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func withLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}
