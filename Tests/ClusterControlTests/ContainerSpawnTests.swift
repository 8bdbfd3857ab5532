@testable import ClusterControl
import Foundation
import Glibc
import Testing

/// A container's process is known by its PID and start time, from the moment it is spawned
/// (while `nsenter` and `unshare` have yet to exec the command) until it is collected.
///
/// The processes live long (1,000 s, killed by the test): CI's parallel suites have held this
/// suite's tasks for 50 s, past a 30 s `sleep`.
@Suite struct ContainerSpawnTests {
    /// Waits until `pid` is collected (here or by the spawner's reaper) and gone from /proc.
    func gone(_ pid: pid_t) async throws -> Bool {
        var status: Int32 = 0
        _ = waitpid(pid, &status, WNOHANG)  // -1 (ECHILD) when the reaper took it first
        for _ in 0..<200 where ContainerSpawn.status(pid) != nil {
            try await Task.sleep(for: .milliseconds(50))
            _ = waitpid(pid, &status, WNOHANG)
        }
        return ContainerSpawn.status(pid) == nil
    }

    @Test func aSpawnedProcessKeepsItsStartTimeThroughItsExecsAndLosesItWhenCollected() async throws {
        let log = NSTemporaryDirectory() + "spawn-\(getpid()).log"
        defer { try? FileManager.default.removeItem(atPath: log) }
        let (pid, started) = try ContainerSpawn.spawn("/bin/sh", ["-c", "sleep 0.3; exec sleep 1000"], environment: [:], log: log)
        let first = try #require(ContainerSpawn.status(pid), "no /proc/\(pid)/stat right after the spawn")
        #expect(first.state != "Z" && started == first.startTime)
        try await Task.sleep(for: .milliseconds(600))
        let later = try #require(ContainerSpawn.status(pid))
        let command = try String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)
        #expect(command.hasPrefix("sleep"), "the shell has exec'd: \(command)")
        #expect(later.startTime == first.startTime && later.state != "Z")
        kill(pid, SIGKILL)
        #expect(try await gone(pid))
    }

    @Test func statusReadsACommandNameWithSpacesParenthesesAndBytesThatAreNotUTF8() async throws {
        // The command name may hold ") " itself: the fields are counted from the last ')'. And it
        // is any bytes (here a lone 0xff), which a UTF-8 read of the file refuses.
        let dir = NSTemporaryDirectory() + "spawn-name-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // The kernel names a process after the file it executes: a link named "a) b (c".
        try FileManager.default.createSymbolicLink(atPath: dir + "/a) b (c", withDestinationPath: "/bin/sleep")
        let (pid, _) = try ContainerSpawn.spawn(dir + "/a) b (c", ["1000"], environment: [:], log: dir + "/log")
        let command = try String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)
        #expect(command == "a) b (c\n")
        let status = try #require(ContainerSpawn.status(pid))
        #expect(status.state == "S" || status.state == "R", "\(status.state)")
        let uptime = try String(contentsOfFile: "/proc/uptime", encoding: .utf8).split(separator: " ")[0]
        let seconds = try #require(Double(uptime))
        let uptimeTicks = UInt64(seconds * Double(sysconf(Int32(_SC_CLK_TCK))))
        #expect(status.startTime > 0 && status.startTime <= uptimeTicks + 1, "\(status.startTime) vs uptime \(uptimeTicks)")
        kill(pid, SIGKILL)
        #expect(try await gone(pid))

        // A process that names itself with a byte that is not UTF-8 (prctl PR_SET_NAME).
        let (named, _) = try ContainerSpawn.spawn("/usr/bin/python3", ["-c",
            "import ctypes, time; ctypes.CDLL(None).prctl(15, b'x\\xff', 0, 0, 0); time.sleep(1000)"], environment: [:], log: dir + "/log")
        var rawComm: [UInt8] = []
        for _ in 0..<500 where rawComm != [UInt8(ascii: "x"), 0xff, 0x0a] {
            usleep(20_000)
            rawComm = FileManager.default.contents(atPath: "/proc/\(named)/comm").map { Array($0) } ?? []
        }
        #expect(rawComm == [UInt8(ascii: "x"), 0xff, 0x0a])
        #expect(ContainerSpawn.status(named)?.startTime != nil, "a command name that is not UTF-8")
        kill(named, SIGKILL)
        #expect(try await gone(named))
    }

    /// The processes of a namespace are found (and killed) by its path; this process's own
    /// namespace (and init's) is never emptied: a path that is not a container's kills nothing.
    @Test(.enabled(if: getuid() == 0, "a network namespace of its own needs root"))
    func aNamespacesProcessesAreFoundAndKilled() async throws {
        let log = NSTemporaryDirectory() + "spawn-ns-\(getpid()).log"
        defer { try? FileManager.default.removeItem(atPath: log) }
        let (pid, _) = try ContainerSpawn.spawn("/usr/bin/unshare", ["--net", "--", "/bin/sh", "-c", "sleep 1000 & sleep 1000 & wait"],
                                                environment: [:], log: log)
        var found: [pid_t] = []
        for _ in 0..<500 where found.count < 3 {
            try await Task.sleep(for: .milliseconds(20))
            found = ContainerSpawn.processes(inNamespaceAt: "/proc/\(pid)/ns/net")
        }
        #expect(found.count == 3 && found.contains(pid), "\(found)")
        #expect(ContainerSpawn.killAll(inNamespaceAt: "/proc/\(pid)/ns/net") == 3)
        #expect(try await gone(pid))
    }

    @Test func theDaemonsOwnNamespaceIsNeverEmptied() {
        #expect(ContainerSpawn.processes(inNamespaceAt: "/proc/self/ns/net").isEmpty)
        #expect(ContainerSpawn.processes(inNamespaceAt: "/proc/1/ns/net").isEmpty)
        #expect(ContainerSpawn.processes(inNamespaceAt: "/nonexistent").isEmpty)
    }
}
