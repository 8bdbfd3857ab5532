// dns-bench: the embedded DNS server against dnsmasq serving the same names from a hosts file,
// side by side in one run, both measured with dnsperf (Debian's) from inside the namespace.
//
//   swift build -c release --product dns-bench && .build/release/dns-bench [--names 1000] [--seconds 10] [--rounds 2]
//
// Prints queries/s (saturated, dnsperf -q 100), average latency, and the p50/p99 latency at a fixed
// offered load (--rate, default 20000 q/s) for each server, and the ratio ours/dnsmasq. Each server
// runs on one thread (our event loop; dnsmasq is single-threaded); dnsperf has the other core.
import Discovery
import DiscoveryServer
import Foundation
import Netlink
import OverlayModel
import OverlayTestKit

struct Options {
    var names = 1000
    var seconds = 10
    var rounds = 2
    var rate = 20000

    init() {
        var args = CommandLine.arguments.dropFirst().makeIterator()
        while let a = args.next() {
            guard let v = args.next().flatMap(Int.init), v > 0 else {
                print("usage: dns-bench [--names N] [--seconds S] [--rounds R] [--rate Q]")
                exit(64)
            }
            switch a {
            case "--names": names = v
            case "--seconds": seconds = v
            case "--rounds": rounds = v
            case "--rate": rate = v
            default:
                print("unknown option \(a)")
                exit(64)
            }
        }
    }
}

struct Result {
    var qps: Double
    var average: Double
    var lost: Int
}

/// Runs dnsperf at full speed and reads its summary.
func saturate(_ lab: Lab, _ ns: NetworkNamespace, server: String, file: String, seconds: Int) throws -> Result {
    let out = try lab.run(["dnsperf", "-s", server, "-d", file, "-l", "\(seconds)", "-q", "100", "-T", "1", "-c", "1"], in: ns,
                          timeout: Double(seconds) + 30).output
    func number(after label: String) -> Double? {
        guard let line = out.split(separator: "\n").first(where: { $0.contains(label) }) else { return nil }
        return line.split(separator: ":", maxSplits: 1).last.flatMap { Double($0.split(separator: " ").first ?? "") }
    }
    guard let qps = number(after: "Queries per second"), let avg = number(after: "Average Latency") else {
        throw LabError("dnsperf printed no summary: \(out.suffix(400))")
    }
    let lostLine = out.split(separator: "\n").first { $0.contains("Queries lost") } ?? ""
    let lost = Int(lostLine.split(separator: ":").last?.split(separator: " ").first ?? "0") ?? 0
    return Result(qps: qps, average: avg, lost: lost)
}

/// Runs dnsperf at a fixed rate with per-query output and returns the sorted latencies (seconds).
func latencies(_ lab: Lab, _ ns: NetworkNamespace, server: String, file: String, rate: Int, seconds: Int) throws -> [Double] {
    let out = try lab.run(["dnsperf", "-s", server, "-d", file, "-l", "\(seconds)", "-Q", "\(rate)", "-v", "-T", "1", "-c", "1"],
                          in: ns, timeout: Double(seconds) + 30).output
    var l: [Double] = []
    l.reserveCapacity(rate * seconds)
    for line in out.split(separator: "\n") where line.hasPrefix("> NOERROR") {
        if let v = line.split(separator: " ").last.flatMap({ Double($0) }) { l.append(v) }
    }
    return l.sorted()
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    guard !sorted.isEmpty else { return .nan }
    return sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}

func ms(_ s: Double) -> String { String(format: "%.3f ms", s * 1000) }

let options = Options()
let lab = try Lab.create(name: "ovlt-dnsbench", hosts: 1)
defer { lab.destroy() }
let ours = try lab.makeNamespace("ours")
let theirs = try lab.makeNamespace("dnsmasq")
try NetlinkSocket(namespace: ours).setUp("lo")
try NetlinkSocket(namespace: theirs).setUp("lo")

// The same names for both: endpoints web-<i> on network `bench`, addresses 10.<i/65536>.<..>.
var hosts = ""
var queries = ""
var table = NameTable()
for i in 0..<options.names {
    let ip = IPv4Address(10, UInt8((i >> 16) & 0xff), UInt8((i >> 8) & 0xff), UInt8(i & 0xff))
    table.upsert(EndpointName(id: "e\(i)", network: "bench", name: "web-\(i)", aliases: [], ipv4: ip))
    hosts += "\(ip) web-\(i)\n"
}
var rng = SystemRandomNumberGenerator()
for _ in 0..<max(10000, options.names) { queries += "web-\(Int.random(in: 0..<options.names, using: &rng)) A\n" }
let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dns-bench-\(getpid())").path
try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(atPath: dir) }
try hosts.write(toFile: dir + "/hosts", atomically: true, encoding: .utf8)
try queries.write(toFile: dir + "/queries", atomically: true, encoding: .utf8)

let server = DNSServer()
try await server.start()
let filled = table
await server.updateTableNow { $0 = filled }
try await server.serve(container: "bench", namespace: ours, client: ResolverClient(networks: ["bench"], mayForward: false))

let dnsmasq = Process()
dnsmasq.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
dnsmasq.arguments = ["--net=\(theirs.path!)", "--", "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
                     "--bind-interfaces", "--listen-address=127.0.0.1", "--addn-hosts=\(dir)/hosts", "--pid-file=", "--user=root",
                     "--group=root", "--cache-size=10000", "--log-facility=/dev/null"]
dnsmasq.standardError = FileHandle.nullDevice
try dnsmasq.run()
defer {
    // Not waitUntilExit(): it can hang in Foundation's run loop once the child is gone.
    dnsmasq.terminate()
    for _ in 0..<100 where dnsmasq.isRunning { usleep(20_000) }
}
for _ in 0..<50 {
    if (try? lab.run(["dig", "@127.0.0.1", "+short", "+time=1", "web-0"], in: theirs))?.output.contains("10.0.0.0") == true { break }
    usleep(100_000)
}
let check = try lab.run(["dig", "@127.0.0.11", "+short", "web-1"], in: ours).output
guard check.contains("10.0.0.1") else { print("our server does not answer: \(check)"); exit(1) }

print("dns-bench: \(options.names) names, dnsperf -q 100 for \(options.seconds) s x \(options.rounds) rounds, latency at \(options.rate) q/s")
var best: [String: Result] = [:]
var lat: [String: [Double]] = [:]
for round in 1...options.rounds {
    for (label, ns, addr) in [("overlayd", ours, "127.0.0.11"), ("dnsmasq", theirs, "127.0.0.1")] {
        let r = try saturate(lab, ns, server: addr, file: dir + "/queries", seconds: options.seconds)
        print(String(format: "round %d  %-9@ %9.0f q/s  avg %@  lost %d", round, label as NSString, r.qps, ms(r.average) as NSString, r.lost))
        if r.qps > best[label]?.qps ?? 0 { best[label] = r }
    }
}
for (label, ns, addr) in [("overlayd", ours, "127.0.0.11"), ("dnsmasq", theirs, "127.0.0.1")] {
    lat[label] = try latencies(lab, ns, server: addr, file: dir + "/queries", rate: options.rate, seconds: min(5, options.seconds))
}
print("")
print("server      best q/s   avg (saturated)   p50 @\(options.rate)/s   p99 @\(options.rate)/s   samples")
for label in ["overlayd", "dnsmasq"] {
    let r = best[label]!, l = lat[label]!
    print(String(format: "%-9@ %10.0f   %@          %@     %@     %d", label as NSString, r.qps, ms(r.average) as NSString,
                 ms(percentile(l, 0.5)) as NSString, ms(percentile(l, 0.99)) as NSString, l.count))
}
print(String(format: "ratio overlayd/dnsmasq q/s: %.2f", best["overlayd"]!.qps / best["dnsmasq"]!.qps))
let counters = await server.counters()
print("overlayd counters: queries \(counters.queries), answered \(counters.answered), dropped \(counters.dropped)")
await server.shutdown()
