@_exported import enum OverlayModel.PortProtocol
@_exported import enum OverlayModel.PublishMode

// The closed sets the API's records use, typed. Each encodes as the lowercase word Docker uses
// (`"replicated"`, `"vip"`, ...), so the JSON on the wire and in the store is what it was.

/// A closed set of the API: Codable as its word, and printed as it.
public protocol APIKind: RawRepresentable<String>, Codable, Sendable, Hashable, CaseIterable, CustomStringConvertible {}

extension APIKind {
    /// The word (`"replicated"`).
    public var description: String { rawValue }
}

/// A node's role in the swarm.
public enum NodeRole: String, APIKind {
    /// Holds the cluster's state, serves the manager API and may issue certificates.
    case manager
    /// Runs containers and tasks; follows a manager.
    case worker

    /// As written in a node certificate's OU (Docker's words): `swarm-manager`, `swarm-worker`.
    public var certificateOU: String { "swarm-\(rawValue)" }

    /// The role a certificate's OU names; nil for anything else.
    public init?(certificateOU: String) {
        guard let role = Self.allCases.first(where: { $0.certificateOU == certificateOU }) else { return nil }
        self = role
    }
}

/// A node's availability, as gossip sees it.
public enum NodeStatus: String, APIKind {
    /// Alive in gossip: tasks may be placed there.
    case ready
    /// Not alive in gossip (failed, left, or not heard from).
    case down
}

/// Whether the scheduler may use a node (Docker's `node update --availability`).
public enum NodeAvailability: String, APIKind {
    /// New tasks may be placed here (the default).
    case active
    /// The tasks here stay; no new ones come.
    case pause
    /// The tasks here are shut down and placed elsewhere; no new ones come.
    case drain
}

/// How a service's tasks are counted.
public enum ServiceMode: String, APIKind {
    /// `--replicas N` tasks, spread over the ready nodes.
    case replicated
    /// One task on every ready node.
    case global
}

/// How a service is reached on its networks.
public enum EndpointMode: String, APIKind {
    /// A virtual IP per network, load-balanced to the tasks.
    case vip
    /// DNS round robin: the service name answers with the tasks' addresses.
    case dnsrr
}

/// What a task should be doing, as the manager decided.
public enum TaskState: String, APIKind {
    /// Run it (start it if it is not running).
    case running
    /// Stop it (it drains, then is forgotten).
    case shutdown
}

/// Where a service's published ports send clients' source addresses.
public enum SourceIPMode: String, APIKind {
    /// Keep the client's address: the routing mesh sends to the node's own tasks only.
    case keep
}
