import Discovery
import Logging
import Metrics
import Netlink
import NIOCore
import NIOPosix
import OverlayModel
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What the server has done so far, for `overlayctl` and tests.
public struct DNSServerCounters: Sendable, Hashable, Codable {
    /// Queries received (UDP and TCP), well formed or not.
    public var queries = 0
    /// Queries answered from the name tables.
    public var answered = 0
    /// Queries sent upstream.
    public var forwarded = 0
    /// Queries refused because every network of the asking container is internal.
    public var refused = 0
    /// Malformed queries answered FORMERR.
    public var formErr = 0
    /// Datagrams dropped (not even a DNS header, a response instead of a query, unknown container).
    public var dropped = 0
    /// UDP answers that did not fit the client's limit and went out truncated (TC set).
    public var truncated = 0
    /// TCP connections accepted.
    public var tcpConnections = 0
    /// TCP connections refused because a container had too many open.
    public var tcpRefused = 0
    /// Times a TCP client's connection stopped being read because it did not take its replies.
    public var tcpPaused = 0
    /// Queries answered SERVFAIL because their container had its share waiting upstream.
    public var overShare = 0
    /// Upstream sockets opened: one per forwarded query, on a random port.
    public var upstreamSockets = 0
    /// Upstream datagrams dropped because they came on another query's socket.
    public var wrongSocket = 0
    /// Makes zeroed counters.
    public init() {}
}

/// Errors the server reports: a code and a sentence a person can act on.
public struct DNSServerError: Error, Sendable, CustomStringConvertible {
    /// The message.
    public var message: String
    /// Makes an error.
    public init(_ message: String) { self.message = message }
    /// The message.
    public var description: String { message }
}

/// The embedded DNS server: one event loop serves `127.0.0.11:53` (UDP and TCP) inside every
/// container namespace it is given, answering from one `NameTable` through the Discovery
/// `Resolver` and forwarding other names to upstream resolvers from the host's namespace.
///
/// Sockets are opened by a thread that has entered the container's namespace and then adopted by
/// the event loop, so one loop serves any number of namespaces. The table lives on the loop:
/// updates are applied in order and are visible to the next query.
public final class DNSServer: Sendable {
    /// How the server behaves.
    public struct Configuration: Sendable {
        /// The address served inside each namespace (Docker's).
        public var address = IPv4Address(127, 0, 0, 11)
        /// The port served.
        public var port: UInt16 = 53
        /// TTL of our answers.
        public var ttl: UInt32 = 600
        /// Upstream resolvers (the first three are used).
        public var upstreams: [Upstream] = []
        /// How long to wait for one upstream before trying the next.
        public var forwardTimeout: Duration = .seconds(2)
        /// Queries in flight upstream at once; more are answered SERVFAIL at once.
        public var maxInFlight = 1024
        /// The most queries one container may have waiting upstream (UDP); past it, SERVFAIL.
        public var maxInFlightPerContainer = 128
        /// TCP connections one container may hold open at once.
        public var maxTCPConnectionsPerContainer = 32
        /// A TCP connection with no query for this long is closed.
        public var tcpIdleTimeout: Duration = .seconds(10)
        /// Where the answer times go (`overlay_dns_answer_duration_seconds`, by `source`: `table`
        /// or `upstream`); nil: the process's `MetricsSystem`.
        public var metricsFactory: (any MetricsFactory)?
        /// Makes the defaults.
        public init() {}
    }

    /// The configuration in force.
    public let configuration: Configuration
    let loop: any EventLoop
    private let ownedGroup: MultiThreadedEventLoopGroup?
    let core: NIOLoopBoundBox<ServerCore>
    let logger: Logger

    /// Makes a server on its own event loop (one thread), or on `group`'s next loop.
    public init(configuration: Configuration = .init(), group: (any EventLoopGroup)? = nil, logger: Logger = Logger(label: "dns")) {
        self.configuration = configuration
        if let group {
            ownedGroup = nil
            loop = group.next()
        } else {
            let g = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            ownedGroup = g
            loop = g.next()
        }
        self.logger = logger
        core = NIOLoopBoundBox.makeBoxSendingValue(ServerCore(configuration: configuration, logger: logger), eventLoop: loop)
    }

    /// Checks that an upstream socket can be opened (each forwarded query gets its own). Call
    /// once before serving namespaces.
    public func start() async throws {
        let probe = try await DatagramBootstrap(group: loop).bind(host: "0.0.0.0", port: 0).get()
        try await probe.close()
        try await loop.submit { [self] in
            core.value.loop = loop
            core.value.openUpstream = { [weak self] id in self?.openUpstream(for: id) }
        }.get()
        logger.info("dns server started", metadata: ["upstreams": "\(configuration.upstreams.prefix(3).map { "\($0.address):\($0.port)" })"])
    }

    /// Opens the socket of the query forwarded under `id` on a port the kernel picks at random
    /// (RFC 5452 section 9.2: the source port is part of what an off-path spoofer must guess),
    /// sends what waits for it, and closes it once the query is answered or has timed out at
    /// every upstream. Only replies to that query are taken on it. On the loop.
    func openUpstream(for id: UInt16) {
        let lifetime = configuration.forwardTimeout * (max(1, min(3, configuration.upstreams.count))) + .seconds(1)
        DatagramBootstrap(group: loop)
            .channelInitializer { [self] ch in
                ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(UpstreamHandler(server: self, id: id)) }
            }
            .bind(host: "0.0.0.0", port: 0)
            .whenComplete { [self] result in
                let c = core.value
                let sends = c.unsent.removeValue(forKey: id) ?? []
                guard case .success(let channel) = result else {
                    logger.warning("dns: cannot open an upstream socket: \(result)")
                    return   // the query times out at this upstream and moves on
                }
                guard c.loop != nil, c.forwarder.isWaiting(id: id) else {
                    channel.close(promise: nil)
                    return
                }
                c.upstreamSockets[id] = channel
                c.counters.upstreamSockets += 1
                for (bytes, upstream) in sends { c.send(bytes, to: upstream, on: channel) }
                let nanos = lifetime.components.seconds * 1_000_000_000 + lifetime.components.attoseconds / 1_000_000_000
                scheduleUpstreamClose(id, channel, in: .nanoseconds(nanos))
            }
    }

    /// Closes query `id`'s socket after `delay`, or later while a query under that ID (the same
    /// one retried, or a new one that drew the ID again) still waits on it. On the loop.
    func scheduleUpstreamClose(_ id: UInt16, _ channel: any Channel, in delay: TimeAmount) {
        channel.eventLoop.scheduleTask(in: delay) { [self] in
            let c = core.value
            guard let open = c.upstreamSockets[id], open === channel else { return }
            if c.forwarder.isWaiting(id: id) {
                scheduleUpstreamClose(id, channel, in: delay)
            } else {
                c.closeUpstream(id, channel)
            }
        }
    }

    /// Closes every socket and stops the loop if the server owns it.
    public func shutdown() async {
        let channels = (try? await loop.submit { [self] () -> [any Channel] in
            let c = core.value
            var all = c.containers.values.flatMap { [$0.udp, $0.tcp] as [any Channel] }
            all += c.upstreamSockets.values
            c.containers = [:]
            c.upstreamSockets = [:]
            c.loop = nil
            c.timer?.cancel()
            return all
        }.get()) ?? []
        for ch in channels { try? await ch.close() }
        try? await ownedGroup?.shutdownGracefully()
    }

    // MARK: Names

    /// Changes the name table (applied on the loop, in call order).
    public func updateTable(_ body: @escaping @Sendable (inout NameTable) -> Void) {
        loop.execute { [self] in body(&core.value.table) }
    }

    /// Changes the name table and waits until the change is in force.
    public func updateTableNow(_ body: @escaping @Sendable (inout NameTable) -> Void) async {
        try? await loop.submit { [self] in body(&core.value.table) }.get()
    }

    /// The table as it is now.
    public func table() async throws -> NameTable {
        try await loop.submit { [self] in core.value.table }.get()
    }

    /// Counters so far.
    public func counters() async -> DNSServerCounters {
        (try? await loop.submit { [self] in core.value.counters }.get()) ?? DNSServerCounters()
    }

    /// The forwarder's counters so far.
    public func forwarderCounters() async -> ForwarderCounters? {
        try? await loop.submit { [self] in core.value.forwarder.counters }.get()
    }

    // MARK: Containers

    /// Starts serving inside `namespace` for the container `id`, which asks as `client`.
    /// Throws if the address cannot be bound there (e.g. something else holds port 53).
    public func serve(container id: String, namespace: NetworkNamespace, client: ResolverClient) async throws {
        let address = configuration.address
        let port = configuration.port
        let (udpFD, tcpFD) = try namespace.run { () throws -> (Int32, Int32) in
            let u = try Self.openSocket(stream: false, address: address, port: port)
            do {
                let t = try Self.openSocket(stream: true, address: address, port: port)
                return (u, t)
            } catch {
                close(u)
                throw error
            }
        }
        let box = ClientBox(client)
        let udp: any Channel
        do {
            udp = try await DatagramBootstrap(group: loop)
                // recvmmsg of up to 16 queries per wake-up. NIO splits the buffer between them, so
                // 16 KiB gives each query 1 KiB (a query with a 255-octet name and OPT is far below
                // that); a longer datagram arrives cut and is answered FORMERR.
                .channelOption(.datagramVectorReadMessageCount, value: 16)
                .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 16 * 1024))
                .channelInitializer { [self] ch in
                    ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(UDPHandler(server: self, container: id, client: box)) }
                }
                .withBoundSocket(udpFD).get()
        } catch {
            close(udpFD)
            close(tcpFD)
            throw DNSServerError("cannot serve DNS for \(id): \(error)")
        }
        let tcp: any Channel
        do {
            tcp = try await ServerBootstrap(group: loop)
                .serverChannelOption(.backlog, value: 64)
                // One reply is at most 64 KiB: a larger kernel send buffer would only let a client
                // that does not read park megabytes in the kernel per connection.
                .childChannelOption(.socketOption(.so_sndbuf), value: 64 << 10)
                .childChannelInitializer { [self] ch in
                    ch.eventLoop.makeCompletedFuture {
                        try ch.pipeline.syncOperations.addHandler(TCPHandler(server: self, container: id, client: box))
                    }
                }
                .withBoundSocket(tcpFD).get()
        } catch {
            close(tcpFD)
            try? await udp.close()
            throw DNSServerError("cannot serve DNS over TCP for \(id): \(error)")
        }
        let old = try await loop.submit { [self] () -> ContainerEntry? in
            let previous = core.value.containers[id]
            core.value.containers[id] = ContainerEntry(client: box, udp: udp, tcp: tcp)
            return previous
        }.get()
        if let old {
            try? await old.udp.close()
            try? await old.tcp.close()
        }
        logger.debug("serving dns", metadata: ["container": "\(id)", "networks": "\(client.networks)"])
    }

    /// Changes which networks a served container asks from (after `network connect`/`disconnect`).
    public func updateClient(container id: String, client: ResolverClient) {
        loop.execute { [self] in core.value.containers[id]?.client.client = client }
    }

    /// Stops serving the container `id` and closes its sockets.
    public func stop(container id: String) async {
        let entry = try? await loop.submit { [self] in core.value.containers.removeValue(forKey: id) }.get()
        if let entry = entry ?? nil {
            try? await entry.udp.close()
            try? await entry.tcp.close()
        }
    }

    /// The containers served now.
    public func servedContainers() async -> [String] {
        (try? await loop.submit { [self] in Array(core.value.containers.keys).sorted() }.get()) ?? []
    }

    static func openSocket(stream: Bool, address: IPv4Address, port: UInt16) throws -> Int32 {
        let type = Int32(stream ? SOCK_STREAM.rawValue : SOCK_DGRAM.rawValue)
        let fd = socket(AF_INET, type | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw DNSServerError("socket(): \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = port.bigEndian
        sa.sin_addr.s_addr = address.value.bigEndian
        let rc = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0 {
            let e = errno
            close(fd)
            throw DNSServerError("cannot bind \(address):\(port) in the container's namespace: \(String(cString: strerror(e)))")
        }
        if stream {
            if listen(fd, 64) != 0 {
                let e = errno
                close(fd)
                throw DNSServerError("cannot listen on \(address):\(port): \(String(cString: strerror(e)))")
            }
        }
        return fd
    }
}

/// How a served container asks, shared by the server and that container's channel handlers so a
/// query needs no lookup. Only touched on the server's event loop.
final class ClientBox: @unchecked Sendable {
    var client: ResolverClient
    init(_ client: ResolverClient) { self.client = client }
}

/// One served container.
struct ContainerEntry {
    var client: ClientBox
    var udp: any Channel
    var tcp: any Channel
    var tcpConnections = 0
}

/// Who asked a forwarded query, so the answer finds its way back.
struct PendingClient {
    var channel: any Channel
    var remote: SocketAddress
    var limit: Int
    /// The container that asked (its share of the forwarder is counted).
    var container: String
    /// When it was handed to the forwarder.
    var started: ContinuousClock.Instant
}

/// Everything the loop owns. Only touched on the server's event loop.
final class ServerCore {
    var table = NameTable()
    var containers: [String: ContainerEntry] = [:]
    var resolver: Discovery.Resolver
    var forwarder: ForwarderCore
    var counters = DNSServerCounters()
    var rng = SystemRandomNumberGenerator()
    var pending: [UInt64: PendingClient] = [:]
    /// Queries each container has waiting upstream, and the most it may.
    var forwardingPerContainer: [String: Int] = [:]
    let maxInFlightPerContainer: Int
    var nextToken: UInt64 = 0
    /// Each forwarded query's own upstream socket, by the ID it went out under.
    var upstreamSockets: [UInt16: any Channel] = [:]
    /// What waits to go out while a query's socket is being opened.
    var unsent: [UInt16: [([UInt8], Upstream)]] = [:]
    var openUpstream: ((UInt16) -> Void)?
    /// The server's loop once started (nil after shutdown).
    var loop: (any EventLoop)?
    var timer: Scheduled<Void>?
    var timerDeadline: Duration?
    let origin = ContinuousClock.now
    let logger: Logger
    var lastRefusalLog: [String: ContinuousClock.Instant] = [:]
    /// From a query's arrival to its answer: from the name tables, and from an upstream.
    let tableAnswerTime: Metrics.Timer
    let upstreamAnswerTime: Metrics.Timer

    init(configuration: DNSServer.Configuration, logger: Logger) {
        let factory = configuration.metricsFactory ?? MetricsSystem.factory
        tableAnswerTime = Metrics.Timer(label: "overlay_dns_answer_duration_seconds", dimensions: [("source", "table")], factory: factory)
        upstreamAnswerTime = Metrics.Timer(label: "overlay_dns_answer_duration_seconds", dimensions: [("source", "upstream")], factory: factory)
        maxInFlightPerContainer = max(1, configuration.maxInFlightPerContainer)
        resolver = Discovery.Resolver(ttl: configuration.ttl)
        forwarder = ForwarderCore(
            upstreams: configuration.upstreams, timeout: configuration.forwardTimeout, maxInFlight: configuration.maxInFlight)
        self.logger = logger
    }

    var now: Duration { ContinuousClock.now - origin }

    /// What to do with one query.
    enum Handling {
        case reply([UInt8])
        case forward(DNSMessage)
        case drop
    }

    /// Decodes, resolves and encodes one query from a container.
    func handle(_ bytes: UnsafeRawBufferPointer, container: String, client: ClientBox, udp: Bool) -> Handling {
        counters.queries += 1
        let arrived = ContinuousClock.now
        let query: DNSMessage
        do {
            query = try DNSMessage.decode(bytes)
        } catch {
            if let reply = dnsFormErr(for: Array(bytes)) {
                counters.formErr += 1
                return .reply(reply)
            }
            counters.dropped += 1
            return .drop
        }
        if query.isResponse {
            counters.dropped += 1
            return .drop
        }
        switch resolver.resolve(query, client: client.client, table: table, rng: &rng) {
        case .answer(let message):
            counters.answered += 1
            let reply = encode(message, for: query, udp: udp)
            tableAnswerTime.record(duration: ContinuousClock.now - arrived)
            return .reply(reply)
        case .forward(let message):
            return .forward(message)
        case .refuse(let message, let reason):
            counters.refused += 1
            logRefusal(container: container, name: query.questions.first?.name.description ?? "?", reason: reason)
            return .reply(encode(message, for: query, udp: udp))
        case .drop:
            counters.dropped += 1
            return .drop
        }
    }

    func encode(_ message: DNSMessage, for query: DNSMessage, udp: Bool) -> [UInt8] {
        guard udp else { return message.encode() }
        let bytes = message.encode(limit: udpLimit(for: query))
        if bytes.count >= 3, bytes[2] & 0x02 != 0, !message.truncated { counters.truncated += 1 }
        return bytes
    }

    func logRefusal(container: String, name: String, reason: String) {
        let key = container + " " + name
        let t = ContinuousClock.now
        if let last = lastRefusalLog[key], t - last < .seconds(10) { return }
        if lastRefusalLog.count > 1000 { lastRefusalLog = [:] }
        lastRefusalLog[key] = t
        logger.notice("dns: not forwarding \(name) for container \(container): \(reason)", metadata: ["container": "\(container)"])
    }

    // MARK: Forwarding (UDP upstream)

    func forward(_ query: DNSMessage, container: String, channel: any Channel, remote: SocketAddress, limit: Int) {
        // Each container gets a share of the queries waiting upstream: one that floods the
        // forwarder gets SERVFAIL for its excess, the others keep theirs.
        let mine = forwardingPerContainer[container, default: 0]
        guard mine < maxInFlightPerContainer else {
            counters.overShare += 1
            var fail = query.response(rcode: .servFail)
            fail.id = query.id
            channel.writeAndFlush(AddressedEnvelope(remoteAddress: remote, data: ByteBuffer(bytes: fail.encode(limit: limit))), promise: nil)
            return
        }
        forwardingPerContainer[container] = mine + 1
        nextToken &+= 1
        let token = nextToken
        pending[token] = PendingClient(channel: channel, remote: remote, limit: limit, container: container, started: .now)
        counters.forwarded += 1
        perform(forwarder.forward(query, client: token, now: now))
    }

    /// A datagram on the socket of the query sent under `id`: anything but a reply to that query
    /// is dropped (and counted) before the forwarder sees it.
    func upstreamReply(_ bytes: [UInt8], from: SocketAddress, socket id: UInt16) {
        guard bytes.count >= 2, UInt16(bytes[0]) << 8 | UInt16(bytes[1]) == id else {
            counters.wrongSocket += 1
            return
        }
        guard let ip = from.ipAddress.flatMap(IPAddress.init), let port = from.port else { return }
        perform(forwarder.receive(bytes, from: Upstream(address: ip, port: UInt16(port)), now: now))
        if !forwarder.isWaiting(id: id), let channel = upstreamSockets[id] { closeUpstream(id, channel) }
    }

    /// Closes the socket of query `id` if it is still `channel` (the ID may have been used again).
    func closeUpstream(_ id: UInt16, _ channel: any Channel) {
        guard let open = upstreamSockets[id], open === channel else { return }
        upstreamSockets[id] = nil
        channel.close(promise: nil)
    }

    func send(_ bytes: [UInt8], to upstream: Upstream, on channel: any Channel) {
        guard let addr = try? SocketAddress(ipAddress: upstream.address.description, port: Int(upstream.port)) else { return }
        channel.writeAndFlush(AddressedEnvelope(remoteAddress: addr, data: ByteBuffer(bytes: bytes)), promise: nil)
    }

    func perform(_ actions: [ForwarderAction]) {
        for action in actions {
            switch action {
            case .send(let bytes, let upstream):
                guard bytes.count >= 2 else { continue }
                let id = UInt16(bytes[0]) << 8 | UInt16(bytes[1])
                if let channel = upstreamSockets[id] {
                    send(bytes, to: upstream, on: channel)   // a retry at the next upstream
                } else if unsent[id] != nil {
                    unsent[id]!.append((bytes, upstream))
                } else if let open = openUpstream {
                    unsent[id] = [(bytes, upstream)]
                    open(id)
                }
            case .reply(let bytes, let token):
                guard let p = pending.removeValue(forKey: token) else { continue }
                let left = forwardingPerContainer[p.container, default: 1] - 1
                forwardingPerContainer[p.container] = left > 0 ? left : nil
                var out = bytes
                if out.count > p.limit, let m = try? DNSMessage.decode(bytes) {
                    out = m.encode(limit: p.limit)
                    counters.truncated += 1
                }
                p.channel.writeAndFlush(AddressedEnvelope(remoteAddress: p.remote, data: ByteBuffer(bytes: out)), promise: nil)
                upstreamAnswerTime.record(duration: ContinuousClock.now - p.started)
            }
        }
        armTimer()
    }

    func armTimer() {
        guard let deadline = forwarder.nextDeadline else {
            timer?.cancel()
            timer = nil
            timerDeadline = nil
            return
        }
        if let d = timerDeadline, d <= deadline, timer != nil { return }
        timer?.cancel()
        timerDeadline = deadline
        guard let loop else { return }
        let wait = max(deadline - now, .zero)
        let nanos = wait.components.seconds * 1_000_000_000 + wait.components.attoseconds / 1_000_000_000
        let bound = NIOLoopBound(self, eventLoop: loop)
        timer = loop.scheduleTask(in: .nanoseconds(nanos)) {
            let core = bound.value
            core.timer = nil
            core.timerDeadline = nil
            core.perform(core.forwarder.tick(now: core.now))
        }
    }
}

// MARK: - Channel handlers

final class UDPHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    let server: DNSServer
    let container: String
    let client: ClientBox
    init(server: DNSServer, container: String, client: ClientBox) {
        self.server = server
        self.container = container
        self.client = client
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        let core = server.core.value
        let handling = envelope.data.withUnsafeReadableBytes { core.handle($0, container: container, client: client, udp: true) }
        switch handling {
        case .reply(let out):
            context.write(wrapOutboundOut(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: context.channel.allocator.buffer(bytes: out))), promise: nil)
        case .forward(let query):
            let limit = udpLimit(for: query)
            core.forward(query, container: container, channel: context.channel, remote: envelope.remoteAddress, limit: limit)
        case .drop:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A UDP socket error (e.g. ICMP unreachable for one client) must not close the server.
    }
}

final class UpstreamHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let server: DNSServer
    /// The query this socket was opened for.
    let id: UInt16
    init(server: DNSServer, id: UInt16) {
        self.server = server
        self.id = id
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        server.core.value.upstreamReply(Array(envelope.data.readableBytesView), from: envelope.remoteAddress, socket: id)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {}
}

final class TCPHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let server: DNSServer
    let container: String
    let client: ClientBox
    var reader = DNSStreamReader()
    var counted = false
    var idle: Scheduled<Void>?
    var upstreamExchanges = 0

    init(server: DNSServer, container: String, client: ClientBox) {
        self.server = server
        self.container = container
        self.client = client
    }

    func channelActive(context: ChannelHandlerContext) {
        let core = server.core.value
        guard var entry = core.containers[container],
              entry.tcpConnections < server.configuration.maxTCPConnectionsPerContainer else {
            core.counters.tcpRefused += 1
            context.close(promise: nil)
            return
        }
        entry.tcpConnections += 1
        core.containers[container] = entry
        core.counters.tcpConnections += 1
        counted = true
        armIdle(context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        idle?.cancel()
        if counted {
            server.core.value.containers[container]?.tcpConnections -= 1
            counted = false
        }
    }

    func armIdle(context: ChannelHandlerContext) {
        idle?.cancel()
        let ch = context.channel
        let t = server.configuration.tcpIdleTimeout
        let nanos = t.components.seconds * 1_000_000_000 + t.components.attoseconds / 1_000_000_000
        idle = context.eventLoop.scheduleTask(in: .nanoseconds(nanos)) { ch.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        guard reader.append(buffer.readableBytesView) else {
            server.core.value.counters.dropped += 1
            context.close(promise: nil)
            return
        }
        armIdle(context: context)
        answerQueued(context: context)
    }

    /// Answers the queries received so far while the client takes the replies. Once the replies
    /// waiting to go out pass the channel's high-water mark, the rest wait in `reader` and the
    /// connection is no longer read: a client that sends and never reads holds one batch of
    /// queries and one window of replies, never more, and the idle timeout ends it.
    func answerQueued(context: ChannelHandlerContext) {
        while context.channel.isWritable, let message = reader.next() {
            let core = server.core.value
            let handling = message.withUnsafeBytes { core.handle($0, container: container, client: client, udp: false) }
            switch handling {
            case .reply(let out):
                context.write(wrapOutboundOut(context.channel.allocator.buffer(bytes: DNSStream.frame(out))), promise: nil)
            case .forward(let query):
                core.counters.forwarded += 1
                forwardOverTCP(query, context: context)
            case .drop:
                context.close(promise: nil)
                return
            }
        }
        context.flush()
        if !context.channel.isWritable {
            server.core.value.counters.tcpPaused += 1
            try? context.channel.syncOptions?.setOption(ChannelOptions.autoRead, value: false)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            // The client took replies: answer what waited, then read again.
            armIdle(context: context)
            answerQueued(context: context)
            if context.channel.isWritable, context.channel.isActive {
                try? context.channel.syncOptions?.setOption(ChannelOptions.autoRead, value: true)
                context.read()
            }
        }
        context.fireChannelWritabilityChanged()
    }

    /// Sends a query to the upstreams over TCP, one after another until one answers.
    func forwardOverTCP(_ query: DNSMessage, context: ChannelHandlerContext) {
        let client = context.channel
        let upstreams = Array(server.configuration.upstreams.prefix(3))
        let timeout = server.configuration.forwardTimeout
        guard upstreamExchanges < 8, !upstreams.isEmpty else {
            let fail = query.response(rcode: .servFail).encode()
            client.writeAndFlush(ByteBuffer(bytes: DNSStream.frame(fail)), promise: nil)
            return
        }
        upstreamExchanges += 1
        let loop = context.eventLoop
        let bound = NIOLoopBound(self, eventLoop: loop)
        var q = query
        q.id = UInt16.random(in: 0 ... .max)
        let upstreamQuery = q
        let queryBytes = upstreamQuery.encode()
        @Sendable func attempt(_ index: Int) {
            guard index < upstreams.count else {
                var fail = query.response(rcode: .servFail)
                fail.id = query.id
                client.writeAndFlush(ByteBuffer(bytes: DNSStream.frame(fail.encode())), promise: nil)
                bound.value.upstreamExchanges -= 1
                return
            }
            let u = upstreams[index]
            tcpExchange(queryBytes, upstream: u, timeout: timeout, loop: loop).whenComplete { result in
                switch result {
                case .success(let reply):
                    guard let m = try? DNSMessage.decode(reply), m.id == upstreamQuery.id, m.isResponse else { return attempt(index + 1) }
                    // The upstream's bytes as they are, with the client's ID put back.
                    var out = reply
                    out[0] = UInt8(query.id >> 8)
                    out[1] = UInt8(query.id & 0xff)
                    client.writeAndFlush(ByteBuffer(bytes: DNSStream.frame(out)), promise: nil)
                    bound.value.upstreamExchanges -= 1
                case .failure:
                    attempt(index + 1)
                }
            }
        }
        attempt(0)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// One query over a new TCP connection to an upstream; the future holds the reply message.
func tcpExchange(_ query: [UInt8], upstream: Upstream, timeout: Duration, loop: any EventLoop) -> EventLoopFuture<[UInt8]> {
    let promise = loop.makePromise(of: [UInt8].self)
    let nanos = timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
    guard let address = try? SocketAddress(ipAddress: upstream.address.description, port: Int(upstream.port)) else {
        promise.fail(DNSServerError("bad upstream address \(upstream.address)"))
        return promise.futureResult
    }
    ClientBootstrap(group: loop)
        .connectTimeout(.nanoseconds(nanos))
        .channelInitializer { ch in
            ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(UpstreamTCPHandler(promise: promise)) }
        }
        .connect(to: address)
        .whenComplete { result in
            switch result {
            case .success(let ch):
                ch.writeAndFlush(ByteBuffer(bytes: DNSStream.frame(query)), promise: nil)
                let timer = loop.scheduleTask(in: .nanoseconds(nanos)) {
                    promise.fail(DNSServerError("upstream \(upstream.address) did not answer over TCP in time"))
                }
                promise.futureResult.whenComplete { _ in
                    timer.cancel()
                    ch.close(promise: nil)
                }
            case .failure(let error):
                promise.fail(error)
            }
        }
    return promise.futureResult
}

final class UpstreamTCPHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let promise: EventLoopPromise<[UInt8]>
    var reader = DNSStreamReader()
    init(promise: EventLoopPromise<[UInt8]>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        guard reader.append(buffer.readableBytesView) else {
            promise.fail(DNSServerError("upstream sent an oversized TCP message"))
            return
        }
        if let message = reader.next() { promise.succeed(message) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(DNSServerError("upstream closed the TCP connection"))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(error)
        context.close(promise: nil)
    }
}
