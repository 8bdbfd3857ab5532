import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// etcd v3 through its JSON gateway (`POST /v3/...`), over AsyncHTTPClient: ranges (paged at a
/// pinned revision), transactions, leases, watches, with the members tried in turn and one
/// clear ``StoreUnavailable`` line when none can serve.
///
/// - Unary calls have a deadline (``EtcdConfiguration/requestTimeout``, 3 s): without quorum etcd
///   answers only after 7 s, and a caller should know sooner.
/// - A member that refuses the connection, or answers 503 "no leader" / "leader changed", is
///   skipped for the next; while an election runs (every member says "no leader"), the call
///   retries until its deadline.
/// - A write that timed out, or whose connection broke after it was sent, may still be applied
///   (etcd applies a proposal when quorum returns): its error says "may have been made".
/// - After a failure, calls fail at once for ``EtcdConfiguration/failFast`` (see
///   ``EtcdEndpoints``).
///
/// HTTP/1.1 on `http://` endpoints; over `https://` AsyncHTTPClient negotiates HTTP/2 (ALPN h2)
/// when the member offers it, which etcd does. Either way a watch is one request with one
/// `create_request` whose answer never ends: closing it (cancelling the task that reads it)
/// ends the watch on the server.
final class EtcdClient: Sendable {
    /// What an unanswered call was for: its error says what did not happen.
    enum Intent: Sendable {
        case read, write, watch, lease

        func outcome(maybeMade: Bool) -> String {
            switch (self, maybeMade) {
            case (.write, false): "the change was not made"
            case (.write, true): "the change may have been made (etcd can still apply it when it has a quorum again)"
            case (.read, _): "nothing was read"
            case (.watch, _): "the watch did not start"
            case (.lease, false): "the lease was not changed"
            case (.lease, true): "the lease may have been changed"
            }
        }
    }

    private struct State {
        var endpoints: EtcdEndpoints
        var shutDown = false
    }

    let configuration: EtcdConfiguration
    let endpoints: [EtcdEndpoint]
    /// The members' host:port, comma-separated: how messages name the cluster.
    let members: String
    private let http: HTTPClient
    private let state: Mutex<State>
    /// The largest unary answer read (a page of keys; etcd keeps values of at most 1.5 MiB).
    private static let maxAnswer = 256 << 20

    /// A client of the cluster `configuration` names. Reads the TLS files now, so a wrong path
    /// fails here, with the file named. Call ``shutdown()`` when done.
    init(_ configuration: EtcdConfiguration) throws {
        guard !configuration.endpoints.isEmpty else { throw StoreError("no etcd endpoint given") }
        let endpoints = try configuration.endpoints.map(EtcdEndpoint.init)
        self.configuration = configuration
        self.endpoints = endpoints
        members = endpoints.map(\.address).joined(separator: ",")

        var http = HTTPClient.Configuration()
        if endpoints.contains(where: \.isTLS) { http.tlsConfiguration = try Self.tls(configuration.tls) }
        http.timeout = .init(connect: Self.timeAmount(configuration.requestTimeout), read: nil)
        // A refused connection fails the request at once (the next member is tried) instead of
        // being retried by the pool until the connect timeout.
        http.connectionPool.retryConnectionEstablishment = false
        // Each watch holds an HTTP/1.1 connection for as long as it runs.
        http.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 64
        http.redirectConfiguration = .disallow
        self.http = HTTPClient(eventLoopGroup: MultiThreadedEventLoopGroup.singleton, configuration: http)
        state = Mutex(State(endpoints: EtcdEndpoints(count: endpoints.count, failFast: configuration.failFast)))
    }

    deinit {
        // A client dropped without shutdown() would trip AsyncHTTPClient's debug check; close it
        // in the background instead.
        if !state.withLock({ $0.shutDown }) { http.shutdown { _ in } }
    }

    /// Closes every connection (watches end).
    func shutdown() async throws {
        let first = state.withLock { s in
            defer { s.shutDown = true }
            return !s.shutDown
        }
        if first { try await http.shutdown() }
    }

    static func tls(_ tls: EtcdConfiguration.TLS?) throws -> TLSConfiguration {
        var c = TLSConfiguration.makeClientConfiguration()
        guard let tls else { return c }
        do {
            c.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(tls.caFile))
        } catch { throw StoreError("etcd CA file \(tls.caFile) cannot be read: \(error)") }
        switch (tls.certificateFile, tls.keyFile) {
        case (nil, nil): break
        case (let cert?, let key?):
            do {
                c.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) }
            } catch { throw StoreError("etcd client certificate \(cert) cannot be read: \(error)") }
            do {
                c.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            } catch { throw StoreError("etcd client key \(key) cannot be read: \(error)") }
        default:
            throw StoreError("etcd client TLS needs both a certificate file and a key file")
        }
        return c
    }

    static func timeAmount(_ d: Duration) -> TimeAmount {
        let (seconds, attoseconds) = d.components
        return .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }

    // MARK: Calls

    /// One page of a range.
    func range(_ request: EtcdRangeRequest) async throws -> EtcdRangeResponse {
        try await call("/v3/kv/range", request, intent: .read)
    }

    /// Every key in [key, rangeEnd), read in pages of `pageSize` at one revision: `revision`, or
    /// the first page's (so later pages see the same state). Returns them and that revision.
    func rangeAll(key: Data, rangeEnd: Data, revision: Int64 = 0) async throws -> (kvs: [EtcdKeyValue], revision: Int64) {
        var kvs: [EtcdKeyValue] = []
        var from = key
        var pinned = revision
        while true {
            let page = try await range(
                EtcdRangeRequest(key: from, rangeEnd: rangeEnd, limit: Int64(configuration.pageSize), revision: pinned == 0 ? nil : pinned))
            if pinned == 0 { pinned = page.header.revision }
            kvs += page.kvs
            guard page.more, let last = page.kvs.last else { return (kvs, pinned) }
            from = last.key + [0]
        }
    }

    /// A transaction.
    func txn(_ request: EtcdTxnRequest) async throws -> EtcdTxnResponse {
        try await call("/v3/kv/txn", request, intent: .write)
    }

    /// Forgets the history before `revision` (watches from earlier revisions are cancelled).
    func compact(_ revision: Int64) async throws {
        let _: EtcdHeaderResponse = try await call("/v3/kv/compaction", EtcdCompactionRequest(revision: revision, physical: true), intent: .write)
    }

    /// A new lease of `ttl` seconds; returns its ID and the TTL granted.
    func grantLease(ttl: Int64) async throws -> (id: Int64, ttl: Int64) {
        let r: EtcdLeaseResponse = try await call("/v3/lease/grant", EtcdLeaseGrantRequest(ttl: ttl), intent: .lease)
        guard r.error.isEmpty else { throw EtcdError(status: 200, code: 0, message: r.error) }
        return (r.id, r.ttl)
    }

    /// One keepalive of a lease: its TTL again, or 0 when the lease is gone (expired or revoked).
    func keepAlive(lease: Int64, timeout: Duration) async throws -> Int64 {
        // A streaming RPC: one request, one `{"result":...}` line, then the answer ends.
        let line: EtcdStreamLine<EtcdLeaseResponse> = try await call(
            "/v3/lease/keepalive", EtcdLeaseIDRequest(id: lease), intent: .lease, timeout: timeout)
        if let e = line.error { throw EtcdError(status: e.httpCode, code: e.grpcCode, message: e.message) }
        return line.result?.ttl ?? 0
    }

    /// Ends a lease now; the keys attached to it are deleted in one revision. A lease already
    /// gone is not an error.
    func revokeLease(_ lease: Int64) async throws {
        do {
            let _: EtcdHeaderResponse = try await call("/v3/lease/revoke", EtcdLeaseIDRequest(id: lease), intent: .lease)
        } catch let e as EtcdError where e.code == 5 {}
    }

    /// Whether each member has a leader (`GET /health`), asked of all at once with a short
    /// timeout: what the client checks before asking a cluster it found unavailable.
    func health(timeout: Duration = .milliseconds(500)) async -> [EtcdHealth] {
        await withTaskGroup(of: (Int, EtcdHealth).self) { group in
            for i in endpoints.indices {
                group.addTask {
                    var request = HTTPClientRequest(url: self.endpoints[i].base + "/health")
                    request.method = .GET
                    do {
                        let response = try await self.http.execute(request, deadline: .now() + Self.timeAmount(timeout))
                        let body = try await response.body.collect(upTo: 1 << 16)
                        let health = try? JSONDecoder().decode(EtcdHealthResponse.self, from: Data(body.readableBytesView))
                        return (i, health?.health == "true" ? .healthy : .noLeader)
                    } catch {
                        switch self.classify(error, on: i) {
                        case .tls(let why): return (i, .tls(why))
                        case .notConnected(let why), .broken(let why): return (i, .noAnswer(why))
                        case .timedOut: return (i, .silent)
                        }
                    }
                }
            }
            var all = [EtcdHealth](repeating: .noAnswer(""), count: endpoints.count)
            for await (i, h) in group { all[i] = h }
            return all
        }
    }

    /// Starts a watch: one `POST /v3/watch` with one `create_request`, on the first member that
    /// has a leader (the request says `Grpc-Metadata-hasleader: true`, so a member without one
    /// refuses it at once, and an open watch ends with an error line when its member loses the
    /// leader). Its messages come as the member sends them; cancelling the task that reads them
    /// closes the request, which ends the watch on the server.
    func watch(_ create: EtcdWatchCreateRequest) async throws -> EtcdWatchStream {
        let body = try JSONEncoder().encode(create)
        let response = try await send("/v3/watch", body, intent: .watch, timeout: configuration.requestTimeout, watch: true)
        guard case .stream(let r) = response else { preconditionFailure("a watch answers with a stream") }
        return EtcdWatchStream(body: r.body)
    }

    // MARK: Sending

    /// How one attempt on one member went.
    private enum Attempt {
        case answered(HTTPClientResponse)
        case failed(TransportFailure)
    }

    /// Why a request got no answer.
    private enum TransportFailure {
        /// No connection: nothing was sent.
        case notConnected(String)
        /// The member refused the TLS connection.
        case tls(String)
        case timedOut
        /// The connection broke after the request may have been sent.
        case broken(String)
    }

    /// The answer of a successful send: a body read whole, or (watch) the open response.
    private enum Answer {
        case body(ByteBuffer)
        case stream(HTTPClientResponse)
    }

    private func call<Request: Encodable, Response: Decodable>(
        _ path: String, _ request: Request, intent: Intent, timeout: Duration? = nil
    ) async throws -> Response {
        let body = try JSONEncoder().encode(request)
        guard case .body(let bytes) = try await send(path, body, intent: intent, timeout: timeout ?? configuration.requestTimeout, watch: false)
        else { preconditionFailure("a unary call answers with a body") }
        do {
            return try JSONDecoder().decode(Response.self, from: Data(bytes.readableBytesView))
        } catch {
            throw EtcdError(status: 200, code: 0, message: "etcd's answer to \(path) cannot be read: \(error)")
        }
    }

    /// Sends one request to the members in turn until one answers; throws ``StoreUnavailable``
    /// when none can serve, and ``EtcdError`` when etcd answered with an error of its own.
    private func send(_ path: String, _ body: Data, intent: Intent, timeout: Duration, watch: Bool) async throws -> Answer {
        let start = ContinuousClock.now
        let deadline = start + timeout
        var order: [Int]
        switch state.withLock({ $0.endpoints.admission(now: start) }) {
        case .ask(let o): order = o
        case .refuse(let reason): throw unavailable(reason, intent, maybeMade: false)
        case .probe:
            let health = await self.health()
            // A probe cut short by the caller's cancellation says nothing about the cluster.
            try Task.checkCancellation()
            let healthy = health.indices.filter { health[$0] == .healthy }
            guard !healthy.isEmpty else {
                let reason = Self.reason(health)
                state.withLock { $0.endpoints.failed(reason, now: .now) }
                throw unavailable(reason, intent, maybeMade: false)
            }
            order = state.withLock { $0.endpoints.probed(healthy: healthy) }
        }

        // A write is sent to one more member only when the last surely did not apply it: a
        // timed-out or interrupted one may still be, and a second could apply it twice (or
        // fail its own conditions on the first's change and report a loss that was a win).
        var maybeMade = false
        var timedOut = false
        var interrupted: String?
        var failure: EtcdUnreachable?
        rounds: while true {
            for i in order {
                guard ContinuousClock.now < deadline else {
                    timedOut = true
                    break rounds
                }
                try Task.checkCancellation()
                let outcome = await attempt(path, body, on: i, deadline: deadline, watch: watch)
                // A request the caller cancelled failed for that alone (a lease renewal stopped
                // while etcd elected a leader): it must not mark members or the cluster down.
                if case .failed = outcome { try Task.checkCancellation() }
                switch outcome {
                case .answered(let response):
                    let status = Int(response.status.code)
                    if status == 200 {
                        if watch {
                            state.withLock { $0.endpoints.answered(by: i) }
                            return .stream(response)
                        }
                        let bytes: ByteBuffer
                        do { bytes = try await response.body.collect(upTo: Self.maxAnswer) } catch {
                            try Task.checkCancellation()
                            state.withLock { $0.endpoints.skip(i) }
                            if intent == .write {
                                maybeMade = true
                                interrupted = "the answer broke off: \(Self.describe(error))"
                                break rounds
                            }
                            failure = failure ?? .noAnswer("the answer broke off: \(Self.describe(error))")
                            continue
                        }
                        state.withLock { $0.endpoints.answered(by: i) }
                        return .body(bytes)
                    }
                    let bytes = (try? await response.body.collect(upTo: 1 << 20)) ?? ByteBuffer()
                    let error = Self.error(status: status, bytes)
                    guard let indeterminate = Self.unavailability(error) else {
                        // etcd answered, with an error of its own: the cluster works.
                        state.withLock { $0.endpoints.answered(by: i) }
                        throw error
                    }
                    failure = .noQuorum(error.message)
                    state.withLock { $0.endpoints.skip(i) }
                    if indeterminate && intent != .read {
                        maybeMade = true
                        break rounds
                    }
                case .failed(.notConnected(let why)):
                    if failure == nil { failure = .noAnswer(why) }
                    state.withLock { $0.endpoints.skip(i) }
                case .failed(.tls(let why)):
                    failure = .tls(why)
                    state.withLock { $0.endpoints.skip(i) }
                case .failed(.broken(let why)):
                    state.withLock { $0.endpoints.skip(i) }
                    if intent == .write {
                        maybeMade = true
                        interrupted = why
                        break rounds
                    }
                    if failure == nil { failure = .noAnswer(why) }
                case .failed(.timedOut):
                    maybeMade = maybeMade || intent == .write || intent == .lease
                    timedOut = true
                    break rounds
                }
            }
            // Every member was asked. While they elect a leader they say so for about a second:
            // ask again until the deadline, as long as nothing may have been applied.
            guard case .noQuorum = failure, !maybeMade, ContinuousClock.now + .milliseconds(250) < deadline else { break }
            try await Task.sleep(for: .milliseconds(200))
            order = state.withLock { $0.endpoints.order }
        }

        let reason: EtcdUnreachable
        if let interrupted {
            reason = .interrupted(interrupted)
        } else if timedOut {
            // Say why it timed out: a member without quorum answers /health at once.
            let health = await self.health()
            try Task.checkCancellation()
            let waited = "request timed out after \(timeout)"
            reason = health.contains(.healthy) ? .slow(waited) : Self.reason(health, after: waited)
        } else {
            reason = failure ?? .noAnswer("no member was asked")
        }
        switch reason {
        case .slow, .interrupted: break  // one request's fate, not the cluster's
        default: state.withLock { $0.endpoints.failed(reason, now: .now) }
        }
        throw unavailable(reason, intent, maybeMade: maybeMade)
    }

    private func attempt(_ path: String, _ body: Data, on i: Int, deadline: ContinuousClock.Instant, watch: Bool) async -> Attempt {
        var request = HTTPClientRequest(url: endpoints[i].base + path)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        if watch { request.headers.add(name: "Grpc-Metadata-hasleader", value: "true") }
        request.body = .bytes(ByteBuffer(bytes: body))
        let remaining = deadline - ContinuousClock.now
        do {
            return .answered(try await http.execute(request, deadline: .now() + Self.timeAmount(remaining)))
        } catch {
            return .failed(classify(error, on: i))
        }
    }

    private func unavailable(_ reason: EtcdUnreachable, _ intent: Intent, maybeMade: Bool) -> StoreUnavailable {
        let line = "cluster store unavailable: \(reason.phrase(members)): \(intent.outcome(maybeMade: maybeMade))"
        return StoreUnavailable(line.split(whereSeparator: \.isNewline).joined(separator: " "))
    }

    // MARK: Errors

    /// Sorts a transport error: not connected (nothing sent), TLS refused, timed out, or broken.
    private func classify(_ error: any Error, on endpoint: Int) -> TransportFailure {
        if let e = error as? HTTPClientError {
            switch e {
            case .deadlineExceeded, .readTimeout, .getConnectionFromPoolTimeout: return .timedOut
            case .connectTimeout: return .notConnected("connect timed out")
            case .tlsHandshakeTimeout: return .tls("TLS handshake timed out")
            case .remoteConnectionClosed where endpoints[endpoint].isTLS && configuration.tls?.certificateFile == nil:
                // With TLS 1.3 the client finishes its handshake before the member checks the
                // client's certificate; a member started with --client-cert-auth then closes the
                // connection without an answer (its log says "client didn't provide a
                // certificate"). The request was not served.
                return .tls("closed without an answer: it may require a client certificate, and none is configured")
            default: return .broken(Self.describe(error))
            }
        }
        return Self.classify(error)
    }

    private static func classify(_ error: any Error) -> TransportFailure {
        if error is NIOSSLError || error is BoringSSLError { return .tls(describe(error)) }
        if error is NIOConnectionError { return .notConnected(describe(error)) }
        if let e = error as? IOError {
            switch e.errnoCode {
            case ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, EADDRNOTAVAIL: return .notConnected(describe(error))
            default: return .broken(describe(error))
            }
        }
        if error is ChannelError { return .broken(describe(error)) }
        return .broken(describe(error))
    }

    /// A short text of a transport error.
    static func describe(_ error: any Error) -> String {
        if let e = error as? NIOConnectionError {
            let first = e.connectionErrors.first.map { describe($0.error) }
            return first ?? "cannot connect"
        }
        if let e = error as? IOError {
            return String(cString: strerror(e.errnoCode)).lowercased()
        }
        let text = "\(error)"
        // BoringSSL's errors read "... error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED at <file>:<line>".
        if let start = text.range(of: "OPENSSL_internal:") {
            let reason = text[start.upperBound...].prefix { $0.isLetter || $0.isNumber || $0 == "_" }
            let words = reason.replacingOccurrences(of: "_", with: " ").lowercased()
            if reason == "CERTIFICATE_VERIFY_FAILED" { return "\(words): the member's certificate is not from the CA of the CA file" }
            return words
        }
        return text
    }

    /// The error in a non-200 answer: a unary body (`{"error","message","code"}`), a stream's
    /// error line (`{"error":{"grpc_code",...}}`), or plain text.
    static func error(status: Int, _ bytes: ByteBuffer) -> EtcdError {
        let data = Data(bytes.readableBytesView)
        if let line = try? JSONDecoder().decode(EtcdStreamLine<EtcdHeaderResponse>.self, from: data), let e = line.error {
            return EtcdError(status: status, code: e.grpcCode, message: e.message)
        }
        if let e = try? JSONDecoder().decode(EtcdErrorBody.self, from: data), !e.message.isEmpty {
            return EtcdError(status: status, code: e.code, message: e.message)
        }
        let text = String(decoding: data.prefix(200), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return EtcdError(status: status, code: 0, message: "HTTP \(status)\(text.isEmpty ? "" : ": \(text)")")
    }

    /// Whether an error answer means the member cannot serve now (nil: it is etcd's answer to
    /// the request itself), and if so whether a write may still be applied (true) or was surely
    /// not proposed (false: no leader, leader changed before it was sent).
    static func unavailability(_ e: EtcdError) -> Bool? {
        let m = e.message
        if m.contains("timed out") || m.contains("deadline exceeded") { return true }
        if e.status == 503 || e.code == 14 || m.contains("no leader") || m.contains("leader changed") || m.contains("not capable") {
            return false
        }
        return nil
    }

    /// What the health of every member says about a cluster none of whose members is healthy,
    /// after what the caller saw first (`after`, e.g. its request timing out), if anything.
    static func reason(_ health: [EtcdHealth], after: String? = nil) -> EtcdUnreachable {
        let prefix = after.map { $0 + "; " } ?? ""
        for h in health { if case .tls(let why) = h { return .tls(why) } }
        let answering = health.filter { $0 == .noLeader }.count
        if answering > 0 { return .noQuorum("\(prefix)\(answering) of \(health.count) members answer, none has a leader") }
        let silent = health.filter { $0 == .silent }.count
        if silent > 0 {
            return .silent("\(prefix)\(silent) of \(health.count) members answer nothing in time: "
                           + "electing a leader, overloaded or cut off")
        }
        // Why the first member that said anything failed (refused, reset), so the line says it.
        let why = health.lazy.compactMap { h -> String? in if case .noAnswer(let w) = h, !w.isEmpty { w } else { nil } }.first
        return .noAnswer(prefix + (why ?? "no member answers"))
    }
}

/// A member's answer to `GET /health`.
enum EtcdHealth: Sendable, Equatable {
    case healthy
    /// It answered, without a leader (`{"health":"false"}`).
    case noLeader
    /// It gave no answer within the health check's timeout (a member whose leader just died holds
    /// the check for a second; one cut off by the network never answers).
    case silent
    /// It refused the connection, or broke it.
    case noAnswer(String)
    case tls(String)
}

/// The messages of one watch request, decoded as they arrive. Ends with an error when the
/// member sends an error line (then closes), and returns nil when the connection ends.
struct EtcdWatchStream: AsyncSequence, Sendable {
    typealias Element = EtcdWatchResponse
    let body: HTTPClientResponse.Body

    struct AsyncIterator: AsyncIteratorProtocol {
        var chunks: HTTPClientResponse.Body.AsyncIterator
        var framer = EtcdLineFramer()
        var ended = false

        mutating func next() async throws -> EtcdWatchResponse? {
            while true {
                if let line = try framer.next() { return try Self.decode(line) }
                if ended { return nil }
                if let chunk = try await chunks.next() {
                    framer.append(chunk)
                } else {
                    ended = true
                    if let last = framer.finish() { return try Self.decode(last) }
                    return nil
                }
            }
        }

        static func decode(_ line: ByteBuffer) throws -> EtcdWatchResponse {
            let message: EtcdStreamLine<EtcdWatchResponse>
            do {
                message = try JSONDecoder().decode(EtcdStreamLine<EtcdWatchResponse>.self, from: Data(line.readableBytesView))
            } catch {
                throw EtcdError(status: 200, code: 0, message: "a watch message cannot be read: \(error)")
            }
            if let e = message.error { throw EtcdError(status: e.httpCode, code: e.grpcCode, message: e.message) }
            return message.result ?? EtcdWatchResponse()
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(chunks: body.makeAsyncIterator()) }
}
