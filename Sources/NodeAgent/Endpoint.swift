import Foundation
import OverlayDriver
import OverlayModel

/// What a host publishes about one of its endpoints in a network's `endpoint_table` (JSON).
public struct EndpointRecord: Codable, Hashable, Sendable {
    /// The endpoint ID (the table key).
    public var id: String
    /// A human name (the container's).
    public var name: String
    /// The overlay address, e.g. `10.0.0.2`.
    public var address: String
    /// The MAC address, e.g. `02:42:0a:00:00:02`.
    public var mac: String
    /// The underlay address of the host (its VTEP).
    public var vtep: String
    /// Other names the endpoint answers to in DNS on this network (`--network-alias`).
    public var aliases: [String]?
    /// The service this endpoint is a task of, if any.
    public var service: String?
    /// Its owner's signature (base64) over ``signedMessage(network:owner:)``, so that a holder
    /// of the gossip key cannot publish a record under a node's name (nil: not signed).
    public var signature: String?

    /// Makes a record from an attached endpoint.
    public init(endpoint: OverlayEndpoint, name: String, aliases: [String] = [], service: String? = nil) {
        id = endpoint.id
        self.name = name
        address = endpoint.address.description
        mac = endpoint.mac.description
        vtep = endpoint.vtep.description
        self.aliases = aliases.isEmpty ? nil : aliases
        self.service = service
    }

    /// The JSON bytes stored in the table.
    public func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return Array((try? encoder.encode(self)) ?? Data())
    }

    /// What the owner signs: the record without its signature (the same sorted-key JSON as
    /// ``encoded()``), bound to its network and owner so that it cannot be replayed elsewhere.
    public func signedMessage(network: String, owner: String) -> [UInt8] {
        var unsigned = self
        unsigned.signature = nil
        return Array("swift-overlay endpoint record 1\n\(network)\n\(owner)\n".utf8) + unsigned.encoded()
    }

    /// Decodes table bytes; nil if they are not a valid record.
    public static func decode(_ bytes: [UInt8]) -> EndpointRecord? {
        try? JSONDecoder().decode(EndpointRecord.self, from: Data(bytes))
    }

    /// The driver's peer entry, or nil if an address does not parse.
    public var peer: PeerEntry? {
        guard let a = IPAddress(address), let m = MACAddress(mac), let v = IPAddress(vtep) else { return nil }
        return PeerEntry(address: a, mac: m, vtep: v)
    }
}

/// A peer the agent programmed into (or removed from) the driver, for logs and UIs.
public struct PeerChange: Sendable, Hashable, CustomStringConvertible {
    /// Whether the peer was added (true) or removed (false).
    public var added: Bool
    /// The network.
    public var network: String
    /// The endpoint the peer came from.
    public var endpoint: Endpoint
    /// The node that published it.
    public var owner: String
    /// `+ demo 10.0.0.3 02:42:0a:00:00:03 via 198.18.0.2 (h2/c2)`.
    public var description: String {
        "\(added ? "+" : "-") \(network) \(endpoint.address) \(endpoint.mac) via \(endpoint.vtep) (\(owner)/\(endpoint.name))"
    }
}

/// An endpoint as the agent and its consumers use it: a record decoded, and its addresses
/// parsed, once, when gossip delivers it. The driver's peer table, the load balancers and the
/// embedded DNS read this, never the record's JSON.
public struct Endpoint: Sendable, Hashable {
    /// The endpoint ID.
    public var id: String
    /// The container's name.
    public var name: String
    /// The overlay address.
    public var address: IPAddress
    /// The MAC address.
    public var mac: MACAddress
    /// The underlay address of the host it lives on (its VTEP).
    public var vtep: IPAddress
    /// Other names it answers to in DNS on its network (`--network-alias`).
    public var aliases: [String]
    /// The service it is a task of, if any.
    public var service: String?

    /// The typed endpoint of a record; nil if one of its addresses does not parse.
    public init?(_ record: EndpointRecord) {
        guard let a = IPAddress(record.address), let m = MACAddress(record.mac), let v = IPAddress(record.vtep) else { return nil }
        id = record.id
        name = record.name
        address = a
        mac = m
        vtep = v
        aliases = record.aliases ?? []
        service = record.service
    }

    /// The typed endpoint of a table value; nil if it is not a valid record.
    public init?(tableValue bytes: [UInt8]) {
        guard let record = EndpointRecord.decode(bytes) else { return nil }
        self.init(record)
    }

    /// The overlay address if it is IPv4 (what the load balancers take).
    public var ipv4: IPv4Address? {
        if case .v4(let a) = address { return a }
        return nil
    }

    /// The driver's peer entry.
    public var peer: PeerEntry { PeerEntry(address: address, mac: mac, vtep: vtep) }
}

/// A change to the endpoints of a network, local ones included: the one feed the load
/// balancers, the embedded DNS and the endpoint index follow.
public enum EndpointEvent: Sendable, Hashable {
    /// An endpoint was published or changed.
    case upsert(network: String, key: String, owner: String, endpoint: Endpoint)
    /// An endpoint was withdrawn (deleted, its owner failed, or its record became invalid).
    case remove(network: String, key: String)
    /// This host stopped following the network: forget all of its endpoints.
    case networkLeft(String)
}
