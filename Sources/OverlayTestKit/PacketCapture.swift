import COverlayShims
import Glibc
import Netlink

/// Captures the frames crossing one interface of a namespace (an AF_PACKET socket), so a test or
/// demo can check what went over the lab's underlay: VXLAN for a plain network, only ESP for an
/// encrypted one. The kernel queues frames in the socket until ``drain()``; a burst larger than
/// the socket buffer (about 200 KiB) loses its oldest frames, so drain between bursts.
public final class PacketCapture: @unchecked Sendable {
    // @unchecked: `fd` is a let; recv on one fd from several threads is safe at the syscall level,
    // and the type is documented as single-owner.

    private let fd: Int32
    /// The interface the capture is bound to.
    public let interface: String

    /// Starts capturing on `interface` inside `namespace` (the socket stays in that namespace).
    public init(namespace: NetworkNamespace, interface: String) throws {
        self.interface = interface
        fd = try namespace.run { () throws -> Int32 in
            let fd = ovl_packet_socket(interface)
            guard fd >= 0 else {
                throw LabError("capture on \(interface) in \(namespace.name): \(String(cString: strerror(-fd)))")
            }
            return fd
        }
    }

    deinit { close(fd) }

    /// Returns every frame captured since the last call (Ethernet header first), oldest first.
    public func drain() -> [[UInt8]] {
        var frames: [[UInt8]] = []
        var raw = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = raw.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            frames.append(Array(raw[0..<n]))
        }
        return frames
    }
}
