import Foundation
import OverlayTestKit

/// `control-bench metrics`: what serving metrics costs the data plane. A 2-host lab whose daemons
/// serve metrics (`lab up --metrics`), an encrypted network (the userspace datapath, whose
/// counters the metrics read) and a plain one, one TCP stream (iperf3, 3 s) from a container on
/// h1 to one on h2, in paired rounds: each round runs the stream once while both daemons are
/// scraped every `interval` seconds (Prometheus's usual interval is 15 s; 0.1 s is 150 times
/// that) and once while nobody asks, in a random order. Prints the median throughput of each, the median of
/// the rounds' ratios (scraped / not) with a bootstrap 95% interval.
func metricsOverhead(ctl: String, rounds: Int, interval: Double) throws {
    let lab = "ovlb-mx"
    func sh(_ a: [String], timeout: Double = 120) throws -> String {
        let r = try Command.run(a, timeout: timeout)
        guard r.succeeded else { throw LabError("\(a.joined(separator: " ")): \(r.output)") }
        return r.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }
    func on(_ h: String, _ a: [String], timeout: Double = 120) throws -> String {
        try sh([ctl, "lab", "exec", "--name", lab, h, "--", "overlayctl"] + a, timeout: timeout)
    }
    defer { _ = try? sh([ctl, "lab", "down", "--name", lab]) }
    _ = try sh([ctl, "lab", "up", "--name", lab, "--hosts", "2", "--metrics"])
    _ = try on("h1", ["swarm", "init", "--advertise-addr", "198.18.0.1"])
    _ = try on("h2", ["swarm", "join", "--token", try on("h1", ["swarm", "join-token", "-q", "worker"]), "198.18.0.1:2377"])
    _ = try on("h1", ["network", "create", "-d", "overlay", "--attachable", "--opt", "encrypted", "--subnet", "10.62.0.0/24", "sec"])
    _ = try on("h1", ["network", "create", "-d", "overlay", "--attachable", "--subnet", "10.63.0.0/24", "plain"])
    for _ in 0..<100 where (try? on("h2", ["network", "inspect", "sec"])) == nil { usleep(100_000) }
    _ = try on("h2", ["run", "-d", "--name", "srv", "--network", "sec", "--network", "plain", "--", "iperf3", "-s"])
    _ = try on("h1", ["run", "-d", "--name", "cli", "--network", "sec", "--network", "plain", "--", "sleep", "infinity"])
    let inspect = try JSONSerialization.jsonObject(with: Data(try on("h2", ["inspect", "srv"]).utf8)) as? [[String: Any]] ?? []
    let nets = (inspect.first?["NetworkSettings"] as? [String: Any])?["Networks"] as? [String: [String: Any]] ?? [:]
    usleep(1_000_000)

    func stream(to address: String) throws -> Double {
        let out = try on("h1", ["exec", "cli", "--", "iperf3", "-c", address, "-t", "3", "-J"], timeout: 60)
        guard let json = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any],
              let end = json["end"] as? [String: Any], let sum = end["sum_received"] as? [String: Any],
              let bps = sum["bits_per_second"] as? Double else { throw LabError("iperf3 gave no result: \(out.prefix(300))") }
        return bps / 1e9
    }
    func scraping(_ body: () throws -> Double) throws -> Double {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/ip")
        // One process, one kept-open connection per daemon, as Prometheus scrapes.
        p.arguments = ["netns", "exec", "\(lab)-h1", "python3", "-c", """
            import http.client, time
            conns = [http.client.HTTPConnection(h, 9323, timeout=5) for h in ("198.18.0.1", "198.18.0.2")]
            while True:
                for c in conns:
                    c.request("GET", "/metrics")
                    c.getresponse().read()
                time.sleep(\(interval))
            """]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer {
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
        usleep(300_000)
        return try body()
    }

    print("metrics overhead: one TCP stream from h1 to h2, \(rounds) paired rounds, both daemons scraped every \(interval) s vs not")
    for network in ["sec", "plain"] {
        guard let address = nets[network]?["IPAddress"] as? String else { throw LabError("srv has no address on \(network)") }
        var on: [Double] = [], off: [Double] = [], ratios: [Double] = []
        for _ in 0..<rounds {
            var a = 0.0, b = 0.0
            if Bool.random() {
                a = try scraping { try stream(to: address) }
                b = try stream(to: address)
            } else {
                b = try stream(to: address)
                a = try scraping { try stream(to: address) }
            }
            on.append(a)
            off.append(b)
            ratios.append(a / b)
        }
        let (ratio, low, high) = medianWithInterval(ratios)
        print(String(format: "  %@ (%@): scraped median %.2f Gbit/s, not scraped median %.2f Gbit/s; ratio %.3f (95%% interval %.3f-%.3f)",
                     network, network == "sec" ? "encrypted, userspace ESP datapath" : "plain, kernel VXLAN",
                     median(on), median(off), ratio, low, high))
    }
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// The median and a percentile-bootstrap 95% interval of it (2,000 resamples).
func medianWithInterval(_ xs: [Double]) -> (Double, Double, Double) {
    var meds: [Double] = []
    for _ in 0..<2000 { meds.append(median((0..<xs.count).map { _ in xs[Int.random(in: 0..<xs.count)] })) }
    meds.sort()
    return (median(xs), meds[50], meds[1949])
}
