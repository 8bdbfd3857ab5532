import Foundation
import Synchronization
import Testing
import NIOCore
import NIOPosix
import OverlayCrypto
import OverlayModel
@testable import Gossip

private let handedOutLoopbacks = Mutex(Set<IPv4Address>())

/// A loopback address unique to one test (127.<a>.<b>.<c>), so tests can run in parallel on 7946.
/// Never the same one twice in a process: a repeat would collide with a test still bound to it.
func uniqueLoopback() -> IPAddress {
    while true {
        let a = IPv4Address(127, UInt8.random(in: 100 ... 250), UInt8.random(in: 1 ... 250), UInt8.random(in: 2 ... 250))
        // Never handed out twice in this process, and free on the machine right now. (The "address
        // in use" CI failures were a lab command's child inheriting a NIO socket; `Command` now
        // closes every inherited descriptor in the child.)
        if portIsFree(a, 7946), handedOutLoopbacks.withLock({ $0.insert(a).inserted }) { return .v4(a) }
    }
}

/// Whether TCP and UDP `address:port` can be bound now.
func portIsFree(_ address: IPv4Address, _ port: UInt16) -> Bool {
    for type in [Int32(SOCK_STREAM.rawValue), Int32(SOCK_DGRAM.rawValue)] {
        let fd = socket(AF_INET, type, 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        sin.sin_addr.s_addr = address.value.bigEndian
        let rc = withUnsafePointer(to: &sin) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        if rc != 0 { return false }
    }
    return true
}

/// Fast timings so loopback tests finish in seconds.
func fastSwim(_ name: String, _ address: NodeAddress) -> SwimConfig {
    var c = SwimConfig(name: name, advertise: address)
    c.probeInterval = .milliseconds(200)
    c.probeTimeout = .milliseconds(100)
    c.gossipInterval = .milliseconds(50)
    c.suspicionMult = 2
    c.pushPullInterval = .seconds(5)
    return c
}

func waitUntil(_ timeout: Duration, _ what: String = "", _ check: () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await check() { return true }
        try await Task.sleep(for: .milliseconds(100))
    }
    return try await check()
}

/// Collects values from `@Sendable` hooks.
final class Collector<T: Sendable>: Sendable {
    private let items = Mutex<[T]>([])
    func add(_ t: T) { items.withLock { $0.append(t) } }
    var all: [T] { items.withLock { $0 } }
}

@Suite(.serialized) struct GossipNodeTests {
    @Test func twoNodesJoinDetectFailureAndCountBadPackets() async throws {
        let ipA = uniqueLoopback(), ipB = uniqueLoopback()
        var cfgA = GossipConfiguration(swim: fastSwim("a", NodeAddress(ip: ipA, port: 7946)))
        cfgA.limits.maxPacketBytes = 1500
        let received = Collector<[UInt8]>()
        cfgA.userMessage = { received.add($0) }
        let a = try GossipNode(configuration: cfgA)
        let b = try GossipNode(configuration: GossipConfiguration(swim: fastSwim("b", NodeAddress(ip: ipB, port: 7946))))
        try await a.start()
        try await b.start()
        var aDown = false
        defer { if !aDown { Task { try? await a.shutdown() } } }
        #expect(try await b.join([NodeAddress(ip: ipA, port: 7946)]) == 1)
        #expect(try await waitUntil(.seconds(3)) { try await a.members().filter { $0.state == .alive }.count == 2 })
        #expect(try await b.members().map(\.name) == ["a", "b"])

        // Garbage and oversized datagrams are counted, never fatal.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let sender = try await DatagramBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        let target = try SocketAddress(ipAddress: "\(ipA)", port: 7946)
        for junk: [UInt8] in [[0xff, 1, 2], [0x0c, 0, 0, 0, 0, 0x00], [0x00, 0xc1], [UInt8](repeating: 0x07, count: 2000)] {
            try await sender.writeAndFlush(AddressedEnvelope(remoteAddress: target, data: sender.allocator.buffer(bytes: junk)))
        }
        try await sender.close()
        try await group.shutdownGracefully()
        #expect(try await waitUntil(.seconds(2)) { try await a.counters().malformedPackets >= 3 })
        #expect(try await a.counters().oversized == 1)

        // User messages: one streamed over TCP.
        try await b.sendUserMessage([1, 2, 3], to: NodeAddress(ip: ipA, port: 7946))
        try await b.broadcastUserMessage([4, 5])
        #expect(try await waitUntil(.seconds(2)) { received.all.contains([1, 2, 3]) && received.all.contains([4, 5]) })

        try await a.shutdown()
        aDown = true
        var failedAt: ContinuousClock.Instant?
        let start = ContinuousClock.now
        #expect(try await waitUntil(.seconds(10)) {
            let dead = try await b.members().first { $0.name == "a" }?.state == .dead
            if dead, failedAt == nil { failedAt = .now }
            return dead
        })
        if let failedAt { #expect(failedAt - start < .seconds(5)) }
        try await b.shutdown()
    }

    @Test func encryptedNodesTalkAndWrongKeyIsRefused() async throws {
        let key = try SecretKey.random(byteCount: 32)
        let ipA = uniqueLoopback(), ipB = uniqueLoopback(), ipC = uniqueLoopback()
        let a = try GossipNode(configuration: GossipConfiguration(swim: fastSwim("a", NodeAddress(ip: ipA, port: 7946)), keyring: try Keyring(primary: key)))
        let b = try GossipNode(configuration: GossipConfiguration(swim: fastSwim("b", NodeAddress(ip: ipB, port: 7946)), keyring: try Keyring(primary: key)))
        let c = try GossipNode(configuration: GossipConfiguration(swim: fastSwim("c", NodeAddress(ip: ipC, port: 7946)), keyring: try Keyring(primary: SecretKey.random(byteCount: 32))))
        try await a.start()
        try await b.start()
        try await c.start()
        try await b.join([NodeAddress(ip: ipA, port: 7946)])
        #expect(try await waitUntil(.seconds(3)) { try await a.members().count == 2 })
        await #expect(throws: GossipError.self) { try await c.join([NodeAddress(ip: ipA, port: 7946)]) }
        #expect(try await a.counters().unauthenticated >= 1)
        #expect(try await a.members().allSatisfy { $0.name != "c" })

        // Rotate: install a new key everywhere, switch, drop the old one; the cluster keeps talking.
        let next = try SecretKey.random(byteCount: 16)
        for n in [a, b] { try await n.installKey(next) }
        for n in [a, b] { try await n.useKey(next) }
        for n in [a, b] { try await n.removeKey(key) }
        let before = try await a.counters().packetsReceived
        try await Task.sleep(for: .seconds(1))
        #expect(try await a.counters().packetsReceived > before)
        #expect(try await a.members().allSatisfy { $0.state == .alive })
        for n in [a, b, c] { try await n.shutdown() }
    }

    @Test func labelsSeparateClusters() async throws {
        let ipA = uniqueLoopback(), ipB = uniqueLoopback(), ipC = uniqueLoopback()
        func node(_ name: String, _ ip: IPAddress, _ label: String) throws -> GossipNode {
            var cfg = GossipConfiguration(swim: fastSwim(name, NodeAddress(ip: ip, port: 7946)))
            cfg.label = label
            return try GossipNode(configuration: cfg)
        }
        let a = try node("a", ipA, "blue"), b = try node("b", ipB, "blue"), c = try node("c", ipC, "green")
        for n in [a, b, c] { try await n.start() }
        try await b.join([NodeAddress(ip: ipA, port: 7946)])
        await #expect(throws: GossipError.self) { try await c.join([NodeAddress(ip: ipA, port: 7946)]) }
        #expect(try await waitUntil(.seconds(2)) { try await a.members().count == 2 })
        #expect(try await a.members().allSatisfy { $0.name != "c" })
        #expect(try await a.counters().unauthenticated >= 1)
        for n in [a, b, c] { try await n.shutdown() }
    }

    @Test func ipv6Loopback() async throws {
        let port = UInt16.random(in: 20000 ... 60000)
        let a6 = NodeAddress(ip: IPAddress("::1")!, port: port), b6 = NodeAddress(ip: IPAddress("::1")!, port: port + 1)
        let a = try GossipNode(configuration: GossipConfiguration(swim: fastSwim("a6", a6)))
        let b = try GossipNode(configuration: GossipConfiguration(swim: fastSwim("b6", b6)))
        try await a.start()
        try await b.start()
        try await b.join([a6])
        #expect(try await waitUntil(.seconds(3)) { try await a.members().filter { $0.state == .alive }.map(\.address) == [a6, b6] })
        for n in [a, b] { try await n.shutdown() }
    }

    /// Opens a raw TCP connection, writes `request`, and returns everything read until the peer closes.
    func rawExchange(_ request: [UInt8], to: NodeAddress) async throws -> [UInt8] {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "\(to.ip)", port: Int(to.port)) { ch in
            ch.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: ch) }
        }
        return try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(bytes: request))
            var got: [UInt8] = []
            for try await chunk in inbound { got += Array(chunk.readableBytesView) }
            return got
        }
    }

    @Test func answersTCPPingsAndRefusesBadStreams() async throws {
        let ip = uniqueLoopback()
        let address = NodeAddress(ip: ip, port: 7946)
        let a = try GossipNode(configuration: GossipConfiguration(swim: fastSwim("a", address)))
        try await a.start()
        let ack = try await rawExchange(try StreamCodec.encode(.ping(PingMessage(seqNo: 77, node: "a")), keyring: nil), to: address)
        #expect(try StreamCodec.decode(ack, keyring: nil) == .message(.ack(seqNo: 77, payload: []), consumed: ack.count))
        // Addressed to another name: no answer (memberlist guards against restarted nodes this way).
        #expect(try await rawExchange(try StreamCodec.encode(.ping(PingMessage(seqNo: 78, node: "zz")), keyring: nil), to: address).isEmpty)
        // Garbage: closed and counted.
        #expect(try await rawExchange([0xee, 1, 2, 3], to: address).isEmpty)
        #expect(try await rawExchange([0x06, 0x83, 0xc1], to: address).isEmpty)
        let c = try await a.counters()
        #expect(c.malformedPackets >= 2 && c.streamErrors >= 2 && c.streamsAccepted >= 4)
        #expect(c.swim.misaddressedPings == 1)
        try await a.shutdown()
    }

    @Test func streamsPerSourceAreCappedAndAClaimedHugeFrameHoldsNothing() async throws {
        let ip = uniqueLoopback()
        let address = NodeAddress(ip: ip, port: 7946)
        let ring = try Keyring(primary: SecretKey.random(byteCount: 32))
        var cfg = GossipConfiguration(swim: fastSwim("a", address), keyring: ring)
        cfg.tcpTimeout = .seconds(2)
        let a = try GossipNode(configuration: cfg)
        try await a.start()
        // A member's address (a stranger may claim only 1 MiB, see below): b joins.
        let ipB = uniqueLoopback()
        let b = try GossipNode(configuration: GossipConfiguration(swim: fastSwim("b", NodeAddress(ip: ipB, port: 7946)), keyring: ring))
        try await b.start()
        _ = try await b.join([address])
        #expect(try await waitUntil(.seconds(3)) { try await a.members().contains { $0.name == "b" && $0.state == .alive } })
        // 20 streams from b's address, each an `encrypt` header claiming 20 MiB, then silence:
        // 8 are served (and cut off at the stream timeout), the rest closed at once.
        let header: [UInt8] = [MessageType.encrypt.rawValue, 0x01, 0x40, 0x00, 0x00]
        let attacker = try SocketAddress(ipAddress: "\(ipB)", port: 0)
        var channels: [Channel] = []
        for _ in 0..<20 {
            channels.append(try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(to: attacker)
                .connect(host: "\(ip)", port: 7946).get())
        }
        for ch in channels { try? await ch.writeAndFlush(ByteBuffer(bytes: header + [UInt8](repeating: 0xab, count: 4096))) }
        #expect(try await waitUntil(.seconds(2)) { try await a.counters().streamsRefused == 12 })
        // ... while a member's stream from another address is still served.
        let ack = try await rawExchange(try StreamCodec.encode(.ping(PingMessage(seqNo: 5, node: "a")), keyring: ring), to: address)
        #expect(!ack.isEmpty)
        // The cut-off streams are gone: the same source may open new ones.
        #expect(try await waitUntil(.seconds(5)) { channels.allSatisfy { !$0.isActive } })
        for ch in channels { try? await ch.close() }
        let c = try await a.counters()
        #expect(c.streamsRefused == 12 && c.oversized == 0)
        try await b.shutdown()
        try await a.shutdown()
    }

    @Test func aStrangerMayClaimLessThanAMember() async throws {
        let ipA = uniqueLoopback(), ipB = uniqueLoopback()
        let ring = try Keyring(primary: SecretKey.random(byteCount: 32))
        var cfg = GossipConfiguration(swim: fastSwim("a", NodeAddress(ip: ipA, port: 7946)), keyring: ring)
        cfg.tcpTimeout = .seconds(5)
        let a = try GossipNode(configuration: cfg)
        try await a.start()
        let b = try GossipNode(configuration: GossipConfiguration(swim: fastSwim("b", NodeAddress(ip: ipB, port: 7946)), keyring: ring))
        try await b.start()
        _ = try await b.join([NodeAddress(ip: ipA, port: 7946)])
        #expect(try await waitUntil(.seconds(3)) { try await a.members().contains { $0.name == "b" && $0.state == .alive } })
        // An encrypted frame claiming 2 MiB (over 1 MiB, under 20 MiB), then a little of it.
        let claim: [UInt8] = [MessageType.encrypt.rawValue, 0x00, 0x20, 0x00, 0x00] + [UInt8](repeating: 0xab, count: 1024)
        func open(from ip: IPAddress) async throws -> Channel {
            let ch = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .bind(to: try SocketAddress(ipAddress: "\(ip)", port: 0)).connect(host: "\(ipA)", port: 7946).get()
            try await ch.writeAndFlush(ByteBuffer(bytes: claim))
            return ch
        }
        // From b's address (a member's): the frame is waited for.
        let member = try await open(from: ipB)
        try await Task.sleep(for: .milliseconds(500))
        #expect(member.isActive)
        #expect(try await a.counters().oversized == 0)
        // From an address no member has: refused from its header, the connection closed at once.
        let stranger = try await open(from: uniqueLoopback())
        #expect(try await waitUntil(.seconds(2)) { !stranger.isActive })
        #expect(try await a.counters().oversized == 1)
        try? await member.close()
        try await b.shutdown()
        try await a.shutdown()
    }

    @Test func anEncryptedFrameIsMeasuredFromItsHeaderAlone() throws {
        var b = ByteBuffer(bytes: [MessageType.encrypt.rawValue, 0, 0])
        #expect(try b.encryptedGossipFrameLength() == nil)   // header not complete
        b.writeBytes([0x01, 0x00])
        #expect(try b.encryptedGossipFrameLength() == 5 + 256)
        // Until the whole frame is here, reading waits and consumes nothing.
        let ring = try Keyring(primary: SecretKey.random(byteCount: 32))
        #expect(try b.readGossipStreamMessage(keyring: ring) == nil)
        #expect(b.readerIndex == 0 && b.readableBytes == 5)
        // Behind a label header too; a claim over the limit is refused from the header.
        var labelled = ByteBuffer(bytes: try LabelHeader.encode("lab") + [MessageType.encrypt.rawValue, 0x7f, 0, 0, 0])
        #expect(throws: GossipCodecError.self) { try labelled.encryptedGossipFrameLength() }
        #expect(throws: GossipCodecError.self) {
            try labelled.readGossipStreamMessage(keyring: ring, label: "lab")
        }
        // Anything else is not measured here (the decoder reads it).
        #expect(try ByteBuffer(bytes: [MessageType.ping.rawValue, 0x80]).encryptedGossipFrameLength() == nil)
        #expect(try ByteBuffer().encryptedGossipFrameLength() == nil)
    }

    @Test func largeDatagramsArriveWhole() async throws {
        let address = NodeAddress(ip: uniqueLoopback(), port: 7946)
        var cfg = GossipConfiguration(swim: fastSwim("big", address))
        let received = Collector<[UInt8]>()
        cfg.userMessage = { received.add($0) }
        let node = try GossipNode(configuration: cfg)
        try await node.start()
        let payload = (0 ..< 9000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let sender = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let bytes = try PacketCodec.encode([GossipMessage.user(payload).encode()], crc: true, keyring: nil)
        try await sender.writeAndFlush(AddressedEnvelope(remoteAddress: try SocketAddress(ipAddress: "\(address.ip)", port: 7946), data: ByteBuffer(bytes: bytes)))
        try await sender.close()
        #expect(try await waitUntil(.seconds(2)) { received.all == [payload] })
        #expect(try await node.counters().malformedPackets == 0)
        try await node.shutdown()
    }

    @Test func runLeavesAndShutsDownOnCancellation() async throws {
        let ipA = uniqueLoopback(), ipB = uniqueLoopback()
        let a = try GossipNode(configuration: GossipConfiguration(swim: fastSwim("a", NodeAddress(ip: ipA, port: 7946))))
        try await a.start()
        defer { Task { try? await a.shutdown() } }
        let b = try GossipNode(configuration: GossipConfiguration(swim: fastSwim("b", NodeAddress(ip: ipB, port: 7946))))
        let service = Task { try await b.run(joining: [NodeAddress(ip: ipA, port: 7946)]) }
        #expect(try await waitUntil(.seconds(3)) { try await a.members().contains { $0.name == "b" && $0.state == .alive } })
        service.cancel()
        try await service.value
        #expect(try await waitUntil(.seconds(3)) { try await a.members().first { $0.name == "b" }?.state == .left })
        // The port is free again.
        let again = try GossipNode(configuration: GossipConfiguration(swim: fastSwim("b", NodeAddress(ip: ipB, port: 7946))))
        try await again.start()
        try await again.shutdown()
    }
}
