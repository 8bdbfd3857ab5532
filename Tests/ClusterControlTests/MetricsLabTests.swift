import Foundation
import Glibc
import OverlayTestKit
import Testing

/// `overlayd --metrics-addr`: a real Prometheus scrapes every host of a lab, `promtool check
/// metrics` accepts what each serves, and the counters move by what was done (pings, DNS
/// queries, an encrypted transfer, API calls).
@Suite(.serialized) struct MetricsLabTests {
    @Test func prometheusScrapesEveryHostAndTheCountersMoveByWhatWasDone() async throws {
        guard getuid() == 0 else {
            Issue.record("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
            return
        }
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/prometheus"),
              FileManager.default.isExecutableFile(atPath: "/usr/bin/promtool") else {
            Issue.record("Debian's prometheus (prometheus, promtool) is not installed: `make deps` installs it")
            return
        }
        let bin = CLILab.binDirectory()
        // A bad address is refused with the flag's name, before anything starts.
        let bad = try Command.run([bin + "/overlayd", "--metrics-addr", "nowhere", "--state-dir", "/tmp/ovlt-metrics-bad"])
        #expect(!bad.succeeded && bad.output.contains("--metrics-addr nowhere is not HOST:PORT"), "\(bad.output)")

        let lab = try CLILab.up("ovlt-met", hosts: 3, extra: ["--metrics"])
        defer { lab.down() }
        _ = try lab.must("h1", ["swarm", "init", "--advertise-addr", "198.18.0.1"])
        let token = try lab.must("h1", ["swarm", "join-token", "-q", "worker"])
        for h in ["h2", "h3"] { _ = try lab.must(h, ["swarm", "join", "--token", token, "198.18.0.1:2377"]) }
        _ = try lab.must("h1", ["network", "create", "-d", "overlay", "--attachable", "--opt", "encrypted", "--subnet", "10.61.0.0/24", "sec"])
        _ = try lab.must("h1", ["run", "-d", "--name", "c1", "--network", "sec", "--", "sleep", "infinity"])
        _ = try lab.must("h2", ["run", "-d", "--name", "c2", "--network", "sec", "--", "sleep", "infinity"])
        _ = try lab.must("h2", ["run", "-d", "--name", "srv", "--network", "sec", "--", "python3", "-c", Self.sink])
        let c2 = try lab.ip("h2", "c2", network: "sec")
        let srv = try lab.ip("h2", "srv", network: "sec")
        // The overlay works before anything is counted (first packets, ARP, keys).
        let warm = try lab.on("h1", ["exec", "c1", "--", "ping", "-n", "-c", "3", "-W", "5", c2], timeout: 30)
        #expect(warm.succeeded, "\(warm.output)")

        // What each host serves passes promtool's lint.
        let targets = (1...3).map { "198.18.0.\($0):9323" }
        for t in targets {
            let r = try lab.sh("h1", ["sh", "-c", "curl -sf http://\(t)/metrics | promtool check metrics"])
            #expect(r.succeeded, "\(t): \(r.output)")
        }

        // Prometheus 2.42 in h1's namespace, scraping every host each second.
        let dir = "/tmp/ovlt-met-prometheus"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir + "/data", withIntermediateDirectories: true)
        try """
            global:
              scrape_interval: 1s
              scrape_timeout: 1s
            scrape_configs:
              - job_name: overlayd
                static_configs:
                  - targets: [\(targets.map { "'\($0)'" }.joined(separator: ", "))]
            """.write(toFile: dir + "/prometheus.yml", atomically: true, encoding: .utf8)
        let prometheus = Process()
        prometheus.executableURL = URL(fileURLWithPath: "/usr/bin/ip")
        prometheus.arguments = ["netns", "exec", "\(lab.name)-h1", "/usr/bin/prometheus", "--config.file=\(dir)/prometheus.yml",
                                "--storage.tsdb.path=\(dir)/data", "--web.listen-address=127.0.0.1:9090", "--log.level=warn"]
        prometheus.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        prometheus.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try prometheus.run()
        defer {
            prometheus.terminate()
            prometheus.waitUntilExit()
            try? FileManager.default.removeItem(atPath: dir)
        }
        let prom = Prometheus(lab: lab)

        // Every target up.
        var up: [String: Double] = [:]
        for _ in 0..<60 {
            up = (try? prom.query("up")) ?? [:]
            if up.count == 3 && up.values.allSatisfy({ $0 == 1 }) { break }
            try await Task.sleep(for: .milliseconds(500))
        }
        #expect(up == Dictionary(uniqueKeysWithValues: targets.map { ($0, 1.0) }), "targets: \(up)")
        #expect(try prom.query("overlay_gossip_members{state=\"alive\"}") == Dictionary(uniqueKeysWithValues: targets.map { ($0, 3.0) }))

        let metrics = [
            "sealed": "overlay_esp_packets_total{direction=\"sealed\"}", "opened": "overlay_esp_packets_total{direction=\"opened\"}",
            "sealedBytes": "overlay_esp_bytes_total{direction=\"sealed\"}", "openedBytes": "overlay_esp_bytes_total{direction=\"opened\"}",
            "queries": "overlay_dns_queries_total", "answered": "overlay_dns_answered_total",
            "tableAnswers": "overlay_dns_answer_duration_seconds_count{source=\"table\"}",
            "info": "overlay_api_requests_total{api=\"local\",route=\"/v1/info\",code=\"200\"}",
            "cleartext": "overlay_esp_cleartext_refused_packets_total{network=\"sec\"}",
            "authFailed": "overlay_esp_dropped_packets_total{reason=\"auth_failed\"}",
            "espDropped": "sum by (instance) (overlay_esp_dropped_packets_total)",
        ]
        func snapshot() async throws -> [String: [String: Double]] {
            try await prom.waitForScrape()
            return try metrics.mapValues { try prom.query($0) }
        }
        func moved(_ a: [String: [String: Double]], _ b: [String: [String: Double]], _ key: String, _ host: Int) -> Double {
            (b[key]?["198.18.0.\(host):9323"] ?? 0) - (a[key]?["198.18.0.\(host):9323"] ?? 0)
        }

        // 20 pings from c1 (h1) to c2 (h2) over the encrypted network, by address: every packet
        // one host sealed the other opened, and both ways carried the 20.
        var before = try await snapshot()
        let ping = try lab.on("h1", ["exec", "c1", "--", "ping", "-n", "-q", "-c", "20", "-i", "0.05", "-W", "5", c2], timeout: 30)
        #expect(ping.succeeded && ping.output.contains("20 received"), "\(ping.output)")
        var after = try await snapshot()
        for (from, to) in [(1, 2), (2, 1)] {
            #expect(moved(before, after, "sealed", from) >= 20 && moved(before, after, "opened", to) >= 20,
                    "h\(from) sealed \(moved(before, after, "sealed", from)), h\(to) opened \(moved(before, after, "opened", to))")
        }
        // Across the lab, every packet sealed was opened or counted as refused. Each host is
        // scraped at its own instant, so a frame the containers send by themselves (IPv6
        // neighbour discovery, an ARP refresh) may be sealed before one host's scrape and opened
        // after another's: at most a couple in flight, never the pings.
        let all = { (key: String) in (1...3).reduce(0.0) { $0 + moved(before, after, key, $1) } }
        print("metrics lab, 20 pings: sealed \((1...3).map { moved(before, after, "sealed", $0) }), opened \((1...3).map { moved(before, after, "opened", $0) }), refused \((1...3).map { moved(before, after, "espDropped", $0) })")
        #expect(abs(all("sealed") - all("opened") - all("espDropped")) <= 2,
                "sealed \(all("sealed")), opened \(all("opened")), refused \(all("espDropped"))")
        #expect(all("openedBytes") <= all("sealedBytes") + 2 * 200, "sealed \(all("sealedBytes")) B, opened \(all("openedBytes")) B")
        #expect(moved(before, after, "queries", 1) == 0, "pings by address ask no names")

        // 10 DNS queries from c1: h1's embedded DNS counts 10 queries, 10 answers from its names,
        // 10 answer times; no other host's moves.
        before = after
        for _ in 0..<10 {
            let r = try lab.on("h1", ["exec", "c1", "--", "dig", "+short", "+tries=1", "c2"])
            #expect(r.output.trimmingCharacters(in: .whitespacesAndNewlines) == c2, "\(r.output)")
        }
        after = try await snapshot()
        for key in ["queries", "answered", "tableAnswers"] {
            #expect(moved(before, after, key, 1) == 10, "\(key): \(moved(before, after, key, 1))")
            #expect(moved(before, after, key, 2) == 0 && moved(before, after, key, 3) == 0)
        }

        // An encrypted transfer of 8 MiB from c1 to srv (h2): h2 opened at least that many
        // payload bytes, h1 sealed at least what h2 opened; nothing in cleartext, nothing forged.
        before = after
        let transfer = try lab.on("h1", ["exec", "c1", "--", "python3", "-c", Self.source, srv], timeout: 60)
        #expect(transfer.succeeded && transfer.output.trimmingCharacters(in: .whitespacesAndNewlines) == "\(8 << 20)", "\(transfer.output)")
        after = try await snapshot()
        let opened = moved(before, after, "openedBytes", 2), sealed = moved(before, after, "sealedBytes", 1)
        #expect(opened >= 8 * 1_048_576 && sealed >= opened, "h1 sealed \(sealed) B, h2 opened \(opened) B")
        for h in 1...3 {
            #expect((after["cleartext"]?["198.18.0.\(h):9323"] ?? 0) == 0, "h\(h) refused cleartext")
            #expect(after["authFailed"]?["198.18.0.\(h):9323"] == 0)
        }

        // Three `overlayctl info` calls on h2: its local API counted three.
        before = after
        for _ in 0..<3 { _ = try lab.must("h2", ["info"]) }
        after = try await snapshot()
        #expect(moved(before, after, "info", 2) == 3, "\(moved(before, after, "info", 2))")
        #expect(moved(before, after, "info", 1) == 0)
    }
}

extension MetricsLabTests {
    /// A TCP sink on port 5001: reads a connection to its end, answers how many bytes came.
    static let sink = """
        import socket
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("", 5001))
        s.listen()
        while True:
            c, _ = s.accept()
            n = 0
            while True:
                b = c.recv(1 << 16)
                if not b:
                    break
                n += len(b)
            c.sendall(str(n).encode())
            c.close()
        """
    /// Sends 8 MiB to the sink at argv[1] and prints what the sink says it received.
    static let source = """
        import socket, sys
        c = socket.create_connection((sys.argv[1], 5001), timeout=30)
        c.sendall(b"x" * (8 << 20))
        c.shutdown(socket.SHUT_WR)
        print(c.recv(100).decode())
        """
}

/// Prometheus's HTTP API, asked from the lab host it runs in.
struct Prometheus {
    let lab: CLILab

    /// An instant query: the value of each series, by its `instance` label.
    func query(_ expr: String) throws -> [String: Double] {
        let r = try lab.sh("h1", ["curl", "-sf", "-m", "5", "http://127.0.0.1:9090/api/v1/query", "--data-urlencode", "query=\(expr)"])
        guard r.succeeded, let json = try JSONSerialization.jsonObject(with: Data(r.output.utf8)) as? [String: Any],
              let data = json["data"] as? [String: Any], let result = data["result"] as? [[String: Any]] else {
            throw LabError("prometheus query \(expr): \(r.output)")
        }
        var out: [String: Double] = [:]
        for series in result {
            guard let labels = series["metric"] as? [String: String], let value = series["value"] as? [Any],
                  value.count == 2, let text = value[1] as? String, let v = Double(text) else { continue }
            out[labels["instance"] ?? "?"] = v
        }
        return out
    }

    /// Waits until every target has been scraped once starting half a second from now (what was
    /// just done has reached every counter by then).
    func waitForScrape() async throws {
        let start = Date().timeIntervalSince1970
        for _ in 0..<40 {
            let stamps = try query("timestamp(up)")
            if stamps.count == 3 && stamps.values.allSatisfy({ $0 > start + 0.5 }) { return }
            try await Task.sleep(for: .milliseconds(250))
        }
        throw LabError("prometheus did not scrape every target within 10 s")
    }
}
