import Foundation
import Netlink

extension Lab {
    /// Pings every address in `targets` from `namespace` and returns the ones that did not answer
    /// (empty when all did). Uses `fping` (one pass, retries, 1 ms between probes) when it is
    /// installed and `OVERLAY_LAB_NO_FPING` is not set, otherwise `ping -c1` per target (twice
    /// before giving up), 64 at a time through `xargs -P`.
    ///
    /// The fallback avoids the shell's `wait`: processes started from a Swift test inherit a
    /// signal mask that blocks SIGCHLD, so `wait` in `sh` never returns; `xargs` reaps with a
    /// blocking `waitpid` instead.
    public func unreachable(_ targets: [String], from namespace: NetworkNamespace, timeout: Double = 120) throws -> [String] {
        guard !targets.isEmpty else { return [] }
        let useFping = FileManager.default.isExecutableFile(atPath: "/usr/bin/fping")
            && ProcessInfo.processInfo.environment["OVERLAY_LAB_NO_FPING"] == nil
        if useFping {
            // -u: print the unreachable ones; -r 3 retries; -t 500 ms first timeout; -i 1 ms apart.
            let r = try run(["fping", "-u", "-r", "3", "-t", "500", "-i", "1", "-B", "1.5"] + targets, in: namespace, timeout: timeout)
            let lines = r.output.split(separator: "\n").map(String.init).filter { targets.contains($0) }
            if !r.succeeded && lines.isEmpty {
                throw LabError("fping failed in \(namespace.name): \(r.output)")
            }
            return lines
        }
        let one = #"ping -c1 -W2 "$1" >/dev/null 2>&1 || ping -c1 -W2 "$1" >/dev/null 2>&1 || echo "$1""#
        let script = #"printf '%s\n' "$@" | xargs -P 64 -n 1 sh -c '"# + one + #"' one"#
        let r = try run(["sh", "-c", script, "sh"] + targets, in: namespace, timeout: timeout)
        return r.output.split(separator: "\n").map(String.init).filter { targets.contains($0) }
    }
}
