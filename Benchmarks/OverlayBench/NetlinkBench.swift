// Netlink benchmark: link create/delete through this package's libnl wrapper against iproute2,
// measured side by side in one fresh namespace. Wired to `overlay-bench netlink`.
import Foundation
import Glibc
import Netlink

/// Creates and deletes `count` links of each kind (bridges, veth pairs) in a fresh namespace three
/// ways: our `NetlinkSocket`, one `ip -n NS link ...` process per link, and one `ip -n NS -batch -`
/// for all of them. Prints microseconds per link and how many times slower iproute2 is.
func runNetlinkBenchmark(count: Int = 500) {
    guard getuid() == 0 else {
        print("netlink: skipped, needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) to create network namespaces")
        return
    }
    guard count > 0 else { return }
    // `ip -n NAME` only finds namespaces in /run/netns, so the baseline needs a handle there.
    let name = "ovlb-nl-" + String(UInt32.random(in: 0...0xFF_FFFF), radix: 16)
    do {
        let ns = try NetworkNamespace.create(named: name)
        defer {
            do { try NetworkNamespace.delete(named: name) } catch { print("netlink: cleanup failed: \(error)") }
        }
        let sock = try NetlinkSocket(namespace: ns)
        print("netlink: \(count) links of each kind, create then delete, namespace \(name)")
        print("kind    op      API µs/link  ip-per-process µs/link  ip -batch µs/link  per-process/API  batch/API")
        for kind in NetlinkBenchKind.allCases {
            let names = (0..<count).map { "\(kind.prefix)\($0)" }

            let apiCreate = try measure {
                for n in names { try kind.create(sock, n) }
            }
            let apiDelete = try measure {
                for n in names { try sock.deleteLink(named: n) }
            }

            let procCreate = try measure {
                for n in names { try runIP(["-n", name, "link", "add"] + kind.ipArguments(n)) }
            }
            let procDelete = try measure {
                for n in names { try runIP(["-n", name, "link", "del", n]) }
            }

            let batchCreate = try measure {
                try runIP(["-n", name, "-batch", "-"],
                          input: names.map { (["link", "add"] + kind.ipArguments($0)).joined(separator: " ") })
            }
            let batchDelete = try measure {
                try runIP(["-n", name, "-batch", "-"], input: names.map { "link del \($0)" })
            }

            let remaining = try sock.links().count
            guard remaining == 1 else { throw BenchError("expected only lo after deleting, found \(remaining) links") }

            for (op, api, proc, batch) in [
                ("create", apiCreate, procCreate, batchCreate), ("delete", apiDelete, procDelete, batchDelete),
            ] {
                let a = api / Double(count), p = proc / Double(count), b = batch / Double(count)
                print(
                    pad(kind.label, 8) + pad(op, 8) + pad(format(a), 13) + pad(format(p), 24) + pad(format(b), 19)
                        + pad(format(p / a) + "x", 17) + format(b / a) + "x")
            }
        }
    } catch {
        print("netlink: failed: \(error)")
    }
}

private enum NetlinkBenchKind: CaseIterable {
    case bridge, veth

    var label: String { self == .bridge ? "bridge" : "veth" }
    var prefix: String { self == .bridge ? "b" : "v" }

    func create(_ sock: NetlinkSocket, _ name: String) throws {
        switch self {
        case .bridge: try sock.createBridge(named: name)
        case .veth: try sock.createVeth(named: name, peerName: name + "p")
        }
    }

    func ipArguments(_ name: String) -> [String] {
        switch self {
        case .bridge: return [name, "type", "bridge"]
        case .veth: return [name, "type", "veth", "peer", "name", name + "p"]
        }
    }
}

private struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Microseconds `body` took.
private func measure(_ body: () throws -> Void) throws -> Double {
    let clock = ContinuousClock()
    let elapsed = try clock.measure(body)
    return Double(elapsed.components.seconds) * 1e6 + Double(elapsed.components.attoseconds) / 1e12
}

/// Runs `ip` with `arguments` (posix_spawn, as a shell would: Foundation's Process costs tens of
/// milliseconds per start here and would flatter us), feeding `input` lines on stdin; throws
/// unless it exits 0.
private func runIP(_ arguments: [String], input: [String]? = nil) throws {
    let path = access("/usr/sbin/ip", X_OK) == 0 ? "/usr/sbin/ip" : "/sbin/ip"
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    var fds: [Int32] = [-1, -1]
    if input != nil {
        guard pipe(&fds) == 0 else { throw BenchError("pipe: \(String(cString: strerror(errno)))") }
        posix_spawn_file_actions_adddup2(&actions, fds[0], 0)
        posix_spawn_file_actions_addclose(&actions, fds[0])
        posix_spawn_file_actions_addclose(&actions, fds[1])
    }
    let argv: [UnsafeMutablePointer<CChar>?] = (["ip"] + arguments).map { strdup($0) } + [nil]
    defer { for a in argv { free(a) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, path, &actions, nil, argv, environ)
    if input != nil { close(fds[0]) }
    guard rc == 0 else {
        if input != nil { close(fds[1]) }
        throw BenchError("posix_spawn ip: \(String(cString: strerror(rc)))")
    }
    if let input {
        let bytes = Array((input.joined(separator: "\n") + "\n").utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { write(fds[1], $0.baseAddress, $0.count) }
            if n <= 0 { break }
            offset += n
        }
        close(fds[1])
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    guard status == 0 else {
        throw BenchError("ip \(arguments.prefix(6).joined(separator: " ")) ... failed (wait status \(status))")
    }
}

private func format(_ value: Double) -> String {
    String(format: value >= 100 ? "%.0f" : "%.1f", value)
}

private func pad(_ s: String, _ width: Int) -> String {
    s.count >= width ? s + " " : s + String(repeating: " ", count: width - s.count)
}
