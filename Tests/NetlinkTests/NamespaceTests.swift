import Foundation
import Glibc
@testable import Netlink
import OverlayModel
import Testing

@Suite("Network namespaces", .enabled(if: isRoot, rootNeeded))
struct NamespaceTests {
    @Test func createListOpenDelete() throws {
        let lab = try TestNamespaces()
        defer { lab.cleanup() }
        let name = uniqueName()
        let ns = try NetworkNamespace.create(named: name, handleDirectory: lab.directory)
        #expect(ns.name == name)
        #expect(ns.path == lab.directory + "/" + name)
        #expect(NetworkNamespace.list(handleDirectory: lab.directory) == [name])

        // A second create of the same name says it exists.
        let dup = #expect(throws: NetlinkError.self) {
            try NetworkNamespace.create(named: name, handleDirectory: lab.directory)
        }
        #expect(dup?.code == .exists)

        // Opened again by name and by path, it is the same namespace, and not ours.
        let byName = try NetworkNamespace.open(named: name, handleDirectory: lab.directory)
        let inside = try byName.run { namespaceID("/proc/thread-self/ns/net") }
        let insideAgain = try NetworkNamespace.open(path: ns.path!).run { namespaceID("/proc/thread-self/ns/net") }
        let outside = namespaceID("/proc/thread-self/ns/net")
        #expect(inside == insideAgain)
        #expect(inside != outside)
        // The calling thread never moved.
        #expect(namespaceID("/proc/thread-self/ns/net") == outside)
        // Our own process's namespace opens by PID.
        let mine = try NetworkNamespace.open(pid: getpid())
        #expect(try mine.run { namespaceID("/proc/thread-self/ns/net") } == namespaceID("/proc/self/ns/net"))

        // A fresh namespace has only a loopback device.
        let links = try NetlinkSocket(namespace: ns).links()
        #expect(links.map(\.name) == ["lo"])

        try NetworkNamespace.delete(named: name, handleDirectory: lab.directory)
        #expect(NetworkNamespace.list(handleDirectory: lab.directory).isEmpty)
        let again = #expect(throws: NetlinkError.self) {
            try NetworkNamespace.delete(named: name, handleDirectory: lab.directory)
        }
        #expect(again?.code == .notFound)
    }

    @Test func refusesBadNamesAndNonNamespaceFiles() throws {
        let lab = try TestNamespaces()
        defer { lab.cleanup() }
        for bad in ["", "..", "a/b"] {
            let e = #expect(throws: NetlinkError.self) {
                try NetworkNamespace.create(named: bad, handleDirectory: lab.directory)
            }
            #expect(e?.code == .invalidArgument)
        }
        let e = #expect(throws: NetlinkError.self) { try NetworkNamespace.open(path: "/etc/hostname") }
        #expect(e?.code == .invalidArgument)
        #expect(e?.message.contains("not a network namespace") == true)
        let missing = #expect(throws: NetlinkError.self) {
            try NetworkNamespace.open(named: "ovlt-nl-missing", handleDirectory: lab.directory)
        }
        #expect(missing?.code == .notFound)
        let noProcess = #expect(throws: NetlinkError.self) { try NetworkNamespace.open(pid: Int32.max) }
        #expect(noProcess?.code == .notFound)
        let shared = #expect(throws: NetlinkError.self) { try NetworkNamespace.removeHandleDirectory("/run/netns/") }
        #expect(shared?.code == .invalidArgument)
    }

    @Test func runPassesResultsAndErrorsThrough() throws {
        let lab = try TestNamespaces()
        defer { lab.cleanup() }
        let (ns, _) = try lab.make()
        struct Marker: Error {}
        #expect(try ns.run { 41 + 1 } == 42)
        #expect(throws: Marker.self) { try ns.run { throw Marker() } }
        // The namespace thread is not the caller's thread.
        let me = pthread_self()
        #expect(try ns.run { pthread_self() } != me)
    }

    @Test func sysctlsAreIsolatedPerNamespace() throws {
        let lab = try TestNamespaces()
        defer { lab.cleanup() }
        let (a, _) = try lab.make()
        let (b, _) = try lab.make()
        #expect(try a.sysctl("net.ipv4.ip_forward") == "0")
        try a.setSysctl("net.ipv4.ip_forward", to: "1")
        #expect(try a.sysctl("net.ipv4.ip_forward") == "1")
        #expect(try b.sysctl("net/ipv4/ip_forward") == "0")
        // Seen from a process inside, too.
        #expect(try inNamespace(a, ["sysctl", "-n", "net.ipv4.ip_forward"]).output.contains("1"))
        for bad in ["../../etc/passwd", "net..ipv4", "/proc/sys/net", "net ipv4"] {
            let e = #expect(throws: NetlinkError.self) { try a.sysctl(bad) }
            #expect(e?.code == .invalidArgument)
        }
        let missing = #expect(throws: NetlinkError.self) { try a.sysctl("net.ipv4.no_such_knob") }
        #expect(missing?.code == .notFound)
        #expect(missing?.message.contains(a.name) == true)
    }
}
