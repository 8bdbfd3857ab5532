import FoundationEssentials

/// How a container's process is started: in its network namespace and, when it has a resolv.conf
/// of its own, in a private mount namespace where that file is bind-mounted on /etc/resolv.conf
/// (so the embedded DNS at 127.0.0.11 is what it asks, as in Docker).
public enum ContainerProcess {
    /// The argv (starting with `nsenter`) that runs `command` inside the container.
    public static func argv(namespacePath: String, resolvConf: String?, command: [String]) -> [String] {
        var a = ["nsenter", "--net=\(namespacePath)", "--"]
        // The daemon runs with umask 077 (its state is secret); a container's processes get the
        // usual 022, as Docker's do.
        if let resolvConf, FileManager.default.fileExists(atPath: resolvConf), FileManager.default.fileExists(atPath: "/etc/resolv.conf") {
            a += ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
                  "umask 022 && mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"", resolvConf]
        } else {
            a += ["/bin/sh", "-c", "umask 022 && exec \"$@\"", "sh"]
        }
        return a + command
    }
}
