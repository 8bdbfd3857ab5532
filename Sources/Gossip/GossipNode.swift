import Logging
import NIOCore
import NIOPosix
import OverlayCrypto
import OverlayModel
import Synchronization

/// Settings for a `GossipNode`: the SWIM settings plus sockets, encryption and hooks.
public struct GossipConfiguration: Sendable {
    /// Protocol settings (name, advertise address, timings).
    public var swim: SwimConfig
    /// Address the UDP and TCP sockets bind to ("0.0.0.0" binds all).
    public var bindHost: String
    /// Port for both UDP and TCP (7946).
    public var bindPort: Int
    /// Encryption keys; nil sends and accepts plaintext.
    public var keyring: Keyring?
    /// With a keyring: refuse plaintext (memberlist `GossipVerifyIncoming`, true).
    public var verifyIncoming: Bool
    /// memberlist (>= 0.3) cluster label: sent as a header on every packet and stream and
    /// authenticated; packets and streams with another (or no) label are refused. Empty = none.
    public var label: String
    /// Decoder bounds.
    public var limits: WireLimits
    /// Deadline for a whole TCP exchange (10 s, memberlist `TCPTimeout`).
    public var tcpTimeout: Duration
    /// Most inbound TCP streams served at once (128, memberlist `maxPushPullRequests`).
    public var maxConcurrentStreams: Int
    /// Inbound TCP streams served at once from one source address (a member opens one or two:
    /// a push-pull, a fallback probe); one more is closed at once and counted as refused.
    public var maxStreamsPerSource: Int
    /// Delegate state to send in push-pulls (argument: is this a join); serf sends its own here.
    public var localUserState: @Sendable (Bool) -> [UInt8]
    /// Called with a remote's delegate state from a push-pull (and whether it was a join).
    public var mergeUserState: @Sendable ([UInt8], Bool) -> Void
    /// Called for every user message received (gossiped or streamed).
    public var userMessage: @Sendable ([UInt8]) -> Void
    /// Where the node logs.
    public var logger: Logger

    /// Configuration binding `advertise`'s address and port, no encryption, no hooks.
    public init(swim: SwimConfig, bindHost: String? = nil, bindPort: Int? = nil, keyring: Keyring? = nil) {
        self.swim = swim
        self.bindHost = bindHost ?? "\(swim.advertise.ip)"
        self.bindPort = bindPort ?? Int(swim.advertise.port)
        self.keyring = keyring
        verifyIncoming = true
        label = ""
        limits = WireLimits()
        tcpTimeout = .seconds(10)
        maxConcurrentStreams = 128
        maxStreamsPerSource = 8
        localUserState = { _ in [] }
        mergeUserState = { _, _ in }
        userMessage = { _ in }
        logger = Logger(label: "gossip.\(swim.name)")
    }
}

/// Counters of what the node received, sent and refused.
public struct GossipCounters: Sendable, Equatable {
    /// UDP packets received.
    public var packetsReceived = 0
    /// UDP packets sent.
    public var packetsSent = 0
    /// Bytes of the UDP packets received (as they came, encrypted or not).
    public var bytesReceived = 0
    /// Bytes of the UDP packets sent.
    public var bytesSent = 0
    /// Packets dropped because the socket's send queue was full.
    public var sendDrops = 0
    /// Packets that did not parse (bad msgpack, CRC mismatch, unknown type).
    public var malformedPackets = 0
    /// Packets or streams that failed decryption or were plaintext where a key is required.
    public var unauthenticated = 0
    /// Packets or streams over the size limits.
    public var oversized = 0
    /// LZW-compressed sections decoded.
    public var compressedSections = 0
    /// Compound parts dropped (truncated or malformed).
    public var droppedParts = 0
    /// Inbound TCP streams accepted.
    public var streamsAccepted = 0
    /// Inbound TCP streams refused because too many were open.
    public var streamsRefused = 0
    /// TCP exchanges that failed (connect, timeout, protocol error).
    public var streamErrors = 0
    /// Protocol-level counters from the SWIM core.
    public var swim = SwimCounters()
}

/// A gossip member on the network: the SWIM core driven over UDP and TCP with SwiftNIO, speaking
/// memberlist's protocol so it can join a serf or memberlist cluster.
///
/// All mutable state lives on one event loop (`loop`); public methods hop onto it.
public final class GossipNode: @unchecked Sendable {
    // @unchecked Sendable: every stored `var` below is read and written only on `loop` (public
    // methods use `loop.submit`/`execute`, NIO handlers run on channels bound to `loop`, timers
    // are scheduled on `loop`). The `let`s are immutable or themselves Sendable.
    /// The configuration the node was created with.
    public let configuration: GossipConfiguration
    /// Membership changes, in order. One consumer.
    public let events: AsyncStream<MemberEvent>

    private let group: EventLoopGroup
    private let ownsGroup: Bool
    let loop: EventLoop
    private let eventContinuation: AsyncStream<MemberEvent>.Continuation
    private var logger: Logger

    private var core: SwimCore
    private var keyring: Keyring?
    private var counters = GossipCounters()
    private var udp: Channel?
    private var tcp: Channel?
    private var timers: [UInt64: Scheduled<Void>] = [:]
    private var timerID: UInt64 = 0
    private var openStreams = 0
    private var streamsPerSource: [String: Int] = [:]
    private var running = false
    private let epoch = NIODeadline.now()
    /// Public calls that use the event loop, counted so `shutdown()` stops an owned loop only once
    /// none is in flight (scheduling on a stopped loop is fatal in SwiftNIO).
    private let calls = Mutex(CallGate())

    struct CallGate {
        var closed = false
        var inFlight = 0
        /// `shutdown()` finished its own work on the loop; the last call out stops the group.
        var stopGroupWhenIdle = false
    }

    /// Runs `body` unless the node is shut down (then throws `.notRunning`).
    private func guarded<T>(_ body: () async throws -> T) async throws -> T {
        try calls.withLock { g throws(GossipError) in
            guard !g.closed else { throw GossipError(.notRunning, "the gossip node is shut down") }
            g.inFlight += 1
        }
        defer { leaveCall() }
        return try await body()
    }

    private func leaveCall() {
        let stop = calls.withLock { g -> Bool in
            g.inFlight -= 1
            guard g.stopGroupWhenIdle, g.inFlight == 0 else { return false }
            g.stopGroupWhenIdle = false
            return true
        }
        if stop {
            let group = self.group
            Task { try? await group.shutdownGracefully() }
        }
    }

    /// Creates a node; nothing is bound until `start()`. Pass a group to share threads; by default
    /// the node makes (and later shuts down) a one-thread group.
    public init(configuration: GossipConfiguration, group: EventLoopGroup? = nil) throws {
        var cfg = configuration
        if cfg.keyring != nil { cfg.swim.encryptionOverhead = PayloadCrypto.overhead }
        self.configuration = cfg
        core = try SwimCore(config: cfg.swim)
        keyring = cfg.keyring
        logger = cfg.logger
        if let g = group {
            self.group = g
            ownsGroup = false
        } else {
            self.group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            ownsGroup = true
        }
        loop = self.group.next()
        (events, eventContinuation) = AsyncStream.makeStream(of: MemberEvent.self, bufferingPolicy: .bufferingNewest(4096))
    }

    private var now: Duration { .nanoseconds(Int64(NIODeadline.now().uptimeNanoseconds - epoch.uptimeNanoseconds)) }

    // MARK: - Public API

    /// Binds UDP and TCP, announces this node and starts probing and gossiping.
    public func start() async throws {
        let cfg = configuration
        let udpChannel: Channel
        let tcpChannel: Channel
        do {
            udpChannel = try await DatagramBootstrap(group: loop)
                .channelOption(.socketOption(.so_reuseaddr), value: 1)
                // NIO reads datagrams into 2 KiB buffers by default; take any size up to our limit so
                // big packets are judged (and counted) by the decoder, not silently truncated.
                .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: min(cfg.limits.maxPacketBytes + 1, 65536)))
                .channelInitializer { [self] ch in
                    ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(PacketHandler(node: self)) }
                }
                .bind(host: cfg.bindHost, port: cfg.bindPort).get()
        } catch {
            throw GossipError(.io, "cannot bind UDP \(cfg.bindHost):\(cfg.bindPort): \(error); is another agent using the port?")
        }
        do {
            tcpChannel = try await ServerBootstrap(group: loop)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { [self] ch in
                    ch.eventLoop.makeCompletedFuture {
                        try ch.pipeline.syncOperations.addHandler(StreamHandler(node: self, request: nil, promise: nil))
                    }
                }
                .bind(host: cfg.bindHost, port: cfg.bindPort).get()
        } catch {
            try? await udpChannel.close()
            throw GossipError(.io, "cannot bind TCP \(cfg.bindHost):\(cfg.bindPort): \(error); is another agent using the port?")
        }
        try await loop.submit { [self] in
            udp = udpChannel
            tcp = tcpChannel
            running = true
            execute(core.start(now: now))
        }.get()
        logger.info("gossip node started", metadata: ["name": "\(cfg.swim.name)", "advertise": "\(cfg.swim.advertise)"])
    }

    /// Runs the node as a long-lived service: starts it, joins `seeds` (if any), then waits until
    /// the task is cancelled, leaves gracefully and shuts down. Shaped like
    /// swift-service-lifecycle's `Service.run()` so it can be wrapped in one.
    public func run(joining seeds: [NodeAddress] = []) async throws {
        try await start()
        do {
            if !seeds.isEmpty { try await join(seeds) }
        } catch {
            try? await shutdown()
            throw error
        }
        while !Task.isCancelled {
            do { try await Task.sleep(for: .seconds(3600)) } catch { break }
        }
        try? await leave()
        try await shutdown()
    }

    /// Joins a cluster through `seeds` (push-pull with each); returns how many answered. Throws
    /// `.joinFailed` if none did.
    @discardableResult
    public func join(_ seeds: [NodeAddress]) async throws -> Int {
        try await guarded { try await join0(seeds) }
    }

    private func join0(_ seeds: [NodeAddress]) async throws -> Int {
        let futures = try await loop.submit { [self] () throws -> [EventLoopFuture<Void>] in
            guard running else { throw GossipError(.notRunning, "start the node before joining") }
            return core.join(seeds: seeds).compactMap {
                if case .pushPull(let to, let join) = $0 { return pushPull(to: to, join: join) }
                return nil
            }
        }.get()
        var ok = 0
        var lastError: (any Error)?
        for f in futures {
            do {
                try await f.get()
                ok += 1
            } catch { lastError = error }
        }
        guard ok > 0 || seeds.isEmpty else {
            throw GossipError(.joinFailed, "no seed answered (\(seeds.map(\.description).joined(separator: ", "))): \(lastError.map { "\($0)" } ?? "unknown")")
        }
        return ok
    }

    /// Leaves gracefully: announces the leave and waits until it was gossiped (or `timeout`).
    public func leave(timeout: Duration = .seconds(5)) async throws {
        try await guarded { try await leave0(timeout: timeout) }
    }

    private func leave0(timeout: Duration) async throws {
        try await loop.submit { [self] in execute(core.leave(now: now)) }.get()
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let pending = try await loop.submit { [self] in core.pendingBroadcasts }.get()
            if pending == 0 { break }
            try await Task.sleep(for: configuration.swim.gossipInterval)
        }
    }

    /// Stops timers, closes sockets and ends `events`. The node cannot be restarted.
    public func shutdown() async throws {
        let first = calls.withLock { g -> Bool in
            defer { g.closed = true }
            return !g.closed
        }
        guard first else { return }
        let channels = try await loop.submit { [self] () -> [Channel] in
            running = false
            for t in timers.values { t.cancel() }
            timers = [:]
            let c = [udp, tcp].compactMap { $0 }
            udp = nil
            tcp = nil
            return c
        }.get()
        for c in channels { try? await c.close() }
        eventContinuation.finish()
        guard ownsGroup else { return }
        let idle = calls.withLock { g -> Bool in
            if g.inFlight == 0 { return true }
            g.stopGroupWhenIdle = true
            return false
        }
        if idle { try await group.shutdownGracefully() }
    }

    /// Every known member including this node.
    public func members() async throws -> [Member] {
        try await guarded { try await loop.submit { [self] in core.allMembers() }.get() }
    }

    /// Counters so far.
    public func counters() async throws -> GossipCounters {
        try await guarded {
            try await loop.submit { [self] in
                var c = counters
                c.swim = core.counters
                return c
            }.get()
        }
    }

    /// Gossips an opaque user message to the cluster (piggybacked, best effort, size-limited to a packet).
    public func broadcastUserMessage(_ payload: [UInt8]) async throws {
        guard payload.count + 1 <= configuration.swim.udpBufferSize - 4 - configuration.swim.encryptionOverhead else {
            throw GossipError(.invalidConfiguration, "user broadcast of \(payload.count) bytes does not fit a packet; send it with sendUserMessage(_:to:)")
        }
        try await guarded { try await loop.submit { [self] in core.broadcastUser(payload) }.get() }
    }

    /// Sends an opaque user message to one node over TCP (reliable, any size up to the stream limit).
    public func sendUserMessage(_ payload: [UInt8], to: NodeAddress) async throws {
        try await guarded {
            let bytes = try StreamCodec.encodeUser(payload, keyring: try await loop.submit { [self] in keyring }.get(), label: configuration.label)
            try await exchange(bytes, to: to, expectReply: false).map { _ in () }.get()
        }
    }

    /// Installs an extra key accepted on receive.
    public func installKey(_ key: SecretKey) async throws {
        try await guarded { try await installKey0(key) }
    }

    private func installKey0(_ key: SecretKey) async throws {
        try await loop.submit { [self] in
            guard var k = keyring else { throw GossipError(.invalidKey, "encryption is off; create the node with a keyring to use keys") }
            try k.install(key)
            keyring = k
        }.get()
    }

    /// Makes an installed key the primary (used to send).
    public func useKey(_ key: SecretKey) async throws {
        try await guarded { try await useKey0(key) }
    }

    private func useKey0(_ key: SecretKey) async throws {
        try await loop.submit { [self] in
            guard var k = keyring else { throw GossipError(.invalidKey, "encryption is off; create the node with a keyring to use keys") }
            try k.use(key)
            keyring = k
        }.get()
    }

    /// Removes a non-primary key.
    public func removeKey(_ key: SecretKey) async throws {
        try await guarded { try await removeKey0(key) }
    }

    private func removeKey0(_ key: SecretKey) async throws {
        try await loop.submit { [self] in
            guard var k = keyring else { throw GossipError(.invalidKey, "encryption is off; create the node with a keyring to use keys") }
            try k.remove(key)
            keyring = k
        }.get()
    }

    // MARK: - Core driving (on loop)

    private func execute(_ directives: [SwimDirective]) {
        loop.preconditionInEventLoop()
        for d in directives {
            switch d {
            case .sendPacket(let to, let parts, let crc):
                sendPacket(parts, crc: crc, to: to)
            case .scheduleTimer(let t, let after):
                guard running else { continue }
                timerID &+= 1
                let id = timerID
                timers[id] = loop.scheduleTask(in: .nanoseconds(Int64(after.components.seconds * 1_000_000_000 + after.components.attoseconds / 1_000_000_000))) { [self] in
                    timers[id] = nil
                    guard running else { return }
                    execute(core.onTimer(t, now: now))
                }
            case .pushPull(let to, let join):
                _ = pushPull(to: to, join: join)
            case .tcpPing(let to, let ping, let timeout):
                tcpPing(ping, to: to, timeout: timeout)
            case .memberChanged(let e):
                eventContinuation.yield(e)
            case .deliverUser(let b):
                configuration.userMessage(b)
            case .mergeUserState(let b, let join):
                configuration.mergeUserState(b, join)
            }
        }
    }

    private func sendPacket(_ parts: [[UInt8]], crc: Bool, to: NodeAddress) {
        guard let udp else { return }
        guard udp.isWritable else {
            counters.sendDrops += 1
            return
        }
        do {
            let bytes = try PacketCodec.encode(parts, crc: crc, keyring: keyring, label: configuration.label)
            let sa = try SocketAddress(ipAddress: "\(to.ip)", port: Int(to.port))
            counters.packetsSent += 1
            counters.bytesSent += bytes.count
            udp.writeAndFlush(AddressedEnvelope(remoteAddress: sa, data: udp.allocator.buffer(bytes: bytes)), promise: nil)
        } catch {
            counters.sendDrops += 1
            logger.debug("cannot send packet", metadata: ["to": "\(to)", "error": "\(error)"])
        }
    }

    func receivePacket(_ bytes: [UInt8], from: SocketAddress) {
        loop.preconditionInEventLoop()
        guard running, let fromAddress = NodeAddress(from) else { return }
        counters.packetsReceived += 1
        counters.bytesReceived += bytes.count
        do {
            let p = try PacketCodec.decode(bytes, keyring: keyring, verifyIncoming: configuration.verifyIncoming, label: configuration.label, limits: configuration.limits)
            counters.compressedSections += p.compressedSections
            counters.droppedParts += p.truncatedParts + p.malformedParts
            execute(core.onMessages(p.messages, from: fromAddress, now: now))
        } catch {
            count(error)
            logger.debug("dropped packet", metadata: ["from": "\(fromAddress)", "error": "\(error)"])
        }
    }

    private func count(_ error: any Error) {
        if let e = error as? GossipError, e.code == .unauthenticated {
            counters.unauthenticated += 1
        } else if let e = error as? GossipCodecError, e.code == .tooLarge {
            counters.oversized += 1
        } else {
            counters.malformedPackets += 1
        }
    }

    // MARK: - Streams (on loop)

    private func pushPull(to: NodeAddress, join: Bool) -> EventLoopFuture<Void> {
        var local = core.localState(join: join)
        local.userState = configuration.localUserState(join)
        let bytes: [UInt8]
        do { bytes = try StreamCodec.encode(.pushPull(local), keyring: keyring, label: configuration.label) } catch { return loop.makeFailedFuture(error) }
        return exchange(bytes, to: to, expectReply: true).flatMapThrowing { [self] reply in
            switch reply {
            case .pushPull(let remote):
                if let problem = core.incompatibility(with: remote) {
                    _ = core.onPushPullReply(remote, join: join, now: now)  // counts it
                    throw GossipError(.remote, "not merging state from \(to): \(problem)")
                }
                execute(core.onPushPullReply(remote, join: join, now: now))
            case .err(let text):
                throw GossipError(.remote, "\(to) refused the push-pull: \(text)")
            default:
                throw GossipError(.remote, "\(to) answered a push-pull with \(reply.map { "\($0.type)" } ?? "nothing")")
            }
        }
    }

    private func tcpPing(_ ping: PingMessage, to: NodeAddress, timeout: Duration) {
        let bytes: [UInt8]
        do { bytes = try StreamCodec.encode(.ping(ping), keyring: keyring, label: configuration.label) } catch { return }
        exchange(bytes, to: to, expectReply: true, timeout: timeout).whenComplete { [self] result in
            var acked = false
            if case .success(.ack(let seq, _)) = result, seq == ping.seqNo { acked = true }
            execute(core.onTCPPingResult(seq: ping.seqNo, acked: acked, now: now))
        }
    }

    /// Connects, writes `request`, and (if `expectReply`) reads one stream message back.
    private func exchange(_ request: [UInt8], to: NodeAddress, expectReply: Bool, timeout: Duration? = nil) -> EventLoopFuture<GossipMessage?> {
        let promise = loop.makePromise(of: GossipMessage?.self)
        let limit = timeout ?? configuration.tcpTimeout
        let amount = TimeAmount.nanoseconds(Int64(limit.components.seconds * 1_000_000_000 + limit.components.attoseconds / 1_000_000_000))
        let address: SocketAddress
        do { address = try SocketAddress(ipAddress: "\(to.ip)", port: Int(to.port)) } catch {
            promise.fail(error)
            return promise.futureResult
        }
        let req = request
        ClientBootstrap(group: loop)
            .connectTimeout(amount)
            .channelInitializer { [self] ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.addHandler(StreamHandler(node: self, request: (req, expectReply), promise: promise))
                }
            }
            .connect(to: address)
            .whenComplete { result in
                switch result {
                case .success(let ch):
                    ch.eventLoop.scheduleTask(in: amount) {
                        promise.fail(GossipError(.io, "TCP exchange with \(to) timed out after \(limit)"))
                        ch.close(promise: nil)
                    }
                    promise.futureResult.whenComplete { _ in ch.close(promise: nil) }
                case .failure(let e):
                    promise.fail(GossipError(.io, "cannot connect to \(to): \(e)"))
                }
            }
        promise.futureResult.whenFailure { [self] error in
            counters.streamErrors += 1
            if let e = error as? GossipError, e.code == .unauthenticated { counters.unauthenticated += 1 }
        }
        return promise.futureResult
    }

    /// Serves one inbound stream message; returns bytes to write back (nil: nothing).
    func serveStream(_ message: GossipMessage) -> [UInt8]? {
        loop.preconditionInEventLoop()
        guard running else { return nil }
        switch message {
        case .ping(let p):
            guard let ack = core.onStreamPing(p) else { return nil }
            return try? StreamCodec.encode(ack, keyring: keyring, label: configuration.label)
        case .pushPull(let remote):
            var (reply, ds) = core.onPushPullRequest(remote, now: now)
            reply.userState = configuration.localUserState(false)
            let bytes = try? StreamCodec.encode(.pushPull(reply), keyring: keyring, label: configuration.label)
            execute(ds)
            return bytes
        case .user(let b):
            configuration.userMessage(b)
            return nil
        default:
            return nil
        }
    }

    /// Takes an inbound stream from `source` (an IP address): nil when it is one too many, else
    /// the limits it is read with (a smaller largest message from an address no member has).
    func streamOpened(from source: String) -> WireLimits? {
        loop.preconditionInEventLoop()
        let fromSource = streamsPerSource[source, default: 0]
        guard openStreams < configuration.maxConcurrentStreams, fromSource < configuration.maxStreamsPerSource else {
            counters.streamsRefused += 1
            return nil
        }
        openStreams += 1
        streamsPerSource[source] = fromSource + 1
        counters.streamsAccepted += 1
        var limits = configuration.limits
        let ip = IPAddress(source)
        if ip == nil || !core.allMembers().contains(where: { $0.address.ip == ip && $0.name != configuration.swim.name }) {
            limits.maxStreamBytes = min(limits.maxStreamBytes, limits.maxUnknownSourceStreamBytes)
        }
        return limits
    }

    func streamClosed(from source: String) {
        loop.preconditionInEventLoop()
        openStreams -= 1
        let n = streamsPerSource[source, default: 1] - 1
        streamsPerSource[source] = n > 0 ? n : nil
    }

    func streamFailed(_ error: any Error) {
        count(error)
        counters.streamErrors += 1
    }

    var streamKeyring: Keyring? { keyring }
}

extension NodeAddress {
    init?(_ sa: SocketAddress) {
        guard let s = sa.ipAddress, let port = sa.port, let ip = IPAddress(s), let p = UInt16(exactly: port) else { return nil }
        self.init(ip: ip, port: p)
    }
}

/// Feeds UDP datagrams to the node.
private final class PacketHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let node: GossipNode
    init(node: GossipNode) { self.node = node }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let env = unwrapInboundIn(data)
        node.receivePacket(Array(env.data.readableBytesView), from: env.remoteAddress)
    }
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // ICMP port unreachable and similar: UDP is best effort, keep the socket open.
    }
}

/// One TCP stream: inbound (serve one request) or outbound (write a request, read one reply).
private final class StreamHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let node: GossipNode
    let request: ([UInt8], Bool)?
    let promise: EventLoopPromise<GossipMessage?>?
    var buffer = ByteBuffer()
    var done = false
    /// The source address of an inbound stream the node counted (released when it closes).
    var counted: String?
    /// What this stream is read with (an inbound one from an address no member has: less).
    var limits: WireLimits

    init(node: GossipNode, request: ([UInt8], Bool)?, promise: EventLoopPromise<GossipMessage?>?) {
        self.node = node
        self.request = request
        self.promise = promise
        limits = node.configuration.limits
    }

    func channelActive(context: ChannelHandlerContext) {
        if let (bytes, expectReply) = request {
            let write = context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: bytes)))
            if !expectReply {
                let p = promise
                write.whenComplete { r in
                    switch r {
                    case .success: p?.succeed(nil)
                    case .failure(let e): p?.fail(e)
                    }
                }
            }
        } else {
            let source = context.channel.remoteAddress?.ipAddress ?? "?"
            guard let limits = node.streamOpened(from: source) else {
                context.close(promise: nil)
                return
            }
            self.limits = limits
            counted = source
            let timeout = node.configuration.tcpTimeout
            let ch = context.channel
            context.eventLoop.scheduleTask(in: .seconds(timeout.components.seconds) + .nanoseconds(timeout.components.attoseconds / 1_000_000_000)) {
                ch.close(promise: nil)
            }
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        var incoming = unwrapInboundIn(data)
        buffer.writeBuffer(&incoming)
    }

    /// Tries to decode once per batch of reads (not per read), so a large push-pull arriving in
    /// many segments is not re-parsed from the start for each one.
    func channelReadComplete(context: ChannelHandlerContext) {
        defer { context.fireChannelReadComplete() }
        guard !done, buffer.readableBytes > 0 else { return }
        do {
            guard buffer.readableBytes <= limits.maxStreamBytes + 5 + 257 else {
                throw GossipCodecError(.tooLarge, "stream exceeds \(limits.maxStreamBytes) bytes")
            }
            guard let m = try buffer.readGossipStreamMessage(keyring: node.streamKeyring, verifyIncoming: node.configuration.verifyIncoming,
                                                             label: node.configuration.label, limits: limits) else { return }
            done = true
            if let promise {
                promise.succeed(m)
                context.close(promise: nil)
            } else if let reply = node.serveStream(m) {
                let ch = context.channel
                context.writeAndFlush(wrapOutboundOut(ch.allocator.buffer(bytes: reply))).whenComplete { _ in
                    ch.close(promise: nil)
                }
            } else {
                context.close(promise: nil)
            }
        } catch {
            done = true
            if let promise { promise.fail(error) } else { node.streamFailed(error) }
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let counted { node.streamClosed(from: counted) }
        if !done, let promise {
            promise.fail(GossipError(.remote, "stream closed before a complete reply"))
        }
        done = true
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
