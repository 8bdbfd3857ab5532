import Foundation
import IPAM
import OverlayAPI
import OverlayModel

/// Endpoint addresses as the manager gives and takes them: who may hold which, how many one node
/// may hold, and the network's IPAM. Pure: the manager stores what it returns (the allocation
/// record and the IPAM's snapshot in one write).
public enum AddressAllocator {
    /// What an allocation decided.
    public struct Allocation: Sendable, Equatable {
        /// The record to store under ``key``; nil when the endpoint already had this address (a
        /// retry after a lost answer), so nothing changes.
        public var record: AllocationRecord?
        /// The answer to the node.
        public var reply: AllocateReply
    }

    /// The store key of an allocation: `networkID/address`.
    public static func key(network: String, address: IPAddress) -> String { "\(network)/\(address)" }

    /// An address for `req` on `network`, held by `owner` (the caller's certificate on the
    /// manager port, whatever the request says).
    /// - Parameters:
    ///   - existing: every allocation the manager holds (of all networks).
    ///   - ipam: the manager's IPAM, changed only when a new address is given.
    ///   - maxPerNode: the most addresses one node may hold.
    /// - Throws: `APIError` 403 (the endpoint is another node's), 429 (the node holds its most),
    ///   400 (a bad `--ip`, or none left), 409 (`--ip` in use), 500 (an address outside the network).
    public static func allocate(_ req: AllocateRequest, owner: String, network n: NetworkRecord, existing: [AllocationRecord],
                                ipam: inout IPAM, maxPerNode: Int) throws -> Allocation {
        if let a = existing.first(where: { $0.networkID == n.id && $0.endpointID == req.endpointID }) {
            guard a.nodeID == owner else {
                throw APIError(403, "endpoint \(req.endpointID.prefix(64)) on \(n.name) belongs to another node")
            }
            return Allocation(record: nil, reply: try reply(n, a.address))
        }
        let held = existing.lazy.filter { $0.nodeID == owner }.count
        guard held < maxPerNode else {
            throw APIError(429, "this node holds \(held) addresses, the most one node may (\(maxPerNode), overlayd --max-addresses-per-node): remove containers first")
        }
        let address: IPAddress
        do {
            if let want = req.address {
                guard let ip = IPAddress(want) else { throw APIError(400, "--ip '\(want)' is not an IP address") }
                guard n.subnets.contains(where: { $0.subnet.contains(ip) }) else {
                    throw APIError(400, "--ip \(want) is in none of network \(n.name)'s subnets (\(n.subnets.map(\.subnet.description).joined(separator: ", ")))")
                }
                try ipam.requestAddress(ip, in: n.id)
                address = ip
            } else {
                address = try ipam.allocateAddress(in: n.id)
            }
        } catch let e as IPAMError {
            throw APIError(e.code == .addressInUse ? 409 : 400, e.message.replacingOccurrences(of: "'\(n.id)'", with: "'\(n.name)'"))
        }
        let record = AllocationRecord(networkID: n.id, address: address, endpointID: req.endpointID, nodeID: owner,
                                      name: req.name.map { String($0.prefix(255)) })
        do {
            return Allocation(record: record, reply: try reply(n, address))
        } catch {
            try? ipam.releaseAddress(address, in: n.id)
            throw error
        }
    }

    /// The answer for `address` on `n`: its subnet's prefix length and gateway.
    public static func reply(_ n: NetworkRecord, _ address: IPAddress) throws -> AllocateReply {
        guard let s = n.subnets.first(where: { $0.subnet.contains(address) }) else {
            throw APIError(500, "address \(address) is outside network \(n.name)")
        }
        return AllocateReply(address: address, prefixLength: s.subnet.prefixLength, gateway: s.gateway, networkID: n.id)
    }

    /// Which allocation a release means, given what the store holds for it (`found`: the one at
    /// `req.address`, or, when the request has no address, the endpoint's on that network: a node
    /// giving back what it asked for before it crashed, not knowing the answer). Nil when there is
    /// nothing to release (releases repeat) or the address is now another endpoint's.
    /// - Throws: `APIError` 403 when `caller` (a node on the manager port; nil for the manager's
    ///   own calls) is not the allocation's node: a node releases only its own.
    public static func releasing(_ req: ReleaseRequest, caller: String?, network n: NetworkRecord,
                                 found: AllocationRecord?) throws -> AllocationRecord? {
        guard let a = found, a.networkID == n.id, a.endpointID == req.endpointID else { return nil }
        if let caller, a.nodeID != caller {
            throw APIError(403, "address \(req.address) on \(n.name) belongs to another node: a node releases only its own")
        }
        return a
    }
}
