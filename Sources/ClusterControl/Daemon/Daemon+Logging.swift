import Logging

/// The part of the daemon a log line comes from: its `component` (a field with `--log-format
/// json`, `component=...` in text).
enum LogComponent: String, Sendable {
    case api, swarm, manager, containers, tasks, networks, dns, gateway, encryption, gossip, driver, metrics, docker
    case loadBalancer = "load-balancer"
}

extension OverlayDaemon {
    /// The daemon's logger for one of its parts, with the IDs a line concerns (node, network,
    /// container, endpoint, task, service, address) as metadata.
    nonisolated func log(_ component: LogComponent, _ ids: Logger.Metadata = [:]) -> Logger {
        var l = configuration.logger.with(ids)
        l[metadataKey: "component"] = .string(component.rawValue)
        return l
    }
}

extension Logger {
    /// This logger with more metadata (the IDs a line concerns).
    func with(_ ids: Logger.Metadata) -> Logger {
        var l = self
        for (k, v) in ids { l[metadataKey: k] = v }
        return l
    }
}
