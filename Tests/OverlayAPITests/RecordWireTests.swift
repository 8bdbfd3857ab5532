import Foundation
import OverlayAPI
import OverlayModel
import Testing

/// Records hold typed addresses (`IPAddress`, `IPv4Address`, `CIDR`) but travel and are stored
/// as the same JSON strings as before; a value that is not an address is refused when decoded.
@Suite struct RecordWireTests {
    func json<T: Encodable>(_ value: T) throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = .sortedKeys
        return String(decoding: try e.encode(value), as: UTF8.self)
    }

    @Test func typedAddressesEncodeAsTheirText() throws {
        let subnet = SubnetConfig(subnet: CIDR("10.0.0.0/24")!, gateway: IPAddress("10.0.0.1")!, ipRange: CIDR("10.0.0.128/25"),
                                  auxAddresses: ["printer": IPAddress("10.0.0.5")!], vni: 4096)
        #expect(try json(subnet)
                    == #"{"auxAddresses":{"printer":"10.0.0.5"},"gateway":"10.0.0.1","ipRange":"10.0.0.128\/25","subnet":"10.0.0.0\/24","vni":4096}"#)
        let cn = ContainerNetwork(networkID: "n", networkName: "web", endpointID: "e", address: IPAddress("fd00::2")!, prefixLength: 64,
                                  gateway: IPAddress("fd00::1")!, mac: "02:42:0a:00:00:02", aliases: [])
        #expect(try json(cn).contains(#""address":"fd00::2""#) && json(cn).contains(#""gateway":"fd00::1""#))
        let sn = ServiceNetwork(networkID: "n", networkName: "web", vip: IPAddress("10.0.0.2"))
        #expect(try json(sn) == #"{"networkID":"n","networkName":"web","vip":"10.0.0.2"}"#)
        let reply = AllocateReply(address: IPAddress("10.0.0.9")!, prefixLength: 24, gateway: IPAddress("10.0.0.1")!, networkID: "n")
        #expect(try JSONDecoder().decode(AllocateReply.self, from: Data(json(reply).utf8)).address == IPAddress("10.0.0.9"))
    }

    @Test func aRecordWhoseAddressIsNotOneDoesNotDecode() {
        let bad = [
            #"{"address":"10.0.0.300","prefixLength":24,"gateway":"10.0.0.1","networkID":"n"}"#,
            #"{"address":"10.0.0.3","prefixLength":24,"gateway":"","networkID":"n"}"#,
        ]
        for text in bad {
            #expect(throws: DecodingError.self) { try JSONDecoder().decode(AllocateReply.self, from: Data(text.utf8)) }
        }
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(SubnetConfig.self, from: Data(#"{"auxAddresses":{},"gateway":"10.0.0.1","subnet":"10.0.0.0/33","vni":1}"#.utf8))
        }
    }
}
