import ArgumentParser
import ClusterControl
import Foundation
import Logging
import ServiceLifecycle
import UnixSignals

/// The reference daemon: parses flags, runs an `OverlayDaemon` in a `ServiceGroup` that stops it
/// gracefully on SIGTERM/SIGINT.
@main
struct Overlayd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "overlayd",
        abstract: "The swift-overlay daemon: overlay networks across hosts (VXLAN, gossip, IPAM), driven by overlayctl.",
        discussion: """
            Everything it creates lives under --state-dir (store, namespace handles, logs) or in this \
            network namespace, so several daemons can share a machine (one per `ip netns exec HOST`). \
            Firewall needs between nodes: 2377/tcp (manager API), 7946/tcp+udp (gossip), the data-path \
            port (4789/udp by default, VXLAN).
            """,
        version: OverlayVersion.line("overlayd"))

    @Option(name: .long, help: ArgumentHelp(
        "A JSON file of settings, e.g. {\"metrics-addr\": \"127.0.0.1:9323\"} (default: /etc/overlayd/daemon.json if it exists).",
        discussion: "Its keys are these flags' names without the dashes; a flag given here wins over the file's setting of the same name.",
        valueName: "path"))
    var configFile: String?

    @Option(name: .long, help: "Where the daemon keeps its state.")
    var stateDir = "/var/lib/overlayd"

    @Option(name: .long, help: "The local API socket (default: /run/overlayd/overlayd.sock, where overlayctl looks).")
    var socket: String?

    @Option(name: .long, help: "A group whose members may use the local API socket (mode 0660; default: root only).")
    var group: String?

    @Option(name: .long, help: "Manager API listen address A:PORT (default 0.0.0.0:2377).")
    var listenAddr: String?

    @Option(name: .long, help: "The address other nodes reach this one at (default: the first non-loopback IPv4).")
    var advertiseAddr: String?

    @Option(name: .long, help: "The VXLAN source address, e.g. on a separate data interface (default: the advertise address).")
    var dataPathAddr: String?

    @Option(name: .long, help: "The VXLAN UDP port, 1024-49151 (a swarm uses the one its manager was started with).")
    var dataPathPort: UInt16 = 4789

    @Option(name: .long, help: "The gossip port (UDP and TCP).")
    var gossipPort: UInt16 = 7946

    @Option(name: .long, help: "This node's name in `node ls` (default: the host name).")
    var hostname: String?

    @Option(name: .long, help: ArgumentHelp(
        "An upstream DNS server for names outside the cluster, IP or IP:PORT (repeatable, up to 3).",
        discussion: "Default: the nameservers in the host's /etc/resolv.conf. The embedded DNS at 127.0.0.11 in each container forwards to them from the host's namespace."))
    var dns: [String] = []

    @Option(name: .long, help: "auto or kernel: the datapath of plain overlay networks (kernel VXLAN). Encrypted networks always use the userspace ESP datapath.")
    var datapath = "auto"

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel = "info"

    @Option(name: .long, help: "Log format: text, or json (one object per line: time, level, component, msg and the IDs a line concerns).")
    var logFormat = "text"

    @Flag(name: .long, help: "Short gossip intervals (200 ms probes): for labs and tests.")
    var fastGossip = false

    @Option(name: .long, help: "Manager port: connections open at once; one more is closed as soon as it is accepted.")
    var managerMaxConnections = 2048

    @Option(name: .long, help: "Manager port: connections open at once from one address.")
    var managerMaxConnectionsPerSource = 64

    @Option(name: .long, help: "Manager port: seconds from accept to a whole request (TLS handshake, head, body); slower clients are cut off.")
    var managerRequestTimeout = 10

    @Option(name: .long, help: "Manager: the most addresses one node may hold (its containers' endpoints and load balancers).")
    var maxAddressesPerNode = 4096

    @Option(name: .long, help: "Embedded DNS: the most queries one container may have waiting at the upstream resolvers (past it, SERVFAIL).")
    var dnsForwardsPerContainer = 128

    @Option(name: .long, help: "Gossip: TCP streams served at once from one address.")
    var gossipStreamsPerSource = 8

    @Option(name: .long, help: ArgumentHelp(
        "Manager: seconds a node's reports must leave out an address before it is given back.",
        discussion: "Two reports at least this far apart must both leave it out (a node reports when something changes, and every 30 s)."))
    var orphanedAddressGrace = 60

    @Option(name: .long, help: ArgumentHelp(
        "Serve Prometheus metrics on HOST:PORT (GET /metrics, plain HTTP); off when not given.",
        discussion: "Like dockerd's metrics-addr: bind it to an address only your Prometheus reaches, e.g. 127.0.0.1:9323."))
    var metricsAddr: String?

    @Option(name: .long, help: ArgumentHelp(
        "Managers: the etcd v3 cluster they share, etcd://HOST:PORT[,HOST:PORT...]; default: this node's own store (one manager).",
        discussion: "Every manager of a swarm is started with the same store. etcd 3.4 or later (its v3 JSON gateway).",
        valueName: "url"))
    var clusterStore: String?

    @Option(name: .long, help: ArgumentHelp(
        "An option of --cluster-store (repeatable): kv.cacertfile=, kv.certfile=, kv.keyfile= (TLS, PEM files), kv.path= (key prefix).",
        valueName: "key=value"))
    var clusterStoreOpt: [String] = []

    @Option(name: .long, help: ArgumentHelp(
        "Serve Docker's network and IPAM plugin swift-overlay on this socket; off when not given.",
        discussion: "dockerd finds it at /run/docker/plugins/swift-overlay.sock: docker network create -d swift-overlay --ipam-driver swift-overlay NAME.",
        valueName: "path"))
    var dockerPluginSocket: String?

    @Option(name: .long, help: ArgumentHelp(
        "dockerd's API, which the Docker plugin asks for the names of networks and containers.", valueName: "unix:///path"))
    var dockerHost = "unix:///var/run/docker.sock"

    /// Parses the configuration file's settings, then the command line's (which win), and runs.
    /// An error about a setting from the file says which line it came from.
    static func main() async {
        let commandLine = Array(CommandLine.arguments.dropFirst())
        let file: ConfigFile?
        do { file = try ConfigFile.load(for: commandLine) } catch {
            FileHandle.standardError.write(Data("overlayd: \(error)\n".utf8))
            Foundation.exit(1)
        }
        let arguments = (file?.arguments(besides: commandLine) ?? []) + commandLine
        do {
            var command = try parseAsRoot(arguments)
            if var runnable = command as? AsyncParsableCommand { try await runnable.run() } else { try command.run() }
        } catch {
            var message = fullMessage(for: error)
            if message.hasPrefix("Error: ") { message.removeFirst("Error: ".count) }
            if exitCode(for: error) != .success, let file, let setting = file.setting(mentionedIn: message, besides: commandLine) {
                FileHandle.standardError.write(Data("overlayd: \(file.path) line \(setting.line): \(message)\n".utf8))
                Foundation.exit(exitCode(for: error).rawValue)
            }
            exit(withError: error)
        }
    }

    func validate() throws {
        guard (1024...49151).contains(dataPathPort) else {
            throw ValidationError("--data-path-port \(dataPathPort) is out of range: use 1024-49151")
        }
        guard ["auto", "kernel"].contains(datapath) else {
            throw ValidationError("--datapath \(datapath): use auto or kernel (encrypted networks always use the userspace ESP datapath)")
        }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level \(logLevel) is not a level: use trace, debug, info, notice, warning or error")
        }
        guard ["text", "json"].contains(logFormat) else { throw ValidationError("--log-format \(logFormat): use text or json") }
        if let group, getgrnam(group) == nil { throw ValidationError("--group \(group): no such group") }
        guard dns.count <= 3 else { throw ValidationError("--dns is given \(dns.count) times: at most 3 upstream servers are used") }
        if let metricsAddr, !DaemonConfiguration.isValidListenAddress(metricsAddr) {
            throw ValidationError("--metrics-addr \(metricsAddr) is not HOST:PORT (e.g. 127.0.0.1:9323)")
        }
        for d in dns where !DaemonConfiguration.isValidDNSServer(d) {
            throw ValidationError("--dns \(d) is not an IP address or IP:PORT")
        }
        if let clusterStore {
            do { _ = try DaemonConfiguration.clusterStore(clusterStore, options: clusterStoreOpt) } catch {
                throw ValidationError("\(error)")
            }
        } else if !clusterStoreOpt.isEmpty {
            throw ValidationError("--cluster-store-opt needs --cluster-store")
        }
        if !dockerHost.hasPrefix("unix:///") {
            throw ValidationError("--docker-host \(dockerHost) is not unix:///PATH (dockerd's API socket)")
        }
        if let dockerPluginSocket, !dockerPluginSocket.hasPrefix("/") || dockerPluginSocket.utf8.count > 107 {
            throw ValidationError("--docker-plugin-socket \(dockerPluginSocket) is not an absolute path of at most 107 bytes")
        }
        guard stateDir.hasPrefix("/") else { throw ValidationError("--state-dir must be an absolute path") }
        for (flag, value, range) in [
            ("--manager-max-connections", managerMaxConnections, 1...1_000_000),
            ("--manager-max-connections-per-source", managerMaxConnectionsPerSource, 1...1_000_000),
            ("--manager-request-timeout", managerRequestTimeout, 1...3600),
            ("--max-addresses-per-node", maxAddressesPerNode, 1...16_777_216),
            ("--dns-forwards-per-container", dnsForwardsPerContainer, 1...60_000),
            ("--gossip-streams-per-source", gossipStreamsPerSource, 1...10_000),
            ("--orphaned-address-grace", orphanedAddressGrace, 1...86_400),
        ] where !range.contains(value) {
            throw ValidationError("\(flag) \(value) is out of range: use \(range.lowerBound)-\(range.upperBound)")
        }
    }

    func run() async throws {
        // Two malloc arenas, not glibc's eight per core (Operations.md, "Memory").
        OverlayDaemon.limitHeapArenas()
        // Everything the daemon writes (store, keys, certificates, logs) is for root alone.
        umask(0o077)
        // Descriptors up to the hard limit: the manager port alone may hold 2,048 connections.
        var files = rlimit()
        if getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &files) == 0 && files.rlim_cur < files.rlim_max {
            files.rlim_cur = files.rlim_max
            _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &files)
        }
        var config = DaemonConfiguration(stateDirectory: stateDir, socketPath: socket)
        config.listenAddr = listenAddr
        config.advertiseAddr = advertiseAddr
        config.dataPathAddr = dataPathAddr
        config.dataPathPort = dataPathPort
        config.gossipPort = gossipPort
        config.fastGossip = fastGossip
        config.dnsServers = dns
        config.managerLimits.maxConnections = managerMaxConnections
        config.managerLimits.maxConnectionsPerSource = managerMaxConnectionsPerSource
        config.managerLimits.requestTimeout = .seconds(Int64(managerRequestTimeout))
        config.maxAddressesPerNode = maxAddressesPerNode
        config.dnsForwardsPerContainer = dnsForwardsPerContainer
        config.gossipStreamsPerSource = gossipStreamsPerSource
        config.metricsAddr = metricsAddr
        if let clusterStore {
            let (etcd, prefix) = try DaemonConfiguration.clusterStore(clusterStore, options: clusterStoreOpt)
            config.clusterStore = etcd
            config.clusterStorePrefix = prefix
        }
        config.dockerPluginSocket = dockerPluginSocket
        config.dockerHost = dockerHost
        config.socketGroup = group.flatMap { getgrnam($0)?.pointee.gr_gid }
        let socketPath = config.socketPath
        config.onReady = { SystemdNotify.send("READY=1\nSTATUS=serving on \(socketPath)") }
        config.onStopping = { SystemdNotify.send("STOPPING=1") }
        config.orphanedAddressGrace = TimeInterval(orphanedAddressGrace)
        if let hostname { config.hostname = hostname }
        let level = Logger.Level(rawValue: logLevel)!
        let json = logFormat == "json"
        LoggingSystem.bootstrap { label in
            if json { return JSONLogHandler(label: label, logLevel: level) }
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        config.logger = Logger(label: "overlayd")
        let daemon: OverlayDaemon
        do { daemon = try OverlayDaemon(configuration: config) } catch {
            FileHandle.standardError.write(Data("overlayd: \(error)\n".utf8))
            throw ExitCode(1)
        }
        // One service group: SIGTERM and SIGINT stop the daemon gracefully.
        let services = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: [daemon], gracefulShutdownSignals: [.sigterm, .sigint], logger: config.logger))
        do { try await services.run() } catch {
            FileHandle.standardError.write(Data("overlayd: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}
