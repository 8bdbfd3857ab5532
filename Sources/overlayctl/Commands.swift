import ArgumentParser
import OverlayAPI
import Foundation

/// Options every command that talks to the daemon takes.
struct HostOptions: ParsableArguments {
    @Option(name: [.customShort("H"), .long], help: "The daemon's socket, unix:///path (default: $OVERLAY_HOST or unix:///run/overlayd/overlayd.sock).")
    var host: String?

    func client() throws -> DaemonClient { try DaemonClient(host: host) }
}

struct QuietFlag: ParsableArguments {
    @Flag(name: .shortAndLong, help: "Only the IDs, one per line (as the table shows them).")
    var quiet = false

    /// Prints the IDs and says so, when asked to be quiet.
    func printIDs(_ ids: [String]) -> Bool {
        guard quiet else { return false }
        for id in ids { print(id) }
        return true
    }
}


// MARK: info

struct Info: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the daemon's node, swarm membership, addresses, datapath and kernel IPsec support (JSON).")
    @OptionGroup var global: HostOptions
    func run() async throws { try printJSON(try await global.client().call(LocalAPI.info)) }
}

// MARK: version

struct Version: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show overlayctl's and the daemon's versions (Docker's `version`).")
    @OptionGroup var global: HostOptions
    @OptionGroup var format: FormatOption
    func run() async throws {
        let client = VersionInfo.current
        let server: VersionInfo
        do { server = try await global.client().call(LocalAPI.version) } catch {
            if try !format.emit([["Client": client]]) { printVersion("Client", client, kernel: false) }
            throw error
        }
        if try format.emit([["Client": client, "Server": server]]) { return }
        printVersion("Client", client, kernel: false)
        print("")
        printVersion("Server", server, kernel: true)
    }

    func printVersion(_ title: String, _ v: VersionInfo, kernel: Bool) {
        print("\(title):")
        print(" Version:           \(v.Version)")
        print(" API version:       \(v.ApiVersion)")
        print(" OS/Arch:           \(v.Os)/\(v.Arch)")
        if kernel { print(" Kernel Version:    \(v.KernelVersion)") }
    }
}

// MARK: swarm

struct Swarm: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage the swarm: init, join, join-token, leave, rotate-keys.",
        subcommands: [SwarmInit.self, SwarmJoin.self, SwarmJoinToken.self, SwarmLeave.self, SwarmRotateKeys.self])
}

struct SwarmInit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init", abstract: "Make this node a swarm manager (and create the ingress network).")
    @OptionGroup var global: HostOptions
    @Option(help: "Address other nodes reach this manager at.") var advertiseAddr: String?
    @Option(help: "Manager API listen address A:PORT (default 0.0.0.0:2377).") var listenAddr: String?
    @Option(help: "VXLAN source address (e.g. on a separate data interface).") var dataPathAddr: String?
    @Option(help: "VXLAN UDP port for the whole swarm, 1024-49151 (default 4789).") var dataPathPort: UInt16?
    @Option(help: "Global address pool CIDR (repeatable; default 10.0.0.0/8).") var defaultAddrPool: [String] = []
    @Option(help: "Subnet size taken from the pools (default 24).") var defaultAddrPoolMaskLength: Int?
    @Option(help: "Gossip key rotation period in seconds (default 43200 = 12 h).") var keyRotationSeconds: Int?
    @Option(help: "How encrypted networks' ESP travels: udp[:PORT] (ESP in UDP, RFC 3948, port 4500, with UDP GSO/GRO; the default; container MTU 1416) or esp (bare IP protocol 50, Docker's wire format; about a third of the speed; MTU 1424).")
    var espEncapsulation: String?

    func run() async throws {
        var r = SwarmInitRequest()
        r.advertiseAddr = advertiseAddr
        r.listenAddr = listenAddr
        r.dataPathAddr = dataPathAddr
        r.dataPathPort = dataPathPort
        r.defaultAddrPool = defaultAddrPool.isEmpty ? nil : defaultAddrPool
        r.defaultAddrPoolMaskLength = defaultAddrPoolMaskLength
        r.keyRotationSeconds = keyRotationSeconds
        r.espEncapsulation = espEncapsulation
        let c = try global.client()
        let info = try await c.call(LocalAPI.swarmInit, body: r)
        print("Swarm initialized: current node (\(info.nodeID)) is now a manager.")
        let t = try await c.call(LocalAPI.joinToken, query: [("role", "worker")])
        print("\nTo add a worker to this swarm, run the following command:\n\n    overlayctl swarm join --token \(t["token"] ?? "") \(t["manager"] ?? "")\n")
    }
}

struct SwarmJoin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "join", abstract: "Join a swarm as a worker: --token T MANAGER:2377.")
    @OptionGroup var global: HostOptions
    @Option(help: "The join token (overlayctl swarm join-token worker, on the manager).") var token: String
    @Option(help: "Address other nodes reach this node at.") var advertiseAddr: String?
    @Option(help: "Listen address A:PORT.") var listenAddr: String?
    @Option(help: "VXLAN source address (e.g. on a separate data interface).") var dataPathAddr: String?
    @Argument(help: "The manager, HOST:2377.") var remote: String

    func run() async throws {
        var r = SwarmJoinRequest(token: token, remoteAddr: remote)
        r.advertiseAddr = advertiseAddr
        r.listenAddr = listenAddr
        r.dataPathAddr = dataPathAddr
        let info = try await global.client().call(LocalAPI.swarmJoin, body: r)
        print("This node joined a swarm as a \(info.role ?? .worker).")
    }
}

struct SwarmJoinToken: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "join-token", abstract: "Show (or --rotate) the worker or manager join token.")
    @OptionGroup var global: HostOptions
    @Flag(help: "Replace the token's secret; the old token stops working.") var rotate = false
    @Flag(name: .shortAndLong, help: "Print the token only.") var quiet = false
    @Argument(help: "worker or manager.") var role: String

    func validate() throws {
        guard role == "worker" || role == "manager" else { throw ValidationError("unknown role '\(role)': use worker or manager") }
    }

    func run() async throws {
        let t = try await global.client().call(LocalAPI.joinToken, query: [("role", role), ("rotate", rotate ? "1" : nil)])
        if quiet { print(t["token"] ?? ""); return }
        if rotate { print("Successfully rotated \(role) join token.\n") }
        print("To add a \(role) to this swarm, run the following command:\n\n    overlayctl swarm join --token \(t["token"] ?? "") \(t["manager"] ?? "")\n")
    }
}

struct SwarmLeave: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "leave", abstract: "Leave the swarm (a manager needs --force).")
    @OptionGroup var global: HostOptions
    @Flag(name: .shortAndLong, help: "Leave even as the manager or with containers (they are removed).") var force = false
    func run() async throws {
        _ = try await global.client().call(LocalAPI.swarmLeave, query: [("force", force ? "1" : nil)])
        print("Node left the swarm.")
    }
}

struct SwarmRotateKeys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rotate-keys", abstract: "Rotate the gossip encryption keys now.")
    @OptionGroup var global: HostOptions
    func run() async throws {
        _ = try await global.client().call(LocalAPI.rotateKeys)
        print("Gossip keys rotated.")
    }
}

// MARK: node

struct Node: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List, inspect, update and remove the swarm's nodes (on the manager).",
        subcommands: [NodeList.self, NodeInspect.self, NodeUpdate.self, NodePromote.self, NodeDemote.self, NodeRemove.self])
}

struct NodeInspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Show nodes as JSON (`self` for this one).")
    @OptionGroup var global: HostOptions
    @OptionGroup var format: FormatOption
    @Argument(help: "Node IDs (or a prefix of 3 characters or more), hostnames, or self.") var names: [String]
    func validate() throws { if names.isEmpty { throw ValidationError("give at least one node") } }
    func run() async throws {
        let c = try global.client()
        var out: [NodeRecord] = []
        for name in names { out.append(try await c.call(LocalAPI.inspectNode, name)) }
        if format.template != nil { _ = try format.emit(out) } else { try printJSON(out) }
    }
}

struct NodeUpdate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "update", abstract: "Change a node (on a manager): its availability to the scheduler, its role.",
        discussion: """
            active: tasks may be placed there. pause: its tasks stay, no new ones come. drain: its tasks are shut down and \
            placed on other nodes (global ones just end), no new ones come. --role manager|worker is node promote|demote.
            """)
    @OptionGroup var global: HostOptions
    @Option(help: "active, pause or drain.") var availability: String?
    @Option(help: "manager or worker (a manager needs its overlayd started with the swarm's --cluster-store).") var role: String?
    @Argument(help: "The node: its ID, hostname or an ID prefix.") var node: String
    func validate() throws {
        if let availability, NodeAvailability(rawValue: availability) == nil {
            throw ValidationError("--availability \(availability): use active, pause or drain")
        }
        if let role, NodeRole(rawValue: role) == nil { throw ValidationError("--role \(role): use manager or worker") }
        if availability == nil && role == nil { throw ValidationError("nothing to change: give --availability or --role") }
    }
    func run() async throws {
        let n = try await global.client().call(
            LocalAPI.updateNode, node,
            body: NodeUpdateRequest(availability: availability.flatMap(NodeAvailability.init(rawValue:)), role: role.flatMap(NodeRole.init(rawValue:))))
        print(n.id)
    }
}

/// `node promote` and `node demote`: `node update --role` for each node named.
struct NodePromote: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "promote", abstract: "Make nodes managers (their overlayd must share the swarm's --cluster-store).")
    @OptionGroup var global: HostOptions
    @Argument(help: "The nodes: IDs, hostnames or ID prefixes.") var nodes: [String]
    func validate() throws { if nodes.isEmpty { throw ValidationError("name at least one node") } }
    func run() async throws { try await changeRole(of: nodes, to: .manager, global: global) }
}

struct NodeDemote: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demote", abstract: "Make managers workers (the swarm keeps at least one manager).")
    @OptionGroup var global: HostOptions
    @Argument(help: "The nodes: IDs, hostnames or ID prefixes.") var nodes: [String]
    func validate() throws { if nodes.isEmpty { throw ValidationError("name at least one node") } }
    func run() async throws { try await changeRole(of: nodes, to: .worker, global: global) }
}

/// Docker's words: "Node h4 promoted to a manager in the swarm." / "Manager h2 demoted in the swarm."
func changeRole(of nodes: [String], to role: NodeRole, global: HostOptions) async throws {
    let c = try global.client()
    for name in nodes {
        let n = try await c.call(LocalAPI.updateNode, name, body: NodeUpdateRequest(role: role))
        print(role == .manager ? "Node \(n.hostname) promoted to a manager in the swarm." : "Manager \(n.hostname) demoted in the swarm.")
    }
}

struct NodeRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm",
        abstract: "Remove nodes from the swarm (on the manager).",
        discussion: """
            A removed node's certificate is refused by the manager from then on, the addresses it \
            held are given back, its service tasks move to other nodes, and the gossip and IPsec \
            keys rotate three times, 10 s apart, so that it can read no new traffic. A node \
            that is still up is removed only with --force; it keeps running but is no longer \
            part of the swarm (run `overlayctl swarm leave --force` on it).
            """,
        aliases: ["remove"])
    @OptionGroup var global: HostOptions
    @Flag(name: .shortAndLong, help: "Remove a node even if it is not down.") var force = false
    @Argument(help: "Node IDs (or unique prefixes) or hostnames.") var nodes: [String]

    func validate() throws {
        if nodes.isEmpty { throw ValidationError("name at least one node") }
    }

    func run() async throws {
        let c = try global.client()
        var failed: [String] = []
        for node in nodes {
            do {
                _ = try await c.call(LocalAPI.removeNode, node, query: [("force", force ? "1" : nil)])
                print(node)
            } catch {
                failed.append("\(error)")
            }
        }
        guard failed.isEmpty else { throw CLIError(failed.joined(separator: "\n")) }
    }
}

struct NodeList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List nodes: ID, hostname, status, role, addresses.")
    @OptionGroup var global: HostOptions
    @OptionGroup var quiet: QuietFlag
    @OptionGroup var format: FormatOption
    @OptionGroup var filter: FilterOption
    func run() async throws {
        let c = try global.client()
        let nodes = try filter.apply(try await c.call(LocalAPI.nodes))
        if quiet.printIDs(nodes.map(\.id)) { return }
        if try format.emit(nodes) { return }
        let me = try await c.call(LocalAPI.info).nodeID
        printTable(["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS", "ADDRESS", "DATA PATH", "ENCRYPTION"], nodes.map {
            [$0.id + ($0.id == me ? " *" : ""), $0.hostname, $0.status.rawValue.capitalized,
             ($0.availability ?? .active).rawValue.capitalized, $0.role == .manager ? ($0.managerStatus ?? "Reachable") : "",
             $0.advertiseAddr.description, $0.dataPathAddr.description, $0.encryption ?? "-"]
        })
    }
}

// MARK: network

struct Network: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage overlay networks.",
        subcommands: [NetworkCreate.self, NetworkList.self, NetworkInspectCommand.self, NetworkRemove.self, NetworkPrune.self,
                      NetworkConnect.self, NetworkDisconnect.self])
}

struct NetworkPrune: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune", abstract: "Remove every network no container and no service uses (on a manager; the ingress network stays).")
    @OptionGroup var global: HostOptions
    @Flag(name: .shortAndLong, help: "Do not ask for confirmation.") var force = false
    func run() async throws {
        if !force {
            print("WARNING! This will remove all networks not used by at least one container or service.\nAre you sure you want to continue? [y/N] ", terminator: "")
            guard let answer = readLine(), ["y", "yes"].contains(answer.lowercased()) else {
                print("nothing removed")
                return
            }
        }
        let c = try global.client()
        var removed: [String] = []
        for n in try await c.call(LocalAPI.networks) where !n.Ingress {
            do {
                _ = try await c.call(LocalAPI.removeNetwork, n.Name)
                removed.append(n.Name)
            } catch let e as CLIError where e.message.contains("in use") || e.message.contains("active endpoints") {
                continue   // used: kept
            }
        }
        if !removed.isEmpty { print("Deleted Networks:\n" + removed.joined(separator: "\n")) }
    }
}

struct NetworkCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create", abstract: "Create an overlay network (on a manager).")
    @OptionGroup var global: HostOptions
    @Option(name: [.customShort("d"), .long], help: "Driver: overlay.") var driver = "overlay"
    @Flag(help: "Standalone containers may attach (overlayctl run --network).") var attachable = false
    @Flag(help: "The routing-mesh network.") var ingress = false
    @Flag(help: "No gateway bridge: no egress, no published ports.") var `internal` = false
    @Option(help: "Subnet CIDR (repeatable).") var subnet: [String] = []
    @Option(help: "Gateway for the matching --subnet (repeatable).") var gateway: [String] = []
    @Option(help: "Allocate container addresses from this sub-range (repeatable).") var ipRange: [String] = []
    @Option(help: "Reserved address name=IP (repeatable).") var auxAddress: [String] = []
    @Option(name: [.short, .customLong("opt")], help: "Driver option key=value: com.docker.network.driver.mtu=N, com.docker.network.driver.overlay.vxlanid_list=V[,V].")
    var opt: [String] = []
    @Option(help: "Label key=value (repeatable).") var label: [String] = []
    @Argument(help: "The network's name.") var name: String

    func run() async throws {
        var r = NetworkCreateRequest(name: name, driver: driver)
        r.attachable = attachable
        r.ingress = ingress
        r.internal = `internal`
        r.subnets = subnet
        r.gateways = gateway
        r.ipRanges = ipRange
        r.auxAddresses = auxAddress
        r.options = opt
        r.labels = label
        let n = try await global.client().call(LocalAPI.createNetwork, body: r)
        print(n.Id)
    }
}

struct NetworkList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List networks.")
    @OptionGroup var global: HostOptions
    @OptionGroup var quiet: QuietFlag
    @OptionGroup var format: FormatOption
    @OptionGroup var filter: FilterOption
    func run() async throws {
        let list = try filter.apply(try await global.client().call(LocalAPI.networks))
        if quiet.printIDs(list.map { String($0.Id.prefix(12)) }) { return }
        if try format.emit(list) { return }
        printTable(["NETWORK ID", "NAME", "DRIVER", "SCOPE", "SUBNET", "ATTACHABLE"], list.map {
            [String($0.Id.prefix(12)), $0.Name, $0.Driver, $0.Scope, $0.IPAM.Config.map(\.Subnet).joined(separator: ","),
             $0.Attachable ? "true" : "false"]
        })
    }
}

struct NetworkInspectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Show networks as JSON (Docker's field names).")
    @OptionGroup var global: HostOptions
    @Flag(name: .shortAndLong, help: "Also every endpoint known on the network (local and learned by gossip).") var verbose = false
    @Argument(help: "Network names or IDs.") var names: [String]

    func validate() throws { if names.isEmpty { throw ValidationError("give at least one network name") } }

    func run() async throws {
        let c = try global.client()
        var out: [NetworkInspect] = []
        for n in names {
            out.append(try await c.call(LocalAPI.inspectNetwork, n, query: [("verbose", verbose ? "1" : nil)]))
        }
        try printJSON(out)
    }
}

struct NetworkRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove networks (refused while endpoints are attached).")
    @OptionGroup var global: HostOptions
    @Argument(help: "Network names or IDs.") var names: [String]
    func validate() throws { if names.isEmpty { throw ValidationError("give at least one network name") } }
    func run() async throws {
        let c = try global.client()
        for n in names {
            _ = try await c.call(LocalAPI.removeNetwork, n)
            print(n)
        }
    }
}

struct NetworkConnect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "connect",
        abstract: "Connect a container to an attachable network, or attach another runtime's namespace (--netns, --pid) as a new container.",
        discussion: "Prints the container's address on the network.")
    @OptionGroup var global: HostOptions
    @Option(help: "Attach this namespace (e.g. /run/netns/x or /proc/PID/ns/net) as a new container named CONTAINER.") var netns: String?
    @Option(help: "Attach this process's network namespace as a new container named CONTAINER.") var pid: Int32?
    @Option(help: "The address to use.") var ip: String?
    @Option(help: "Extra DNS alias (repeatable).") var alias: [String] = []
    @Argument(help: "The network.") var network: String
    @Argument(help: "The container (with --netns or --pid: the name to give it).") var name: String

    func validate() throws {
        guard netns == nil || pid == nil else { throw ValidationError("give at most one of --netns PATH or --pid PID") }
    }

    func run() async throws {
        let c: ContainerInspect
        if netns != nil || pid != nil {
            let r = AttachRequest(name: name, network: network, namespacePath: netns, pid: pid, ip: ip, aliases: alias)
            c = try await global.client().call(LocalAPI.attach, body: r)
        } else {
            c = try await global.client().call(LocalAPI.connectContainer, name, body: NetworkConnectRequest(network: network, ip: ip, aliases: alias))
        }
        print(c.NetworkSettings.Networks[network]?.IPAddress ?? c.Id)
    }
}

struct NetworkDisconnect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "disconnect", abstract: "Disconnect a container from a network (its address there goes back to the pool).")
    @OptionGroup var global: HostOptions
    @Argument(help: "The network.") var network: String
    @Argument(help: "The container.") var name: String
    func run() async throws {
        _ = try await global.client().call(LocalAPI.disconnectContainer, name, query: [("network", network)])
        print(name)
    }
}

// MARK: containers

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a command in a new container (a network namespace) attached to networks.",
        discussion: """
            Without -d the command runs in the foreground of this terminal; the container stays until `overlayctl rm`. \
            Exit status, as Docker's: 125 when the daemon or the flags refused the run, 126 when the command cannot be \
            invoked, 127 when it is not found, else the command's own.
            """)
    @OptionGroup var global: HostOptions
    @Flag(name: .shortAndLong, help: "Run in the background (the daemon owns the process; output in its log).") var detach = false
    @Option(help: "The container's name.") var name: String?
    @Option(help: "A network to attach (repeatable; must be --attachable).") var network: [String] = []
    @Option(help: "Extra DNS alias on the networks (repeatable).") var networkAlias: [String] = []
    @Option(help: "The address on the first network.") var ip: String?
    @Option(name: [.short, .long], help: "Publish a port: 8080:80[/tcp|/udp|/sctp] (repeatable).") var publish: [String] = []
    @Argument(parsing: .captureForPassthrough, help: "-- CMD ARGS...") var command: [String] = []

    func validate() throws { try refuseUnknownOption(command) }

    func run() async throws {
        var cmd = command
        if cmd.first == "--" { cmd.removeFirst() }
        var r = ContainerCreateRequest(name: name, networks: network, command: cmd, detach: detach)
        r.aliases = networkAlias
        r.ip = ip
        r.publish = publish
        // Docker's exit codes: 125 when the daemon (or the request) failed; the command's own
        // when it ran; 126/127 when it could not be invoked or found.
        let c: ContainerInspect
        do { c = try await global.client().call(LocalAPI.runContainer, body: r) } catch let e as CLIError {
            throw CLIError(e.message, code: 125)
        }
        if detach || cmd.isEmpty {
            print(c.Id)
            return
        }
        throw execReplacing(containerArgv(c, cmd))
    }
}

/// A passthrough command that starts with an option (not `--`) is an option the command does not
/// know, given before `--`: refused, never run as the container's command.
func refuseUnknownOption(_ command: [String]) throws {
    if let first = command.first, first.hasPrefix("-"), first != "--" {
        throw ValidationError("Unknown option '\(first)' (the container's command goes after --)")
    }
}

struct Exec: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run a command inside a container's network namespace.")
    @OptionGroup var global: HostOptions
    @Argument(help: "The container.") var name: String
    @Argument(parsing: .captureForPassthrough, help: "-- CMD ARGS...") var command: [String] = []

    func validate() throws { try refuseUnknownOption(command) }

    func run() async throws {
        var cmd = command
        if cmd.first == "--" { cmd.removeFirst() }
        guard !cmd.isEmpty else { throw CLIError("exec needs a command: overlayctl exec NAME -- CMD", code: 64) }
        let c = try await global.client().call(LocalAPI.inspectContainer, name)
        throw execReplacing(containerArgv(c, cmd))
    }
}

struct PS: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ps", abstract: "List this node's containers.")
    @OptionGroup var global: HostOptions
    @OptionGroup var quiet: QuietFlag
    @OptionGroup var format: FormatOption
    @OptionGroup var filter: FilterOption
    func run() async throws {
        let list = try filter.apply(try await global.client().call(LocalAPI.containers))
        if quiet.printIDs(list.map { String($0.Id.prefix(12)) }) { return }
        if try format.emit(list) { return }
        printTable(["CONTAINER ID", "NAME", "STATUS", "NETWORKS", "COMMAND"], list.map { c in
            [String(c.Id.prefix(12)), c.Name, c.State.Status,
             c.NetworkSettings.Networks.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value.IPAddress)" }.joined(separator: ","),
             c.Config.Cmd.joined(separator: " ")]
        })
    }
}

struct Remove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove containers (their addresses go back to the pool).")
    @OptionGroup var global: HostOptions
    @Flag(name: .shortAndLong, help: "Kill the container's processes first (without it, a container with any process running is refused).") var force = false
    @Argument(help: "Container names or IDs.") var names: [String]
    func validate() throws { if names.isEmpty { throw ValidationError("give at least one container name") } }
    func run() async throws {
        let c = try global.client()
        for n in names {
            _ = try await c.call(LocalAPI.removeContainer, n, query: [("force", force ? "1" : nil)])
            print(n)
        }
    }
}

struct InspectContainer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Show containers as JSON (Docker's field names).")
    @OptionGroup var global: HostOptions
    @Argument(help: "Container names or IDs.") var names: [String]
    func validate() throws { if names.isEmpty { throw ValidationError("give at least one container name") } }
    func run() async throws {
        let c = try global.client()
        var out: [ContainerInspect] = []
        for n in names { out.append(try await c.call(LocalAPI.inspectContainer, n)) }
        try printJSON(out)
    }
}

// MARK: logs, stop, start

struct Logs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a container's output (what run -d and service tasks write).")
    @OptionGroup var global: HostOptions
    @Option(name: [.short, .long], help: "Only the last N lines.") var tail: Int?
    @Argument(help: "The container.") var name: String
    func validate() throws { if let tail, tail < 0 { throw ValidationError("--tail \(tail): use 0 or more") } }
    func run() async throws {
        let r = try await global.client().call(LocalAPI.containerLogs, name, query: [("tail", tail.map(String.init))])
        print(r["log"] ?? "", terminator: "")
    }
}

struct Stop: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stop containers' processes: SIGTERM, then SIGKILL after --time seconds; then the rest of each container's processes. They keep their networks and addresses.")
    @OptionGroup var global: HostOptions
    @Option(name: [.short, .long], help: "Seconds to wait before SIGKILL.") var time = 10
    @Argument(help: "Container names or IDs.") var names: [String]
    func validate() throws {
        if names.isEmpty { throw ValidationError("give at least one container name") }
        guard (0...3600).contains(time) else { throw ValidationError("--time \(time): use 0-3600") }
    }
    func run() async throws {
        let c = try global.client()
        for n in names {
            _ = try await c.call(LocalAPI.stopContainer, n, query: [("t", "\(time)")])
            print(n)
        }
    }
}

struct Start: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Start stopped containers' commands again (detached; their output goes on in their log).")
    @OptionGroup var global: HostOptions
    @Argument(help: "Container names or IDs.") var names: [String]
    func validate() throws { if names.isEmpty { throw ValidationError("give at least one container name") } }
    func run() async throws {
        let c = try global.client()
        for n in names {
            _ = try await c.call(LocalAPI.startContainer, n)
            print(n)
        }
    }
}
