import CNetlink
import Glibc
@testable import Netlink
import OverlayModel
import Testing

/// Checks that need no kernel: value parsing and the error mapping.
struct ValueTests {
    @Test func interfaceAddressParsesAndRefuses() {
        let a = InterfaceAddress("10.0.0.2/24")
        #expect(a?.address == IPAddress("10.0.0.2"))
        #expect(a?.prefixLength == 24)
        #expect(a?.subnet == CIDR("10.0.0.0/24"))
        #expect(a?.description == "10.0.0.2/24")
        #expect(InterfaceAddress("fd00::1/64")?.subnet == CIDR("fd00::/64"))
        for bad in ["10.0.0.2", "10.0.0.2/33", "fd00::1/129", "10.0.0.2/-1", "x/24", "10.0.0.2/24/1", "10.0.0.2/٢٤"] {
            #expect(InterfaceAddress(bad) == nil, "\(bad)")
        }
    }

    @Test func libnlCodesMapToErrorCodesWithLibnlMessages() {
        let e = NetlinkError.libnl(-NLE_EXIST, "add link br0 (bridge) in namespace h1")
        #expect(e.code == .exists)
        #expect(e.message == "add link br0 (bridge) in namespace h1: Object exists")
        #expect(NetlinkError.libnl(-NLE_OBJ_NOTFOUND, "x").code == .notFound)
        #expect(NetlinkError.libnl(-NLE_NODEV, "x").code == .notFound)
        #expect(NetlinkError.libnl(-NLE_PERM, "x").code == .permissionDenied)
        #expect(NetlinkError.libnl(-NLE_BUSY, "x").code == .busy)
        #expect(NetlinkError.libnl(-NLE_INVAL, "x").code == .invalidArgument)
        #expect(NetlinkError.libnl(-NLE_OPNOTSUPP, "x").code == .unsupported)
        #expect(NetlinkError.libnl(-NLE_NOMEM, "x").code == .system)
        #expect(NetlinkError.posix(EEXIST, "create namespace a").message == "create namespace a: File exists")
        #expect(NetlinkError.posix(ENOENT, "x").code == .notFound)
        #expect(NetlinkError.posix(EPERM, "x").code == .permissionDenied)
    }

    @Test func sysctlNamesMapToProcPaths() throws {
        #expect(try NetworkNamespace.sysctlPath("net.ipv4.ip_forward", "op") == "/proc/sys/net/ipv4/ip_forward")
        #expect(try NetworkNamespace.sysctlPath("net/ipv4/conf/eth0.5/forwarding", "op")
            == "/proc/sys/net/ipv4/conf/eth0.5/forwarding")
        for bad in ["", "net..ipv4", "../etc", "net/../../etc", "/net/ipv4", "net.ipv4.", "net ipv4", "net\u{0}x"] {
            #expect(throws: NetlinkError.self, "\(bad)") { try NetworkNamespace.sysctlPath(bad, "op") }
        }
    }

    @Test func linkNamesAreCheckedBeforeTheKernel() throws {
        try validateLinkName("vxlan4096", "op")
        try validateLinkName("a23456789012345", "op")
        for bad in ["", "a234567890123456", "a/b", "a b", "a:b", ".", ".."] {
            let e = #expect(throws: NetlinkError.self, "\(bad)") { try validateLinkName(bad, "op") }
            #expect(e?.code == .invalidArgument)
        }
    }

    @Test func routeDescriptionsReadLikeIPRoute() {
        #expect(Route(destination: nil, gateway: IPAddress("10.0.0.1"), device: "eth0").description
            == "default via 10.0.0.1 dev eth0")
        #expect(Route(destination: CIDR("10.1.0.0/16"), device: "br0", table: 100, onLink: true).description
            == "10.1.0.0/16 dev br0 table 100 onlink")
    }
}
