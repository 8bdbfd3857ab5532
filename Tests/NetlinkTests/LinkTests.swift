import Foundation
import Glibc
@testable import Netlink
import OverlayModel
import Testing

@Suite("Links", .enabled(if: isRoot, rootNeeded))
struct LinkTests {
    @Test func bridgeAndPortConfiguredThenDeleted() throws {
        let lab = try TestNamespaces()
        defer { lab.cleanup() }
        let (_, sock) = try lab.make()
        try sock.createBridge(named: "br0", mtu: 1400)
        try sock.createVeth(named: "p0", peerName: "p0peer")
        #expect(try sock.link(named: "br0").kind == "bridge")
        #expect(try sock.link(named: "br0").mtu == 1400)
        let port = try sock.link(named: "p0")
        #expect(port.kind == "veth")
        #expect(!port.isUp)
        #expect(try sock.link(index: port.index).name == "p0")
        #expect(Set(try sock.links().map(\.name)) == ["lo", "br0", "p0", "p0peer"])

        try sock.setUp("p0")
        #expect(try sock.link(named: "p0").isUp)
        try sock.setDown("p0")
        #expect(try !sock.link(named: "p0").isUp)

        try sock.setMTU(1280, of: "p0")
        #expect(try sock.link(named: "p0").mtu == 1280)

        let bridge = try sock.link(named: "br0")
        try sock.setMaster("br0", of: "p0")
        #expect(try sock.link(named: "p0").masterIndex == bridge.index)
        try sock.setMaster(nil, of: "p0")
        #expect(try sock.link(named: "p0").masterIndex == nil)

        let mac = MACAddress("02:42:c6:12:00:07")!
        try sock.setMAC(mac, of: "p0")
        #expect(try sock.link(named: "p0").mac == mac)

        try sock.renameLink("p0", to: "p1")
        #expect(try sock.link(named: "p1").index == port.index)
        let gone = #expect(throws: NetlinkError.self) { try sock.link(named: "p0") }
        #expect(gone?.code == .notFound)

        try sock.deleteLink(named: "p1")
        try sock.deleteLink(named: "br0")
        #expect(try sock.links().map(\.name) == ["lo"])
        let missing = #expect(throws: NetlinkError.self) { try sock.deleteLink(named: "p1") }
        #expect(missing?.code == .notFound)
    }

    @Test func dummyLinksOrAClearError() throws {
        let lab = try TestNamespaces()
        defer { lab.cleanup() }
        let (_, sock) = try lab.make()
        do throws(NetlinkError) {
            try sock.createDummy(named: "dummy0", mtu: 1300)
            #expect(try sock.link(named: "dummy0").kind == "dummy")
            #expect(try sock.link(named: "dummy0").mtu == 1300)
            try sock.deleteLink(named: "dummy0")
        } catch {
            // Kernels built without CONFIG_DUMMY (like this machine's) must say so.
            #expect(error.code == .unsupported)
            #expect(error.message.contains("no 'dummy' link type"), "\(error)")
        }
    }

    @Test func vxlanWithOptions() throws {
        let lab = try TestNamespaces()
        defer { lab.cleanup() }
        let (ns, sock) = try lab.make()
        try sock.makePort("under0")
        let options = VXLANOptions(
            vni: try VNI(4096), port: 4790, local: .literal("198.18.0.1"), underlay: "under0", learning: false,
            proxyARP: true, l2miss: true, l3miss: false, ttl: 17, mtu: 1450)
        try sock.createVXLAN(named: "vxlan4096", options: options)
        let link = try sock.link(named: "vxlan4096")
        #expect(link.kind == "vxlan")
        #expect(link.vni == (try VNI(4096)))
        #expect(link.mtu == 1450)
        // What the kernel made, as iproute2 reads it.
        let shown = try inNamespace(ns, ["ip", "-d", "link", "show", "vxlan4096"]).output
        #expect(shown.contains("vxlan id 4096"))
        #expect(shown.contains("local 198.18.0.1"))
        #expect(shown.contains("dev under0"))
        #expect(shown.contains("dstport 4790"))
        #expect(shown.contains("nolearning"))
        #expect(shown.contains("proxy"))
        #expect(shown.contains("l2miss"))
        #expect(!shown.contains("l3miss"))
        #expect(shown.contains("ttl 17"))

        // A VNI already used on the same port is refused by the kernel.
        #expect(throws: NetlinkError.self) {
            try sock.createVXLAN(named: "vxlan-dup", options: VXLANOptions(vni: try VNI(4096), port: 4790))
        }
        let noUnderlay = #expect(throws: NetlinkError.self) {
            try sock.createVXLAN(named: "vx2", options: VXLANOptions(vni: try VNI(7), underlay: "nope0"))
        }
        #expect(noUnderlay?.code == .notFound)
        try sock.deleteLink(named: "vxlan4096")
    }

    @Test func vxlanCreatedInHostThenMovedIntoSandbox() throws {
        let lab = try TestNamespaces()
        defer { lab.cleanup() }
        let (_, host) = try lab.make()
        let (sandboxNS, sandbox) = try lab.make()
        try host.createVXLAN(named: "vx-move", options: VXLANOptions(vni: try VNI(4100)))
        try host.moveLink("vx-move", to: sandboxNS)
        try sandbox.createBridge(named: "br-ov")
        try sandbox.setMaster("br-ov", of: "vx-move")
        try sandbox.setUp("vx-move")
        let moved = try sandbox.link(named: "vx-move")
        #expect(moved.vni == (try VNI(4100)))
        #expect(moved.masterIndex == (try sandbox.link(named: "br-ov").index))
        #expect(moved.isUp)
        #expect(throws: NetlinkError.self) { try host.link(named: "vx-move") }
    }

    @Test func vethWithPeerInAnotherNamespaceAndPing() throws {
        let lab = try TestNamespaces()
        defer { lab.cleanup() }
        let (a, sockA) = try lab.make()
        let (b, sockB) = try lab.make()
        try sockA.createVeth(named: "veth-a", peerName: "veth-b", peerNamespace: b, mtu: 1450)
        #expect(try sockA.link(named: "veth-a").kind == "veth")
        #expect(try sockB.link(named: "veth-b").kind == "veth")
        #expect(try sockB.link(named: "veth-b").mtu == 1450)
        #expect(throws: NetlinkError.self) { try sockA.link(named: "veth-b") }

        try sockA.addAddress(InterfaceAddress("198.18.5.1/24")!, to: "veth-a")
        try sockB.addAddress(InterfaceAddress("198.18.5.2/24")!, to: "veth-b")
        try sockA.addAddress(InterfaceAddress("fd00:5::1/64")!, to: "veth-a")
        #expect(try sockA.addresses(on: "veth-a", family: .v4) == [InterfaceAddress("198.18.5.1/24")!])
        #expect(try sockA.addresses(on: "veth-a", family: .v6).contains(InterfaceAddress("fd00:5::1/64")!))
        #expect(try sockA.addresses(on: "veth-a").contains(InterfaceAddress("198.18.5.1/24")!))
        let dup = #expect(throws: NetlinkError.self) {
            try sockA.addAddress(InterfaceAddress("198.18.5.1/24")!, to: "veth-a")
        }
        #expect(dup?.code == .exists)
        try sockA.setUp("veth-a")
        try sockB.setUp("veth-b")

        let ping = try inNamespace(a, ["ping", "-c1", "-W1", "198.18.5.2"])
        #expect(ping.status == 0, "ping failed: \(ping.output)")
        // Without the address the peer no longer answers.
        try sockB.deleteAddress(InterfaceAddress("198.18.5.2/24")!, from: "veth-b")
        #expect(try sockB.addresses(on: "veth-b", family: .v4).isEmpty)
        #expect(try inNamespace(a, ["ping", "-c1", "-W1", "198.18.5.2"]).status != 0)

        // Deleting one end deletes both.
        try sockA.deleteLink(named: "veth-a")
        #expect(throws: NetlinkError.self) { try sockB.link(named: "veth-b") }
    }

    @Test func moveLinkToAnotherNamespace() throws {
        let lab = try TestNamespaces()
        defer { lab.cleanup() }
        let (_, sockA) = try lab.make()
        let (b, sockB) = try lab.make()
        try sockA.createVeth(named: "mv0", peerName: "mv0peer")
        try sockA.moveLink("mv0", to: b)
        #expect(throws: NetlinkError.self) { try sockA.link(named: "mv0") }
        #expect(try sockB.link(named: "mv0").kind == "veth")
        // Bridges are bound to their namespace: the kernel refuses to move them.
        try sockA.createBridge(named: "br-move")
        let refused = #expect(throws: NetlinkError.self) { try sockA.moveLink("br-move", to: b) }
        #expect(refused?.code == .invalidArgument)
    }

    @Test func tapDevicesPersistentAndOwned() throws {
        let lab = try TestNamespaces()
        defer { lab.cleanup() }
        let (_, sock) = try lab.make()
        let owned = try sock.createTap(named: "tap-own")
        #expect(owned.name == "tap-own")
        #expect(owned.fileDescriptor != nil)
        #expect(try sock.link(named: "tap-own").kind == "tun")
        owned.close()
        #expect(owned.fileDescriptor == nil)
        #expect(throws: NetlinkError.self) { try sock.link(named: "tap-own") }

        let persistent = try sock.createTap(named: "tap-keep", persistent: true)
        #expect(persistent.fileDescriptor == nil)
        try sock.setUp("tap-keep")
        try sock.createBridge(named: "br-tap")
        try sock.setMaster("br-tap", of: "tap-keep")
        #expect(try sock.link(named: "tap-keep").masterIndex == sock.link(named: "br-tap").index)
        try sock.deleteLink(named: "tap-keep")
        #expect(throws: NetlinkError.self) { try sock.link(named: "tap-keep") }

        // A name taken by another kind of device.
        let taken = #expect(throws: NetlinkError.self) { try sock.createTap(named: "br-tap") }
        #expect(taken != nil)
    }

    @Test("a TAP with a virtio-net header and offloads: frames are written with the 10-byte header; offloads need it")
    func tapWithVirtioNetHeaderAndOffloads() throws {
        let lab = try TestNamespaces()
        defer { lab.cleanup() }
        let (_, sock) = try lab.make()
        let tap = try sock.createTap(named: "tap-vh", virtioNetHeader: true, offloads: [.checksum, .tso4, .tso6, .tsoECN])
        defer { tap.close() }
        #expect(tap.virtioNetHeaderLength == 10)
        #expect(tap.offloads == [.checksum, .tso4, .tso6, .tsoECN])
        try sock.setUp("tap-vh")
        let fd = try #require(tap.fileDescriptor)
        // An all-zero virtio-net header, then a 60-byte broadcast frame: the device takes all 70.
        var frame = [UInt8](repeating: 0, count: 10) + [UInt8](repeating: 0xFF, count: 6) + [2, 0, 0, 0, 0, 1, 0x88, 0xB5]
        frame += [UInt8](repeating: 0, count: 70 - frame.count)
        #expect(frame.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == 70)
        // Without the header a frame is written as it is.
        let plain = try sock.createTap(named: "tap-plain")
        defer { plain.close() }
        #expect(plain.virtioNetHeaderLength == 0 && plain.offloads.isEmpty)
        // Offloads without a header, or on a persistent device, are refused before any kernel work.
        let e1 = #expect(throws: NetlinkError.self) { try sock.createTap(named: "tap-bad", offloads: [.tso4]) }
        #expect(e1?.code == .invalidArgument)
        let e2 = #expect(throws: NetlinkError.self) {
            try sock.createTap(named: "tap-bad", persistent: true, virtioNetHeader: true, offloads: [.checksum])
        }
        #expect(e2?.code == .invalidArgument)
        #expect(throws: NetlinkError.self) { try sock.link(named: "tap-bad") }
    }

    @Test func errorsNameTheOperationAndNamespace() throws {
        let lab = try TestNamespaces()
        defer { lab.cleanup() }
        let (ns, sock) = try lab.make()
        try sock.createBridge(named: "br-dup")
        let e = #expect(throws: NetlinkError.self) { try sock.createBridge(named: "br-dup") }
        #expect(e?.code == .exists)
        #expect(e?.message.contains("exists") == true)
        #expect(e?.message.contains("add link br-dup (bridge) in namespace \(ns.name)") == true)

        let bad = #expect(throws: NetlinkError.self) { try sock.createBridge(named: "a-name-far-too-long") }
        #expect(bad?.code == .invalidArgument)
        let none = #expect(throws: NetlinkError.self) { try sock.setUp("nope0") }
        #expect(none?.code == .notFound)
        #expect(none?.message.contains("nope0") == true)
    }

    @Test func oneSocketSharedByManyTasks() async throws {
        let lab = try TestNamespaces()
        defer { lab.cleanup() }
        let (_, sock) = try lab.make()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<16 {
                group.addTask { try sock.createBridge(named: "b\(i)") }
            }
            try await group.waitForAll()
        }
        #expect(try sock.links().count == 17)
    }
}
