/// Every metric `overlayd` exports on `--metrics-addr`: its Prometheus name, the help line
/// scrapers show, and for histograms the bucket bounds. Names follow Prometheus's conventions:
/// an `overlay_` prefix, base units (`_seconds`, `_bytes`), counters ending in `_total`.
public enum MetricsCatalog {
    /// One metric family.
    public struct Family: Sendable {
        /// What one of its series counts or measures.
        public var help: String
        /// Bucket upper bounds in seconds (histograms of durations only).
        public var buckets: [Duration]?
    }

    /// Upper bounds from 100 µs to 2.5 s: answers from memory and from upstream resolvers.
    static let fast: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .microseconds(2500), .milliseconds(5),
        .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .milliseconds(2500),
    ]
    /// Upper bounds from 1 ms to 30 s: kernel programming and control-plane work.
    static let slow: [Duration] = [
        .milliseconds(1), .microseconds(2500), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5),
        .seconds(10), .seconds(30),
    ]

    /// The families by name.
    public static let families: [String: Family] = [
        // The daemon
        "overlay_build_info": .init(help: "Always 1; the version label says which overlayd this is."),
        "overlay_cluster_state_version": .init(help: "The version of the cluster state this node holds (from its manager, or its own on a manager)."),
        "overlay_reconcile_duration_seconds": .init(help: "How long one reconciliation of tasks and load balancers took.", buckets: slow),
        "overlay_reconcile_lag_seconds": .init(help: "From a change reaching this node (cluster state, a task, an endpoint) to the end of the reconciliation that applied it.", buckets: slow),
        "overlay_containers": .init(help: "Containers this node holds, by whether their process runs."),
        "overlay_heap_bytes": .init(help: "overlayd's C heap, by state (in_use: live allocations; free: free bytes inside the allocator's arenas, kept for reuse; a trim gives their whole pages back to the kernel)."),
        // Gossip
        "overlay_gossip_members": .init(help: "Gossip members this node knows (itself included), by state."),
        "overlay_gossip_packets_total": .init(help: "Gossip UDP packets, by direction."),
        "overlay_gossip_bytes_total": .init(help: "Bytes of gossip UDP packets as they went on the wire, by direction."),
        "overlay_gossip_dropped_packets_total": .init(help: "Gossip packets dropped, by reason."),
        "overlay_gossip_streams_total": .init(help: "Inbound gossip TCP streams, by result (accepted, refused over a limit, failed)."),
        "overlay_gossip_probes_total": .init(help: "SWIM probes this node started."),
        "overlay_gossip_suspicions_total": .init(help: "Members this node's own probes made suspect."),
        "overlay_gossip_refutations_total": .init(help: "Times this node refuted a suspicion or death of itself."),
        "overlay_gossip_refused_records_total": .init(help: "Endpoint records from gossip not applied, by reason (unverified: an owner or VTEP the manager does not know, or not signed by its owner; malformed: not parsable)."),
        "overlay_gossip_dropped_table_messages_total": .init(help: "Gossip table messages dropped, by reason (clock_ahead: a Lamport time too far ahead; malformed; unauthenticated: a delete, leave or bulk sync the node it names did not sign)."),
        // DNS
        "overlay_dns_queries_total": .init(help: "Queries the embedded DNS server received from containers, well formed or not."),
        "overlay_dns_answered_total": .init(help: "Queries answered from the cluster's names."),
        "overlay_dns_forwarded_total": .init(help: "Queries forwarded to the upstream resolvers."),
        "overlay_dns_truncated_total": .init(help: "UDP answers sent truncated (TC set) because they did not fit."),
        "overlay_dns_errors_total": .init(help: "Queries not answered normally, by kind."),
        "overlay_dns_answer_duration_seconds": .init(help: "From a query's arrival to its answer, by source (the name tables or an upstream).", buckets: fast),
        // Data plane (the userspace datapath of encrypted networks)
        "overlay_datapath_frames_total": .init(help: "Inner Ethernet frames the userspace datapath moved, by direction."),
        "overlay_datapath_bytes_total": .init(help: "Inner Ethernet bytes the userspace datapath moved, by direction."),
        "overlay_datapath_dropped_frames_total": .init(help: "Frames and packets the userspace datapath dropped, by reason."),
        "overlay_esp_packets_total": .init(help: "ESP packets sealed (sent) and opened (received and authenticated)."),
        "overlay_esp_bytes_total": .init(help: "Payload bytes of ESP packets sealed and opened."),
        "overlay_esp_dropped_packets_total": .init(help: "ESP packets refused, by reason."),
        "overlay_esp_cleartext_refused_packets_total": .init(help: "Cleartext VXLAN packets refused on an encrypted network, by network."),
        // Load balancing
        "overlay_lb_vips": .init(help: "Service VIPs this node's load balancers hold."),
        "overlay_lb_backends": .init(help: "Backends behind this node's service VIPs."),
        "overlay_lb_published_ports": .init(help: "Ports the routing mesh publishes on this node."),
        "overlay_lb_programming_duration_seconds": .init(help: "How long making the kernel hold one load-balancing plan took.", buckets: slow),
        // APIs
        "overlay_api_requests_total": .init(help: "API requests answered, by API (local socket, manager port), route, method and status code."),
        "overlay_api_request_duration_seconds": .init(help: "From a request's head to its answer, by API, route, method and status code.", buckets: slow),
        "overlay_api_connections": .init(help: "API connections open now, by API."),
        "overlay_api_refused_connections_total": .init(help: "API connections closed at accept for being over a limit, by API."),
        "overlay_api_malformed_requests_total": .init(help: "API connections closed because their request did not parse (a head over its limits among them), by API."),
        "overlay_api_timed_out_requests_total": .init(help: "API connections cut off because their request did not arrive in time, by API."),
        // IPAM (managers)
        "overlay_ipam_addresses_allocated": .init(help: "Addresses the manager has handed out, by network."),
        "overlay_ipam_addresses_capacity": .init(help: "Addresses a network's subnets hold (IPv4: without network, broadcast and gateway), by network."),
    ]

    /// The help line of `name` (the name itself for one not in the catalog).
    public static func help(_ name: String) -> String { families[name]?.help ?? name }
}
