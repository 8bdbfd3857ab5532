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
                if p.ok {
                    successes[s, default: []].append(p.t)
                } else {
                    failures[s, default: 0] += 1
                    failureTimes.append(p.t)
                }
            }
        }
    }

    /// The first success of `stream` at or after `time`, if any.
    func firstSuccess(_ stream: Stream, after time: Double) -> Double? {
        guard let times = successes[stream] else { return nil }
        var lo = 0, hi = times.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if times[mid] < time { lo = mid + 1 } else { hi = mid }
        }
        // Each agent probes one thing at a time, so its times only grow.
        return lo < times.count ? times[lo] : nil
    }

    /// Failed probes that finished between `from` and `to`: what a fault did.
    func failed(from: Double, to: Double) -> Int {
        failureTimes.reduce(0) { $0 + ($1 >= from && $1 <= to ? 1 : 0) }
    }
}
