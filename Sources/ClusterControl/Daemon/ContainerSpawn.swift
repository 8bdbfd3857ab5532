import COverlayShims
import Foundation
import Glibc
import Synchronization

/// Starts a container's process the way a container runtime does: no signal blocked and every
/// signal the daemon took over (SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGCHLD, SIGALRM, ...) at its
/// default. A process started with Foundation's `Process` inherits the blocked mask of the
/// daemon's threads (swift-service-lifecycle blocks the signals it handles) and its ignored
/// SIGPIPE: such a container never sees `stop`'s SIGTERM and waits for the SIGKILL after the
/// timeout, and `lab down` could not stop a service's tasks at all.
enum ContainerSpawn {
    /// Starts `executable` with `arguments` (not including argv[0], which is the executable) and
    /// `environment`, standard input from /dev/null, standard output and error appended to `log`,
    /// no descriptor of the daemon's but those. Returns its PID and start time (read before the
    /// reaper may collect it; nil if it was gone already); ``reap(_:)`` collects it once it has exited.
    static func spawn(_ executable: String, _ arguments: [String], environment: [String: String], log: String) throws -> (pid: pid_t, startTime: UInt64?) {
        // A session of its own: a signal to the daemon's process group (Ctrl-C on a foreground
        // overlayd) does not reach containers, which outlive a stopped daemon.
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for e in envp { free(e) } }
        var pid: pid_t = 0
        let rc = ovl_spawn_clean(&pid, executable, 0, argv, envp, log, -1, 1)
        guard rc == 0 else { throw APIError(500, "cannot start \(executable): \(String(cString: strerror(rc)))") }
        // Nothing collects it before this line: the PID is still this child's.
        let started = status(pid)?.startTime
        reaper.watch(pid)
        return (pid, started)
    }

    /// Collects the daemon's exited container processes every second, so that one that ends
    /// with nobody asking (a detached container, one killed by `rm -f`) leaves no zombie.
    static let reaper = Reaper()

    final class Reaper: Sendable {
        private let children = Mutex<Set<pid_t>>([])
        private let running = Mutex(false)

        func watch(_ pid: pid_t) {
            children.withLock { _ = $0.insert(pid) }
            let start = running.withLock { r in
                defer { r = true }
                return !r
            }
            guard start else { return }
            Task.detached {
                while true {
                    try? await Task.sleep(for: .seconds(1))
                    self.sweep()
                }
            }
        }

        /// Keeps the children still running (waitpid 0); drops the collected and any that are no
        /// longer this daemon's to wait for.
        func sweep() {
            children.withLock { set in
                set = set.filter { pid in
                    var status: Int32 = 0
                    return waitpid(pid, &status, WNOHANG) == 0
                }
            }
        }
    }

    /// A process's state letter (`R`, `S`, `Z` for a zombie, ...) and start time (clock ticks
    /// since boot), from `/proc/PID/stat`; nil when there is no such process.
    static func status(_ pid: pid_t) -> (state: Character, startTime: UInt64)? {
        // Bytes, not UTF-8: the command name is any bytes a process chose (cut at 15).
        guard let stat = FileManager.default.contents(atPath: "/proc/\(pid)/stat"),
              let close = stat.lastIndex(of: UInt8(ascii: ")")) else { return nil }
        // After the command name (in parentheses, which may hold spaces): field 3, the state, on.
        let fields = stat[stat.index(after: close)...].split(separator: UInt8(ascii: " "))
        guard fields.count > 19, let state = fields[0].first,
              let start = UInt64(String(decoding: fields[19], as: UTF8.self)) else { return nil }
        return (Character(Unicode.Scalar(state)), start)
    }

    /// Kills (SIGKILL) every process in the network namespace at `path` but this one; returns how
    /// many. A container's processes are those in its namespace: its command's children and
    /// `exec`'d processes too, which end with it as they do in Docker (there, with its PID
    /// namespace), instead of running on with their namespace removed.
    ///
    /// Nothing is killed when the namespace is this daemon's or init's (a path that is not a
    /// container's own namespace must never empty the host).
    @discardableResult
    static func killAll(inNamespaceAt path: String) -> Int {
        var killed = 0
        for pid in processes(inNamespaceAt: path) where kill(pid, SIGKILL) == 0 { killed += 1 }
        return killed
    }

    /// The processes (but this one) in the network namespace at `path`; none when that is this
    /// daemon's namespace or init's.
    static func processes(inNamespaceAt path: String) -> [pid_t] {
        var target = stat(), mine = stat(), initial = stat()
        guard stat(path, &target) == 0, stat("/proc/self/ns/net", &mine) == 0,
              (target.st_ino, target.st_dev) != (mine.st_ino, mine.st_dev) else { return [] }
        // Init's may be out of reach (a PID 1 of another user namespace): then only this one's.
        if stat("/proc/1/ns/net", &initial) == 0, (target.st_ino, target.st_dev) == (initial.st_ino, initial.st_dev) { return [] }
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        return entries.compactMap { e -> pid_t? in
            guard let pid = pid_t(e), pid != getpid() else { return nil }
            var ns = stat()
            guard stat("/proc/\(e)/ns/net", &ns) == 0, ns.st_ino == target.st_ino, ns.st_dev == target.st_dev else { return nil }
            return pid
        }
    }

    /// Collects `pid` if it is a child of this daemon that has exited (so it leaves no zombie);
    /// nothing for a process that runs or is not this daemon's child (one started before a
    /// restart).
    static func reap(_ pid: pid_t) {
        var status: Int32 = 0
        _ = waitpid(pid, &status, WNOHANG)
    }
}
