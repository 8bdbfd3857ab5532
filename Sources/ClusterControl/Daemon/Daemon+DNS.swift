import ClusterManager
import Discovery
import DiscoveryServer
import Foundation
import Netlink
import NodeAgent
import OverlayModel

extension DaemonConfiguration {
    /// Whether `text` names an upstream DNS server: an IP address, or IP:PORT (`[v6]:PORT`).
    public static func isValidDNSServer(_ text: String) -> Bool {
        guard let (host, port) = try? Addr.split(text, defaultPort: 53), IPAddress(host) != nil else { return false }
        return (1...65535).contains(port)
    }
}

extension OverlayDaemon {
    var resolvConfDirectory: String { configuration.stateDirectory + "/containers/resolv" }

    func resolvConfPath(_ c: ContainerRecord) -> String { resolvConfDirectory + "/\(c.id).conf" }

    /// The host's resolv.conf as the daemon sees it (empty when unreadable).
    var hostResolvConf: ResolvConf {
        ResolvConf(parsing: (try? String(contentsOfFile: configuration.hostResolvConf, encoding: .utf8)) ?? "")
    }

    /// Starts the embedded DNS server and feeds it the agent's endpoint records.
    func startDNS(agent: OverlayAgent) async {
        var config = DNSServer.Configuration()
        config.maxInFlightPerContainer = configuration.dnsForwardsPerContainer
        config.metricsFactory = metrics?.factory
        // The embedded server's own address is no upstream: a host whose resolv.conf lists it (for
        // dockerd, which forwards to it) would send queries round in a loop.
        let servers = (configuration.dnsServers.isEmpty ? hostResolvConf.nameservers : configuration.dnsServers)
            .filter { $0 != config.address.description }
        config.upstreams = servers.prefix(3).compactMap { s in
            guard let (host, port) = try? Addr.split(s, defaultPort: 53), let ip = IPAddress(host) else {
                log(.dns).warning("ignoring upstream DNS server '\(s)': not an address")
                return nil
            }
            return Upstream(address: ip, port: UInt16(port))
        }
        if config.upstreams.isEmpty {
            log(.dns).notice("no upstream DNS servers (none given with --dns, none in \(configuration.hostResolvConf)): only cluster names resolve")
        }
        let index = endpointIndex
        // An endpoint change: the load balancers follow at the membership's next reconcile.
        let kick = reconcileKick
        let changed: @Sendable () -> Void = { kick?.yield() }
        let server = DNSServer(configuration: config, logger: log(.dns))
        do { try await server.start() } catch {
            log(.dns).error("the embedded DNS server could not start (containers get no name resolution): \(error)")
            agent.setEndpointObserver { event in
                index.apply(event)
                changed()
            }
            return
        }
        dns = server
        agent.setEndpointObserver { event in
            index.apply(event)
            changed()
            server.updateTable { table in table.apply(event) }
        }
        await dockerServeDNS()
    }

    /// How a container asks: its networks in attach order; it may forward unless all are internal.
    func resolverClient(_ c: ContainerRecord) -> ResolverClient {
        let internalFlags = c.networks.map { (try? network(named: $0.networkName))?.internal ?? false }
        return ResolverClient(networks: c.networks.map(\.networkName), mayForward: internalFlags.contains(false))
    }

    /// Serves 127.0.0.11 in the container's namespace and writes its resolv.conf. A container we did
    /// not create (network connect) gets the server if the address is free there, and no error if not.
    func serveDNS(_ c: ContainerRecord) async throws {
        guard let dns, !c.networks.isEmpty else { return }
        if await dns.servedContainers().contains(c.id) {
            dns.updateClient(container: c.id, client: resolverClient(c))
            return
        }
        let ns: NetworkNamespace
        do { ns = try NetworkNamespace.open(path: c.namespacePath) } catch {
            throw APIError(500, "cannot open \(c.name)'s namespace for DNS: \(error)")
        }
        do {
            try await dns.serve(container: c.id, namespace: ns, client: resolverClient(c))
        } catch {
            if c.ownsNamespace { throw APIError(500, "cannot start the embedded DNS server in \(c.name): \(error)") }
            log(.dns, ["container": "\(c.name)"]).notice("no embedded DNS in \(c.name) (another runtime's namespace): \(error)")
            return
        }
        if c.ownsNamespace {
            try? FileManager.default.createDirectory(atPath: resolvConfDirectory, withIntermediateDirectories: true)
            let text = ResolvConf.forContainer(search: hostResolvConf.search, address: dns.configuration.address.description)
            try? text.write(toFile: resolvConfPath(c), atomically: true, encoding: .utf8)
            // Bind-mounted on the container's /etc/resolv.conf: its non-root processes read it.
            chmod(resolvConfPath(c), 0o644)
        }
    }

    /// Stops serving a container and removes its resolv.conf.
    func stopDNS(_ c: ContainerRecord) async {
        await dns?.stop(container: c.id)
        try? FileManager.default.removeItem(atPath: resolvConfPath(c))
    }

    /// The resolv.conf the container's processes get, if it has one.
    func containerResolvConf(_ c: ContainerRecord) -> String? {
        let p = resolvConfPath(c)
        return FileManager.default.fileExists(atPath: p) ? p : nil
    }
}
