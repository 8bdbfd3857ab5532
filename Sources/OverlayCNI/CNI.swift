import FoundationEssentials

/// The CNI versions this plugin speaks (its `VERSION` answer). A result is written in the
/// version its network configuration asks for.
public let supportedCNIVersions = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]

/// A CNI error (the spec's "Error" object): printed on standard output, the plugin exits 1.
public struct CNIError: Error, Codable, Equatable, CustomStringConvertible {
    /// The spec's well-known codes.
    public enum Code: Int, Sendable {
        case incompatibleVersion = 1
        case unsupportedField = 2
        case unknownContainer = 3
        case invalidEnvironment = 4
        case ioFailure = 5
        case decodeFailure = 6
        case invalidConfig = 7
        case tryAgainLater = 11
        /// STATUS (1.1): the plugin cannot serve ADDs now.
        case notAvailable = 50
    }

    public var cniVersion: String
    public var code: Int
    public var msg: String
    public var details: String?

    /// Makes an error.
    public init(_ code: Code, _ msg: String, details: String? = nil, cniVersion: String = "1.0.0") {
        self.cniVersion = cniVersion
        self.code = code.rawValue
        self.msg = msg
        self.details = details
    }

    public var description: String { "CNI error \(code): \(msg)\(details.map { " (\($0))" } ?? "")" }
}

/// The environment a runtime calls a CNI plugin with.
public struct CNIEnvironment: Sendable, Equatable {
    public enum Command: String, Sendable { case add = "ADD", del = "DEL", check = "CHECK", version = "VERSION", status = "STATUS", gc = "GC" }

    public var command: Command
    public var containerID: String
    /// The container's network namespace (a path); DEL may come without it.
    public var netns: String?
    public var ifname: String
    /// `CNI_ARGS`: `K=V;K=V` (IP=, K8S_POD_NAME=, IgnoreUnknown=, ...).
    public var args: [String: String]

    /// Reads the environment for `command`, checking what that command needs.
    public static func parse(_ env: [String: String]) throws(CNIError) -> CNIEnvironment {
        guard let raw = env["CNI_COMMAND"], !raw.isEmpty else {
            throw CNIError(.invalidEnvironment, "CNI_COMMAND is not set: this is a CNI plugin, run by a container runtime")
        }
        guard let command = Command(rawValue: raw) else {
            throw CNIError(.invalidEnvironment, "CNI_COMMAND=\(raw.prefix(40)) is not one of ADD, DEL, CHECK, VERSION, STATUS, GC")
        }
        var e = CNIEnvironment(command: command, containerID: env["CNI_CONTAINERID"] ?? "", netns: env["CNI_NETNS"].flatMap { $0.isEmpty ? nil : $0 },
                               ifname: env["CNI_IFNAME"] ?? "", args: [:])
        if let a = env["CNI_ARGS"], !a.isEmpty {
            for pair in a.split(separator: ";") where !pair.isEmpty {
                let kv = pair.split(separator: "=", maxSplits: 1)
                guard kv.count == 2, !kv[0].isEmpty else {
                    throw CNIError(.invalidEnvironment, "CNI_ARGS: '\(pair.prefix(60))' is not KEY=VALUE")
                }
                e.args[String(kv[0])] = String(kv[1])
            }
        }
        switch command {
        case .add, .del, .check:
            guard !e.containerID.isEmpty else { throw CNIError(.invalidEnvironment, "CNI_CONTAINERID is not set") }
            guard isValidInterfaceName(e.ifname) else {
                throw CNIError(.invalidEnvironment, "CNI_IFNAME='\(e.ifname.prefix(40))' is not an interface name (1 to 15 bytes, no '/', ':' or spaces)")
            }
            if command != .del && e.netns == nil { throw CNIError(.invalidEnvironment, "CNI_NETNS is not set: \(raw) needs the container's network namespace") }
        case .version, .status, .gc:
            break
        }
        return e
    }

    /// Linux's rule for a link name.
    public static func isValidInterfaceName(_ name: String) -> Bool {
        let b = Array(name.utf8)
        return (1...15).contains(b.count) && name != "." && name != ".." && !b.contains { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: ":") || $0 <= 32 || $0 == 127 }
    }
}

/// The network configuration on standard input:
/// `{"cniVersion":"1.0.0","name":"web","type":"overlay-cni","network":"web"}` and options.
public struct CNINetworkConfig: Decodable, Sendable {
    public var cniVersion: String
    /// The runtime's name for the network.
    public var name: String
    public var type: String
    /// The overlay network to join (default: `name`). It must be attachable.
    public var network: String?
    /// overlayd's API socket (default `/run/overlayd/overlayd.sock`).
    public var socket: String?
    /// Whether the container also gets a leg on the node's gateway bridge (default true): its
    /// default route out, and the way published ports (`portmap`) reach it.
    public var gateway: Bool?
    /// Capability arguments the runtime fills in.
    public var runtimeConfig: RuntimeConfig?
    /// CNI `args` (conventions): `{"cni": {"ips": [...]}}`.
    public var args: Args?

    public struct RuntimeConfig: Decodable, Sendable {
        /// `ips` capability: the address wanted (`10.0.9.5` or `10.0.9.5/24`).
        public var ips: [String]?
        /// podman's `aliases` capability: network name -> names the container answers to there.
        public var aliases: [String: [String]]?
    }

    public struct Args: Decodable, Sendable {
        public var cni: CNIArgs?
        public struct CNIArgs: Decodable, Sendable { public var ips: [String]? }
    }

    /// The overlay network this configuration joins.
    public var overlayNetwork: String { network ?? name }

    /// Decodes and checks a configuration.
    public static func parse(_ data: Data) throws(CNIError) -> CNINetworkConfig {
        let c: CNINetworkConfig
        do { c = try JSONDecoder().decode(CNINetworkConfig.self, from: data) } catch {
            throw CNIError(.decodeFailure, "the network configuration on standard input is not valid: \(Self.describe(error))")
        }
        guard supportedCNIVersions.contains(c.cniVersion) else {
            throw CNIError(.incompatibleVersion, "cniVersion \(c.cniVersion.prefix(20)) is not supported (this plugin speaks \(supportedCNIVersions.joined(separator: ", ")))",
                           cniVersion: "1.0.0")
        }
        guard !c.overlayNetwork.isEmpty, c.overlayNetwork.utf8.count <= 128 else {
            throw CNIError(.invalidConfig, "the network configuration names no overlay network (\"network\" or \"name\")", cniVersion: c.cniVersion)
        }
        return c
    }

    /// The address asked for: `CNI_ARGS` `IP=`, then `args.cni.ips`, then the `ips` capability.
    public func requestedAddress(_ env: CNIEnvironment) -> String? {
        let raw = env.args["IP"] ?? args?.cni?.ips?.first ?? runtimeConfig?.ips?.first
        return raw.map { String($0.split(separator: "/").first ?? Substring($0)) }
    }

    /// The names the container answers to on the network: podman's aliases for it, and
    /// Kubernetes' pod name.
    public func aliases(_ env: CNIEnvironment) -> [String] {
        var names = runtimeConfig?.aliases?[name] ?? []
        if let pod = env.args["K8S_POD_NAME"], !pod.isEmpty { names.append(pod) }
        var seen = Set<String>()
        return names.filter { !$0.isEmpty && seen.insert($0).inserted }
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): "\"\(key.stringValue)\" is missing"
        case DecodingError.typeMismatch(_, let c), DecodingError.valueNotFound(_, let c):
            "\"\(c.codingPath.map(\.stringValue).joined(separator: "."))\" has the wrong type"
        case DecodingError.dataCorrupted: "not JSON"
        default: "\(error)"
        }
    }
}

/// A CNI result: the interfaces made, their addresses, the routes and the DNS.
public struct CNIResult: Codable, Sendable, Equatable {
    public struct Interface: Codable, Sendable, Equatable {
        public var name: String
        public var mac: String?
        public var sandbox: String?
        public init(name: String, mac: String?, sandbox: String?) {
            self.name = name
            self.mac = mac
            self.sandbox = sandbox
        }
    }

    public struct IPConfig: Codable, Sendable, Equatable {
        /// 0.3.x and 0.4.0 only.
        public var version: String?
        public var address: String
        public var gateway: String?
        public var interface: Int?
        public init(version: String?, address: String, gateway: String?, interface: Int?) {
            self.version = version
            self.address = address
            self.gateway = gateway
            self.interface = interface
        }
    }

    public struct Route: Codable, Sendable, Equatable {
        public var dst: String
        public var gw: String?
        public init(dst: String, gw: String?) {
            self.dst = dst
            self.gw = gw
        }
    }

    public struct DNS: Codable, Sendable, Equatable {
        public var nameservers: [String]?
        public var search: [String]?
        public init(nameservers: [String]?, search: [String]?) {
            self.nameservers = nameservers
            self.search = search
        }
    }

    public var cniVersion: String
    public var interfaces: [Interface]
    public var ips: [IPConfig]
    public var routes: [Route]
    public var dns: DNS

    /// Makes a result.
    public init(cniVersion: String, interfaces: [Interface], ips: [IPConfig], routes: [Route], dns: DNS) {
        self.cniVersion = cniVersion
        self.interfaces = interfaces
        self.ips = ips
        self.routes = routes
        self.dns = dns
    }

    /// What a container got on one overlay network (and its gateway bridge leg, if any), in
    /// the result format of `cniVersion`. The overlay interface is first, so chained plugins
    /// (`portmap`, `tuning`) act on it.
    public static func make(
        cniVersion: String, sandbox: String, overlay: (ifname: String, mac: String, address: String, prefixLength: Int, gateway: String),
        gatewayLeg: (ifname: String, mac: String, address: String, prefixLength: Int, gateway: String)?, nameserver: String
    ) -> CNIResult {
        let v = cniVersion.hasPrefix("0.") ? "4" : nil
        var interfaces = [Interface(name: overlay.ifname, mac: overlay.mac, sandbox: sandbox)]
        var ips = [IPConfig(version: v, address: "\(overlay.address)/\(overlay.prefixLength)", gateway: overlay.gateway, interface: 0)]
        var routes: [Route] = []
        if let g = gatewayLeg {
            interfaces.append(Interface(name: g.ifname, mac: g.mac, sandbox: sandbox))
            ips.append(IPConfig(version: v, address: "\(g.address)/\(g.prefixLength)", gateway: g.gateway, interface: 1))
            routes.append(Route(dst: "0.0.0.0/0", gw: g.gateway))
        }
        return CNIResult(cniVersion: cniVersion, interfaces: interfaces, ips: ips, routes: routes,
                         dns: DNS(nameservers: [nameserver], search: nil))
    }

    /// The JSON a runtime reads (no pretty-printing, keys in order).
    public func json() -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? e.encode(self)) ?? Data("{}".utf8)
    }
}

extension CNIError {
    /// The JSON a runtime reads.
    public func json() -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? e.encode(self)) ?? Data("{}".utf8)
    }
}
