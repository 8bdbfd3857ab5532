import ClusterManager
import Foundation
import Gossip
import HTTPTypes
import Hummingbird
import OverlayDriver
import OverlayModel

extension DaemonConfiguration {
    /// Whether `text` is an address to listen on: an IP address with a port (`A:PORT`, `[v6]:PORT`).
    public static func isValidListenAddress(_ text: String) -> Bool {
        guard text.contains(":"), let (host, port) = try? Addr.split(text, defaultPort: 0), IPAddress(host) != nil else { return false }
        return (1...65535).contains(port)
    }
}

extension OverlayDaemon {
    /// Listens on `--metrics-addr` (plain HTTP, `GET /metrics` in Prometheus's text format), when set.
    func startMetrics() async throws {
        guard let address = configuration.metricsAddr, metrics != nil else { return }
        let (host, port) = try Addr.split(address, defaultPort: 9323)
        var limits = APIServerLimits(maxConnections: 64, maxConnectionsPerSource: 16, requestTimeout: .seconds(10), idleTimeout: .seconds(90))
        limits.maxBody = 0
        limits.maxUnauthenticatedBody = 0
        do {
            metricsServer = try await APIServer.start(.tcp(host: host, port: port), limits: limits, group: group, logger: log(.metrics), router: metricsRouter())
        } catch {
            throw APIError(500, "cannot serve metrics on \(address): \(error)")
        }
        log(.metrics).info("metrics on http://\(Addr.join(host, metricsServer?.port ?? port))/metrics")
    }

    nonisolated func metricsRouter() -> Router<APIContext> {
        let router = Router(context: APIContext.self)
        router.add(middleware: APIErrorMiddleware())
        router.get("/metrics") { _, _ in
            let body = await self.metrics?.scrape { await self.refreshMetrics() } ?? []
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            headers[.contentLength] = "\(body.count)"
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
        }
        return router
    }

    /// Mirrors what the libraries count themselves (gossip, the embedded DNS, the datapath, ESP)
    /// and what the daemon holds (containers, connections, addresses) into the metrics.
    func refreshMetrics() async {
        guard let m = metrics else { return }
        m.gauge("overlay_cluster_state_version", cluster.version)
        let heap = ProcessHeap.usage()
        m.gauge("overlay_heap_bytes", ["state": "in_use"], heap.inUse)
        m.gauge("overlay_heap_bytes", ["state": "free"], heap.heldFree)
        let containers = (try? store.all(.container, as: ContainerRecord.self)) ?? []
        let running = containers.filter { isRunning($0) }.count
        m.gauge("overlay_containers", ["state": "running"], running)
        m.gauge("overlay_containers", ["state": "exited"], containers.count - running)
        for (api, server) in [("local", localServer), ("manager", managerServer), ("docker", dockerPlugin.server)] {
            guard let server else { continue }
            m.gauge("overlay_api_connections", ["api": api], server.openConnections)
            m.total("overlay_api_refused_connections_total", ["api": api], server.refusedConnections)
            m.total("overlay_api_timed_out_requests_total", ["api": api], server.timedOutRequests)
            m.total("overlay_api_malformed_requests_total", ["api": api], server.malformedRequests)
        }
        if let agent {
            await refreshGossipMetrics(m, agent.db.node)
            m.total("overlay_gossip_refused_records_total", ["reason": "unverified"], agent.refusedRecords)
            m.total("overlay_gossip_refused_records_total", ["reason": "malformed"], agent.malformedRecords)
            m.total("overlay_gossip_dropped_table_messages_total", ["reason": "clock_ahead"], agent.db.rejectedClockMessages)
            m.total("overlay_gossip_dropped_table_messages_total", ["reason": "malformed"], agent.db.malformedMessages)
            m.total("overlay_gossip_dropped_table_messages_total", ["reason": "unauthenticated"], agent.db.unauthenticatedMessages)
            refreshDatapathMetrics(m, agent.driver)
        }
        if let dns {
            let c = await dns.counters()
            m.total("overlay_dns_queries_total", c.queries)
            m.total("overlay_dns_answered_total", c.answered)
            m.total("overlay_dns_forwarded_total", c.forwarded)
            m.total("overlay_dns_truncated_total", c.truncated)
            m.total("overlay_dns_errors_total", ["kind": "refused"], c.refused)
            m.total("overlay_dns_errors_total", ["kind": "formerr"], c.formErr)
            m.total("overlay_dns_errors_total", ["kind": "dropped"], c.dropped)
            m.total("overlay_dns_errors_total", ["kind": "over_share"], c.overShare)
            m.total("overlay_dns_errors_total", ["kind": "tcp_refused"], c.tcpRefused)
            if let f = await dns.forwarderCounters() {
                m.total("overlay_dns_errors_total", ["kind": "upstream_timeout"], f.timedOut)
                m.total("overlay_dns_errors_total", ["kind": "servfail"], f.servfails)
            }
        }
        if manager != nil { refreshIPAMMetrics(m) }
    }

    private func refreshGossipMetrics(_ m: DaemonMetrics, _ node: GossipNode) async {
        if let members = try? await node.members() {
            for state in [MemberState.alive, .suspect, .dead, .left] {
                m.gauge("overlay_gossip_members", ["state": "\(state)"], members.filter { $0.state == state }.count)
            }
        }
        guard let c = try? await node.counters() else { return }
        m.total("overlay_gossip_packets_total", ["direction": "received"], c.packetsReceived)
        m.total("overlay_gossip_packets_total", ["direction": "sent"], c.packetsSent)
        m.total("overlay_gossip_bytes_total", ["direction": "received"], c.bytesReceived)
        m.total("overlay_gossip_bytes_total", ["direction": "sent"], c.bytesSent)
        m.total("overlay_gossip_dropped_packets_total", ["reason": "malformed"], c.malformedPackets)
        m.total("overlay_gossip_dropped_packets_total", ["reason": "unauthenticated"], c.unauthenticated)
        m.total("overlay_gossip_dropped_packets_total", ["reason": "oversized"], c.oversized)
        m.total("overlay_gossip_dropped_packets_total", ["reason": "send_queue_full"], c.sendDrops)
        m.total("overlay_gossip_streams_total", ["result": "accepted"], c.streamsAccepted)
        m.total("overlay_gossip_streams_total", ["result": "refused"], c.streamsRefused)
        m.total("overlay_gossip_streams_total", ["result": "failed"], c.streamErrors)
        m.total("overlay_gossip_probes_total", c.swim.probes)
        m.total("overlay_gossip_suspicions_total", c.swim.suspicionsRaised)
        m.total("overlay_gossip_refutations_total", c.swim.refutations)
    }

    private func refreshDatapathMetrics(_ m: DaemonMetrics, _ driver: OverlayDriver) {
        let c = driver.userspaceDatapath.counters
        m.total("overlay_datapath_frames_total", ["direction": "tx"], c.txFrames)
        m.total("overlay_datapath_frames_total", ["direction": "rx"], c.rxFrames)
        m.total("overlay_datapath_bytes_total", ["direction": "tx"], c.txBytes)
        m.total("overlay_datapath_bytes_total", ["direction": "rx"], c.rxBytes)
        for reason in UserspaceDropReason.allCases {
            m.total("overlay_datapath_dropped_frames_total", ["reason": "\(reason)".snakeCased], c.dropped(reason))
        }
        let e = c.esp
        m.total("overlay_esp_packets_total", ["direction": "sealed"], e.sealedPackets)
        m.total("overlay_esp_packets_total", ["direction": "opened"], e.openedPackets)
        m.total("overlay_esp_bytes_total", ["direction": "sealed"], e.sealedBytes)
        m.total("overlay_esp_bytes_total", ["direction": "opened"], e.openedBytes)
        for (reason, n) in [("unknown_spi", e.unknownSPI), ("too_short", e.tooShort), ("auth_failed", e.authFailed),
                            ("replayed", e.replayed), ("outside_window", e.outsideWindow), ("bad_padding", e.badPadding),
                            ("sequence_exhausted", e.sequenceExhausted)] {
            m.total("overlay_esp_dropped_packets_total", ["reason": reason], n)
        }
        // The nftables counter is read by listing its table: at most every 5 s, whatever the
        // scrape rate (a scrape between two readings repeats the last one).
        guard ContinuousClock.now - cleartextReadAt >= .seconds(5) else { return }
        cleartextReadAt = .now
        for n in driver.networks() where n.encrypted {
            if let dropped = try? driver.cleartextDrops(network: n.name) {
                m.total("overlay_esp_cleartext_refused_packets_total", ["network": n.name], dropped)
            }
        }
    }

    /// Managers: per network, the addresses handed out and what its subnets hold.
    private func refreshIPAMMetrics(_ m: DaemonMetrics) {
        let allocations = (try? view.all(.allocation, as: AllocationRecord.self)) ?? []
        let byNetwork = Dictionary(grouping: allocations, by: \.networkID).mapValues(\.count)
        for n in cluster.networks {
            m.gauge("overlay_ipam_addresses_allocated", ["network": n.name], byNetwork[n.id] ?? 0)
            let capacity = n.subnets.reduce(UInt64(0)) { total, s in
                let hostBits = (s.subnet.family == .v4 ? 32 : 128) - s.subnet.prefixLength
                guard hostBits < 63 else { return UInt64.max }
                let size = UInt64(1) << UInt64(hostBits)
                return total &+ (s.subnet.family == .v4 ? (size > 3 ? size - 3 : 0) : size - 1)
            }
            m.gauge("overlay_ipam_addresses_capacity", ["network": n.name], capacity)
        }
    }
}
