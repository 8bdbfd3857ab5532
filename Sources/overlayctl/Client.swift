import OverlayAPI
import Foundation
import NIOCore
import NIOPosix

/// An error the CLI prints as one line (`overlayctl: ...`) before exiting non-zero.
struct CLIError: Error, CustomStringConvertible {
    var message: String
    var code: Int32 = 1
    init(_ message: String, code: Int32 = 1) {
        self.message = message
        self.code = code
    }
    var description: String { message }
}

/// Talks to the local daemon's API.
struct DaemonClient {
    static let defaultSocket = "/run/overlayd/overlayd.sock"
    let socketPath: String

    /// `-H unix:///path` (or OVERLAY_HOST), else the default socket.
    init(host: String?) throws {
        let h = host ?? ProcessInfo.processInfo.environment["OVERLAY_HOST"] ?? "unix://\(Self.defaultSocket)"
        guard h.hasPrefix("unix://") || h.hasPrefix("/") else {
            throw CLIError("-H \(h): only unix:///path/to/overlayd.sock is supported (the API is local)")
        }
        socketPath = h.hasPrefix("unix://") ? String(h.dropFirst("unix://".count)) : h
    }

    /// Calls one of the daemon's routes (`LocalAPI`): `parameters` fill its `:names`, `query`
    /// items with a nil value are left out.
    func call<Body, Reply>(_ route: APIRoute<Body, Reply>, _ parameters: String..., query: [(String, String?)] = [],
                           body: Body? = nil) async throws -> Reply {
        guard FileManager.default.fileExists(atPath: socketPath) else {
            throw CLIError("cannot reach overlayd at \(socketPath): no such socket (is overlayd running? give -H unix:///path or OVERLAY_HOST)")
        }
        let client = APIClient(endpoint: .unix(socketPath), timeout: .seconds(120))
        do {
            return try await client.call(route, parameters: parameters, query: query, body: body, group: MultiThreadedEventLoopGroup.singleton)
        } catch let e as APIError {
            throw CLIError(e.message)
        }
    }
}

/// Prints rows as an aligned table, Docker style (columns separated by at least 3 spaces).
func printTable(_ header: [String], _ rows: [[String]]) {
    var widths = header.map(\.count)
    for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in i == cells.count - 1 ? c : c.padding(toLength: widths[i] + 3, withPad: " ", startingAt: 0) }
            .joined()
    }
    print(line(header))
    for r in rows { print(line(r)) }
}

/// Prints a value as pretty JSON.
func printJSON<T: Encodable>(_ value: T) throws {
    let e = JSONEncoder()
    e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    e.dateEncodingStrategy = .iso8601
    print(String(decoding: try e.encode(value), as: UTF8.self))
}

/// Replaces this process with `argv` (the command keeps the terminal); returns only on failure.
func execReplacing(_ argv: [String]) -> CLIError {
    var cargs = argv.map { strdup($0) }
    cargs.append(nil)
    execvp(argv[0], &cargs)
    return CLIError("cannot run \(argv[0]): \(String(cString: strerror(errno)))", code: 127)
}

/// The namespace handle of a container, reachable from this process even when the daemon runs
/// in a mount namespace of its own: through /proc/<daemon pid>/root.
/// The argv that runs `command` in the container: its namespace, and its resolv.conf when it has one.
func containerArgv(_ c: ContainerInspect, _ command: [String]) -> [String] {
    var resolv = c.ResolvConfPath
    if let r = resolv {
        let viaDaemon = "/proc/\(c.DaemonPid)/root\(r)"
        resolv = FileManager.default.fileExists(atPath: viaDaemon) ? viaDaemon : r
    }
    return ContainerProcess.argv(namespacePath: reachableNamespacePath(c), resolvConf: resolv, command: command)
}

func reachableNamespacePath(_ c: ContainerInspect) -> String {
    let viaDaemon = "/proc/\(c.DaemonPid)/root\(c.NetworkSettings.SandboxKey)"
    if c.NetworkSettings.SandboxKey.hasPrefix("/proc/") { return c.NetworkSettings.SandboxKey }
    return FileManager.default.fileExists(atPath: viaDaemon) ? viaDaemon : c.NetworkSettings.SandboxKey
}
