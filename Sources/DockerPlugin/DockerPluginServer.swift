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

    private init(server: Server<HTTP1Channel>, running: Task<Void, Never>, path: String) {
        self.server = server
        self.running = running
        self.path = path
    }

    /// Makes `path`'s directory and removes a stale socket there; refuses anything else at `path`.
    public static func prepareSocket(_ path: String) throws {
        let directory = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
        if !directory.isEmpty {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        var s = stat()
        if lstat(path, &s) == 0 {
            guard (s.st_mode & S_IFMT) == S_IFSOCK else {
                throw DockerPluginError("\(path) exists and is not a socket: remove it or pick another --docker-plugin-socket")
            }
            unlink(path)
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
            do { body = try await request.collectBody(upTo: DockerPlugin.maxBody) } catch {
                return reply(DockerPluginReply(status: 413, body: Data(#"{"Err":"the request is larger than 1 MiB"}"#.utf8)))
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
        let server = Server(
            childChannelSetup: http, configuration: ServerConfiguration(address: .unixDomainSocket(path: path), backlog: 64),
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
        chmod(path, 0o660)
        return DockerPluginServer(server: server, running: running, path: path)
    }

    /// Stops serving and removes the socket.
    public func close() async {
        try? await server.shutdownGracefully()
        running.cancel()
        await running.value
        unlink(path)
    }
}

private func reply(_ r: DockerPluginReply) -> Response {
    var headers = HTTPFields()
    headers[.contentType] = DockerPlugin.contentType
    return Response(status: .init(code: r.status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: r.body)))
}
