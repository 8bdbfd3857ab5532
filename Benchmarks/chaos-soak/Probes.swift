import Foundation

/// One probe's result, as the agents write them.
struct Probe: Decodable {
    /// When the probe finished (Unix seconds).
    var t: Double
    /// `dns`, `plain`, `secret`, `vip` or `mesh`.
    var k: String
    /// The peer host, `web`, or the host whose mesh was asked.
    var to: String
    var ok: Bool
    /// What failed, for a failure.
    var e: String?
}

/// A probe stream: who asks, what, of whom.
struct Stream: Hashable, Comparable, CustomStringConvertible {
    var from: String
    var kind: String
    var to: String
    var description: String { "\(from) \(kind) \(to)" }
    static func < (a: Stream, b: Stream) -> Bool { a.description < b.description }
    /// Names are their own invariant; everything else is reachability.
    var isName: Bool { kind == "dns" }
}

/// The agents' result files, read as they grow: when each stream last succeeded, and every
/// success's time (to find the first one after a fault healed).
final class ProbeLog {
    private var offsets: [String: UInt64] = [:]
    private var partial: [String: Data] = [:]
    private(set) var successes: [Stream: [Double]] = [:]
    private(set) var failures: [Stream: Int] = [:]
    /// When each stream's probes failed, in order.
    private(set) var failedAt: [Stream: [Double]] = [:]
    /// What each of those failures was (the agent's reason), in the same order.
    private(set) var failureReasons: [Stream: [String]] = [:]
    /// When each stream's latest probe finished.
    private(set) var lastResult: [Stream: Double] = [:]
    /// When each failed probe finished, in the order read.
    private(set) var failureTimes: [Double] = []
    private(set) var results = 0
    let directory: String

    init(directory: String) { self.directory = directory }

    /// Reads what the agents wrote since the last call.
    func read(hosts: [String]) {
        let decoder = JSONDecoder()
        for h in hosts {
            let path = directory + "/\(h).jsonl"
            guard let handle = FileHandle(forReadingAtPath: path) else { continue }
            defer { try? handle.close() }
            let offset = offsets[h] ?? 0
            try? handle.seek(toOffset: offset)
            guard let fresh = try? handle.readToEnd(), !fresh.isEmpty else { continue }
            offsets[h] = offset + UInt64(fresh.count)
            var data = (partial[h] ?? Data()) + fresh
            if let last = data.lastIndex(of: UInt8(ascii: "\n")) {
                partial[h] = data[(last + 1)...]
                data = data[..<last]
            } else {
                partial[h] = data
                continue
            }
            for line in data.split(separator: UInt8(ascii: "\n")) {
                guard let p = try? decoder.decode(Probe.self, from: line) else { continue }
                results += 1
                let s = Stream(from: h, kind: p.k, to: p.to)
                lastResult[s] = max(lastResult[s] ?? 0, p.t)
                if p.ok {
                    successes[s, default: []].append(p.t)
                } else {
                    failures[s, default: 0] += 1
                    failedAt[s, default: []].append(p.t)
                    failureReasons[s, default: []].append(p.e ?? "unknown")
                    failureTimes.append(p.t)
                }
            }
        }
    }

    /// The first success of `stream` at or after `time`, if any.
    func firstSuccess(_ stream: Stream, after time: Double) -> Double? {
        guard let times = successes[stream] else { return nil }
        let i = Self.firstIndex(in: times, atOrAfter: time)
        return i < times.count ? times[i] : nil
    }

    /// The first failure of `stream` after `time`, if any.
    func firstFailure(_ stream: Stream, after time: Double) -> Double? {
        guard let times = failedAt[stream] else { return nil }
        var i = Self.firstIndex(in: times, atOrAfter: time)
        while i < times.count, times[i] <= time { i += 1 }
        return i < times.count ? times[i] : nil
    }

    /// When `stream` came back to stay: its first success at or after `time` that no failure
    /// follows within `settle` seconds. `.pending` while the probes have not yet covered that
    /// window; `.no` when it has not come back yet.
    func settled(_ stream: Stream, after time: Double, settle: Double) -> Settled {
        var from = time
        while let ok = firstSuccess(stream, after: from) {
            if let bad = firstFailure(stream, after: ok), bad <= ok + settle {
                from = bad
                continue
            }
            return (lastResult[stream] ?? 0) >= ok + settle ? .at(ok) : .pending(ok)
        }
        return .no
    }

    /// What `stream`'s failures after `from` and up to `to` were: each reason with its count,
    /// the most frequent first (`3× timeout, 1× dns: no answer`).
    func reasons(_ stream: Stream, from: Double, to: Double) -> String {
        guard let times = failedAt[stream], let why = failureReasons[stream] else { return "" }
        var counts: [String: Int] = [:]
        for (t, r) in zip(times, why) where t > from && t <= to { counts[r, default: 0] += 1 }
        return counts.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.map { "\($0.value)× \($0.key)" }.joined(separator: ", ")
    }

    /// Failed probes per stream that finished after `from` and up to `to`.
    func failedStreams(from: Double, to: Double) -> [Stream: Int] {
        var out: [Stream: Int] = [:]
        for (s, times) in failedAt {
            let n = times.reduce(0) { $0 + ($1 > from && $1 <= to ? 1 : 0) }
            if n > 0 { out[s] = n }
        }
        return out
    }

    enum Settled {
        /// Back, and stayed up for the window.
        case at(Double)
        /// Back at this time; the window is not over yet.
        case pending(Double)
        case no
    }

    // Each agent probes one stream at a time, so a stream's times only grow.
    private static func firstIndex(in times: [Double], atOrAfter time: Double) -> Int {
        var lo = 0, hi = times.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if times[mid] < time { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// Failed probes that finished between `from` and `to`: what a fault did.
    func failed(from: Double, to: Double) -> Int {
        failureTimes.reduce(0) { $0 + ($1 >= from && $1 <= to ? 1 : 0) }
    }
}
