// overlay-bench: the foundation's benchmarks. Each prints its numbers beside a baseline measured
// in the same run (memcpy for the codec; `ip` for netlink; a hand-built VXLAN pair and the
// underlay for the data plane), so the ratios mean something on any
// machine. Build with -c release: `make bench`, or `overlay-bench codec|ipam|netlink|dataplane|all`.
// Results and the command that produced them: Documentation/Performance.md.

import Foundation

let usage = """
    usage: overlay-bench codec|ipam|netlink|dataplane|encrypted|all [--seconds S] [--links N] [--iperf-seconds T] [--rounds R] [--rtt-blocks B]
                         [--congestion ALGO]
      --congestion ALGO (dataplane, encrypted): the iperf3 clients' TCP congestion control (iperf3 -C), e.g.
      cubic or bbr; without it the system's default, which every report names (it moves the figures a lot)
      OVERLAY_BENCH_PATHS=2,5 (dataplane, encrypted): measure only those rows (0-based); for dataplane in
      paired rounds, with per-round ratios against the first row, their quartiles and a 95% interval of the median
      encrypted always runs paired rounds: per-round ratios of each encrypted row to the plain overlay, with
      quartiles and a 95% interval of the median, and each row's CPU-seconds per Gbit
    """
var args = Array(CommandLine.arguments.dropFirst())
var seconds = 2.0
var links = 500
var iperfSeconds = 5
var rounds = 3
var rttBlocks = 40
var which: [String] = []
while !args.isEmpty {
    let a = args.removeFirst()
    switch a {
    case "--seconds":
        guard let v = args.first.flatMap(Double.init), v > 0 else { FileHandle.standardError.write(Data("\(usage)\n".utf8)); exit(2) }
        seconds = v; args.removeFirst()
    case "--links":
        guard let v = args.first.flatMap(Int.init), v > 0 else { FileHandle.standardError.write(Data("\(usage)\n".utf8)); exit(2) }
        links = v; args.removeFirst()
    case "--iperf-seconds":
        guard let v = args.first.flatMap(Int.init), v > 0 else { FileHandle.standardError.write(Data("\(usage)\n".utf8)); exit(2) }
        iperfSeconds = v; args.removeFirst()
    case "--rounds":
        guard let v = args.first.flatMap(Int.init), v > 0 else { FileHandle.standardError.write(Data("\(usage)\n".utf8)); exit(2) }
        rounds = v; args.removeFirst()
    case "--rtt-blocks":
        guard let v = args.first.flatMap(Int.init), v > 0 else { FileHandle.standardError.write(Data("\(usage)\n".utf8)); exit(2) }
        rttBlocks = v; args.removeFirst()
    case "--congestion":
        guard let v = args.first, !v.isEmpty, !v.hasPrefix("-") else { FileHandle.standardError.write(Data("\(usage)\n".utf8)); exit(2) }
        guard congestionAvailable(v) else {
            FileHandle.standardError.write(Data("overlay-bench: this kernel has no TCP congestion control '\(v)' (see /proc/sys/net/ipv4/tcp_available_congestion_control)\n".utf8))
            exit(2)
        }
        setenv("OVERLAY_BENCH_CONGESTION", v, 1)
        args.removeFirst()
    case "codec", "ipam", "netlink", "dataplane", "encrypted": which.append(a)
    case "all": which += ["codec", "ipam", "netlink", "dataplane", "encrypted"]
    case "-h", "--help": print(usage); exit(0)
    default:
        FileHandle.standardError.write(Data("overlay-bench: unknown argument '\(a)'\n\(usage)\n".utf8))
        exit(2)
    }
}
if which.isEmpty { which = ["codec", "ipam", "netlink", "dataplane", "encrypted"] }

for b in which {
    switch b {
    case "codec":
        print("== codec: VXLAN encap+decap of 1400-byte inner frames, one core")
        for line in runCodecBenchmark(seconds: seconds) { print(line) }
    case "ipam":
        print("== ipam: allocate+release of 1M addresses in a /12")
        runIPAMBenchmark()
    case "netlink":
        print("== netlink: link create/delete via Netlink vs ip")
        runNetlinkBenchmark(count: links)
    case "dataplane":
        print("== dataplane: iperf3 and ping over the underlay, a hand-built VXLAN pair and our overlay")
        do { try runDataplaneBenchmark(seconds: iperfSeconds, rounds: rounds, rttBlocks: rttBlocks) } catch {
            print("dataplane: failed: \(error)")
            exit(1)
        }
    case "encrypted":
        print("== encrypted: iperf3 over the underlay, a plain overlay and an encrypted overlay, CPU per Gbit")
        do { try runEncryptedBenchmark(seconds: iperfSeconds, rounds: rounds) } catch {
            print("encrypted: failed: \(error)")
            exit(1)
        }
    default: break
    }
    fflush(nil)
}
