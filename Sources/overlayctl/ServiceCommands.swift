import ArgumentParser
import OverlayAPI
import Foundation

// MARK: service

struct Service: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage services: tasks on the swarm's nodes behind a virtual IP, DNS names and published ports (on a manager).",
        subcommands: [ServiceCreate.self, ServiceList.self, ServicePS.self, ServiceInspect.self, ServiceUpdate.self, ServiceScale.self,
                      ServiceLogsCommand.self, ServiceRemove.self])
}

struct ServiceCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create", abstract: "Create a service.",
        discussion: """
            Each task is a container (a network namespace and CMD) on the service's networks. With --endpoint-mode vip \
            (the default) the service's name resolves to a virtual IP that spreads new connections over the running tasks; \
            with dnsrr it resolves to the tasks' addresses.

            A port published in ingress mode answers on every node (the routing mesh); in host mode only on nodes running \
            a task. --source-ip keep: a node that runs a task sends its ingress ports to that task without SNAT, so the \
            task sees the client's address (other nodes use the mesh).
            """)
    @OptionGroup var global: HostOptions
    @Option(help: "The service's name.") var name: String
    @Option(help: "A network to attach the tasks to (repeatable).") var network: [String] = []
    @Option(help: "Number of tasks (replicated mode; default 1).") var replicas: Int?
    @Option(help: "replicated (default) or global (one task on every node).") var mode: String?
    @Option(help: "vip (default) or dnsrr.") var endpointMode: String?
    @Option(name: [.short, .long], help: "Publish a port: 8080:80[/tcp|/udp|/sctp] or published=8080,target=80,protocol=udp,mode=ingress|host (repeatable).")
    var publish: [String] = []
    @Option(help: "keep: ingress ports reach a local task with the client's address.") var sourceIP: String?
    @Argument(parsing: .captureForPassthrough, help: "-- CMD ARGS...") var command: [String] = []

    func run() async throws {
        var cmd = command
        if cmd.first == "--" { cmd.removeFirst() }
        var r = ServiceCreateRequest(name: name, networks: network, command: cmd)
        r.replicas = replicas
        r.mode = mode
        r.endpointMode = endpointMode
        r.publish = publish
        r.sourceIP = sourceIP
        let s = try await global.client().call(LocalAPI.createService, body: r)
        print(s.ID)
    }
}

struct ServiceList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List services.")
    @OptionGroup var global: HostOptions
    @OptionGroup var quiet: QuietFlag
    @OptionGroup var format: FormatOption
    @OptionGroup var filter: FilterOption
    func run() async throws {
        let list = try filter.apply(try await global.client().call(LocalAPI.services))
        if quiet.printIDs(list.map { String($0.ID.prefix(12)) }) { return }
        if try format.emit(list) { return }
        printTable(["ID", "NAME", "MODE", "REPLICAS", "ENDPOINT", "PORTS"], list.map {
            [String($0.ID.prefix(12)), $0.Name, $0.Mode, $0.Replicas, $0.EndpointMode, $0.Ports.joined(separator: ", ")]
        })
    }
}

struct ServicePS: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ps", abstract: "List a service's tasks: node, desired and current state.")
    @OptionGroup var global: HostOptions
    @OptionGroup var quiet: QuietFlag
    @OptionGroup var format: FormatOption
    @OptionGroup var filter: FilterOption
    @Argument(help: "The service.") var name: String
    func run() async throws {
        let list = try filter.apply(try await global.client().call(LocalAPI.serviceTasks, name))
        if quiet.printIDs(list.map { String($0.ID.prefix(12)) }) { return }
        if try format.emit(list) { return }
        printTable(["ID", "NAME", "NODE", "DESIRED STATE", "CURRENT STATE", "ADDRESSES"], list.map {
            [String($0.ID.prefix(12)), $0.Name, $0.Node, $0.DesiredState, $0.CurrentState,
             $0.Addresses.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")]
        })
    }
}

struct ServiceLogsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logs", abstract: "Show the output of a service's tasks, from every node that runs one.",
        discussion: """
            The manager asks each node running a task for its output (at most 10 s) and prints it task by task, each line \
            prefixed with the task and its node as Docker does: `web.1.<task id>@<node> | line`. A node that does not \
            answer, or a task without output, is named on standard error and the command exits with 1 after printing the rest.
            """)
    @OptionGroup var global: HostOptions
    @Option(name: [.short, .long], help: "Only the last N lines of each task.") var tail: Int?
    @Flag(name: .customLong("no-task-ids"), help: "Leave out the task IDs in the prefix.") var noTaskIDs = false
    @Flag(help: "Print the output only, without prefixes.") var raw = false
    @Argument(help: "The service.") var name: String
    func validate() throws { if let tail, tail < 0 { throw ValidationError("--tail \(tail): use 0 or more") } }
    func run() async throws {
        let logs = try await global.client().call(LocalAPI.serviceLogs, name, query: [("tail", tail.map(String.init))])
        let width = logs.tasks.map { prefix($0).count }.max() ?? 0
        for t in logs.tasks {
            let p = raw ? "" : prefix(t).padding(toLength: width, withPad: " ", startingAt: 0) + " | "
            for line in t.Log.split(separator: "\n", omittingEmptySubsequences: false).dropLast(t.Log.hasSuffix("\n") ? 1 : 0) {
                print(p + line)
            }
        }
        for w in logs.warnings { FileHandle.standardError.write(Data("warning: \(w)\n".utf8)) }
        for e in logs.errors { FileHandle.standardError.write(Data("error: \(e)\n".utf8)) }
        if !logs.errors.isEmpty { throw ExitCode(1) }
    }

    func prefix(_ t: ServiceLogs.TaskOutput) -> String {
        noTaskIDs ? "\(t.Name)@\(t.Node)" : "\(t.Name).\(t.ID.prefix(12))@\(t.Node)"
    }
}

struct ServiceInspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Show services as JSON.")
    @OptionGroup var global: HostOptions
    @Argument(help: "Service names or IDs.") var names: [String]
    func validate() throws { if names.isEmpty { throw ValidationError("give at least one service name") } }
    func run() async throws {
        let c = try global.client()
        var out: [ServiceRecord] = []
        for n in names { out.append(try await c.call(LocalAPI.inspectService, n)) }
        try printJSON(out)
    }
}

struct ServiceUpdate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "update", abstract: "Change a service: replicas, published ports.")
    @OptionGroup var global: HostOptions
    @Option(help: "Number of tasks.") var replicas: Int?
    @Option(help: "Publish another port (repeatable, -p syntax).") var publishAdd: [String] = []
    @Option(help: "Stop publishing PORT[/PROTOCOL] (repeatable).") var publishRm: [String] = []
    @Argument(help: "The service.") var name: String
    func run() async throws {
        var r = ServiceUpdateRequest()
        r.replicas = replicas
        r.publishAdd = publishAdd.isEmpty ? nil : publishAdd
        r.publishRemove = publishRm.isEmpty ? nil : publishRm
        guard r.replicas != nil || r.publishAdd != nil || r.publishRemove != nil else {
            throw CLIError("nothing to update: give --replicas, --publish-add or --publish-rm", code: 64)
        }
        let s = try await global.client().call(LocalAPI.updateService, name, body: r)
        print(s.Name)
    }
}

struct ServiceScale: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scale", abstract: "Set replicated services' task counts: SERVICE=REPLICAS ... (Docker's `service scale`).")
    @OptionGroup var global: HostOptions
    @Argument(help: "SERVICE=REPLICAS (repeatable).") var targets: [String]
    func validate() throws {
        if targets.isEmpty { throw ValidationError("give SERVICE=REPLICAS, e.g. web=3") }
        for t in targets {
            let parts = t.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty, let n = Int(parts[1]), n >= 0 else {
                throw ValidationError("\(t): use SERVICE=REPLICAS with a number of 0 or more, e.g. web=3")
            }
        }
    }
    func run() async throws {
        let c = try global.client()
        var failed: [String] = []
        for t in targets {
            let parts = t.split(separator: "=", maxSplits: 1).map(String.init)
            var r = ServiceUpdateRequest()
            r.replicas = Int(parts[1])
            do {
                _ = try await c.call(LocalAPI.updateService, parts[0], body: r)
                print("\(parts[0]) scaled to \(parts[1])")
            } catch {
                failed.append("\(parts[0]): \(error)")
            }
        }
        guard failed.isEmpty else { throw CLIError(failed.joined(separator: "\n")) }
    }
}

struct ServiceRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove services (their tasks stop after a short drain).")
    @OptionGroup var global: HostOptions
    @Argument(help: "Service names or IDs.") var names: [String]
    func validate() throws { if names.isEmpty { throw ValidationError("give at least one service name") } }
    func run() async throws {
        let c = try global.client()
        for n in names {
            _ = try await c.call(LocalAPI.removeService, n)
            print(n)
        }
    }
}
