import FoundationEssentials
import Glibc
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore

/// The plugin on a Unix socket where dockerd's plugin discovery finds it
/// (`/run/docker/plugins/swift-overlay.sock`): HTTP/1.1 POSTs to `/Interface.Method`.
public final class DockerPluginServer: Sendable {
    private let server: Server<HTTP1Channel>
    private let running: Task<Void, Never>
    /// The socket's path.
    public let path: String
    private let bound: SocketIdentity?

    private init(server: Server<HTTP1Channel>, running: Task<Void, Never>, path: String, bound: SocketIdentity?) {
        self.server = server
        self.bound = bound
        self.running = running
        self.path = path
    }

    /// Makes `path`'s directory; refuses anything but a socket at `path` (a socket there is
    /// replaced once the new one is bound).
    public static func prepareSocket(_ path: String) throws {
        let directory = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
        if !directory.isEmpty {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        var s = stat()
        // A socket there (a daemon's before, maybe running) is replaced when the new one is in place.
        if lstat(path, &s) == 0, (s.st_mode & S_IFMT) != S_IFSOCK {
            throw DockerPluginError("\(path) exists and is not a socket: remove it or pick another --docker-plugin-socket")
        }
    }

    /// Adds the plugin's one route to `router`: `POST /Interface.Method`, a body of at most
    /// ``DockerPlugin/maxBody`` (more is answered 413 without being read whole), answered by
    /// ``DockerPlugin/handle(path:body:)``. For a server with limits of its own (overlayd serves it
    /// behind its API server's connection and time limits).
    public static func addRoute<Context: RequestContext>(for plugin: DockerPlugin, to router: Router<Context>, logger: Logger) {
        router.post("/:call") { request, context -> Response in
            let call = context.parameters.get("call") ?? ""
            var request = request
            let body: ByteBuffer
            do { body = try await request.collectBody(upTo: DockerPlugin.maxBody) } catch is NIOTooManyBytesError {
                return reply(DockerPluginReply(status: 413, body: Data(#"{"Err":"the request is larger than 1 MiB"}"#.utf8)))
            } catch {
                // Not its size: the body broke off (the client went away, or the stream failed).
                return reply(DockerPluginReply(status: 400, body: Data(#"{"Err":"the request body did not arrive whole"}"#.utf8)))
            }
            let answer = await plugin.handle(path: "/" + call, body: Data(buffer: body))
            if answer.status != 200 || answer.text.contains("\"Err") {
                logger.notice("docker plugin \(call): \(answer.status) \(answer.text.prefix(300))")
            } else {
                logger.debug("docker plugin \(call)")
            }
            return reply(answer)
        }
    }

    /// Binds `path` (a stale socket there is replaced; its directory is made) and serves `plugin`.
    public static func start(_ plugin: DockerPlugin, path: String, group: any EventLoopGroup, logger: Logger) async throws -> DockerPluginServer {
        try prepareSocket(path)
        let router = Router()
        addRoute(for: plugin, to: router, logger: logger)
        let responder = router.buildResponder()
        let http = HTTP1Channel(
            responder: { request, writer, channel in
                let context = BasicRequestContext(source: .init(channel: channel, logger: logger))
                let response = (try? await responder.respond(to: request, context: context))
                    ?? reply(DockerPluginReply(status: 500, body: Data(#"{"Err":"internal error"}"#.utf8)))
                try await writer.write(response: response.head, body: response.body)
            },
            configuration: HTTP1Channel.Configuration(idleTimeout: .seconds(120)))
        let bound = AsyncStream<Void>.makeStream()
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .notice)
        let staging = SocketFile.staging(for: path)
        let server = Server(
            childChannelSetup: http, configuration: ServerConfiguration(address: .unixDomainSocket(path: staging ?? path), backlog: 64),
            onServerRunning: { _ in
                bound.continuation.yield()
                bound.continuation.finish()
            },
            eventLoopGroup: group, logger: quiet)
        let running = Task {
            do { try await server.run() } catch {
                bound.continuation.finish()
                logger.error("the Docker plugin on \(path) stopped: \(error)")
            }
        }
        var started = bound.stream.makeAsyncIterator()
        guard await started.next() != nil else {
            running.cancel()
            throw DockerPluginError("cannot listen on \(path)")
        }
        chmod(staging ?? path, 0o660)
        var identity = SocketIdentity(path: path)
        if let staging {
            do { identity = try SocketFile.publish(staging, at: path) } catch {
                try? await server.shutdownGracefully()
                running.cancel()
                throw error
            }
        }
        return DockerPluginServer(server: server, running: running, path: path, bound: identity)
    }

    /// Stops serving and removes the socket if it is still the one this server bound.
    public func close() async {
        try? await server.shutdownGracefully()
        running.cancel()
        await running.value
        SocketFile.remove(path, ifStill: bound)
    }
}

/// A file's device and inode: which socket a path names now.
public struct SocketIdentity: Equatable, Sendable {
    public var device: UInt64
    public var inode: UInt64

    /// The socket at `path` (nil: nothing there, or not a socket).
    public init?(path: String) {
        var s = stat()
        guard lstat(path, &s) == 0, (s.st_mode & S_IFMT) == S_IFSOCK else { return nil }
        device = UInt64(s.st_dev)
        inode = UInt64(s.st_ino)
    }
}

/// A listening Unix socket that a stopping server removes only while it is still its own.
/// SwiftNIO unlinks the path a server socket was bound to when it closes, whatever socket is
/// there by then: a daemon stopping after a newer one took over its path would take the newer
/// one's socket with it. So a server binds a staging name beside the path and renames it into
/// place (which also replaces an older socket atomically: a client never finds the path
/// missing); NIO's unlink at close then finds nothing, and ``remove(_:ifStill:)`` decides.
public enum SocketFile {
    /// The name to bind before renaming onto `path`: in the same directory, unique to this
    /// process and call. nil when it would not fit a socket address (108 bytes): bind `path`.
    public static func staging(for path: String) -> String? {
        // In the same directory (a rename does not cross file systems); not `*.sock`: dockerd's
        // plugin discovery lists `*.sock` in its plugin directory.
        let name = ".ovl-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let staging = path.lastIndex(of: "/").map { path[...$0] + name } ?? name
        return staging.utf8.count <= 107 ? staging : nil
    }

    /// Renames the bound `staging` socket onto `path` and returns what `path` names then.
    /// Refuses to replace anything at `path` but a socket.
    public static func publish(_ staging: String, at path: String) throws -> SocketIdentity? {
        var s = stat()
        if lstat(path, &s) == 0, (s.st_mode & S_IFMT) != S_IFSOCK {
            unlink(staging)
            throw DockerPluginError("\(path) exists and is not a socket: remove it or pick another path")
        }
        // Read before the rename (which keeps the inode): what is at `path` afterwards may
        // already be another's.
        let identity = SocketIdentity(path: staging)
        guard rename(staging, path) == 0 else {
            let why = String(cString: strerror(errno))
            unlink(staging)
            throw DockerPluginError("cannot put the socket in place at \(path): \(why)")
        }
        return identity
    }

    /// Removes `path` if it is still the socket `identity` names.
    public static func remove(_ path: String, ifStill identity: SocketIdentity?) {
        if let identity, SocketIdentity(path: path) == identity { unlink(path) }
    }
}

private func reply(_ r: DockerPluginReply) -> Response {
    var headers = HTTPFields()
    headers[.contentType] = DockerPlugin.contentType
    return Response(status: .init(code: r.status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: r.body)))
}
