import Foundation
import Glibc
import Netlink
import OverlayModel
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

/// Runs a program (found on PATH) and returns its exit status and combined output. posix_spawn and
/// waitpid directly: no dependence on how the test runner set up SIGCHLD.
@discardableResult
func shell(_ arguments: [String]) throws -> (status: Int32, output: String) {
    var fds: [Int32] = [-1, -1]
    guard pipe(&fds) == 0 else { throw NetlinkError(.system, operation: "pipe", reason: "failed") }
    _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
    _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
    posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
    let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
    defer { for a in argv { free(a) } }
    var pid: pid_t = 0
    let rc = posix_spawnp(&pid, arguments[0], &actions, nil, argv, environ)
    close(fds[1])
    defer { close(fds[0]) }
    guard rc == 0 else {
        throw NetlinkError(.system, operation: "run \(arguments[0])", reason: String(cString: strerror(rc)))
    }
    var output: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fds[0], $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        output += buffer[0..<n]
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let exitCode: Int32 = status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
    return (exitCode, String(decoding: output, as: UTF8.self))
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
