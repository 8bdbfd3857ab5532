import ClusterManager
import Foundation
import Gossip
import GWBridge
import IPAM
import DiscoveryServer
import IPsecKeys
import Logging
import Netlink
import NodeAgent
import NIOCore
import NIOPosix
import OverlayCrypto
import OverlayDriver
import OverlayModel
import ServiceLifecycle
import Synchronization

/// How one `overlayd` runs: where it keeps state, where it listens, its addresses and ports.
public struct DaemonConfiguration: Sendable {
    /// Everything the daemon creates lives here (store, namespace handles, certificates, logs).
    public var stateDirectory: String
    /// The local API's Unix socket.
    public var socketPath: String
    /// The manager API's listen address, `A:2377` (default 0.0.0.0:2377).
    public var listenAddr: String?
    /// The address other nodes reach this one at (default: the first non-loopback IPv4).
    public var advertiseAddr: String?
    /// The VXLAN source address (default: the advertise address).
    public var dataPathAddr: String?
    /// The VXLAN UDP port (default 4789).
    public var dataPathPort: UInt16
    /// The gossip port, UDP and TCP (default 7946).
    public var gossipPort: UInt16
    /// The node's name in `node ls` (default: the host name).
    public var hostname: String
    /// Short gossip intervals for labs and tests (200 ms probes).
    public var fastGossip: Bool
    /// Upstream resolvers for names the embedded DNS does not own (default: the nameservers of
    /// the host's /etc/resolv.conf, up to three).
    public var dnsServers: [String]
    /// The file the default upstream resolvers and search domains are read from.
    public var hostResolvConf: String
    /// Logs.
    public var logger: Logger
    /// What the manager port (2377) allows: connections in all and per source address, the time
    /// from accept to a whole request, body sizes.
    public var managerLimits: APIServerLimits
    /// The most addresses one node may hold (its containers' endpoints and load balancers).
    public var maxAddressesPerNode: Int
    /// The most queries one container may have waiting at the upstream resolvers.
    public var dnsForwardsPerContainer: Int
    /// Gossip TCP streams served at once from one address.
    public var gossipStreamsPerSource: Int
    /// Manager: how long a node's reports must leave out an address the manager holds for it
    /// before the address is given back (two reports at least this far apart).
    public var orphanedAddressGrace: TimeInterval = 60
    /// The group the local API socket is given (mode 0660), or nil (root only).
    public var socketGroup: gid_t?
    /// Called once the daemon serves its local API (overlayd tells systemd it is ready).
    public var onReady: (@Sendable () -> Void)?
    /// Called when the daemon begins to stop.
    public var onStopping: (@Sendable () -> Void)?
    /// Where Prometheus metrics are served (`HOST:PORT`, plain HTTP `GET /metrics`); nil: not at all.
    public var metricsAddr: String?
    /// Managers: the etcd cluster they share (`--cluster-store`); nil: this node's SQLite file,
    /// a single manager.
    public var clusterStore: EtcdConfiguration?
    /// The prefix of the swarm's keys in etcd (one swarm per prefix).
    public var clusterStorePrefix = "/swift-overlay/swarm/"
    /// Where Docker's network and IPAM plugin is served (`/run/docker/plugins/swift-overlay.sock`
    /// for dockerd's plugin discovery); nil: not at all.
    public var dockerPluginSocket: String?
    /// dockerd's API (`unix:///PATH`): the plugin asks it the names of Docker networks.
    public var dockerHost = "unix:///var/run/docker.sock"

    /// Makes a configuration with Docker's defaults.
    public init(stateDirectory: String, socketPath: String? = nil) {
        self.stateDirectory = stateDirectory
        self.socketPath = socketPath ?? "/run/overlayd/overlayd.sock"
        dataPathPort = 4789
        gossipPort = 7946
        var buf = [CChar](repeating: 0, count: 256)
        gethostname(&buf, 255)
        hostname = String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        fastGossip = false
        dnsServers = []
        hostResolvConf = "/etc/resolv.conf"
        logger = Logger(label: "overlayd")
        managerLimits = APIServerLimits()
        maxAddressesPerNode = 4096
        dnsForwardsPerContainer = 128
        gossipStreamsPerSource = 8
    }
}

/// What the daemon remembers about its swarm membership.
struct SwarmSettings: Codable, Sendable {
    var clusterID: String
    var nodeID: String
    var role: NodeRole
    var advertiseAddr: String
    var listenHost: String
    var listenPort: Int
    var dataPathAddr: String
    var dataPathPort: UInt16
    var gossipPort: UInt16
    /// Workers: the manager's `host:port`.
    var managerAddr: String
    /// Gossip addresses to join at start.
    var gossipSeeds: [String]
    /// How encrypted networks' ESP travels (`esp` when nil).
    var espEncapsulation: String?
}

/// The reference daemon: the local API on a Unix socket, and once in a swarm the overlay driver,
/// gossip, and (on a manager) the cluster store and the manager API on 2377.
public actor OverlayDaemon {
    public let configuration: DaemonConfiguration
    /// This node's own state (and, without `--cluster-store`, the manager's shared state too).
    let store: SQLiteClusterStore
    /// Where managers keep what they share: `store`, or etcd (Daemon+Shared.swift).
    let sharedStore: any SharedStore
    /// Managers: the shared state at one store revision, kept current by a watch.
    var view = StoreSnapshot(revision: 0)
    /// Managers on etcd: the term (the leadership key's create revision) while this manager
    /// leads; its leader-only writes are fenced with it.
    var leaderTerm: UInt64?
    /// The node ID of the manager that leads, as last known.
    var leaderID: String?
    /// Ends the running role's loops (a promotion or demotion starts the other role's).
    var roleChange: AsyncStream<Void>.Continuation?
    /// The role change this node last failed to make (not tried again until the state changes).
    var failedRoleChange: (role: NodeRole, version: UInt64)?
    /// The role change asked for, made once the running role's loops have ended.
    var pendingRole: (role: NodeRole, version: UInt64)?
    /// Whether a shared write is under way here, and the writers waiting for their turn.
    var writing = false
    var writeQueue: [CheckedContinuation<Void, Never>] = []
    /// Writers waiting for the view to reach a revision (after a refused write).
    var viewWaiters: [UUID: (seq: UInt64, continuation: CheckedContinuation<Void, Never>)] = [:]
    let group: MultiThreadedEventLoopGroup
    /// The thread this actor runs on (its executor). The daemon's own work blocks in the kernel
    /// (netlink, nftables, namespaces, SQLite), and it does so here, never on one of Swift's
    /// cooperative threads that every other task in the process shares.
    let isolation: MultiThreadedEventLoopGroup
    /// Threads for blocking kernel work done beside the actor's (a container's gateway veth while
    /// its overlay endpoints wait for addresses).
    let blockingWork: NIOThreadPool

    public nonisolated var unownedExecutor: UnownedSerialExecutor {
        isolation.next().executor.asUnownedSerialExecutor()
    }
    var logger: Logger { configuration.logger }
    var localServer: APIServer?
    var managerServer: APIServer?
    var swarm: SwarmSettings?
    var agent: OverlayAgent?
    /// The embedded DNS server (127.0.0.11 in every container), once in a swarm.
    var dns: DNSServer?
    /// The encrypted networks' keyring in force here (memory only, never stored).
    var ipsecKeys: IPsecKeyring?
    var manager: ManagerState?
    /// The host's gateway bridge (egress, published ports), once in a swarm or made by hand.
    var gateway: GatewayBridge?
    /// The cluster state as last received (workers) or as held (managers).
    var cluster = ClusterState(version: 0, networks: [], nodes: [], gossipKeys: [])
    /// The gossip keys (base64) in this node's keyring now.
    var installedKeys: [String] = []
    /// Memberships to run. The daemon's service task (`run()`) takes them one after another, so
    /// a membership's loops (`runMembershipLoops`) are children of the service group's task tree,
    /// never unstructured tasks; they end together, awaited, when the membership does.
    let memberships: AsyncStream<Membership>
    let membershipStarts: AsyncStream<Membership>.Continuation
    /// The running membership's end: finishing `end` cancels its loops; `finished` ends when they
    /// have all returned.
    var membershipEnd: (end: AsyncStream<Void>.Continuation, finished: AsyncStream<Void>)?
    /// Asks the membership's reconcile loop for a run soon. Any thread may yield; kicks that
    /// arrive while a run is pending make one run.
    var reconcileKick: AsyncStream<Void>.Continuation?
    var stopped: CheckedContinuation<Void, Never>?
    var isStopped = false
    let localNodeID: String
    /// Node ID -> data-path address, as the manager says: what endpoint records are checked against.
    let nodeVTEPs = NodeVTEPs()
    /// Node ID -> the key its endpoint records are signed with, as the manager says.
    let nodeSigningKeys = NodeSigningKeys()
    /// The membership's loops running now.
    let loopCount = LoopCount()
    /// Each gossip member's boot ID (its metadata), by node ID.
    var memberBoots: [String: [UInt8]] = [:]
    /// When each member's boot was last heard (a counter): of two node IDs at one data-path
    /// address (a host that left and joined again as a new node), the later one's boot keys it.
    var memberBootHeard: [String: UInt64] = [:]
    var memberBootClock: UInt64 = 0
    /// Connections to the manager kept open between calls (workers).
    let managerConnections = APIConnectionPool()
    /// The TLS client those connections were made with (this node's certificate), loaded once.
    var managerTLS: ClusterTLS.Client?
    /// Long polls of `GET /v1/state` waiting for the next change.
    var stateWaiters: [UUID: CheckedContinuation<Void, Never>] = [:]
    /// `service logs`: the manager's requests to nodes and the answers so far; a node's newest
    /// request taken.
    var logBroker = LogBroker()
    /// Names of containers being created (not in the store yet).
    var creatingNames: Set<String> = []
    /// What this node last reported to the manager.
    var reporting = ReportState()
    /// The tasks this node runs (their containers are in the store).
    var taskRuntime = TaskRuntime()
    /// VIP load balancers and the routing mesh on this node (the membership's; nil outside one).
    var loadBalancers: LoadBalancerReconciler?
    /// Every endpoint record gossip delivered (the load balancers' backends).
    let endpointIndex = EndpointIndex()
    /// Whether the kernel can do ESP with AES-GCM (probed at start). Encrypted networks use the
    /// userspace ESP datapath either way; this says whether kernel xfrm would have been possible.
    var kernelIPsec: KernelIPsecSupport?
    /// The metrics (nil unless `metricsAddr` is set) and their listener.
    let metrics: DaemonMetrics?
    var metricsServer: APIServer?
    /// When the encrypted networks' cleartext-drop counters were last read (an nftables listing).
    var cleartextReadAt = ContinuousClock.now - .seconds(60)
    /// Docker's plugin: its server and the network names being looked up.
    var dockerPlugin = DockerPluginRuntime()

    /// Opens the store and prepares; `start()` listens.
    public init(configuration: DaemonConfiguration) throws {
        self.configuration = configuration
        // The state directory holds the cluster's secrets (join tokens, gossip keys, the CA and
        // node keys): no one but root may look inside, even where it already existed.
        try FileManager.default.createDirectory(
            atPath: configuration.stateDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        guard chmod(configuration.stateDirectory, 0o700) == 0 else {
            throw StoreError("cannot make \(configuration.stateDirectory) private (chmod 0700): \(String(cString: strerror(errno)))")
        }
        store = try SQLiteClusterStore(path: configuration.stateDirectory + "/overlayd.db")
        if let etcd = configuration.clusterStore {
            sharedStore = try EtcdStore(etcd, clusterID: "", prefix: configuration.clusterStorePrefix)
        } else {
            sharedStore = store
        }
        metrics = configuration.metricsAddr == nil ? nil : DaemonMetrics()
        group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        isolation = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        blockingWork = NIOThreadPool(numberOfThreads: 2)
        blockingWork.start()
        (memberships, membershipStarts) = AsyncStream.makeStream(of: Membership.self)
        if let id = try store.get(.setting, "node-id", as: String.self) {
            localNodeID = id
        } else {
            localNodeID = NodeID.random().text
            try store.put(.setting, "node-id", localNodeID)
        }
    }

    /// Starts the local API and, if the node was in a swarm, rejoins it (its loops run in
    /// `run()`'s task group, which must be taking memberships already).
    func start() async throws {
        let probe = KernelIPsec.probe()
        kernelIPsec = probe
        switch probe {
        case .available:
            log(.encryption).info("kernel IPsec (xfrm ESP with rfc4106(gcm(aes))): available, not used: encrypted networks use the userspace ESP datapath (the same wire format)")
        case .unavailable(let why):
            log(.encryption).info("kernel IPsec (xfrm ESP with rfc4106(gcm(aes))): unavailable (\(why)); encrypted networks use the userspace ESP datapath")
        }
        if configuration.clusterStore != nil {
            // An etcd that cannot be reached, or refuses this node, is one line at start, not a
            // failure at the first write.
            do { try await loadView() } catch let e as APIError { throw StoreError(e.message) }
        }
        let socketDir = (configuration.socketPath as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: socketDir, withIntermediateDirectories: true)
        if let s = try store.get(.setting, "swarm", as: SwarmSettings.self) {
            do { try await resume(s) } catch {
                log(.swarm).error("cannot resume the swarm membership: \(error)")
                throw error
            }
        }
        localServer = try await APIServer.start(.unix(configuration.socketPath), socketGroup: configuration.socketGroup, group: group,
                                                logger: log(.api), router: localRouter())
        log(.api).info("overlayd listening on \(configuration.socketPath)")
        try await startMetrics()
        try await startDockerPlugin()
    }

    /// Waits until `stop()`.
    func wait() async {
        if isStopped { return }
        await withCheckedContinuation { c in stopped = c }
    }

    /// Stops serving; containers, sandboxes and the store stay for the next start.
    func stop() async {
        guard !isStopped else { return }
        isStopped = true
        configuration.onStopping?()
        let start = DispatchTime.now().uptimeNanoseconds
        var steps: [String] = []
        func mark(_ what: String) { steps.append("\(what) \((DispatchTime.now().uptimeNanoseconds - start) / 1_000_000) ms") }
        wakeStateWaiters()
        await stopDockerPlugin()
        await localServer?.close()
        mark("local API")
        await managerServer?.close()
        mark("manager API")
        await metricsServer?.close()
        managerConnections.closeAll()
        await endMembershipLoops()
        membershipStarts.finish()
        mark("loops")
        if let agent { await agent.shutdownKeepingEndpoints() }
        mark("gossip")
        await dns?.shutdown()
        dns = nil
        mark("dns")
        if let etcd = sharedStore as? EtcdStore { try? await etcd.shutdown() }
        try? await group.shutdownGracefully()
        try? await blockingWork.shutdownGracefully()
        mark("event loops")
        log(.api).info("overlayd stopped: \(steps.joined(separator: ", "))")
        stopped?.resume()
        stopped = nil
    }

    // MARK: Local API (the routes are in Daemon+Routes.swift)

    func info() -> DaemonInfo {
        DaemonInfo(
            nodeID: swarm?.nodeID ?? localNodeID, hostname: configuration.hostname, swarm: swarm == nil ? "inactive" : "active",
            role: swarm?.role, clusterID: swarm?.clusterID, managerAddr: swarm?.managerAddr, advertiseAddr: swarm?.advertiseAddr,
            dataPathAddr: swarm?.dataPathAddr, dataPathPort: swarm?.dataPathPort ?? configuration.dataPathPort,
            gossipPort: configuration.gossipPort, stateDir: configuration.stateDirectory, pid: getpid(),
            datapath: agent.map { $0.driver.datapath.name } ?? "none",
            espEncapsulation: agent.map { "\($0.driver.userspaceDatapath.espEncapsulation)" },
            kernelIPsec: kernelIPsec.map { "\($0)" },
            refusedEndpointRecords: agent?.refusedRecords, malformedEndpointRecords: agent?.malformedRecords,
            rejectedClockMessages: agent?.db.rejectedClockMessages, malformedTableMessages: agent?.db.malformedMessages,
            unauthenticatedTableMessages: agent?.db.unauthenticatedMessages, membershipLoops: loopCount.current,
            version: OverlayVersion.version)
    }

    func requireSwarm() throws -> (SwarmSettings, OverlayAgent) {
        guard let swarm, let agent else {
            throw APIError(503, "this node is not part of a swarm: run `overlayctl swarm init` or `overlayctl swarm join`")
        }
        return (swarm, agent)
    }

    func requireManager() throws -> ManagerState {
        guard swarm != nil else {
            throw APIError(503, "this node is not part of a swarm: run `overlayctl swarm init` or `overlayctl swarm join`")
        }
        guard let manager else {
            throw APIError(403, "this node is not a swarm manager: run this on a manager node")
        }
        return manager
    }
}

extension OverlayDaemon: Service {
    /// Runs the daemon as a service of a `ServiceGroup` (`overlayd` has one): starts, serves until
    /// the group shuts down gracefully (on SIGTERM or SIGINT) or the task is cancelled, then stops.
    /// Everything the daemon runs in the background is a child of this task: the swarm
    /// membership's loops (one membership after another: init, leave, join) and the shutdown
    /// watch.
    public nonisolated func run() async throws {
        var failure: (any Error)?
        await withDiscardingTaskGroup { group in
            // Taking memberships before `start()`: a node that was in a swarm rejoins it there,
            // and its loops must run while its containers are restored.
            group.addTask {
                for await membership in self.memberships { await membership.run() }
            }
            do { try await self.start() } catch {
                failure = error
                await self.stop()
                return
            }
            self.configuration.onReady?()
            group.addTask { await Self.trimHeapPeriodically() }
            group.addTask {
                // A graceful shutdown, or the group cancelled: either way, stop.
                try? await gracefulShutdown()
                await self.stop()
            }
            await self.wait()
            group.cancelAll()
        }
        if let failure { throw failure }
    }
}

/// One swarm membership's loops, run by the daemon's service task until the membership ends.
struct Membership: Sendable {
    let loops: @Sendable () async -> Void
    let ended: AsyncStream<Void>
    let finished: AsyncStream<Void>.Continuation

    /// Runs the loops until `ended` finishes, then cancels them and waits for them.
    func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await loops() }
            for await _ in ended {}
            group.cancelAll()
        }
        finished.finish()
    }
}

// MARK: Address helpers

enum Addr {
    /// Splits `A:port`, `[v6]:port` or `A` (with a default port).
    static func split(_ s: String, defaultPort: Int) throws -> (String, Int) {
        var host = s, port = defaultPort
        if s.hasPrefix("[") {
            guard let close = s.firstIndex(of: "]") else { throw APIError(400, "'\(s)' is not an address: missing ']'") }
            host = String(s[s.index(after: s.startIndex)..<close])
            let rest = s[s.index(after: close)...]
            if rest.hasPrefix(":") {
                guard let p = Int(rest.dropFirst()) else { throw APIError(400, "'\(s)' has a bad port") }
                port = p
            }
        } else if s.filter({ $0 == ":" }).count == 1, let colon = s.firstIndex(of: ":") {
            host = String(s[..<colon])
            guard let p = Int(s[s.index(after: colon)...]) else { throw APIError(400, "'\(s)' has a bad port") }
            port = p
        }
        guard (1...65535).contains(port) else { throw APIError(400, "port \(port) in '\(s)' is out of range 1-65535") }
        guard host == "0.0.0.0" || IPAddress(host) != nil else {
            throw APIError(400, "'\(host)' is not an IP address (give an address, not a name or interface)")
        }
        return (host, port)
    }

    /// The first non-loopback IPv4 address of this network namespace.
    static func firstIPv4() -> String? {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return nil }
        defer { freeifaddrs(list) }
        var p: UnsafeMutablePointer<ifaddrs>? = first
        while let cur = p {
            if let sa = cur.pointee.ifa_addr, sa.pointee.sa_family == sa_family_t(AF_INET),
               (cur.pointee.ifa_flags & UInt32(IFF_LOOPBACK)) == 0 {
                var sin = sockaddr_in()
                memcpy(&sin, sa, MemoryLayout<sockaddr_in>.size)
                let v = UInt32(bigEndian: sin.sin_addr.s_addr)
                return "\(v >> 24).\((v >> 16) & 255).\((v >> 8) & 255).\(v & 255)"
            }
            p = cur.pointee.ifa_next
        }
        return nil
    }

    /// Whether `ip` is one of this namespace's addresses.
    static func isLocal(_ ip: String) -> Bool {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return false }
        defer { freeifaddrs(list) }
        var p: UnsafeMutablePointer<ifaddrs>? = first
        while let cur = p {
            if let sa = cur.pointee.ifa_addr {
                var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
                let len = sa.pointee.sa_family == sa_family_t(AF_INET6) ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size
                if sa.pointee.sa_family == sa_family_t(AF_INET) || sa.pointee.sa_family == sa_family_t(AF_INET6),
                   getnameinfo(sa, socklen_t(len), &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST) == 0,
                   String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).split(separator: "%").first.map(String.init) == ip {
                    return true
                }
            }
            p = cur.pointee.ifa_next
        }
        return false
    }
}
