import Foundation
import OverlayTestKit

// TCP congestion control for the iperf3 runs. It moves the figures a lot on this lab (a plain
// overlay over veth ran at 13 Gbit/s under BBR and at 40 under CUBIC on the same machine, because
// BBR without the fq qdisc paces from a timer), so every report names the algorithm it ran under,
// and `--congestion ALGO` (OVERLAY_BENCH_CONGESTION) chooses it for the iperf3 clients (`-C`).

/// The algorithm `--congestion` asked for, if any.
func requestedCongestion() -> String? {
    guard let v = ProcessInfo.processInfo.environment["OVERLAY_BENCH_CONGESTION"], !v.isEmpty else { return nil }
    return v
}

/// iperf3 client arguments for the requested algorithm (none: the system's default).
func congestionArguments() -> [String] {
    requestedCongestion().map { ["-C", $0] } ?? []
}

/// A line for the report: the algorithm the runs use and where it comes from.
func congestionLine() -> String {
    if let algo = requestedCongestion() { return "TCP congestion control: \(algo) (--congestion)" }
    let system = (try? String(contentsOfFile: "/proc/sys/net/ipv4/tcp_congestion_control", encoding: .utf8))?
        .trimmingCharacters(in: .whitespacesAndNewlines) ?? "unknown"
    return "TCP congestion control: \(system) (the system's default, which new namespaces inherit; --congestion ALGO to choose)"
}

/// Whether the kernel offers `algo` (listed as available, or its module loads).
func congestionAvailable(_ algo: String) -> Bool {
    func listed() -> Bool {
        let text = (try? String(contentsOfFile: "/proc/sys/net/ipv4/tcp_available_congestion_control", encoding: .utf8)) ?? ""
        return text.split(whereSeparator: { $0 == " " || $0 == "\n" }).contains { $0 == algo }
    }
    if listed() { return true }
    _ = try? Command.run(["modprobe", "tcp_\(algo)"])
    return listed()
}
