import Foundation
import Logging
import Netlink
import OverlayDriver
import OverlayModel
import OverlayTestKit
import Testing

/// A lab with one overlay driver per host, each with its own state directory under
/// `/run/<lab>-state/`. ``destroy()`` shuts the drivers down and removes the lab and every handle.
final class Fixture: @unchecked Sendable {
    // @unchecked: a test owns its fixture; drivers are themselves Sendable.
    let lab: Lab
    let stateRoot: String
    var drivers: [OverlayDriver] = []
    /// The endpoint link every driver of this fixture is configured with.
    let link: EndpointLink
    /// How its encrypted networks' ESP travels: bare ESP unless a test says otherwise (the suites
    /// built on this fixture check Docker's wire format; ESP in UDP, the default, has its own).
    let espEncapsulation: ESPEncapsulation

    /// The drivers' logger (nil: the default one).
    let logger: Logger?
    /// Each host's boot ID (boot-bound ESP keys, as the daemon runs them), or none.
    let bootIDs: [[UInt8]]?

    init(_ name: String, hosts: Int, link: EndpointLink = .auto, espEncapsulation: ESPEncapsulation = .raw,
         logger: Logger? = nil, bootIDs: Bool = false) throws {
        self.bootIDs = bootIDs ? (0..<hosts).map { _ in (0..<16).map { _ in UInt8.random(in: 0...255) } } : nil
        self.link = link
        self.espEncapsulation = espEncapsulation
        self.logger = logger
        stateRoot = "/run/\(name)-state"
        Fixture.removeState(stateRoot)
        lab = try Lab.create(name: name, hosts: hosts)
        do {
            for i in lab.hosts.indices { drivers.append(try makeDriver(i)) }
        } catch {
            destroy()
            throw error
        }
    }

    func stateDirectory(_ host: Int) -> String { "\(stateRoot)/\(lab.hosts[host].name)" }

    /// A driver for host `host` (0-based) with that host's state directory.
    func makeDriver(_ host: Int) throws -> OverlayDriver {
        let h = lab.hosts[host]
        var configuration = OverlayDriverConfiguration(
            nodeID: h.name, stateDirectory: stateDirectory(host), hostNamespacePath: h.namespace.path,
            dataPathAddress: .v4(h.address), endpointLink: link)
        configuration.espEncapsulation = espEncapsulation
        configuration.bootID = bootIDs?[host]
        if let logger { configuration.logger = logger }
        return try OverlayDriver(configuration: configuration)
    }

    /// A fresh container namespace `<lab>-<name>` with loopback up.
    func container(_ name: String) throws -> NetworkNamespace {
        let ns = try lab.makeNamespace(name)
        try NetlinkSocket(namespace: ns).setUp("lo")
        return ns
    }

    func ping(_ target: IPAddress, from ns: NetworkNamespace, extra: [String] = []) throws -> CommandResult {
        try lab.run(["ping", "-c", "2", "-i", "0.2", "-W", "2"] + extra + [target.description], in: ns)
    }

    /// The sandbox handles in host `host`'s state directory.
    func sandboxes(_ host: Int) -> [String] {
        NetworkNamespace.list(handleDirectory: stateDirectory(host) + "/netns")
    }

    /// The VXLAN links in host `host`'s namespace.
    func hostVXLANs(_ host: Int) throws -> [String] {
        try NetlinkSocket(namespace: lab.hosts[host].namespace).links().filter { $0.kind == "vxlan" }.map(\.name)
    }

    func destroy() {
        for d in drivers { d.shutdown() }
        drivers = []
        lab.destroy()
        Fixture.removeState(stateRoot)
    }

    static func removeState(_ root: String) {
        if let hosts = try? FileManager.default.contentsOfDirectory(atPath: root) {
            for h in hosts { try? NetworkNamespace.removeHandleDirectory("\(root)/\(h)/netns") }
        }
        try? FileManager.default.removeItem(atPath: root)
    }
}

func ip(_ s: String) -> IPAddress { IPAddress(s)! }

extension EndpointLink {
    /// One letter for lab names, so a parametrised test's runs do not share a lab.
    var tag: String {
        switch self {
        case .auto: "a"
        case .macvlan: "m"
        case .vethBridge: "b"
        }
    }
}

/// Milliseconds since `start`, for timing lines.
func ms(since start: ContinuousClock.Instant) -> String {
    let d = ContinuousClock.now - start
    let v = Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
    return String(format: "%.1f ms", v)
}

/// Log lines kept in memory, for tests that check what a driver says.
final class RecordedLog: @unchecked Sendable {
    // @unchecked: `lines` is guarded by `lock`.
    private let lock = NSLock()
    private var lines: [String] = []

    func append(_ line: String) { lock.withLock { lines.append(line) } }
    var all: [String] { lock.withLock { lines } }

    /// A logger (label `label`, level debug) whose every line, with its metadata, lands here.
    func logger(_ label: String = "test") -> Logger {
        var l = Logger(label: label) { _ in Handler(log: self) }
        l.logLevel = .debug
        return l
    }

    struct Handler: LogHandler {
        let log: RecordedLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .debug
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            let all = metadata.merging(event.metadata ?? [:]) { $1 }
            let meta = all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            log.append("\(event.level) \(event.message) \(meta)")
        }
    }
}
