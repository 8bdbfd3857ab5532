import Foundation
import Glibc
import Netlink
import OverlayModel
import OverlayTestKit
import Testing

/// Whether the tests can touch the kernel: namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN.
let isRoot = getuid() == 0
let rootNeeded: Comment = "needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) to create network namespaces"

/// A unique, short name with the test prefix: `ovlt-nl-3fa9c2`.
func uniqueName(_ prefix: String = "ovlt-nl-") -> String {
    prefix + String(UInt32.random(in: 0...0xFF_FFFF), radix: 16)
}

/// Namespaces a test made, pinned in a temporary handle directory of its own (nothing in
/// /run/netns). `cleanup()` removes them all and the directory; call it in a `defer`.
final class TestNamespaces {
    let directory: String
    private(set) var created: [NetworkNamespace] = []

    init() throws {
        var template = Array("/tmp/ovlt-nl-XXXXXX".utf8CString)
        guard let dir = mkdtemp(&template) else { throw NetlinkError(.system, operation: "mkdtemp", reason: "failed") }
        directory = String(cString: dir)
    }

    /// Creates a namespace `ovlt-nl-<random>` with its loopback up, and a socket in it.
    func make() throws -> (NetworkNamespace, NetlinkSocket) {
        let ns = try NetworkNamespace.create(named: uniqueName(), handleDirectory: directory)
        created.append(ns)
        let sock = try NetlinkSocket(namespace: ns)
        try sock.setUp("lo")
        return (ns, sock)
    }

    func cleanup() {
        do { try NetworkNamespace.removeHandleDirectory(directory) } catch {
            Issue.record("cleanup of \(directory) failed: \(error)")
        }
    }
}

/// Runs a program (found on PATH) and returns its exit status and combined output (through
/// OverlayTestKit's posix_spawn runner: no dependence on how the test runner set up SIGCHLD).
@discardableResult
func shell(_ arguments: [String]) throws -> (status: Int32, output: String) {
    let r = try Command.run(arguments)
    return (r.status, r.output)
}

/// Runs a program inside the namespace pinned at `ns.path` (nsenter, not `ip netns exec`, since the
/// handle is not in /run/netns).
@discardableResult
func inNamespace(_ ns: NetworkNamespace, _ arguments: [String]) throws -> (status: Int32, output: String) {
    try shell(["nsenter", "--net=\(ns.path!)"] + arguments)
}

/// The string `readlink` gives for a namespace link (`net:[4026532008]`).
func namespaceID(_ path: String) -> String {
    var buffer = [CChar](repeating: 0, count: 256)
    let n = readlink(path, &buffer, buffer.count - 1)
    return n > 0 ? String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
}

extension IPAddress {
    /// Parses a literal the test wrote.
    static func literal(_ s: String) -> IPAddress { IPAddress(s)! }
}

extension NetlinkSocket {
    /// A port to play with: one end of a veth pair whose peer (`name` + "p") stays in the same
    /// namespace, both up. (This kernel has no dummy devices.)
    func makePort(_ name: String) throws {
        try createVeth(named: name, peerName: name + "p")
        try setUp(name + "p")
        try setUp(name)
    }
}
