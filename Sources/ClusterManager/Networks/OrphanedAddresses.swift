import Foundation
import OverlayAPI

/// Addresses the manager holds for a node that the node no longer knows of (its store was lost or
/// restored from an older copy, or a release never arrived): found by comparing the manager's
/// allocations with the endpoints each report says the node holds, and given back only when two
/// reports at least `grace` apart both leave one out, so that an address handed out while a
/// report was on its way is never taken.
public struct OrphanedAddresses: Sendable {
    /// Per node: endpoint ID -> when a report first left it out.
    private var missing: [String: [String: Date]] = [:]

    /// Nothing noticed yet (a manager's start: every node gets its grace again).
    public init() {}

    /// Takes one report of `node`: the endpoints it says it holds. Returns its allocations to give
    /// back: those left out of this report and of an earlier one at least `grace` before it.
    public mutating func report(node: String, holds held: Set<String>, allocations: [AllocationRecord], now: Date,
                                grace: TimeInterval) -> [AllocationRecord] {
        let earlier = missing[node] ?? [:]
        var still: [String: Date] = [:]
        var orphans: [AllocationRecord] = []
        for a in allocations where a.nodeID == node && !held.contains(a.endpointID) {
            let since = earlier[a.endpointID] ?? now
            if now.timeIntervalSince(since) >= grace && earlier[a.endpointID] != nil {
                orphans.append(a)
            } else {
                still[a.endpointID] = since
            }
        }
        missing[node] = still.isEmpty ? nil : still
        return orphans
    }

    /// Forgets a node (removed from the swarm: its allocations go with it).
    public mutating func forget(node: String) { missing[node] = nil }

    /// How many of `node`'s endpoints are waiting to be confirmed missing.
    public func waiting(node: String) -> Int { missing[node]?.count ?? 0 }
}
