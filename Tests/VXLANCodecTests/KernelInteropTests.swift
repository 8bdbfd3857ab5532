import Foundation
import Glibc
import NIOCore
import OverlayModel
import OverlayTestKit
import Testing
@testable import VXLANCodec

/// Frames we build are accepted by a real kernel VXLAN device, and what it sends back decodes.
///
/// Two namespaces joined by a veth: `-k` holds a kernel vxlan (VNI 42, port 4789, nolearning) with
/// overlay addresses; `-s` holds only a UDP socket on port 4789, made by a thread that entered the
/// namespace with setns. We play the remote VTEP by hand: send an encapsulated ICMP echo request,
/// answer the kernel's encapsulated ARP request, and wait for its encapsulated echo reply.
@Suite(.serialized) struct KernelInteropTests {
    static let isRoot = getuid() == 0

    @Test(.enabled(if: isRoot, "needs root to create network namespaces and a vxlan device (run as root)"))
    func kernelVXLANAnswersOurFrames() throws {
        let tag = String(UInt32.random(in: 0..<0xFFFF), radix: 16)
        let nsK = "ovlt-cx\(tag)-k", nsS = "ovlt-cx\(tag)-s"
        let vethK = "ovlt\(tag)k", vethS = "ovlt\(tag)s"
        defer {
            _ = try? Shell.run(["ip", "netns", "del", nsK])
            _ = try? Shell.run(["ip", "netns", "del", nsS])
        }
        let kernelMAC = MACAddress("02:00:00:77:00:01")!, ourMAC = MACAddress("02:00:00:77:00:02")!
        let underK = IPv4Address("198.18.77.1")!, underS = IPv4Address("198.18.77.2")!
        let overK = IPv4Address("198.19.77.1")!, overS = IPv4Address("198.19.77.2")!
        let over6K = IPv6Address("fd77::1")!, over6S = IPv6Address("fd77::2")!
        for cmd in [
            "ip netns add \(nsK)", "ip netns add \(nsS)",
            "ip link add \(vethK) netns \(nsK) type veth peer name \(vethS) netns \(nsS)",
            "ip -n \(nsK) addr add \(underK)/24 dev \(vethK)", "ip -n \(nsS) addr add \(underS)/24 dev \(vethS)",
            "ip -n \(nsK) link set \(vethK) up", "ip -n \(nsS) link set \(vethS) up",
            "ip -n \(nsK) link add vx0 address \(kernelMAC) type vxlan id 42 dstport 4789 nolearning local \(underK) dev \(vethK)",
            "ip netns exec \(nsK) sysctl -qw net.ipv6.conf.vx0.addr_gen_mode=1",
            "ip -n \(nsK) addr add \(overK)/24 dev vx0", "ip -n \(nsK) addr add \(over6K)/64 dev vx0 nodad",
            "ip -n \(nsK) link set vx0 up",
            // Floods (the ARP request) and our MAC go to our socket's address.
            "bridge -n \(nsK) fdb append 00:00:00:00:00:00 dev vx0 dst \(underS)",
            "bridge -n \(nsK) fdb append \(ourMAC) dev vx0 dst \(underS)",
            // IPv6 uses a static neighbour instead of answering neighbour discovery.
            "ip -n \(nsK) -6 neigh add \(over6S) lladdr \(ourMAC) dev vx0 nud permanent",
        ] {
            try Shell.run(cmd.split(separator: " ").map(String.init))
        }
        let sock = try UDPSocket(namespace: nsS, bindTo: underS, port: 4789)
        let enc = VXLANEncapsulator(vni: Sample.vni)
        let dec = VXLANDecapsulator(vni: Sample.vni)

        // IPv4: echo request, then the kernel has to ARP for us before it can reply.
        let request = ICMPEcho(isReply: false, identifier: 0x0BAD, sequenceNumber: 7, payload: Sample.pattern(48))
        let frame4 = EthernetFrame(
            header: EthernetHeader(destination: kernelMAC, source: ourMAC, etherType: .ipv4),
            payload: .ipv4(IPv4Packet(header: IPv4Header(source: overS, destination: overK, protocol: .icmp, identification: 1),
                                      payload: .icmp(request.message(family: .v4)))))
        try sock.send(try enc.encapsulate(Sample.encode(frame4)), to: underK, port: 4789)
        var sawARP = false
        var reply4: ICMPEcho?
        let deadline = Date().addingTimeInterval(10)
        while reply4 == nil, Date() < deadline {
            guard let (datagram, _) = try sock.receive() else { continue }
            let f = try dec.decapsulate(udpPayload: datagram)
            var inner = f.innerFrame
            let frame = try #require(try inner.readEthernetFrame())
            switch frame.payload {
            case .arp(let a) where a.operation == .request && a.targetIP == overS:
                sawARP = true
                #expect(a.senderIP == overK)
                #expect(a.senderMAC == kernelMAC)
                #expect(frame.header.destination == .broadcast)
                let answer = EthernetFrame(
                    header: EthernetHeader(destination: kernelMAC, source: ourMAC, etherType: .arp),
                    payload: .arp(ARPPacket(operation: .reply, senderMAC: ourMAC, senderIP: overS, targetMAC: kernelMAC, targetIP: overK)))
                try sock.send(try enc.encapsulate(Sample.encode(answer)), to: underK, port: 4789)
            case .ipv4(let p):
                guard case .icmp(let m) = p.payload, let e = try? ICMPEcho(m, family: .v4), e.isReply else { continue }
                #expect(p.header.source == overK)
                #expect(p.header.destination == overS)
                #expect(frame.header.destination == ourMAC)
                reply4 = e
            default:
                continue
            }
        }
        #expect(sawARP, "the kernel resolved us with an encapsulated ARP request we answered")
        let r4 = try #require(reply4, "an encapsulated ICMP echo reply from the kernel within 10 s")
        #expect(r4 == request.reply)

        // IPv6: ICMPv6 echo (pseudo-header checksum) to the kernel, reply via the static neighbour.
        let request6 = ICMPEcho(isReply: false, identifier: 0x0D06, sequenceNumber: 3, payload: Sample.pattern(20))
        let frame6 = EthernetFrame(
            header: EthernetHeader(destination: kernelMAC, source: ourMAC, etherType: .ipv6),
            payload: .ipv6(IPv6Packet(header: IPv6Header(source: over6S, destination: over6K, nextHeader: .icmpv6),
                                      payload: .icmp(request6.message(family: .v6)))))
        try sock.send(try enc.encapsulate(Sample.encode(frame6)), to: underK, port: 4789)
        var reply6: ICMPEcho?
        let deadline6 = Date().addingTimeInterval(10)
        while reply6 == nil, Date() < deadline6 {
            guard let (datagram, _) = try sock.receive() else { continue }
            var inner = try dec.decapsulate(udpPayload: datagram).innerFrame
            guard let frame = try inner.readEthernetFrame(), case .ipv6(let p) = frame.payload,
                  case .icmp(let m) = p.payload, let e = try? ICMPEcho(m, family: .v6), e.isReply else { continue }
            #expect(p.header.source == over6K)
            reply6 = e
        }
        #expect(reply6 == request6.reply, "an encapsulated ICMPv6 echo reply from the kernel within 10 s")
    }
}

/// Runs a command, throwing with its output when it fails.
enum Shell {
    struct Failure: Error, CustomStringConvertible { var description: String }

    @discardableResult
    static func run(_ args: [String]) throws -> String {
        let r = try Command.run(args)
        guard r.succeeded else {
            throw Failure(description: "\(args.joined(separator: " ")) failed (\(r.status)): \(r.output)")
        }
        return r.output
    }
}

/// A blocking IPv4 UDP socket that lives in a named network namespace: a dedicated thread enters the
/// namespace with setns(2) and makes the socket there; the socket keeps that namespace afterwards.
final class UDPSocket {
    let fd: Int32

    /// Holds the made thread's result; the semaphore orders its write before the read.
    private final class Outcome: @unchecked Sendable {
        var fd: Int32 = -1
        var error: String?
    }

    init(namespace: String, bindTo address: IPv4Address, port: UInt16) throws {
        let outcome = Outcome()
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            defer { done.signal() }
            let nsfd = open("/run/netns/\(namespace)", O_RDONLY | O_CLOEXEC)
            guard nsfd >= 0 else { outcome.error = "open /run/netns/\(namespace): errno \(errno)"; return }
            defer { close(nsfd) }
            guard UDPSocket.setns(nsfd, UDPSocket.cloneNewNet) == 0 else { outcome.error = "setns(\(namespace)): errno \(errno)"; return }
            let s = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard s >= 0 else { outcome.error = "socket: errno \(errno)"; return }
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            sin.sin_addr.s_addr = address.value.bigEndian
            let rc = withUnsafePointer(to: &sin) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard rc == 0 else { outcome.error = "bind \(address):\(port): errno \(errno)"; close(s); return }
            var tv = timeval(tv_sec: 0, tv_usec: 500_000)
            setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            outcome.fd = s
        }
        thread.start()
        done.wait()
        if let e = outcome.error { throw Shell.Failure(description: e) }
        fd = outcome.fd
    }

    deinit { close(fd) }

    /// CLONE_NEWNET from <sched.h>.
    static let cloneNewNet: Int32 = 0x4000_0000

    /// glibc's setns(2). Glibc's Swift module hides it (it is declared under _GNU_SOURCE), so it is
    /// looked up by name in the already-loaded C library.
    static func setns(_ fd: Int32, _ nstype: Int32) -> Int32 {
        typealias SetNS = @convention(c) (Int32, Int32) -> Int32
        guard let handle = dlopen(nil, RTLD_NOW), let sym = dlsym(handle, "setns") else { return -1 }
        return unsafeBitCast(sym, to: SetNS.self)(fd, nstype)
    }

    func send(_ buffer: ByteBuffer, to address: IPv4Address, port: UInt16) throws {
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        sin.sin_addr.s_addr = address.value.bigEndian
        let n = buffer.withUnsafeReadableBytes { bytes in
            withUnsafePointer(to: &sin) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, bytes.baseAddress, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
        guard n == buffer.readableBytes else { throw Shell.Failure(description: "sendto: errno \(errno)") }
    }

    /// One datagram, or nil after the 0.5 s receive timeout.
    func receive() throws -> (ByteBuffer, IPv4Address)? {
        var storage = [UInt8](repeating: 0, count: 65536)
        var from = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let n = storage.withUnsafeMutableBytes { bytes in
            withUnsafeMutablePointer(to: &from) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, bytes.baseAddress, bytes.count, 0, $0, &len) }
            }
        }
        if n < 0 {
            if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { return nil }
            throw Shell.Failure(description: "recvfrom: errno \(errno)")
        }
        return (ByteBuffer(bytes: storage[0..<n]), IPv4Address(UInt32(bigEndian: from.sin_addr.s_addr)))
    }
}
