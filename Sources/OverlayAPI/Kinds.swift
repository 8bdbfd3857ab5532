@_exported import enum OverlayModel.PortProtocol
@_exported import enum OverlayModel.PublishMode

// The closed sets the API's records use, typed. Each encodes as the lowercase word Docker uses
// (`"replicated"`, `"vip"`, ...), so the JSON on the wire and in the store is what it was.

/// A node's role in the swarm.
public enum NodeRole: String, Codable, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// Holds the cluster's state, serves the manager API and may issue certificates.
    case manager
    /// Runs containers and tasks; follows a manager.
    case worker

    public var description: String { rawValue }

    /// As written in a node certificate's OU (Docker's words): `swarm-manager`, `swarm-worker`.
    public var certificateOU: String { "swarm-\(rawValue)" }

    /// The role a certificate's OU names; nil for anything else.
    public init?(certificateOU: String) {
        guard let role = Self.allCases.first(where: { $0.certificateOU == certificateOU }) else { return nil }
        self = role
    }
}

/// A node's availability, as gossip sees it.
public enum NodeStatus: String, Codable, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// Alive in gossip: tasks may be placed there.
    case ready
    /// Not alive in gossip (failed, left, or not heard from).
    case down

    public var description: String { rawValue }
}

/// How a service's tasks are counted.
public enum ServiceMode: String, Codable, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// `--replicas N` tasks, spread over the ready nodes.
    case replicated
    /// One task on every ready node.
    case global

    public var description: String { rawValue }
}

/// How a service is reached on its networks.
public enum EndpointMode: String, Codable, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// A virtual IP per network, load-balanced to the tasks.
    case vip
    /// DNS round robin: the service name answers with the tasks' addresses.
    case dnsrr

    public var description: String { rawValue }
}

/// What a task should be doing, as the manager decided.
public enum TaskState: String, Codable, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// Run it (start it if it is not running).
    case running
    /// Stop it (it drains, then is forgotten).
    case shutdown

    public var description: String { rawValue }
}

/// Where a service's published ports send clients' source addresses.
public enum SourceIPMode: String, Codable, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// Keep the client's address: the routing mesh sends to the node's own tasks only.
    case keep

    public var description: String { rawValue }
}
