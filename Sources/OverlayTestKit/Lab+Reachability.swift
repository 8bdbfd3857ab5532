import Foundation
import Netlink

extension Lab {
    /// Pings every address in `targets` from `namespace` and returns the ones that did not answer
    /// (empty when all did). Uses `fping` (one pass, retries, 1 ms between probes) when it is
    /// installed, otherwise one `ping -c1` per target, 64 at a time.
    public func unreachable(_ targets: [String], from namespace: NetworkNamespace, timeout: Double = 120) throws -> [String] {
        guard !targets.isEmpty else { return [] }
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/fping") {
            // -u: print the unreachable ones; -r 3 retries; -t 500 ms first timeout; -i 1 ms apart.
            let r = try run(["fping", "-u", "-r", "3", "-t", "500", "-i", "1", "-B", "1.5"] + targets, in: namespace, timeout: timeout)
            let lines = r.output.split(separator: "\n").map(String.init).filter { targets.contains($0) }
            if !r.succeeded && lines.isEmpty {
                throw LabError("fping failed in \(namespace.name): \(r.output)")
            }
            return lines
        }
        let script = """
            for ip in "$@"; do
              ( ping -c1 -W2 "$ip" >/dev/null 2>&1 || ping -c1 -W2 "$ip" >/dev/null 2>&1 || echo "$ip" ) &
              n=$((n+1)); if [ $((n % 64)) -eq 0 ]; then wait; fi
            done; wait
            """
        let r = try run(["sh", "-c", script, "sh"] + targets, in: namespace, timeout: timeout)
        return r.output.split(separator: "\n").map(String.init).filter { targets.contains($0) }
    }
}
