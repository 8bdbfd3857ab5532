import Foundation
import OverlayModel
import Synchronization

/// Every endpoint of every followed network, as the agent's endpoint feed delivered them, local
/// ones included: the load balancers' backends.
public final class EndpointIndex: Sendable {
    private let endpoints = Mutex<[String: [String: Endpoint]]>([:])

    /// An empty index.
    public init() {}

    /// Applies one event of the feed.
    public func apply(_ event: EndpointEvent) {
        endpoints.withLock { r in
            switch event {
            case .upsert(let network, let key, _, let endpoint): r[network, default: [:]][key] = endpoint
            case .remove(let network, let key): r[network]?[key] = nil
            case .networkLeft(let network): r[network] = nil
            }
        }
    }

    /// The endpoints of a network, in no order.
    public func endpoints(network: String) -> [Endpoint] {
        endpoints.withLock { Array(($0[network] ?? [:]).values) }
    }
}

/// An owner check for ``OverlayAgent/setOwnerCheck(_:)``: an endpoint is used only from a node the
/// manager knows, at that node's own data-path address.
extension NodeVTEPs {
    /// Whether `owner` is a known node and `endpoint` lives at its VTEP.
    public func vouches(owner: String, for endpoint: Endpoint) -> Bool {
        vtep(of: owner) == endpoint.vtep
    }
}

/// Node ID -> data-path address, read by the gossip threads' record check and written by the
/// daemon when the cluster's nodes change.
public final class NodeVTEPs: Sendable {
    private let map = Mutex<[String: IPAddress]>([:])

    /// An empty map.
    public init() {}

    /// The VTEP of `node`, if the manager knows the node.
    public func vtep(of node: String) -> IPAddress? { map.withLock { $0[node] } }

    /// Replaces the map; whether it changed.
    public func replace(with new: [String: IPAddress]) -> Bool {
        map.withLock { m in
            guard m != new else { return false }
            m = new
            return true
        }
    }
}
