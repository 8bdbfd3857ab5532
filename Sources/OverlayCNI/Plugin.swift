import FoundationEssentials
import OverlayAPI

/// What the plugin asks of the local overlayd (its API socket), as a protocol so the plugin's
/// logic is tested without one.
public protocol OverlayDaemonLink: Sendable {
    /// `POST /v1/attach`.
    func attach(_ request: AttachRequest) async throws -> ContainerInspect
    /// `POST /v1/detach`.
    func detach(_ request: DetachRequest) async throws -> Bool
    /// `GET /v1/containers/:name`.
    func inspect(_ name: String) async throws -> ContainerInspect
    /// `GET /_ping`: whether the daemon answers.
    func ping() async throws
}

/// The CNI plugin's commands, from the runtime's environment and configuration to a result or a
/// CNI error, without I/O of its own.
public struct CNIPlugin: Sendable {
    /// Where the embedded DNS server answers in every attached container.
    public static let nameserver = "127.0.0.11"

    public let daemon: any OverlayDaemonLink
    /// Checks that the interface is in the namespace with the address (CHECK); the executable
    /// looks with netlink.
    public let hasInterface: @Sendable (_ netns: String, _ ifname: String, _ address: String) -> Bool

    /// A plugin talking to `daemon`.
    public init(daemon: any OverlayDaemonLink, hasInterface: @escaping @Sendable (String, String, String) -> Bool) {
        self.daemon = daemon
        self.hasInterface = hasInterface
    }

    /// The `VERSION` answer.
    public static func versionAnswer(_ cniVersion: String = "1.0.0") -> Data {
        let versions = supportedCNIVersions.map { "\"\($0)\"" }.joined(separator: ",")
        return Data("{\"cniVersion\":\"\(cniVersion)\",\"supportedVersions\":[\(versions)]}".utf8)
    }

    /// The container's name in overlayd: the runtime's container ID (64 characters at most, as
    /// overlayd's names), so DEL finds what ADD made from the environment alone.
    public static func containerName(_ env: CNIEnvironment) throws(CNIError) -> String {
        let id = env.containerID
        func alphanumeric(_ b: UInt8) -> Bool {
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(b) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(b)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b)
        }
        let bytes = Array(id.utf8)
        let ok = (1...64).contains(bytes.count) && alphanumeric(bytes[0])
            && bytes.allSatisfy { alphanumeric($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") }
        guard ok else {
            throw CNIError(.invalidEnvironment, "CNI_CONTAINERID '\(id.prefix(70))' is not a container ID overlayd can keep (1 to 64 letters, digits, '_', '.', '-')")
        }
        return id
    }

    /// The largest network configuration taken on standard input (a runtime's are a few kilobytes).
    public static let maxConfigBytes = 1 << 20

    /// Runs one command: the bytes for standard output and the exit status. A configuration of
    /// more than ``maxConfigBytes`` (a reader stops at one byte more) is refused unread.
    public func run(env rawEnv: [String: String], stdin: Data) async -> (Data, Int32) {
        guard stdin.count <= Self.maxConfigBytes else {
            return (CNIError(.decodeFailure, "the network configuration on standard input is larger than 1 MiB").json(), 1)
        }
        let env: CNIEnvironment
        do { env = try CNIEnvironment.parse(rawEnv) } catch { return (error.json(), 1) }
        if env.command == .version {
            let asked = (try? JSONDecoder().decode([String: String].self, from: stdin))?["cniVersion"] ?? "1.0.0"
            return (Self.versionAnswer(supportedCNIVersions.contains(asked) ? asked : "1.0.0"), 0)
        }
        let config: CNINetworkConfig
        do { config = try CNINetworkConfig.parse(stdin) } catch { return (error.json(), 1) }
        do {
            switch env.command {
            case .add: return (try await add(env, config).json(), 0)
            case .del:
                try await del(env, config)
                return (Data(), 0)
            case .check:
                try await check(env, config)
                return (Data(), 0)
            case .status:
                try await status(config)
                return (Data(), 0)
            case .gc:
                // Garbage collection of attachments the runtime no longer knows is not done yet:
                // DEL is what frees addresses. Succeeding is what the spec asks of a plugin with
                // nothing to collect.
                return (Data(), 0)
            case .version:
                return (Data(), 0)
            }
        } catch let e as CNIError {
            var e = e
            e.cniVersion = config.cniVersion
            return (e.json(), 1)
        } catch {
            return (CNIError(.ioFailure, "\(error)", cniVersion: config.cniVersion).json(), 1)
        }
    }

    /// ADD: the container joins the overlay network on CNI_IFNAME (and, unless the configuration
    /// says `"gateway": false`, the node's gateway bridge for its default route and published
    /// ports); the result says what it got. An ADD repeated answers what the first one made.
    public func add(_ env: CNIEnvironment, _ config: CNINetworkConfig) async throws -> CNIResult {
        let name = try Self.containerName(env)
        guard let netns = env.netns else { throw CNIError(.invalidEnvironment, "CNI_NETNS is not set") }
        let request = AttachRequest(
            name: name, network: config.overlayNetwork, namespacePath: netns, pid: nil, ip: config.requestedAddress(env),
            aliases: config.aliases(env), interface: env.ifname, gateway: config.gateway ?? true)
        let inspect: ContainerInspect
        do { inspect = try await daemon.attach(request) } catch { throw Self.cniError(error, config: config, doing: "ADD") }
        return try Self.result(inspect, env: env, config: config)
    }

    /// DEL: what ADD made goes, and the address goes back. Nothing there is no error: a DEL may
    /// come twice, after overlayd restarted, for a container it never saw, or after the namespace
    /// is gone.
    public func del(_ env: CNIEnvironment, _ config: CNINetworkConfig) async throws {
        let name = try Self.containerName(env)
        do { _ = try await daemon.detach(DetachRequest(name: name, network: config.overlayNetwork, interface: env.ifname)) } catch {
            throw Self.cniError(error, config: config, doing: "DEL")
        }
    }

    /// CHECK: the container is attached to the network on CNI_IFNAME, and the interface is in
    /// the namespace with its address.
    public func check(_ env: CNIEnvironment, _ config: CNINetworkConfig) async throws {
        let name = try Self.containerName(env)
        guard let netns = env.netns else { throw CNIError(.invalidEnvironment, "CNI_NETNS is not set") }
        let inspect: ContainerInspect
        do { inspect = try await daemon.inspect(name) } catch {
            if let e = error as? APIError, e.status == 404 {
                throw CNIError(.unknownContainer, "overlayd has no container \(name.prefix(12)) on network \(config.overlayNetwork)")
            }
            throw Self.cniError(error, config: config, doing: "CHECK")
        }
        guard let ep = inspect.NetworkSettings.Networks[config.overlayNetwork], ep.Interface == env.ifname else {
            throw CNIError(.unknownContainer, "container \(name.prefix(12)) is not attached to network \(config.overlayNetwork) on \(env.ifname)")
        }
        guard inspect.NetworkSettings.SandboxKey == netns else {
            throw CNIError(.invalidEnvironment, "container \(name.prefix(12)) is attached in \(inspect.NetworkSettings.SandboxKey), not \(netns)")
        }
        guard hasInterface(netns, env.ifname, ep.IPAddress) else {
            throw CNIError(.ioFailure, "\(env.ifname) with \(ep.IPAddress)/\(ep.IPPrefixLen) is not in \(netns) any more")
        }
    }

    /// STATUS (1.1): whether overlayd answers, so ADDs can work.
    public func status(_ config: CNINetworkConfig) async throws {
        do { try await daemon.ping() } catch {
            throw CNIError(.notAvailable, "overlayd does not answer at \(config.socket ?? Self.defaultSocket): \(Self.describe(error))")
        }
    }

    /// overlayd's API socket when the configuration names none.
    public static let defaultSocket = "/run/overlayd/overlayd.sock"

    /// The result of an attach, in the configuration's version.
    static func result(_ inspect: ContainerInspect, env: CNIEnvironment, config: CNINetworkConfig) throws -> CNIResult {
        guard let ep = inspect.NetworkSettings.Networks[config.overlayNetwork] else {
            throw CNIError(.ioFailure, "overlayd attached the container but does not list network \(config.overlayNetwork) for it")
        }
        let leg = inspect.NetworkSettings.GatewayBridge.map {
            (ifname: $0.Interface, mac: $0.MacAddress, address: $0.IPAddress, prefixLength: $0.IPPrefixLen, gateway: $0.Gateway)
        }
        return CNIResult.make(
            cniVersion: config.cniVersion, sandbox: inspect.NetworkSettings.SandboxKey,
            overlay: (ifname: ep.Interface ?? env.ifname, mac: ep.MacAddress, address: ep.IPAddress, prefixLength: ep.IPPrefixLen, gateway: ep.Gateway),
            gatewayLeg: leg, nameserver: nameserver)
    }

    /// A daemon's refusal or silence as a CNI error with the spec's code.
    static func cniError(_ error: any Error, config: CNINetworkConfig, doing: String) -> CNIError {
        if let e = error as? CNIError { return e }
        if let e = error as? APIError {
            switch e.status {
            case 0:
                return CNIError(.tryAgainLater, "overlayd is not answering at \(config.socket ?? defaultSocket): \(e.message)",
                                details: "is overlayd running, and is this node in a swarm?")
            case 404 where e.message.contains("namespace"):
                return CNIError(.invalidEnvironment, "CNI_NETNS: \(e.message)")
            case 404 where e.message.contains("network"):
                return CNIError(.invalidConfig, "\(e.message)", details: "the configuration's \"network\" must name an attachable overlay network")
            case 404:
                return CNIError(.unknownContainer, e.message)
            case 400:
                return CNIError(.invalidConfig, e.message)
            case 403:
                return CNIError(.invalidConfig, e.message)
            case 409:
                return CNIError(.invalidConfig, e.message)
            case 503:
                return CNIError(.tryAgainLater, e.message)
            default:
                return CNIError(.ioFailure, "overlayd could not \(doing): \(e.message)")
            }
        }
        return CNIError(.ioFailure, describe(error))
    }

    static func describe(_ error: any Error) -> String {
        (error as? APIError)?.message ?? "\(error)"
    }
}
