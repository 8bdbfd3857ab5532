import ClusterManager
import Foundation
import GWBridge
import IPAM
import Netlink
import NodeAgent
import NIOPosix
import OverlayModel

extension OverlayDaemon {
    /// `network create -d bridge`: only the gateway bridge, made (or adopted) now, on this host, so
    /// that init/join then reuse it as it is (Docker's custom docker_gwbridge).
    func createGatewayBridge(_ req: NetworkCreateRequest) throws -> NetworkInspect {
        let s = try GatewaySettings(bridgeRequest: req)
        if gateway != nil {
            throw APIError(409, "the gateway bridge already exists and is in use by this node's swarm; leave the swarm to change it")
        }
        let info = try ensureGateway(s)
        try store.put(.setting, "gwbridge", s)
        return NetworkInspect(
            Name: info.bridgeName, Id: info.bridgeName, Created: Date(), Scope: "local", Driver: "bridge", EnableIPv6: false,
            IPAM: .init(Driver: "default", Config: [.init(Subnet: info.subnet.description, Gateway: info.gateway.description,
                                                          IPRange: nil, AuxiliaryAddresses: nil)]),
            Internal: false, Attachable: false, Ingress: false, Containers: [:],
            Options: [GatewaySettings.optBridgeName: info.bridgeName, GatewaySettings.optICC: "\(info.icc)",
                      GatewaySettings.optMasquerade: "\(info.ipMasquerade)"],
            Labels: [:], Peers: nil, Endpoints: nil)
    }

    /// Creates or adopts the gateway bridge in this namespace.
    @discardableResult
    func ensureGateway(_ s: GatewaySettings) throws -> GatewayBridgeInfo {
        let bridge: GatewayBridge
        do { bridge = GatewayBridge(namespace: try NetworkNamespace.current()) } catch {
            throw APIError(500, "cannot open this host's namespace for the gateway bridge: \(error)")
        }
        do {
            let info = try bridge.ensure(s.options)
            gateway = bridge
            return info
        } catch {
            throw APIError(error.code == .invalidArgument || error.code == .conflict ? 400 : 500, "gateway bridge: \(error.message)")
        }
    }

    /// At init/join/start: the gateway bridge exists, with every container's address and published
    /// port as they were.
    func startGateway() throws {
        let s = try store.get(.setting, "gwbridge", as: GatewaySettings.self) ?? GatewaySettings()
        try ensureGateway(s)
        let containers = try store.all(.container, as: ContainerRecord.self)
        var addresses: [IPv4Address] = []
        var mappings: [PortMapping] = []
        for c in containers {
            guard let a = c.gatewayAddress else { continue }
            addresses.append(a)
            mappings += (try? PublishedPorts.mappings(c.publish, to: a)) ?? []
        }
        do { try gateway?.restore(addresses: addresses, publications: mappings) } catch {
            log(.gateway).error("cannot restore the gateway bridge's containers: \(error.message)")
        }
    }

    /// Starts connecting a container's namespace to the gateway bridge (veth, address, default
    /// route) on a thread of `blockingWork`; `finishGatewayAttach` publishes its ports.
    func startGatewayAttach(_ ns: NetworkNamespace, interface: String) -> Task<GatewayAttachment, Error> {
        let gateway = self.gateway
        let pool = blockingWork
        return Task {
            guard let gateway else { throw APIError(503, "the gateway bridge is not set up on this node") }
            return try await pool.runIfActive {
                do { return try gateway.attach(container: ns, interfaceName: interface) } catch {
                    throw APIError(500, "gateway bridge: \((error as? GatewayBridgeError)?.message ?? "\(error)")")
                }
            }
        }
    }

    /// Records the gateway address and publishes the container's ports (all or nothing: on an
    /// error the container is taken off the bridge again).
    func finishGatewayAttach(_ record: inout ContainerRecord, _ task: Task<GatewayAttachment, Error>) async throws {
        let attachment = try await task.value
        guard let gateway else { throw APIError(503, "the gateway bridge is not set up on this node") }
        record.gatewayAddress = attachment.address
        do {
            for m in try PublishedPorts.mappings(record.publish, to: attachment.address) {
                do { try gateway.publish(m) } catch {
                    throw APIError(error.code == .conflict ? 409 : 400, "-p: \(error.message)")
                }
            }
        } catch {
            try? gateway.detach(address: attachment.address)
            record.gatewayAddress = nil
            throw error
        }
    }

    func detachGateway(_ c: ContainerRecord) {
        guard let gateway, let a = c.gatewayAddress else { return }
        do { try gateway.detach(address: a) } catch { log(.gateway).warning("gateway bridge: \(error.message)") }
    }

    /// The gateway bridge leg of a container attached for another runtime (CNI).
    static let gatewayLegName = "ovgw0"

    /// Routes `address` (the container's overlay address) from the host to the container's
    /// gateway leg: a CNI runtime's `portmap` DNATs published ports to it.
    func routeFromHost(_ address: IPAddress, to c: ContainerRecord) throws {
        guard let leg = c.gatewayAddress, let bridge = gateway?.info?.bridgeName else { return }
        do {
            let sock = try NetlinkSocket(namespace: try NetworkNamespace.current())
            try sock.replaceRoute(Route(destination: try CIDR(containing: address, prefixLength: address.family.bitWidth), gateway: .v4(leg), device: bridge))
        } catch {
            throw APIError(500, "cannot route \(address) from the host to \(c.name)'s gateway leg \(leg): \(error)")
        }
    }

    /// Takes that route away (a route already gone is no error).
    func unrouteFromHost(_ address: IPAddress, of c: ContainerRecord) {
        guard let leg = c.gatewayAddress, let bridge = gateway?.info?.bridgeName,
              let sock = try? NetlinkSocket(namespace: try NetworkNamespace.current()),
              let destination = try? CIDR(containing: address, prefixLength: address.family.bitWidth) else { return }
        try? sock.deleteRoute(Route(destination: destination, gateway: .v4(leg), device: bridge))
    }
}
