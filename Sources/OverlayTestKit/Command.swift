import COverlayShims
import Glibc

/// Runs programs for tests, demos and benchmarks: posix_spawn and waitpid directly, so it neither
/// depends on how the caller set up SIGCHLD (Foundation's Process can hang when it is blocked) nor
/// pays Process's start-up cost (about 50 ms a start measured here, against ~1 ms).
public enum Command {
    /// Runs `arguments` (the program found on PATH), with standard input from /dev/null, and
    /// returns its exit status (128 + signal when killed) and its standard output and error
    /// interleaved. The program is killed (SIGKILL) once `timeout` seconds have passed.
    public static func run(_ arguments: [String], timeout: Double = 30) throws -> CommandResult {
        guard let program = arguments.first else { throw LabError("no command to run") }
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw LabError("pipe: \(String(cString: strerror(errno)))") }
        // Close-on-exec so other children spawned meanwhile do not hold the write end open.
        _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
        // Nothing else the parent has open reaches the child (a NIO socket, not close-on-exec, held
        // by a child outlives its close in the parent, and a port "freed" by a test stays bound),
        // and the child starts with no signal blocked and default dispositions: a Swift test
        // runner (or a daemon) may block SIGCHLD or SIGTERM in its threads, and a child inheriting
        // that would ignore its timeout or never see its own children exit (`sh`'s `wait`).
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        var pid: pid_t = 0
        let rc = ovl_spawn_clean(&pid, program, 1, argv, environ, nil, fds[1], 0)
        close(fds[1])
        defer { close(fds[0]) }
        guard rc == 0 else { throw LabError("could not start \(program): \(String(cString: strerror(rc)))") }

        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16384)
        var deadline = timespec()
        clock_gettime(CLOCK_MONOTONIC, &deadline)
        let end = Double(deadline.tv_sec) + Double(deadline.tv_nsec) / 1e9 + timeout
        var killed = false
        while true {
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            let left = end - (Double(now.tv_sec) + Double(now.tv_nsec) / 1e9)
            if left <= 0 && !killed {
                kill(pid, SIGKILL)
                killed = true
            }
            var pfd = pollfd(fd: fds[0], events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, killed ? 1000 : Int32(min(left, 1) * 1000) + 1)
            if ready < 0 && errno == EINTR { continue }
            if ready == 0 { if killed { break } else { continue } }
            let n = buffer.withUnsafeMutableBytes { read(fds[0], $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            output += buffer[0..<n]
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let exitCode: Int32 = status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
        var text = String(decoding: output, as: UTF8.self)
        if killed { text += "\n[killed after \(timeout) s]" }
        return CommandResult(status: exitCode, output: text)
    }

    /// Starts `arguments` in the background, in a session of its own, with standard output and
    /// error appended to `log`, no signal blocked and default dispositions (a daemon started from
    /// a Swift program must not pass on the signals its threads block: busybox `ping` in a
    /// container of such a dockerd never sees its SIGALRM). Returns its PID; the caller does not
    /// wait for it.
    public static func start(_ arguments: [String], log: String) throws -> pid_t {
        guard let program = arguments.first else { throw LabError("no command to run") }
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        var pid: pid_t = 0
        let rc = ovl_spawn_clean(&pid, program, 1, argv, environ, log, -1, 1)
        guard rc == 0 else { throw LabError("could not start \(program): \(String(cString: strerror(rc)))") }
        return pid
    }
}
