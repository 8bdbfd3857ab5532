import IPAM
import OverlayModel

/// The demo network's addresses, handed out the way a swarm manager would: a /24 from the global
/// default pool (10.0.0.0/8), the gateway reserved, containers allocated serially.
struct DemoAddressing {
    private var ipam = IPAM(pools: AddressPool.globalDefaults, strategy: .serial)
    let subnet: CIDR
    let gateway: IPv4Address

    init() throws {
        let space = try ipam.createNetwork("demo")[0]
        subnet = space.subnet
        guard let gw = space.gateway.v4 else { throw LabAddressError() }
        gateway = gw
    }

    mutating func nextAddress() throws -> IPv4Address {
        guard let a = try ipam.allocateAddress(in: "demo").v4 else { throw LabAddressError() }
        return a
    }
}

struct LabAddressError: Error, CustomStringConvertible {
    var description: String { "the demo network should be IPv4" }
}
