import Foundation
import Glibc
@testable import Netlink
import OverlayModel
import Testing

@Suite("Routes, neighbours, FDB", .enabled(if: isRoot, rootNeeded))
struct TableTests {
    @Test func routesAddReplaceDelete() throws {
        let lab = try TestNamespaces()
        defer { lab.cleanup() }
        let (ns, sock) = try lab.make()
        try sock.makePort("d0")
        try sock.makePort("d1")
        try sock.addAddress(InterfaceAddress("198.18.10.1/24")!, to: "d0")
        try sock.addAddress(InterfaceAddress("198.18.11.1/24")!, to: "d1")

        let net = CIDR("198.19.0.0/16")!
        try sock.addRoute(Route(destination: net, gateway: .literal("198.18.10.254")))
        var routes = try sock.routes(family: .v4)
        #expect(routes.contains(Route(destination: net, gateway: .literal("198.18.10.254"), device: "d0")))
        let dup = #expect(throws: NetlinkError.self) {
            try sock.addRoute(Route(destination: net, gateway: .literal("198.18.10.254")))
        }
        #expect(dup?.code == .exists)

        try sock.replaceRoute(Route(destination: net, gateway: .literal("198.18.11.254"), device: "d1"))
        routes = try sock.routes(family: .v4)
        #expect(routes.contains(Route(destination: net, gateway: .literal("198.18.11.254"), device: "d1")))
        #expect(!routes.contains { $0.destination == net && $0.device == "d0" })

        // Default route through a gateway outside every connected subnet: needs onlink.
        #expect(throws: NetlinkError.self) {
            try sock.addRoute(Route(destination: nil, gateway: .literal("203.0.113.1"), device: "d0"))
        }
        try sock.addRoute(Route(destination: nil, gateway: .literal("203.0.113.1"), device: "d0", onLink: true))
        #expect(try sock.routes(family: .v4).contains(
            Route(destination: nil, gateway: .literal("203.0.113.1"), device: "d0", onLink: true)))
        let shown = try inNamespace(ns, ["ip", "route", "show", "default"]).output
        #expect(shown.contains("default via 203.0.113.1 dev d0"), "\(shown)")
        #expect(shown.contains("onlink"), "\(shown)")

        // A device route in another table, IPv6.
        try sock.addRoute(Route(destination: CIDR("fd00:77::/64")!, device: "d1", table: 100))
        #expect(try sock.routes(table: 100).contains(Route(destination: CIDR("fd00:77::/64")!, device: "d1", table: 100)))

        try sock.deleteRoute(Route(destination: net))
        #expect(!(try sock.routes(family: .v4).contains { $0.destination == net }))
        let missing = #expect(throws: NetlinkError.self) { try sock.deleteRoute(Route(destination: net, device: "d0")) }
        #expect(missing?.code == .notFound)
        // A route someone else added (iproute2: protocol boot) is deleted too.
        #expect(try inNamespace(ns, ["ip", "route", "add", "198.19.7.0/24", "dev", "d0"]).status == 0)
        try sock.deleteRoute(Route(destination: CIDR("198.19.7.0/24")!))
        #expect(!(try inNamespace(ns, ["ip", "route"]).output.contains("198.19.7.0/24")))
        let bad = #expect(throws: NetlinkError.self) { try sock.addRoute(Route(destination: net)) }
        #expect(bad?.code == .invalidArgument)
    }

    @Test func neighbourAddFailsOnExistingReplaceDoesNot() throws {
        let lab = try TestNamespaces()
        defer { lab.cleanup() }
        let (ns, sock) = try lab.make()
        try sock.makePort("d0")
        let ip = IPAddress.literal("198.18.20.5")
        let first = MACAddress("02:42:c6:12:14:05")!
        let second = MACAddress("02:42:c6:12:14:99")!
        try sock.addNeighbor(Neighbor(address: ip, mac: first, device: "d0"))
        #expect(try sock.neighbors(device: "d0") == [Neighbor(address: ip, mac: first, device: "d0")])

        let e = #expect(throws: NetlinkError.self) {
            try sock.addNeighbor(Neighbor(address: ip, mac: second, device: "d0"))
        }
        #expect(e?.code == .exists)
        #expect(e?.message.contains("exists") == true)
        #expect(try sock.neighbors(device: "d0").first?.mac == first)

        try sock.replaceNeighbor(Neighbor(address: ip, mac: second, device: "d0"))
        try sock.replaceNeighbor(Neighbor(address: ip, mac: second, device: "d0"))
        #expect(try sock.neighbors(device: "d0") == [Neighbor(address: ip, mac: second, device: "d0")])
        #expect(try inNamespace(ns, ["ip", "neigh", "show", "dev", "d0"]).output.contains("198.18.20.5 lladdr 02:42:c6:12:14:99 PERMANENT"))

        let v6 = IPAddress.literal("fd00:20::5")
        try sock.replaceNeighbor(Neighbor(address: v6, mac: first, device: "d0"))
        #expect(try sock.neighbors(device: "d0").contains(Neighbor(address: v6, mac: first, device: "d0")))

        try sock.deleteNeighbor(ip, device: "d0")
        try sock.deleteNeighbor(v6, device: "d0")
        let left = try sock.neighbors(device: "d0")
        #expect(!left.contains { $0.address == ip || $0.address == v6 }, "\(left)")
        #expect(throws: NetlinkError.self) { try sock.deleteNeighbor(ip, device: "d0") }
    }

    @Test func fdbEntriesOnVXLANDevice() throws {
        let lab = try TestNamespaces()
        defer { lab.cleanup() }
        let (ns, sock) = try lab.make()
        try sock.createVXLAN(named: "vx0", options: VXLANOptions(vni: try VNI(4097), learning: false))
        try sock.setUp("vx0")
        let flood = MACAddress.zero
        let remote1 = IPAddress.literal("198.18.0.11")
        let remote2 = IPAddress.literal("198.18.0.12")
        let peerMAC = MACAddress("02:42:0a:00:00:05")!

        try sock.appendFDB(FDBEntry(mac: flood, destination: remote1, device: "vx0"))
        try sock.appendFDB(FDBEntry(mac: flood, destination: remote2, device: "vx0"))
        try sock.replaceFDB(FDBEntry(mac: peerMAC, destination: remote1, device: "vx0"))
        try sock.replaceFDB(FDBEntry(mac: peerMAC, destination: remote2, device: "vx0"))

        let shown = try inNamespace(ns, ["bridge", "fdb", "show", "dev", "vx0"]).output
        #expect(shown.contains("00:00:00:00:00:00 dst 198.18.0.11 self permanent"), "\(shown)")
        #expect(shown.contains("00:00:00:00:00:00 dst 198.18.0.12 self permanent"), "\(shown)")
        #expect(shown.contains("02:42:0a:00:00:05 dst 198.18.0.12 self permanent"), "\(shown)")
        #expect(!shown.contains("02:42:0a:00:00:05 dst 198.18.0.11"), "replace must leave one destination: \(shown)")

        let entries = try sock.fdbEntries(device: "vx0")
        #expect(entries.contains(FDBEntry(mac: peerMAC, destination: remote2, device: "vx0")))
        #expect(entries.filter { $0.mac == flood }.count == 2)

        try sock.deleteFDB(FDBEntry(mac: flood, destination: remote1, device: "vx0"))
        try sock.deleteFDB(FDBEntry(mac: peerMAC, destination: remote2, device: "vx0"))
        let after = try inNamespace(ns, ["bridge", "fdb", "show", "dev", "vx0"]).output
        #expect(!after.contains("dst 198.18.0.11"), "\(after)")
        #expect(after.contains("00:00:00:00:00:00 dst 198.18.0.12 self permanent"), "\(after)")
        #expect(!after.contains("02:42:0a:00:00:05"), "\(after)")
    }
}
