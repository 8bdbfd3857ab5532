// overlay-node: one host of a gossip-driven overlay. Run one per lab host (inside the host's
// network namespace), each with a container namespace:
//
//   nsenter --net=/run/netns/ovl-x-h1 -- .build/debug/overlay-node --node h1 --bind 198.18.0.1 \
//       --state-dir /run/ovl-x-state/h1 --network demo:10.0.0.0/24:4096 \
//       --container-ns /run/netns/ovl-x-c1 --ip 10.0.0.2 [--join 198.18.0.2] [--fast]
//
// It starts gossip (port 7946) with NetworkDB tables, creates the network in the overlay driver,
// attaches the container, publishes it in `endpoint_table`, and programs every endpoint other
// hosts publish as a peer. Peer changes are printed (`+ demo 10.0.0.3 ... (h2/c2)`). SIGTERM or
// SIGINT: detach, leave the cluster, exit 0. `--fast` uses 200 ms probes (for tests).

import ClusterControl
import Dispatch
import Foundation
import Gossip
import Logging
import OverlayDriver
import OverlayModel

func say(_ line: String) {
    print(line)
    fflush(nil)
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("overlay-node: \(message)\n".utf8))
    exit(2)
}

struct Options {
    var node = ""
    var bind = ""
    var stateDir = ""
    var network = ""
    var containerNS = ""
    var ip = ""
    var join: [String] = []
    var hostNS: String?
    var fast = false
}

func parse(_ args: [String]) -> Options {
    var o = Options()
    var i = 0
    func value() -> String {
        i += 1
        guard i < args.count else { fail("\(args[i - 1]) needs a value") }
        return args[i]
    }
    while i < args.count {
        switch args[i] {
        case "--node": o.node = value()
        case "--bind": o.bind = value()
        case "--state-dir": o.stateDir = value()
        case "--network": o.network = value()
        case "--container-ns": o.containerNS = value()
        case "--ip": o.ip = value()
        case "--join": o.join.append(value())
        case "--host-ns": o.hostNS = value()
        case "--fast": o.fast = true
        default: fail("unknown argument \(args[i]); see the comment at the top of Examples/overlay-node/main.swift")
        }
        i += 1
    }
    for (flag, v) in [("--node", o.node), ("--bind", o.bind), ("--state-dir", o.stateDir), ("--network", o.network),
                      ("--container-ns", o.containerNS), ("--ip", o.ip)] where v.isEmpty {
        fail("\(flag) is required")
    }
    return o
}

let options = parse(Array(CommandLine.arguments.dropFirst()))
let parts = options.network.split(separator: ":").map(String.init)
guard parts.count == 3, let vni = UInt32(parts[2]) else { fail("--network is NAME:SUBNET:VNI, e.g. demo:10.0.0.0/24:4096") }
guard let bindIP = IPAddress(options.bind) else { fail("--bind \(options.bind) is not an IP address") }
guard let containerIP = IPAddress(options.ip) else { fail("--ip \(options.ip) is not an IP address") }
let seeds = options.join.map { s -> NodeAddress in
    guard let ip = IPAddress(s) else { fail("--join \(s) is not an IP address") }
    return NodeAddress(ip: ip, port: 7946)
}

var logger = Logger(label: "overlay-node.\(options.node)")
logger.logLevel = .warning
var swim = SwimConfig(name: options.node, advertise: NodeAddress(ip: bindIP, port: 7946), versions: .plainMemberlist)
var tables = NetworkDBConfig(nodeName: options.node)
if options.fast {
    swim.probeInterval = .milliseconds(200)
    swim.probeTimeout = .milliseconds(100)
    swim.gossipInterval = .milliseconds(50)
    swim.suspicionMult = 2
    swim.pushPullInterval = .seconds(5)
    swim.reconnectInterval = .seconds(1)
    tables.bulkSyncInterval = .seconds(5)
    tables.tickInterval = .milliseconds(200)
}
var gossipConfig = GossipConfiguration(swim: swim)
gossipConfig.logger = logger

let agent: OverlayAgent
do {
    let db = try NetworkDB(configuration: gossipConfig, tables: tables)
    var driverConfig = OverlayDriverConfiguration(
        nodeID: options.node, stateDirectory: options.stateDir, hostNamespacePath: options.hostNS, dataPathAddress: bindIP)
    driverConfig.logger = logger
    agent = OverlayAgent(db: db, driver: try OverlayDriver(configuration: driverConfig))
} catch {
    fail("cannot set up: \(error)")
}

let signals = [SIGTERM, SIGINT].map { sig -> DispatchSourceSignal in
    signal(sig, SIG_IGN)
    let source = DispatchSource.makeSignalSource(signal: sig, queue: .main)
    source.setEventHandler {
        say("signal \(sig): detaching and leaving")
        Task {
            await agent.shutdown(leave: true)
            say("bye")
            exit(0)
        }
    }
    source.resume()
    return source
}

Task {
    do {
        let changes = agent.peerChanges()
        Task { for await c in changes { say("peer \(c)") } }
        try await agent.db.start()
        if !seeds.isEmpty {
            // Seeds may not be up yet: keep trying for a while.
            var joined = false
            for _ in 0 ..< 50 where !joined {
                do { try await agent.db.join(seeds); joined = true } catch { try await Task.sleep(for: .milliseconds(200)) }
            }
            if !joined { say("warning: no seed answered yet; waiting to be joined") }
        }
        try agent.createNetwork(OverlayNetworkSpec(name: parts[0], subnet: parts[1], vni: vni))
        let ep = try agent.attach(EndpointSpec(id: "\(options.node)-c", network: parts[0],
                                               namespace: .path(options.containerNS), address: containerIP),
                                  name: "\(options.node)-c")
        say("attached \(ep.id) \(ep.address) \(ep.mac) vtep \(ep.vtep)")
        say("ready")
    } catch {
        FileHandle.standardError.write(Data("overlay-node: \(error)\n".utf8))
        await agent.shutdown(leave: false)
        exit(1)
    }
}

withExtendedLifetime(signals) { dispatchMain() }
