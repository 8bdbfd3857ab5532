import Foundation
import Glibc

/// A cgroup (v2) per lab host, holding its overlayd and, because a child starts in its parent's
/// cgroup, every container that overlayd starts: `<cgroup2>/swift-overlay/<lab>/<host>`.
///
/// Without it `lab down` finds a lab's containers only by their network namespaces (the hosts',
/// and the containers' handles read from every process's mount table), and a process a container
/// started in a network namespace of its own was left running, whether or not its daemon could be
/// asked (a daemon killed with SIGKILL cannot). The cgroup keeps them together whatever became of
/// the daemon: `lab down` kills the lab's cgroup (`cgroup.kill`, the whole subtree at once) and
/// removes it.
///
/// Where the machine has no cgroup2 hierarchy, the lab runs without one and `lab down` relies on
/// the namespaces alone, as before.
enum LabCgroup {
    /// Where the cgroup2 hierarchy is mounted (`/sys/fs/cgroup` on a unified system,
    /// `/sys/fs/cgroup/unified` on a hybrid one), from this process's mount table; nil if nowhere.
    static func mountPoint() -> String? {
        guard let table = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return nil }
        for line in table.split(separator: "\n") {
            // ID PARENT MAJ:MIN ROOT MOUNT-POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER-OPTIONS
            let fields = line.split(separator: " ")
            guard let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count, fields.count > 4,
                  fields[dash + 1] == "cgroup2" else { continue }
            return String(fields[4])
        }
        return nil
    }

    /// The lab's cgroup (nil without a cgroup2 hierarchy).
    static func directory(_ lab: LabOptions) -> String? {
        mountPoint().map { "\($0)/swift-overlay/\(lab.name)" }
    }

    /// Makes the host's cgroup and returns the words that start a command in it: a shell that
    /// moves itself there and then becomes the command, so the command and all it starts are in
    /// the cgroup from their first instruction. Where the cgroup cannot be made or joined (no
    /// cgroup2, a read-only one, no delegation) the command starts outside it, with a warning:
    /// the lab works as it did before it had cgroups.
    static func enter(_ lab: LabOptions, _ host: String) -> [String] {
        guard let labDir = directory(lab) else { return [] }
        let dir = "\(labDir)/\(host)"
        for path in [(labDir as NSString).deletingLastPathComponent, labDir, dir] where mkdir(path, 0o755) != 0 && errno != EEXIST {
            warn("cannot make the cgroup \(path) (\(String(cString: strerror(errno)))): \(host)'s overlayd and its containers run outside it, and lab down finds them by their namespaces only")
            return []
        }
        return ["/bin/sh", "-c",
                #"echo $$ 2>/dev/null > "$0" || echo "overlayctl lab: cannot join the cgroup ${0%/cgroup.procs}: lab down finds this host's containers by their namespaces only" >&2; exec "$@""#,
                dir + "/cgroup.procs"]
    }

    private static func warn(_ message: String) {
        FileHandle.standardError.write(Data("overlayctl lab: \(message)\n".utf8))
    }

    /// Kills every process in the lab's cgroup and removes it (`swift-overlay` stays: another
    /// lab may be making its cgroup in it).
    static func killAll(_ lab: LabOptions) async {
        guard let dir = directory(lab), FileManager.default.fileExists(atPath: dir) else { return }
        let hosts = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [])
            .filter { isDirectory("\(dir)/\($0)") }.map { "\(dir)/\($0)" }
        // A cgroup can be removed once its processes have exited (zombies do not count). A killed
        // process still has to leave the kernel, and one in an uninterruptible wait (for the RTNL
        // lock, say, while other labs make and delete links) can take seconds: a local CI run once
        // left a lab's cgroup behind after 5 s of waiting. So: up to 20 s, killing again every
        // second, which also catches anything that got in late. cgroup.kill (Linux 5.14) kills
        // the subtree at once, forks in flight included; before it, SIGKILL to each process listed.
        for tick in 0..<400 where populated(dir) {
            if tick % 20 == 0, !write("1", to: dir + "/cgroup.kill") {
                for p in hosts.flatMap(pids) { kill(p, SIGKILL) }
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
        for h in hosts where rmdir(h) != 0 {
            warn("cannot remove the cgroup \(h) (\(String(cString: strerror(errno)))); processes left: \(pids(h))")
        }
        rmdir(dir)
    }

    /// Whether the cgroup at `dir` or one below it still has a live process (`cgroup.events`;
    /// false when that cannot be read).
    static func populated(_ dir: String) -> Bool {
        guard let events = try? String(contentsOfFile: dir + "/cgroup.events", encoding: .utf8) else { return false }
        return events.split(separator: "\n").contains("populated 1")
    }

    /// The processes in the cgroup at `dir` (not its children's). A process outside this one's
    /// PID namespace is listed as 0 and left out, and so is this process.
    static func pids(_ dir: String) -> [pid_t] {
        ((try? String(contentsOfFile: dir + "/cgroup.procs", encoding: .utf8)) ?? "")
            .split(separator: "\n").compactMap { pid_t($0) }.filter { $0 > 0 && $0 != getpid() }
    }

    private static func isDirectory(_ path: String) -> Bool {
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue
    }

    private static func write(_ text: String, to path: String) -> Bool {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return text.withCString { Glibc.write(fd, $0, strlen($0)) } == text.utf8.count
    }
}
