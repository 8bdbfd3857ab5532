@testable import ClusterControl
import Foundation
import Glibc
import Testing

/// A container's process is known by its PID and start time, from the moment it is spawned
/// (while `nsenter` and `unshare` have yet to exec the command) until it is collected.
@Suite struct ContainerSpawnTests {
    @Test func aSpawnedProcessKeepsItsStartTimeThroughItsExecsAndLosesItWhenCollected() async throws {
        let log = NSTemporaryDirectory() + "spawn-\(getpid()).log"
        defer { try? FileManager.default.removeItem(atPath: log) }
        let pid = try ContainerSpawn.spawn("/bin/sh", ["-c", "sleep 0.3; exec sleep 30"], environment: [:], log: log)
        let first = try #require(ContainerSpawn.status(pid), "no /proc/\(pid)/stat right after the spawn")
        #expect(first.state != "Z")
        try await Task.sleep(for: .milliseconds(600))
        let later = try #require(ContainerSpawn.status(pid))
        let command = try String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)
        #expect(command.hasPrefix("sleep"), "the shell has exec'd: \(command)")
        #expect(later.startTime == first.startTime && later.state != "Z")
        kill(pid, SIGKILL)
        var status: Int32 = 0
        #expect(waitpid(pid, &status, 0) == pid)
        #expect(ContainerSpawn.status(pid) == nil)
    }

    @Test func statusReadsACommandNameWithSpacesAndParentheses() throws {
        // The command name may hold ") " itself: the fields are counted from the last ')'.
        let dir = NSTemporaryDirectory() + "spawn-name-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // The kernel names a process after the file it executes: a link named "a) b (c".
        try FileManager.default.createSymbolicLink(atPath: dir + "/a) b (c", withDestinationPath: "/bin/sleep")
        let pid = try ContainerSpawn.spawn(dir + "/a) b (c", ["30"], environment: [:], log: dir + "/log")
        defer { kill(pid, SIGKILL); var s: Int32 = 0; waitpid(pid, &s, 0) }
        let command = try String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)
        #expect(command == "a) b (c\n")
        let status = try #require(ContainerSpawn.status(pid))
        #expect(status.state == "S" || status.state == "R", "\(status.state)")
        let uptime = try String(contentsOfFile: "/proc/uptime", encoding: .utf8).split(separator: " ")[0]
        let seconds = try #require(Double(uptime))
        let uptimeTicks = UInt64(seconds * Double(sysconf(Int32(_SC_CLK_TCK))))
        #expect(status.startTime > 0 && status.startTime <= uptimeTicks + 1, "\(status.startTime) vs uptime \(uptimeTicks)")
    }
}
