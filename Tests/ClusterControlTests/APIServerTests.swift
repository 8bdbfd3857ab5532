import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing
@testable import ClusterControl

/// The API server and client on a Unix socket, without a daemon: routes, the error shape, body
/// limits, and connections kept open between calls.
@Suite struct APIServerTests {
    struct Echo: Codable, Equatable { var word: String }

    /// Whether /v1/slow has answered yet.
    static let slowAnswered = Mutex(false)

    /// Serves the test routes. Tests not about deadlines give a request two minutes to arrive
    /// whole: the client writes it from a task, and CI's parallel suites held both cooperative
    /// threads past the default 10 s between the server's accept and that task's write (the
    /// connection was cut before the request came, and the call read "closed before an answer").
    static func serving(limits: APIServerLimits = APIServerLimits(requestTimeout: .seconds(120)), _ body: (APIServer, APIEndpoint, EventLoopGroup) async throws -> Void) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let path = "/tmp/ovl-api-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        let router = Router(context: APIContext.self)
        router.add(middleware: APIErrorMiddleware())
        router.route(APIRoute<Echo, Echo>("POST", "/v1/echo/:times", status: 201)) { _, ctx, e in
            let times = try Int(ctx.parameter("times")) ?? 1
            return Echo(word: String(repeating: e.word, count: times))
        }
        router.route(APIRoute<NoBody, Echo>("GET", "/v1/refuse")) { _, _, _ in throw APIError(409, "not now") }
        router.route(APIRoute<NoBody, Echo>("GET", "/v1/slow")) { _, _, _ in
            try await Task.sleep(for: .seconds(60))
            slowAnswered.withLock { $0 = true }
            return Echo(word: "late")
        }
        let server = try await APIServer.start(.unix(path), limits: limits, group: group, logger: Logger(label: "test"), router: router)
        do { try await body(server, .unix(path), group) } catch {
            await server.close()
            try await group.shutdownGracefully()
            throw error
        }
        await server.close()
        try await group.shutdownGracefully()
    }

    /// The socket is given its mode and group under its staging name, before the rename puts it
    /// at its path (the group can connect from the first moment); nothing of the staging is left.
    @Test(.enabled(if: getuid() == 0, "giving a socket to another group needs root"))
    func aUnixSocketHasItsModeAndGroupAndNoStagingNameIsLeft() async throws {
        let daemonGroup = try #require(getgrnam("daemon")).pointee.gr_gid
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let dir = "/tmp/ovl-api-group-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/api.sock"
        let server = try await APIServer.start(.unix(path), socketGroup: daemonGroup, group: group, logger: Logger(label: "test"),
                                               router: Router(context: APIContext.self))
        var st = stat()
        let statted = stat(path, &st)
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        await server.close()
        try await group.shutdownGracefully()
        #expect(statted == 0)
        #expect(st.st_gid == daemonGroup && st.st_mode & 0o777 == 0o660, "gid \(st.st_gid), mode \(String(st.st_mode & 0o777, radix: 8))")
        #expect(entries == ["api.sock"])
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test func routesAnswerAndErrorsKeepTheAPIShape() async throws {
        try await Self.serving { _, endpoint, group in
            let client = APIClient(endpoint: endpoint, timeout: .seconds(60))
            let echo = try await client.json("POST", "/v1/echo/3", body: Echo(word: "ab"), as: Echo.self, group: group)
            #expect(echo == Echo(word: "ababab"))
            await #expect(throws: APIError(409, "not now")) {
                try await client.json("GET", "/v1/refuse", as: Echo.self, group: group)
            }
            await #expect(throws: APIError(404, "no such API call: GET /v1/nothing")) {
                try await client.json("GET", "/v1/nothing", as: Echo.self, group: group)
            }
            await #expect(throws: APIError(404, "unknown API path /v2/echo/1; this daemon speaks /v1")) {
                try await client.json("POST", "/v2/echo/1", body: Echo(word: "a"), as: Echo.self, group: group)
            }
            let (status, body) = try await client.call("POST", "/v1/echo/1", body: Data(#"{"word":1}"#.utf8), group: group)
            #expect(status == 400 && String(decoding: body, as: UTF8.self).contains("malformed JSON in the request"))
            let (empty, _) = try await client.call("POST", "/v1/echo/1", group: group)
            #expect(empty == 400)
        }
    }

    /// A caller that is cancelled (a loop ending) does not wait for a slow answer: the call
    /// throws before the server answers (60 s later) and its connection is closed, never returned
    /// to the pool. What is checked is the order, not a time: CI's parallel suites can hold both
    /// cooperative threads for seconds and delay this task's own resumption, not the call.
    @Test func aCancelledCallEndsAtOnceAndItsConnectionCloses() async throws {
        try await Self.serving { server, endpoint, group in
            let pool = APIConnectionPool()
            let client = APIClient(endpoint: endpoint, timeout: .seconds(120), pool: pool)
            let call = Task { try await client.json("GET", "/v1/slow", as: Echo.self, group: group) }
            var waited = 0
            while server.openConnections == 0 && waited < 100 {
                try await Task.sleep(for: .milliseconds(20))
                waited += 1
            }
            call.cancel()
            let result = await call.result
            #expect(!Self.slowAnswered.withLock { $0 }, "a cancelled call waited for the answer")
            #expect(throws: (any Error).self) { try result.get() }
            #expect(pool.idleCount == 0)
            // A cancelled task's call does not even start.
            let early = Task {
                withUnsafeCurrentTask { $0?.cancel() }
                return try await client.json("POST", "/v1/echo/1", body: Echo(word: "a"), as: Echo.self, group: group)
            }
            await #expect(throws: CancellationError.self) { try await early.value }
        }
    }

    @Test func aBodyOverTheLimitIsRefused() async throws {
        try await Self.serving(limits: APIServerLimits(maxBody: 64)) { _, endpoint, group in
            let client = APIClient(endpoint: endpoint, timeout: .seconds(60))
            let big = Echo(word: String(repeating: "x", count: 100))
            await #expect(throws: APIError(413, "the request body is larger than 64 bytes")) {
                try await client.json("POST", "/v1/echo/1", body: big, as: Echo.self, group: group)
            }
        }
    }

    // Calls here may wait long for an answer: in CI's first phase the synchronous kernel tests
    // running beside these can hold both cooperative threads for seconds, and what is measured is
    // which connection answers, not how fast.
    @Test func aPooledClientReusesOneConnection() async throws {
        try await Self.serving { server, endpoint, group in
            let pool = APIConnectionPool()
            let client = APIClient(endpoint: endpoint, timeout: .seconds(60), pool: pool)
            for i in 1...5 {
                let e = try await client.json("POST", "/v1/echo/\(i)", body: Echo(word: "a"), as: Echo.self, group: group)
                #expect(e.word.count == i)
            }
            #expect(pool.idleCount == 1)
            #expect(server.openConnections == 1)
            // Without a pool every call has its connection, closed after the answer.
            let once = APIClient(endpoint: endpoint, timeout: .seconds(60))
            _ = try await once.json("POST", "/v1/echo/1", body: Echo(word: "c"), as: Echo.self, group: group)
            #expect(pool.idleCount == 1)
            pool.closeAll()
            #expect(pool.idleCount == 0)
        }
    }

    @Test func aPooledClientSurvivesTheServerClosingItsConnection() async throws {
        try await Self.serving(limits: APIServerLimits(idleTimeout: .milliseconds(300))) { _, endpoint, group in
            let pool = APIConnectionPool()
            let client = APIClient(endpoint: endpoint, timeout: .seconds(60), pool: pool)
            _ = try await client.json("POST", "/v1/echo/1", body: Echo(word: "a"), as: Echo.self, group: group)
            #expect(pool.idleCount == 1)
            // The server closes the idle connection; the next call still answers, on a new one.
            try await Task.sleep(for: .milliseconds(800))
            let e = try await client.json("POST", "/v1/echo/2", body: Echo(word: "b"), as: Echo.self, group: group)
            #expect(e == Echo(word: "bb"))
        }
    }

    @Test func anIdleConnectionThatSaysNothingIsCutOffAndCounted() async throws {
        try await Self.serving(limits: APIServerLimits(requestTimeout: .milliseconds(200))) { server, endpoint, _ in
            guard case .unix(let path) = endpoint else { return }
            let got = await Self.offPool {
                let fd = Self.rawConnection(path)
                defer { close(fd) }
                _ = "GET /v1/refuse HTTP/1.1\r\n".withCString { send(fd, $0, 25, 0) }
                var buffer = [UInt8](repeating: 0, count: 16)
                return recv(fd, &buffer, buffer.count, 0)
            }
            #expect(got == 0, "the half-sent request was not cut off")
            #expect(server.timedOutRequests == 1)
        }
    }

    /// Runs `body`, which blocks in socket calls, on a thread of its own: on the cooperative
    /// pool (two threads on a 2-core machine) it would hold a thread the server's handlers need,
    /// and a busy test run (CPU-bound suites hold the other) then leaves a request unanswered.
    static func offPool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: body()) }.start()
        }
    }

    /// A connected raw socket to `path`, with a 60 s receive and send timeout: a bound for a
    /// failure only (an answer or a close comes at once), long enough for a loaded machine.
    static func rawConnection(_ path: String) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in path.utf8.enumerated() { raw[i] = b }
        }
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        #expect(rc == 0)
        var tv = timeval(tv_sec: 60, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    /// Sends `head` and then header bytes until the server closes (or `cap` bytes): how many
    /// bytes it took in, and whether anything but a close came back.
    static func flood(_ fd: Int32, head: String, line: String, cap: Int) -> (sent: Int, answer: String) {
        var sent = 0
        let chunk = Array((head + String(repeating: line, count: 64)).utf8)
        let more = Array(String(repeating: line, count: 64).utf8)
        var first = true
        while sent < cap {
            let bytes = first ? chunk : more
            first = false
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { break }
            sent += n
        }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = recv(fd, &buffer, buffer.count, 0)
        return (sent, n > 0 ? String(decoding: buffer[..<n], as: UTF8.self) : "")
    }

    @Test func aHeadOverItsLimitClosesTheConnectionAndOthersGoOn() async throws {
        let limits = APIServerLimits()
        #expect(limits.maxHeaderBytes == 16 << 10 && limits.maxHeaderFields == 100)
        try await Self.serving { server, endpoint, group in
            guard case .unix(let path) = endpoint else { return }
            // A head just under the limit is answered, and the server answers others throughout.
            let padding = String(repeating: "a", count: 12 << 10)
            let request = "GET /v1/refuse HTTP/1.1\r\nHost: x\r\nX-Pad: \(padding)\r\nConnection: close\r\n\r\n"
            let (n, answer) = await Self.offPool {
                let fine = Self.rawConnection(path)
                defer { close(fine) }
                let n = request.withCString { send(fine, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
                var buffer = [UInt8](repeating: 0, count: 4096)
                let got = recv(fine, &buffer, buffer.count, 0)
                return (n, got > 0 ? String(decoding: buffer[..<got], as: UTF8.self) : "recv: \(got) (\(String(cString: strerror(errno))))")
            }
            #expect(n == request.utf8.count)
            #expect(answer.hasPrefix("HTTP/1.1 409"), "a 12 KiB head: \(answer.prefix(80))")
            // One endless header: cut off after the limit, not read to the end (1 GiB offered).
            let one = await Self.offPool {
                let long = Self.rawConnection(path)
                defer { close(long) }
                return Self.flood(long, head: "GET /v1/refuse HTTP/1.1\r\nHost: x\r\nX-Long: ", line: String(repeating: "a", count: 1023) + "b", cap: 1 << 30)
            }
            #expect(one.sent < 8 << 20, "the server read \(one.sent) bytes of one header")
            #expect(!one.answer.contains("409"), "an over-long head reached the route: \(one.answer.prefix(80))")
            // Endless small headers: cut off at the field count.
            let fields = await Self.offPool {
                let many = Self.rawConnection(path)
                defer { close(many) }
                return Self.flood(many, head: "GET /v1/refuse HTTP/1.1\r\nHost: x\r\n", line: "X-A: b\r\n", cap: 1 << 30)
            }
            #expect(fields.sent < 8 << 20, "the server read \(fields.sent) bytes of headers")
            #expect(!fields.answer.contains("409"))
            // An endless request line.
            let line = await Self.offPool {
                let url = Self.rawConnection(path)
                defer { close(url) }
                return Self.flood(url, head: "GET /v1/", line: String(repeating: "a", count: 1024), cap: 1 << 30)
            }
            #expect(line.sent < 8 << 20, "the server read \(line.sent) bytes of a request line")
            #expect(server.malformedRequests == 3 && server.timedOutRequests == 0)
            print("head limits: closed after \(one.sent) bytes of one header, \(fields.sent) of many, \(line.sent) of a request line (1 GiB offered each)")
            let client = APIClient(endpoint: endpoint, timeout: .seconds(10))
            let echo = try await client.json("POST", "/v1/echo/2", body: Echo(word: "ab"), as: Echo.self, group: group)
            #expect(echo == Echo(word: "abab"))
        }
    }
}
