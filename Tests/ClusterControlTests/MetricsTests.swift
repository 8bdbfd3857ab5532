@testable import ClusterControl
import Testing

/// The daemon's metrics without a daemon: library totals mirrored into counters, the catalog's
/// names and help lines in what is rendered.
struct MetricsTests {
    func render(_ m: DaemonMetrics) async -> String { String(decoding: await m.scrape {}, as: UTF8.self) }

    @Test func aMirroredTotalMovesByItsDeltaAndCountsOnAfterItsSourceStartsAgain() async {
        let m = DaemonMetrics()
        m.total("overlay_dns_queries_total", 5)
        m.total("overlay_dns_queries_total", 8)
        #expect(await render(m).contains("\noverlay_dns_queries_total 8\n"))
        // A new membership's DNS server counts from zero: the exported counter never goes back.
        m.total("overlay_dns_queries_total", 3)
        #expect(await render(m).contains("\noverlay_dns_queries_total 11\n"))
        m.total("overlay_gossip_packets_total", ["direction": "sent"], 2)
        m.gauge("overlay_gossip_members", ["state": "alive"], 3)
        m.record("overlay_reconcile_duration_seconds", .milliseconds(3))
        let text = await render(m)
        #expect(text.contains("overlay_gossip_packets_total{direction=\"sent\"} 2"))
        #expect(text.contains("overlay_gossip_members{state=\"alive\"} 3"))
        #expect(text.contains("overlay_reconcile_duration_seconds_bucket{le=\"0.005\"} 1"))
        #expect(text.contains("overlay_build_info{version=\"\(OverlayVersion.version)\"} 1"))
    }

    @Test func everyFamilyFollowsPrometheusNamingAndHasHelp() {
        for (name, family) in MetricsCatalog.families {
            #expect(name.hasPrefix("overlay_") && name == name.lowercased() && !name.contains("__"), "\(name)")
            #expect(!family.help.isEmpty && family.help.hasSuffix("."), "\(name)")
            if family.buckets != nil { #expect(name.hasSuffix("_seconds"), "\(name)") }
        }
        #expect("espUnknownSPI".snakeCased == "esp_unknown_spi")
        #expect("nonESPMarker".snakeCased == "non_esp_marker")
        #expect("tapWriteFailed".snakeCased == "tap_write_failed")
    }
}
