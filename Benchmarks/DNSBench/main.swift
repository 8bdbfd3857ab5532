// dns-bench: the embedded DNS server against dnsmasq serving the same names from a hosts file,
// side by side in one run, both measured with dnsperf (Debian's) from inside the namespace.
//
//   swift build -c release --product dns-bench && .build/release/dns-bench [--names 1000] [--seconds 10] [--rounds 2]
//
// Prints queries/s (saturated, dnsperf -q 100) with dnsperf's average latency, and p50/p99 round
// trips of a probe client sending one query at a time, alone and beside a fixed dnsperf load
// (--rate, default 20000 q/s), for each server, and the ratio ours/dnsmasq. The servers share CPU 0
// (one at a time), dnsperf and the probe get CPU 1. Each server
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
    let out = try lab.run(["taskset", "-c", "1", "dnsperf", "-s", server, "-d", file, "-l", "\(seconds)", "-q", "100", "-T", "1", "-c", "1"], in: ns,
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

/// Sends `count` queries one at a time from a UDP socket opened inside `ns` and returns each
/// round-trip time (seconds), sorted. The probe is the same for both servers.
func probe(_ ns: NetworkNamespace, server: IPv4Address, names: Int, count: Int) throws -> [Double] {
    let fd = try ns.run { () -> Int32 in socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0) }
    guard fd >= 0 else { throw LabError("probe socket: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var tv = timeval(tv_sec: 1, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var sa = sockaddr_in()
    sa.sin_family = sa_family_t(AF_INET)
    sa.sin_port = UInt16(53).bigEndian
    sa.sin_addr.s_addr = server.value.bigEndian
    var rtts: [Double] = []
    rtts.reserveCapacity(count)
    var reply = [UInt8](repeating: 0, count: 4096)
    var rng = SystemRandomNumberGenerator()
    for i in 0..<count {
        let q = DNSMessage(id: UInt16(truncatingIfNeeded: i), recursionDesired: true,
                           questions: [DNSQuestion(name: DNSName("web-\(Int.random(in: 0..<names, using: &rng))")!, type: .a)])
        let bytes = q.encode()
        var t0 = timespec(), t1 = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t0)
        let sent = bytes.withUnsafeBytes { b in
            withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, b.baseAddress, b.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        guard sent == bytes.count else { continue }
        while true {
            let n = reply.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 { break }   // timed out: counted as lost (not in the list)
            if n >= 2 && reply[0] == UInt8(truncatingIfNeeded: i >> 8) && reply[1] == UInt8(truncatingIfNeeded: i) {
                clock_gettime(CLOCK_MONOTONIC, &t1)
                rtts.append(Double(t1.tv_sec - t0.tv_sec) + Double(t1.tv_nsec - t0.tv_nsec) / 1e9)
                break
            }
        }
    }
    return rtts.sorted()
}

/// Starts dnsperf at a fixed rate in the background (the load the probe measures under).
func backgroundLoad(_ ns: NetworkNamespace, server: String, file: String, rate: Int, seconds: Int) throws -> Process {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
    p.arguments = ["--net=\(ns.path!)", "--", "taskset", "-c", "1", "dnsperf", "-s", server, "-d", file, "-l", "\(seconds)", "-Q", "\(rate)", "-T", "1", "-c", "1"]
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    try p.run()
    return p
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    guard !sorted.isEmpty else { return .nan }
    return sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}

func ms(_ s: Double) -> String { String(format: "%.3f ms", s * 1000) }

let options = Options()
// One core each, as the issue measured dnsmasq: this process (our event loop) and dnsmasq on CPU 0,
// dnsperf on CPU 1.
if getenv("DNS_BENCH_PINNED") == nil {
    setenv("DNS_BENCH_PINNED", "1", 1)
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    let argv = ["taskset", "-c", "0", exe] + CommandLine.arguments.dropFirst()
    let cargs = argv.map { strdup($0) } + [nil]
    execvp("taskset", cargs)
    print("note: taskset not found; running unpinned")
}
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
    // SIGKILL: a child of this process inherits a signal mask that can block SIGTERM.
    kill(dnsmasq.processIdentifier, SIGKILL)
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
var idle: [String: [Double]] = [:]
for (label, ns, addr) in [("overlayd", ours, IPv4Address(127, 0, 0, 11)), ("dnsmasq", theirs, IPv4Address(127, 0, 0, 1))] {
    idle[label] = try probe(ns, server: addr, names: options.names, count: 20000)
    let load = try backgroundLoad(ns, server: addr.description, file: dir + "/queries", rate: options.rate, seconds: 30)
    usleep(500_000)
    lat[label] = try probe(ns, server: addr, names: options.names, count: 20000)
    kill(load.processIdentifier, SIGKILL)
    for _ in 0..<100 where load.isRunning { usleep(20_000) }
}
print("")
print("server      best q/s   avg (saturated)   p50 idle    p99 idle    p50 @\(options.rate)/s  p99 @\(options.rate)/s")
for label in ["overlayd", "dnsmasq"] {
    let r = best[label]!, l = lat[label]!, i = idle[label]!
    print(String(format: "%-9@ %10.0f   %@          %@   %@   %@   %@", label as NSString, r.qps, ms(r.average) as NSString,
                 ms(percentile(i, 0.5)) as NSString, ms(percentile(i, 0.99)) as NSString,
                 ms(percentile(l, 0.5)) as NSString, ms(percentile(l, 0.99)) as NSString))
}
print("(latency: 20,000 sequential queries from a probe socket in the namespace, alone and beside dnsperf -Q \(options.rate))")
print(String(format: "ratio overlayd/dnsmasq q/s: %.2f", best["overlayd"]!.qps / best["dnsmasq"]!.qps))
let counters = await server.counters()
print("overlayd counters: queries \(counters.queries), answered \(counters.answered), dropped \(counters.dropped)")
await server.shutdown()
