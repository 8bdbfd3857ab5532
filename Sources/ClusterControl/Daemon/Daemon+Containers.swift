import ClusterManager
import Foundation
import GWBridge
import Netlink
import NodeAgent
import OverlayDriver
import OverlayModel

extension OverlayDaemon {
    var containerHandleDirectory: String { configuration.stateDirectory + "/containers/netns" }
    var logDirectory: String { configuration.stateDirectory + "/containers/logs" }

    func containerRecord(_ name: String) throws -> ContainerRecord {
        let all = try store.all(.container, as: ContainerRecord.self)
        if let c = all.first(where: { $0.name == name }) ?? all.first(where: { $0.id == name })
            ?? all.first(where: { name.count >= 3 && $0.id.hasPrefix(name) }) {
            return c
        }
        throw APIError(404, "no such container: \(name)")
    }

    /// Test hook (`OVERLAYD_TEST_CRASH_AFTER_ALLOCATE=1`): the daemon dies as if killed right
    /// after the manager gave it an address, before any container holds it.
    static let crashAfterAllocate = ProcessInfo.processInfo.environment["OVERLAYD_TEST_CRASH_AFTER_ALLOCATE"] == "1"

    static func validContainerName(_ name: String) -> Bool {
        guard let f = name.unicodeScalars.first, CharacterSet.alphanumerics.contains(f), name.count <= 64 else { return false }
        return name.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) || "_.-".unicodeScalars.contains($0) }
    }

    func runContainer(_ req: ContainerCreateRequest, task: TaskRecord? = nil) async throws -> ContainerInspect {
        let (s, _) = try requireSwarm()
        let id = EndpointID.random().text
        let name = req.name ?? "c-\(id.prefix(12))"
        guard Self.validContainerName(name) else {
            throw APIError(400, "invalid container name '\(name)': use letters, digits, '_', '.', '-' (starting with a letter or digit)")
        }
        // The name is taken from here on: a second `run` with it, while this one waits for its
        // addresses, is refused instead of racing past the check.
        if try creatingNames.contains(name) || store.all(.container, as: ContainerRecord.self).contains(where: { $0.name == name }) {
            throw APIError(409, "the container name \(name) is already in use: remove it or pick another name")
        }
        creatingNames.insert(name)
        defer { creatingNames.remove(name) }
        if req.detach && req.command.isEmpty {
            throw APIError(400, "-d needs a command to run in the background")
        }
        let wanted = try PublishedPorts.mappings(req.publish, to: IPv4Address(0, 0, 0, 0))   // validates -p before anything is made
        if task == nil { try checkPortsFreeOfServices(wanted) }
        var networks: [NetworkRecord] = []
        for n in req.networks {
            let net = try network(named: n)
            guard task != nil || !net.ingress else { throw APIError(403, "network \(net.name) is the ingress network: containers cannot attach to it") }
            guard task != nil || net.attachable else {
                throw APIError(403, "network \(net.name) is not attachable: standalone containers need a network created with --attachable")
            }
            guard !networks.contains(where: { $0.id == net.id }) else { throw APIError(400, "network \(net.name) is given twice") }
            networks.append(net)
        }
        if req.ip != nil && networks.isEmpty { throw APIError(400, "--ip needs a --network") }
        let external = networks.contains { !$0.internal }
        if !req.publish.isEmpty && !external {
            throw APIError(400, "-p needs a network that is not --internal: published ports go through the gateway bridge")
        }
        let handle = "c-\(id.prefix(12))"
        var timings: [(String, UInt64)] = [("start", DispatchTime.now().uptimeNanoseconds)]
        func mark(_ what: String) { timings.append((what, DispatchTime.now().uptimeNanoseconds)) }
        let ns: NetworkNamespace
        do {
            ns = try NetworkNamespace.create(named: handle, handleDirectory: containerHandleDirectory)
            try NetlinkSocket(namespace: ns).setUp("lo")
        } catch {
            try? NetworkNamespace.delete(named: handle, handleDirectory: containerHandleDirectory)
            throw APIError(500, "cannot create the container's network namespace: \(error)")
        }
        mark("namespace")
        var record = ContainerRecord(
            id: id, name: name, created: Date(), namespacePath: containerHandleDirectory + "/" + handle, ownsNamespace: true,
            command: req.command, detached: req.detach, pid: nil, logPath: nil, networks: [], publish: req.publish,
            gatewayAddress: nil, taskID: task?.id, serviceName: task?.serviceName)
        // The gateway bridge's veth is made on another thread while the overlay endpoints wait for
        // their addresses from the manager: the two touch different devices and routes.
        let gatewayAttach = external ? startGatewayAttach(ns, interface: "eth\(networks.count)") : nil
        do {
            do {
                for (i, n) in networks.enumerated() {
                    record.networks.append(try await connect(record, to: n, interface: "eth\(i)", ip: i == 0 ? req.ip : nil,
                                                             aliases: req.aliases, nodeID: s.nodeID, service: task?.serviceName))
                }
            } catch {
                if let a = try? await gatewayAttach?.value { try? gateway?.detach(address: a.address) }
                throw error
            }
            mark("networks")
            if let gatewayAttach { try await finishGatewayAttach(&record, gatewayAttach) }
            mark("gateway")
            try await serveDNS(record)
            mark("dns")
            if req.detach { try spawn(&record) }
            mark("process")
            try store.write([try .set(.container, name, record)] + record.networks.map { .delete(.addressIntent, $0.endpointID) })
            mark("store")
            let steps = zip(timings.dropFirst(), timings).map { "\($0.0.0) \(($0.0.1 - $0.1.1) / 1_000_000) ms" }
            log(.containers, ["container": "\(name)"]).info("container \(name) created: \(steps.joined(separator: ", "))")
        } catch {
            await stopDNS(record)
            await disconnectAll(record)
            if let pid = record.pid { kill(pid, SIGKILL) }
            killContainerProcesses(record)
            try? NetworkNamespace.delete(named: handle, handleDirectory: containerHandleDirectory)
            if let e = error as? APIError { throw e }
            throw APIError(500, "\(error)")
        }
        // The manager knows before `run` returns (a service created next sees the port taken).
        if task == nil && !req.publish.isEmpty { await reportStandalonePorts() }
        return try inspectContainer(name)
    }

    /// Allocates an address and attaches the container's namespace to a network.
    func connect(_ c: ContainerRecord, to n: NetworkRecord, interface: String, ip: String?, aliases: [String],
                 nodeID: String, service: String? = nil) async throws -> ContainerNetwork {
        let (_, agent) = try requireSwarm()
        let endpointID = EndpointID.random().text
        // Written down before the manager is asked, so that an address given to a daemon that dies
        // before the container is recorded is given back when it starts again.
        try store.put(.addressIntent, endpointID, AddressIntent(network: n.name, endpointID: endpointID))
        let a: AllocateReply
        do {
            a = try await requestAddress(AllocateRequest(network: n.name, endpointID: endpointID, nodeID: nodeID, address: ip, name: c.name))
        } catch {
            // Refused: nothing was allocated. No answer (or a failure on the manager's side): it
            // may have allocated, so the release is kept and retried until the manager hears it.
            let status = (error as? APIError)?.status ?? 0
            var changes: [StoreChange] = [.delete(.addressIntent, endpointID)]
            if status == 0 || status >= 500 {
                changes.append(try .set(.pendingRelease, endpointID, ReleaseRequest(network: n.name, address: "", endpointID: endpointID)))
            }
            try? store.write(changes)
            throw error
        }
        try? store.put(.addressIntent, endpointID, AddressIntent(network: n.name, endpointID: endpointID, address: a.address.description))
        if Self.crashAfterAllocate { _exit(137) }
        do {
            let ep = try agent.attach(
                EndpointSpec(id: endpointID, network: n.name, namespace: .path(c.namespacePath), address: a.address,
                             interfaceName: interface),
                name: c.name, aliases: aliases, service: service)
            return ContainerNetwork(
                networkID: n.id, networkName: n.name, endpointID: endpointID, address: a.address, prefixLength: ep.prefixLength,
                gateway: ep.gateway, mac: ep.mac.description, aliases: aliases)
        } catch {
            await giveBack(ReleaseRequest(network: n.name, address: a.address.description, endpointID: endpointID))
            if let e = error as? OverlayDriverError { throw APIError(e.code == .namespaceNotFound ? 404 : 500, e.message) }
            throw error
        }
    }

    func disconnectAll(_ c: ContainerRecord) async {
        if c.routedFromHost == true { for cn in c.networks { unrouteFromHost(cn.address, of: c) } }
        detachGateway(c)
        for cn in c.networks {
            if let agent { try? agent.detach(endpoint: cn.endpointID) }
            await giveBack(ReleaseRequest(network: cn.networkName, address: cn.address.description, endpointID: cn.endpointID))
        }
    }

    /// Starts the container's command (its output to its log: a new one, or `appendingLog` the
    /// one it had).
    func spawn(_ record: inout ContainerRecord, appendingLog: Bool = false) throws {
        try FileManager.default.createDirectory(atPath: logDirectory, withIntermediateDirectories: true)
        let log = logDirectory + "/\(record.name).log"
        if !appendingLog || !FileManager.default.fileExists(atPath: log) {
            guard FileManager.default.createFile(atPath: log, contents: nil, attributes: [.posixPermissions: 0o600]) else {
                throw APIError(500, "cannot create the log \(log)")
            }
        }
        var env = ProcessInfo.processInfo.environment
        env["OVERLAY_CONTAINER_NAME"] = record.name
        if let service = record.serviceName { env["OVERLAY_SERVICE_NAME"] = service }
        let argv = ContainerProcess.argv(namespacePath: record.namespacePath, resolvConf: containerResolvConf(record), command: record.command)
        do {
            (record.pid, record.startTime) = try ContainerSpawn.spawn("/usr/bin/nsenter", Array(argv.dropFirst()), environment: env, log: log)
        } catch {
            throw APIError(500, "cannot start \(record.command.joined(separator: " ")): \(error)")
        }
        record.logPath = log
    }

    /// The handle of a container's own namespace: nil for another runtime's, and for a path that
    /// is not a handle this daemon made (its processes are never this daemon's to kill).
    func ownNamespaceHandle(_ c: ContainerRecord) -> String? {
        c.ownsNamespace && c.namespacePath.hasPrefix(containerHandleDirectory + "/") ? c.namespacePath : nil
    }

    /// Kills every process in a container's own namespace (its command's children, `exec`'d
    /// ones), as Docker's container ends whole with its PID namespace; returns how many.
    @discardableResult
    func killContainerProcesses(_ c: ContainerRecord) -> Int {
        ownNamespaceHandle(c).map { ContainerSpawn.killAll(inNamespaceAt: $0) } ?? 0
    }

    /// Whether the container's process runs. A process this daemon started is known by its PID
    /// and start time: from the moment it is spawned, while `nsenter` has not yet entered the
    /// namespace too (a removal then kills it, and a reconcile does not start a second one). Another
    /// runtime's process, or one recorded without its start time, must be in the container's namespace.
    func isRunning(_ c: ContainerRecord) -> Bool {
        guard let pid = c.pid else { return false }
        ContainerSpawn.reap(pid)
        guard kill(pid, 0) == 0, let status = ContainerSpawn.status(pid), status.state != "Z" else { return false }
        if let started = c.startTime { return status.startTime == started }
        // The PID may have been reused: it must still be in the container's namespace.
        var a = stat(), b = stat()
        guard stat("/proc/\(pid)/ns/net", &a) == 0, stat(c.namespacePath, &b) == 0 else { return false }
        return a.st_ino == b.st_ino
    }

    func attachExisting(_ req: AttachRequest) async throws -> ContainerInspect {
        let (s, _) = try requireSwarm()
        guard Self.validContainerName(req.name) else { throw APIError(400, "invalid container name '\(req.name)'") }
        let path: String
        switch (req.namespacePath, req.pid) {
        case (let p?, nil): path = p
        case (nil, let pid?): path = "/proc/\(pid)/ns/net"
        default: throw APIError(400, "give exactly one of a namespace path or a PID")
        }
        if let i = req.interface, !GatewayBridge.isValidLinkName(i) || i == Self.gatewayLegName {
            throw APIError(400, "'\(i.prefix(40))' is not an interface name this attach can make (1 to 15 bytes, no '/', ':' or spaces; not \(Self.gatewayLegName))")
        }
        let ns: NetworkNamespace
        do { ns = try NetworkNamespace.open(path: path) } catch {
            throw APIError(404, "\(path) is not a network namespace that can be opened: \(error)")
        }
        let n = try network(named: req.network)
        guard n.attachable, !n.ingress else {
            throw APIError(403, "network \(n.name) is not attachable: standalone containers need a network created with --attachable")
        }
        var record = (try? containerRecord(req.name)) ?? ContainerRecord(
            id: EndpointID.random().text, name: req.name, created: Date(), namespacePath: path, ownsNamespace: false, command: [],
            detached: false, pid: req.pid, logPath: nil, networks: [], publish: [], gatewayAddress: nil)
        guard record.namespacePath == path else {
            throw APIError(409, "the container name \(req.name) is already in use for another namespace")
        }
        if let same = record.networks.first(where: { $0.networkID == n.id }) {
            // The same attach again (a runtime that repeats an ADD): what the first one made.
            if let i = req.interface, same.interface == i { return try inspect(record) }
            throw APIError(409, "\(req.name) is already attached to network \(n.name)")
        }
        let taken = Set(((try? NetlinkSocket(namespace: ns).links()) ?? []).map(\.name))
        if let i = req.interface, taken.contains(i) {
            throw APIError(409, "the namespace already has an interface named \(i)")
        }
        // The next free ethN: the namespace may have interfaces of its own runtime.
        let interface = req.interface ?? Self.freeInterface(in: ns)
        var cn = try await connect(record, to: n, interface: interface, ip: req.ip, aliases: req.aliases ?? [], nodeID: s.nodeID)
        cn.interface = interface
        let before = record
        record.networks.append(cn)
        do {
            if req.gateway == true && record.gatewayAddress == nil && !n.internal {
                try await finishGatewayAttach(&record, startGatewayAttach(ns, interface: Self.gatewayLegName))
                record.routedFromHost = true
            }
            if record.routedFromHost == true { try routeFromHost(cn.address, to: record) }
            try await serveDNS(record)
            try store.write([try .set(.container, record.name, record), .delete(.addressIntent, cn.endpointID)])
        } catch {
            if record.routedFromHost == true { unrouteFromHost(cn.address, of: record) }
            if before.networks.isEmpty {
                await stopDNS(record)
                await disconnectAll(record)
            } else {
                if let agent { try? agent.detach(endpoint: cn.endpointID) }
                await giveBack(ReleaseRequest(network: n.name, address: cn.address.description, endpointID: cn.endpointID))
                if record.gatewayAddress != before.gatewayAddress { detachGateway(record) }
            }
            throw error
        }
        return try inspect(record)
    }

    /// Undoes an attach (CNI's DEL): the container leaves `network` (all its networks when nil),
    /// and a container left with none is forgotten. Nothing to undo is no error: a runtime may
    /// ask twice, after a restart, or for a namespace already gone.
    func detachExisting(_ req: DetachRequest) async throws -> [String: Bool] {
        guard let c = try store.get(.container, req.name, as: ContainerRecord.self) else { return ["detached": false] }
        guard !c.ownsNamespace else {
            throw APIError(409, "container \(c.name) was made by overlayd: remove it with `overlayctl rm`")
        }
        var record = c
        let leaving = record.networks.filter { n in
            (req.network == nil || n.networkName == req.network || n.networkID == req.network)
                && (req.interface == nil || n.interface == req.interface)
        }
        guard !leaving.isEmpty else { return ["detached": false] }
        record.networks.removeAll { n in leaving.contains { $0.endpointID == n.endpointID } }
        for cn in leaving {
            if record.routedFromHost == true { unrouteFromHost(cn.address, of: record) }
            if let agent { try? agent.detach(endpoint: cn.endpointID) }
        }
        if record.networks.isEmpty {
            await stopDNS(c)
            detachGateway(c)
            try store.delete(.container, c.name)
        } else {
            try store.put(.container, record.name, record)
            try? await serveDNS(record)
        }
        for cn in leaving {
            await giveBack(ReleaseRequest(network: cn.networkName, address: cn.address.description, endpointID: cn.endpointID))
            log(.containers, ["container": "\(c.name)", "network": "\(cn.networkName)", "address": "\(cn.address)"])
                .info("container \(c.name) detached from \(cn.networkName)")
        }
        return ["detached": true]
    }

    func containerList() throws -> [ContainerInspect] {
        try store.all(.container, as: ContainerRecord.self).map { try inspect($0) }.sorted { $0.Name < $1.Name }
    }

    func inspectContainer(_ name: String) throws -> ContainerInspect { try inspect(try containerRecord(name)) }

    func inspect(_ c: ContainerRecord) throws -> ContainerInspect {
        let running = isRunning(c)
        var nets: [String: ContainerInspect.EndpointSettings] = [:]
        for n in c.networks {
            nets[n.networkName] = .init(
                NetworkID: n.networkID, EndpointID: n.endpointID, Gateway: n.gateway.description, IPAddress: n.address.description,
                IPPrefixLen: n.prefixLength, MacAddress: n.mac, Aliases: [c.name] + n.aliases, Interface: n.interface)
        }
        var leg: ContainerInspect.GatewayLeg?
        if !c.ownsNamespace, let a = c.gatewayAddress, let info = gateway?.info {
            leg = .init(Interface: Self.gatewayLegName, IPAddress: a.description, IPPrefixLen: info.subnet.prefixLength,
                        Gateway: info.gateway.description, MacAddress: MACAddress(derivedFrom: a).description)
        }
        let status = !c.ownsNamespace ? "attached" : running ? "running" : (c.pid == nil ? "created" : "exited")
        return ContainerInspect(
            Id: c.id, Name: c.name, Created: c.created, State: .init(Status: status, Running: running, Pid: running ? c.pid! : 0),
            Config: .init(Cmd: c.command),
            NetworkSettings: .init(SandboxKey: c.namespacePath, Ports: ports(c), Networks: nets,
                                   GatewayBridgeAddress: c.gatewayAddress?.description, GatewayBridge: leg),
            ResolvConfPath: containerResolvConf(c), DaemonPid: getpid())
    }

    func ports(_ c: ContainerRecord) -> [String: [[String: String]]] {
        var out: [String: [[String: String]]] = [:]
        for m in (try? PublishedPorts.mappings(c.publish, to: IPv4Address(0, 0, 0, 0))) ?? [] {
            out["\(m.containerPort)/\(m.protocol.rawValue)", default: []].append(
                ["HostIp": m.hostAddress?.description ?? "0.0.0.0", "HostPort": "\(m.hostPort)"])
        }
        return out
    }

    /// The first `ethN` no interface in `ns` has yet.
    static func freeInterface(in ns: NetworkNamespace) -> String {
        let taken = Set(((try? NetlinkSocket(namespace: ns).links()) ?? []).map(\.name))
        return (0...).lazy.map { "eth\($0)" }.first { !taken.contains($0) }!
    }

    /// `network connect NETWORK CONTAINER`: the container joins another network on the next free
    /// `ethN`; its names answer there at once (and egress goes through the gateway bridge if it
    /// had none yet and the network is not internal).
    func connectContainer(_ name: String, _ req: NetworkConnectRequest) async throws -> ContainerInspect {
        let (s, _) = try requireSwarm()
        var c = try containerRecord(name)
        let n = try network(named: req.network)
        guard !n.ingress else { throw APIError(403, "network \(n.name) is the ingress network: containers cannot attach to it") }
        guard c.taskID == nil else { throw APIError(403, "container \(c.name) is a task of service \(c.serviceName ?? "?"): change the service instead") }
        guard n.attachable else {
            throw APIError(403, "network \(n.name) is not attachable: standalone containers need a network created with --attachable")
        }
        guard !c.networks.contains(where: { $0.networkID == n.id }) else {
            throw APIError(409, "container \(c.name) is already connected to network \(n.name)")
        }
        let ns: NetworkNamespace
        do { ns = try NetworkNamespace.open(path: c.namespacePath) } catch {
            throw APIError(409, "container \(c.name)'s namespace is gone: \(error)")
        }
        try takeBusy(c.name)
        defer { taskRuntime.busy.remove(c.name) }
        let interface = Self.freeInterface(in: ns)
        var joined = try await connect(c, to: n, interface: interface, ip: req.ip, aliases: req.aliases, nodeID: s.nodeID)
        joined.interface = interface
        c.networks.append(joined)
        if c.gatewayAddress == nil && !n.internal && c.ownsNamespace {
            do { try await finishGatewayAttach(&c, startGatewayAttach(ns, interface: Self.freeInterface(in: ns))) } catch {
                log(.containers, ["container": "\(c.name)", "network": "\(n.name)"]).warning("container \(c.name) joined \(n.name) without egress: \(error)")
            }
        }
        try store.write([try .set(.container, c.name, c), .delete(.addressIntent, joined.endpointID)])
        try await serveDNS(c)
        log(.containers, ["container": "\(c.name)", "network": "\(n.name)", "address": "\(joined.address)"]).info("container \(c.name) connected to \(n.name) on \(interface) (\(joined.address))")
        return try inspect(c)
    }

    /// `network disconnect NETWORK CONTAINER`: its endpoint there goes and the address goes back.
    func disconnectContainer(_ name: String, from network: String) async throws -> ContainerInspect {
        var c = try containerRecord(name)
        guard c.taskID == nil else { throw APIError(403, "container \(c.name) is a task of service \(c.serviceName ?? "?"): change the service instead") }
        guard let i = c.networks.firstIndex(where: { $0.networkName == network || $0.networkID == network || $0.networkID.hasPrefix(network) && network.count >= 3 }) else {
            throw APIError(404, "container \(c.name) is not connected to network \(network)")
        }
        let cn = c.networks[i]
        // Interfaces keep their names: the ones after this keep theirs (stored from here on).
        for j in c.networks.indices where c.networks[j].interface == nil { c.networks[j].interface = "eth\(j)" }
        c.networks.remove(at: i)
        if c.routedFromHost == true { unrouteFromHost(cn.address, of: c) }
        if let agent { try? agent.detach(endpoint: cn.endpointID) }
        try store.put(.container, c.name, c)
        await giveBack(ReleaseRequest(network: cn.networkName, address: cn.address.description, endpointID: cn.endpointID))
        if c.networks.isEmpty { await stopDNS(c) } else { try await serveDNS(c) }
        log(.containers, ["container": "\(c.name)", "network": "\(cn.networkName)"]).info("container \(c.name) disconnected from \(cn.networkName)")
        return try inspect(c)
    }

    /// `logs`: the output of the container's process (the last `tail` lines), at most the last 4 MiB.
    func containerLogs(_ name: String, tail: Int?) throws -> [String: String] {
        let c = try containerRecord(name)
        guard let path = c.logPath, let file = FileHandle(forReadingAtPath: path) else {
            throw APIError(404, "container \(c.name) has no log: only the processes overlayd starts (run -d, service tasks) are logged")
        }
        defer { try? file.close() }
        let size = (try? file.seekToEnd()) ?? 0
        let limit: UInt64 = 4 << 20
        try? file.seek(toOffset: size > limit ? size - limit : 0)
        var text = String(decoding: (try? file.readToEnd()) ?? Data(), as: UTF8.self)
        if let tail, tail >= 0 {
            var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
            if lines.last == "" { lines.removeLast() }
            text = lines.suffix(tail).map { $0 + "\n" }.joined()
        }
        return ["log": text]
    }

    /// `stop`: SIGTERM to the container's process, SIGKILL after `timeout` seconds, then to every
    /// other process in its namespace. The container keeps its namespace, addresses and names (a
    /// task's is started again by its reconciler, once the stop is over: it is busy until then).
    func stopContainer(_ name: String, timeout: Int) async throws -> ContainerInspect {
        let c = try containerRecord(name)
        guard c.ownsNamespace else { throw APIError(409, "container \(c.name) belongs to another runtime: stop it there") }
        try takeBusy(c.name)
        defer { taskRuntime.busy.remove(c.name) }
        guard let pid = c.pid, isRunning(c) else {
            killContainerProcesses(c)
            return try inspect(c)
        }
        kill(pid, SIGTERM)
        let deadline = ContinuousClock.now + .seconds(max(0, min(timeout, 3600)))
        while isRunning(c) && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(50)) }
        if isRunning(c) {
            kill(pid, SIGKILL)
            while isRunning(c) { try? await Task.sleep(for: .milliseconds(20)) }
        }
        // The container stops whole, as Docker's does when its first process ends: what that
        // process left running (background children, `exec`'d processes) is killed.
        let left = killContainerProcesses(c)
        log(.containers, ["container": "\(c.name)"]).info("container \(c.name) stopped\(left > 0 ? " (\(left) more of its processes killed)" : "")")
        return try inspect(c)
    }

    /// `start`: runs a stopped container's command again (detached, its output appended to its log).
    func startContainer(_ name: String) async throws -> ContainerInspect {
        var c = try containerRecord(name)
        guard !taskRuntime.busy.contains(c.name) else { throw APIError(409, "container \(c.name) is being changed (removed or connected): try again") }
        guard c.ownsNamespace else { throw APIError(409, "container \(c.name) belongs to another runtime: start it there") }
        if isRunning(c) { return try inspect(c) }
        guard !c.command.isEmpty else { throw APIError(409, "container \(c.name) has no command to start") }
        c.detached = true
        // Nothing of the last run goes on beside the new one.
        killContainerProcesses(c)
        try spawn(&c, appendingLog: true)
        try store.put(.container, c.name, c)
        log(.containers, ["container": "\(c.name)"]).info("container \(c.name) started again")
        return try inspect(c)
    }

    /// Marks a container as being changed, or refuses while another change is in flight.
    func takeBusy(_ name: String) throws {
        guard taskRuntime.busy.insert(name).inserted else {
            throw APIError(409, "container \(name) is being changed (removed or connected): try again")
        }
    }

    func removeContainer(_ name: String, force: Bool) async throws {
        let c = try containerRecord(name)
        try takeBusy(c.name)
        defer { taskRuntime.busy.remove(c.name) }
        // Another runtime's namespace (network connect): only our endpoints go; its processes stay.
        if c.ownsNamespace {
            // Running: its command, or any process in its namespace (a foreground `run`, an `exec`).
            let running = isRunning(c)
            if !force && (running || !(ownNamespaceHandle(c).map(ContainerSpawn.processes(inNamespaceAt:)) ?? []).isEmpty) {
                throw APIError(409, "container \(c.name) is running: stop it or use rm -f")
            }
            // Its command first (it may not have entered the namespace yet), then every process there.
            if running, let pid = c.pid { kill(pid, SIGKILL) }
            killContainerProcesses(c)
        }
        await stopDNS(c)
        await disconnectAll(c)
        if c.ownsNamespace {
            let handle = (c.namespacePath as NSString).lastPathComponent
            try? NetworkNamespace.delete(named: handle, handleDirectory: containerHandleDirectory)
        }
        if let log = c.logPath { try? FileManager.default.removeItem(atPath: log) }
        try store.delete(.container, c.name)
        if c.taskID == nil && !c.publish.isEmpty { await reportStandalonePorts() }
    }

    /// After a restart: every stored container whose namespace still exists gets its endpoints back
    /// with the same IDs, addresses and MACs; one whose namespace is gone is removed and its
    /// addresses given back.
    func restoreContainers() async throws {
        guard let agent else { return }
        if manager == nil, let saved = try store.get(.setting, "cluster", as: ClusterState.self) {
            cluster = saved
            applyNetworks(saved.networks)
        }
        await reclaimIntents()
        for c in try store.all(.container, as: ContainerRecord.self) {
            var path = c.namespacePath
            // Its handle gone but its process alive (the same start time: not a PID reused since).
            if (try? NetworkNamespace.open(path: path)) == nil, let pid = c.pid, kill(pid, 0) == 0,
               c.startTime == nil || ContainerSpawn.status(pid)?.startTime == c.startTime {
                path = "/proc/\(pid)/ns/net"
            }
            guard let ns = try? NetworkNamespace.open(path: path) else {
                log(.containers, ["container": "\(c.name)"]).notice("container \(c.name) is gone (its namespace no longer exists): giving its addresses back")
                await disconnectAll(c)
                try? store.delete(.container, c.name)
                continue
            }
            var record = c
            record.namespacePath = path
            let socket = try? NetlinkSocket(namespace: ns)
            for (i, cn) in c.networks.enumerated() {
                let interface = cn.interface ?? "eth\(i)"
                try? socket?.deleteLink(named: interface)
                do {
                    _ = try agent.attach(
                        EndpointSpec(id: cn.endpointID, network: cn.networkName, namespace: .path(path),
                                     address: cn.address, mac: MACAddress(cn.mac), interfaceName: interface),
                        name: c.name, aliases: cn.aliases, service: c.serviceName)
                } catch {
                    log(.containers, ["container": "\(c.name)", "network": "\(cn.networkName)"]).error("cannot restore \(c.name) on \(cn.networkName): \(error)")
                }
            }
            do { try await serveDNS(record) } catch { log(.dns, ["container": "\(c.name)"]).error("cannot restore DNS in \(c.name): \(error)") }
            if record.namespacePath != c.namespacePath { try? store.put(.container, c.name, record) }
        }
    }

    // MARK: standalone ports and services' ports

    /// Ports published on this node by standalone containers (`run -p`): "proto/port" -> name.
    func standalonePublishedPorts() -> [String: String] {
        var out: [String: String] = [:]
        for c in (try? store.all(.container, as: ContainerRecord.self)) ?? [] where c.taskID == nil {
            for m in (try? PublishedPorts.mappings(c.publish, to: IPv4Address(0, 0, 0, 0))) ?? [] {
                out["\(m.protocol.rawValue)/\(m.hostPort)"] = c.name
            }
        }
        return out
    }

    /// Tells the manager at once which ports this node's standalone containers publish.
    func reportStandalonePorts() async {
        guard swarm != nil, manager == nil else { return }
        // Short: `run` waits for this, and an unreachable manager must not hold it up long.
        await sendReport(timeout: .seconds(2))
    }

    /// The well-formed entries of a node's report ("tcp|udp|sctp/1-65535" -> a valid container
    /// name), at most 4,096 of them; anything else is dropped.
    static func validPublishedPorts(_ entries: some Sequence<(String, String)>) -> [String: String] {
        var out: [String: String] = [:]
        for (key, name) in entries.prefix(4096) {
            let parts = key.split(separator: "/")
            guard parts.count == 2, ["tcp", "udp", "sctp"].contains(String(parts[0])), let port = UInt16(parts[1]), port > 0,
                  validContainerName(name)
            else { continue }
            out["\(parts[0])/\(port)"] = name
        }
        return out
    }

    /// A standalone container may not take a port a service publishes here: an ingress-mode port
    /// (the routing mesh publishes it on every node), or a host-mode port of a task on this node.
    func checkPortsFreeOfServices(_ wanted: [PortMapping]) throws {
        guard !wanted.isEmpty else { return }
        let me = swarm?.nodeID ?? localNodeID
        let localServices = Set(allTasks().filter { $0.nodeID == me && $0.desiredState != .shutdown }.map(\.serviceID))
        for s in allServices() {
            for p in s.ports {
                guard let m = wanted.first(where: { $0.protocol == p.protocol && $0.hostPort == p.publishedPort }) else { continue }
                if p.publishMode == .host && !localServices.contains(s.id) { continue }
                let how = p.publishMode == .host ? "its task on this node publishes it (mode=host)" : "the routing mesh publishes it on every node"
                throw APIError(409, "port '\(m.hostPort)/\(p.protocol)' is already in use by service '\(s.name)': \(how)")
            }
        }
    }
}
