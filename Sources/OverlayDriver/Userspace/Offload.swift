import Glibc

// TAP offloads for the userspace datapath, as pure functions over raw frame memory:
// - TX: the TAP (IFF_VNET_HDR + TUNSETOFFLOAD csum/TSO4/TSO6) hands over TCP super-frames of up to
//   64 KiB with a virtio-net header; `TCPSegmentation` cuts them into MSS-sized segments with
//   their IP and TCP headers and checksums fixed, `InternetChecksum.complete` fills a partial
//   checksum of an ordinary frame.
// - RX: `TCPCoalescer` merges consecutive in-order segments of one flow from a receive batch into
//   one super-frame written to the TAP with a TSO virtio-net header (receive GRO in userspace).
// Every function checks lengths before it reads: bad input gives nil/false, never a crash.

/// `struct virtio_net_hdr` (10 bytes, native byte order: the TAP is not switched to little- or
/// big-endian with TUNSETVNETLE/BE), the header before every frame on a TAP with IFF_VNET_HDR.
package struct VirtioNetHeader: Equatable {
    package static let length = 10
    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `checksumStart + checksumOffset` holds only
    /// the pseudo-header sum; whoever takes the frame completes it over `checksumStart..<end`.
    package static let needsChecksum: UInt8 = 1
    /// `VIRTIO_NET_HDR_GSO_NONE`, `_TCPV4`, `_TCPV6`, and the `_ECN` bit.
    package static let gsoNone: UInt8 = 0, gsoTCPv4: UInt8 = 1, gsoTCPv6: UInt8 = 4, gsoECN: UInt8 = 0x80

    package var flags: UInt8 = 0
    package var gsoType: UInt8 = 0
    /// Bytes of headers (Ethernet, IP, TCP) of a super-frame: a hint, recomputed here.
    package var headerLength: UInt16 = 0
    /// Payload bytes per segment (the MSS) of a super-frame.
    package var gsoSize: UInt16 = 0
    package var checksumStart: UInt16 = 0
    package var checksumOffset: UInt16 = 0

    package init(flags: UInt8 = 0, gsoType: UInt8 = 0, headerLength: UInt16 = 0, gsoSize: UInt16 = 0,
         checksumStart: UInt16 = 0, checksumOffset: UInt16 = 0) {
        self.flags = flags
        self.gsoType = gsoType
        self.headerLength = headerLength
        self.gsoSize = gsoSize
        self.checksumStart = checksumStart
        self.checksumOffset = checksumOffset
    }

    /// Reads the 10 bytes at `p` (the caller checked they are there).
    package init(_ p: UnsafeRawPointer) {
        flags = p.load(as: UInt8.self)
        gsoType = p.load(fromByteOffset: 1, as: UInt8.self)
        headerLength = p.loadUnaligned(fromByteOffset: 2, as: UInt16.self)
        gsoSize = p.loadUnaligned(fromByteOffset: 4, as: UInt16.self)
        checksumStart = p.loadUnaligned(fromByteOffset: 6, as: UInt16.self)
        checksumOffset = p.loadUnaligned(fromByteOffset: 8, as: UInt16.self)
    }

    package func store(_ p: UnsafeMutableRawPointer) {
        p.storeBytes(of: flags, as: UInt8.self)
        p.storeBytes(of: gsoType, toByteOffset: 1, as: UInt8.self)
        p.storeBytes(of: headerLength, toByteOffset: 2, as: UInt16.self)
        p.storeBytes(of: gsoSize, toByteOffset: 4, as: UInt16.self)
        p.storeBytes(of: checksumStart, toByteOffset: 6, as: UInt16.self)
        p.storeBytes(of: checksumOffset, toByteOffset: 8, as: UInt16.self)
    }

    /// The all-zero header: a complete frame, no checksum or segmentation asked.
    package static func storeZero(_ p: UnsafeMutableRawPointer) {
        p.storeBytes(of: UInt64(0), as: UInt64.self)
        p.storeBytes(of: UInt16(0), toByteOffset: 8, as: UInt16.self)
    }
}

/// The Internet checksum (RFC 1071) summed in native byte order: partial sums are added as
/// they come, ``fold(_:)`` gives the 16-bit sum in the byte order memory holds it in, so it is
/// stored with a native `storeBytes` (RFC 1071 2(B): the sum is byte-order independent).
enum InternetChecksum {
    /// Adds the `count` bytes at `p` (taken as big-endian 16-bit words from `p`) to `initial`.
    @inline(__always)
    static func add(_ p: UnsafeRawPointer, _ count: Int, to initial: UInt64 = 0) -> UInt64 {
        var a = initial, b: UInt64 = 0, c: UInt64 = 0, d: UInt64 = 0
        var i = 0
        while i &+ 16 <= count {
            a &+= UInt64(p.loadUnaligned(fromByteOffset: i, as: UInt32.self))
            b &+= UInt64(p.loadUnaligned(fromByteOffset: i &+ 4, as: UInt32.self))
            c &+= UInt64(p.loadUnaligned(fromByteOffset: i &+ 8, as: UInt32.self))
            d &+= UInt64(p.loadUnaligned(fromByteOffset: i &+ 12, as: UInt32.self))
            i &+= 16
        }
        while i &+ 4 <= count {
            a &+= UInt64(p.loadUnaligned(fromByteOffset: i, as: UInt32.self))
            i &+= 4
        }
        if i &+ 2 <= count {
            a &+= UInt64(p.loadUnaligned(fromByteOffset: i, as: UInt16.self))
            i &+= 2
        }
        if i < count { a &+= UInt64((UInt16(p.load(fromByteOffset: i, as: UInt8.self)) << 8).bigEndian) }
        return a &+ b &+ c &+ d
    }

    /// Adds a 16-bit value given in host order, as a big-endian word of the checksummed data.
    @inline(__always)
    static func word(_ v: UInt16) -> UInt64 { UInt64(v.bigEndian) }

    /// Folds a partial sum to 16 bits (end-around carry), in memory byte order.
    @inline(__always)
    static func fold(_ s: UInt64) -> UInt16 {
        var x = (s & 0xFFFF_FFFF) &+ (s >> 32)
        x = (x & 0xFFFF_FFFF) &+ (x >> 32)
        x = (x & 0xFFFF) &+ (x >> 16)
        x = (x & 0xFFFF) &+ (x >> 16)
        x = (x & 0xFFFF) &+ (x >> 16)
        return UInt16(truncatingIfNeeded: x)
    }

    /// The IPv4 pseudo-header (RFC 793 3.1): addresses of the header at `ip`, protocol, length.
    @inline(__always)
    static func pseudoIPv4(_ ip: UnsafeRawPointer, protocol proto: UInt8, length: Int) -> UInt64 {
        add(ip + 12, 8) &+ word(UInt16(proto)) &+ word(UInt16(truncatingIfNeeded: length))
    }

    /// The IPv6 pseudo-header (RFC 8200 8.1): addresses of the header at `ip`, 32-bit length,
    /// next header.
    @inline(__always)
    static func pseudoIPv6(_ ip: UnsafeRawPointer, protocol proto: UInt8, length: Int) -> UInt64 {
        add(ip + 8, 32) &+ word(UInt16(truncatingIfNeeded: length >> 16)) &+ word(UInt16(truncatingIfNeeded: length))
            &+ word(UInt16(proto))
    }

    /// Completes a partial checksum (`VIRTIO_NET_HDR_F_NEEDS_CSUM`): sums `frame[start..<length]`
    /// (whose checksum field holds the pseudo-header sum) and stores the complement at
    /// `start + offset` (0 becomes 0xFFFF, as the kernel's `skb_checksum_help` does for UDP).
    /// False when the offsets do not lie inside the frame.
    static func complete(_ frame: UnsafeMutableRawPointer, length: Int, start: Int, offset: Int) -> Bool {
        guard start >= 0, offset >= 0, start < length, start + offset + 2 <= length else { return false }
        let c = ~fold(add(frame + start, length - start))
        frame.storeBytes(of: c == 0 ? 0xFFFF : c, toByteOffset: start + offset, as: UInt16.self)
        return true
    }
}

/// Where the headers of an Ethernet TCP frame lie: Ethernet (optionally one 802.1Q tag), IPv4
/// (not a fragment) or IPv6 (no extension headers), TCP.
package struct TCPFrameLayout: Equatable {
    /// Offset of the IP header.
    package var l3: Int
    /// Offset of the TCP header.
    package var l4: Int
    /// Ethernet, IP and TCP headers with options: where the payload starts.
    package var headerLength: Int
    package var isIPv6: Bool

    /// Parses the headers of the `length`-byte frame at `p`; nil when it is not such a frame or is
    /// too short for its headers.
    package init?(frame p: UnsafeRawPointer, length: Int) {
        guard length >= 14 else { return nil }
        var type = loadBE16(p, 12)
        var l3 = 14
        if type == 0x8100 {
            guard length >= 18 else { return nil }
            type = loadBE16(p, 16)
            l3 = 18
        }
        let l4: Int
        switch type {
        case 0x0800:
            guard length >= l3 + 20 else { return nil }
            let vihl = p.load(fromByteOffset: l3, as: UInt8.self)
            let ihl = Int(vihl & 0xF) * 4
            guard vihl >> 4 == 4, ihl >= 20, p.load(fromByteOffset: l3 + 9, as: UInt8.self) == 6,
                  loadBE16(p, l3 + 6) & 0x3FFF == 0   // neither MF nor a fragment offset
            else { return nil }
            l4 = l3 + ihl
            isIPv6 = false
        case 0x86DD:
            guard length >= l3 + 40, p.load(fromByteOffset: l3, as: UInt8.self) >> 4 == 6,
                  p.load(fromByteOffset: l3 + 6, as: UInt8.self) == 6
            else { return nil }
            l4 = l3 + 40
            isIPv6 = true
        default:
            return nil
        }
        guard length >= l4 + 20 else { return nil }
        let doff = Int(p.load(fromByteOffset: l4 + 12, as: UInt8.self) >> 4) * 4
        guard doff >= 20, length >= l4 + doff else { return nil }
        self.l3 = l3
        self.l4 = l4
        self.headerLength = l4 + doff
    }
}

/// TCP segmentation offload in userspace: one TSO super-frame into MSS-sized frames.
package enum TCPSegmentation {
    package static let fin: UInt8 = 0x01, psh: UInt8 = 0x08, ack: UInt8 = 0x10, cwr: UInt8 = 0x80

    /// How many segments a super-frame of `length` bytes with `mss` payload bytes each gives.
    package static func segmentCount(length: Int, layout: TCPFrameLayout, mss: Int) -> Int {
        let payload = length - layout.headerLength
        guard mss > 0, payload > 0 else { return payload == 0 ? 1 : 0 }
        return (payload + mss - 1) / mss
    }

    /// Writes segment `index` of the super-frame (`length` bytes at `frame`) to `dst`: its
    /// headers with IPv4 total length, ID (+index) and header checksum, or IPv6 payload length;
    /// TCP sequence number (+ index * mss), FIN and PSH only on the last segment, CWR only on the
    /// first, and a full TCP checksum. Returns the segment's length. The caller checked `index <
    /// segmentCount(...)` and that `dst` holds `layout.headerLength + mss` bytes.
    package static func writeSegment(_ index: Int, of frame: UnsafeRawPointer, length: Int, layout: TCPFrameLayout,
                             mss: Int, to dst: UnsafeMutableRawPointer) -> Int {
        let (segLen, payload) = writeSegmentHeaders(index, of: frame, length: length, layout: layout, mss: mss, to: dst)
        if let p = payload.baseAddress, payload.count > 0 { (dst + layout.headerLength).copyMemory(from: p, byteCount: payload.count) }
        return segLen
    }

    /// ``writeSegment(_:of:length:layout:mss:to:)`` without the payload: writes only the
    /// segment's `layout.headerLength` header bytes to `dst` (its checksum covers the payload
    /// where it lies in `frame`) and returns the segment's length and where its payload is in
    /// `frame`, for a caller that copies (or encrypts) it from there itself.
    package static func writeSegmentHeaders(_ index: Int, of frame: UnsafeRawPointer, length: Int, layout: TCPFrameLayout,
                                    mss: Int, to dst: UnsafeMutableRawPointer) -> (length: Int, payload: UnsafeRawBufferPointer) {
        let hl = layout.headerLength
        let payloadLength = length - hl
        let offset = index * mss
        let chunk = max(0, min(mss, payloadLength - offset))
        let last = offset + chunk >= payloadLength
        dst.copyMemory(from: frame, byteCount: hl)
        let payload = UnsafeRawBufferPointer(start: chunk > 0 ? frame + hl + offset : nil, count: chunk)
        let segLen = hl + chunk
        let l3 = layout.l3, l4 = layout.l4
        let tcpLen = segLen - l4
        let ip = dst + l3
        let sum: UInt64
        if layout.isIPv6 {
            storeBE16(UInt16(truncatingIfNeeded: segLen - l4), ip, 4)
            sum = InternetChecksum.pseudoIPv6(ip, protocol: 6, length: tcpLen)
        } else {
            storeBE16(UInt16(truncatingIfNeeded: segLen - l3), ip, 2)
            storeBE16(loadBE16(ip, 4) &+ UInt16(truncatingIfNeeded: index), ip, 4)
            ip.storeBytes(of: UInt16(0), toByteOffset: 10, as: UInt16.self)
            ip.storeBytes(of: ~InternetChecksum.fold(InternetChecksum.add(ip, l4 - l3)), toByteOffset: 10, as: UInt16.self)
            sum = InternetChecksum.pseudoIPv4(ip, protocol: 6, length: tcpLen)
        }
        let tcp = dst + l4
        storeBE32(loadBE32(tcp, 4) &+ UInt32(truncatingIfNeeded: offset), tcp, 4)
        var flags = tcp.load(fromByteOffset: 13, as: UInt8.self)
        if !last { flags &= ~(fin | psh) }
        if index > 0 { flags &= ~cwr }
        tcp.storeBytes(of: flags, toByteOffset: 13, as: UInt8.self)
        tcp.storeBytes(of: UInt16(0), toByteOffset: 16, as: UInt16.self)
        // The TCP header is a multiple of 4 bytes, so the payload's words line up after it.
        var tcpSum = InternetChecksum.add(tcp, hl - l4, to: sum)
        if let p = payload.baseAddress { tcpSum = InternetChecksum.add(p, chunk, to: tcpSum) }
        tcp.storeBytes(of: ~InternetChecksum.fold(tcpSum), toByteOffset: 16, as: UInt16.self)
        return (segLen, payload)
    }
}

/// What the TX thread does with one frame read from the TAP, by its virtio-net header.
package enum TXFrameOffload: Equatable {
    /// Send it as it is (a partial checksum it carried has been completed in place).
    case frame
    /// A TSO super-frame: send `count` segments of `mss` payload bytes each (the last shorter).
    case segments(TCPFrameLayout, mss: Int, count: Int)
    /// The header asks for what cannot be done (counted as `badOffload`).
    case badOffload
    /// Too short for Ethernet, or larger than `maxFrame` without being a super-frame (`badFrame`).
    case badFrame

    /// Decides, and completes a partial checksum in place; every frame or segment it lets through
    /// is at most `maxFrame` bytes.
    package static func prepare(header: VirtioNetHeader, frame: UnsafeMutableRawPointer, length: Int, maxFrame: Int) -> TXFrameOffload {
        guard length >= 14 else { return .badFrame }
        if header.gsoType != VirtioNetHeader.gsoNone {
            let gso = header.gsoType & ~VirtioNetHeader.gsoECN
            let mss = Int(header.gsoSize)
            guard gso == VirtioNetHeader.gsoTCPv4 || gso == VirtioNetHeader.gsoTCPv6,
                  let layout = TCPFrameLayout(frame: frame, length: length), layout.isIPv6 == (gso == VirtioNetHeader.gsoTCPv6),
                  mss > 0, layout.headerLength + mss <= maxFrame
            else { return .badOffload }
            return .segments(layout, mss: mss, count: TCPSegmentation.segmentCount(length: length, layout: layout, mss: mss))
        }
        guard length <= maxFrame else { return .badFrame }
        if header.flags & VirtioNetHeader.needsChecksum != 0 {
            guard InternetChecksum.complete(frame, length: length, start: Int(header.checksumStart), offset: Int(header.checksumOffset)) else {
                return .badOffload
            }
        }
        return .frame
    }
}

/// Receive coalescing (GRO in userspace): consecutive in-order TCP segments of one flow, with the
/// same headers but for sequence number and checksums (and PSH on the last), verified checksums,
/// ACK (and PSH) as their only flags, and equal payload sizes but for a shorter last one, become
/// one super-frame written to the TAP with a TSO virtio-net header (`gso_size` = the first
/// segment's payload) and a partial TCP checksum (`NEEDS_CSUM`, the pseudo-header sum in the
/// field, as the kernel's own GRO output is handled). Anything else is written as it came, with
/// an all-zero header, so the kernel checks it as usual.
///
/// Every frame handed to ``add(fd:virtioNetHeader:frame:length:)`` must have ``VirtioNetHeader/length`` writable
/// bytes before it (the header goes there) and stay valid until ``flush()``: the merged frame is
/// written with `writev` straight from the receive buffers.
package final class TCPCoalescer {
    /// The most segments merged into one super-frame.
    package static let maxSegments = 64

    /// Writes `count` iovecs to `fd`; returns the bytes written or -1 (`writev`, or a test's sink).
    package typealias Sink = (Int32, UnsafePointer<iovec>, Int32) -> Int

    /// Segments and inner Ethernet bytes written, and segments whose write failed.
    package var writtenFrames: UInt64 = 0
    package var writtenBytes: UInt64 = 0
    package var failedFrames: UInt64 = 0
    /// Merged writes (each of at least two segments).
    package var mergedWrites: UInt64 = 0

    private let sink: Sink
    private let iov: UnsafeMutablePointer<iovec>
    private var count = 0
    private var fd: Int32 = -1
    private var frame = UnsafeMutableRawPointer(bitPattern: 64)!
    private var frameLength = 0
    private var layout = TCPFrameLayout.placeholder
    private var mss = 0
    private var nextSeq: UInt32 = 0
    private var payloadTotal = 0
    private var segmentBytes = 0
    private var closed = false
    private var pushed = false

    package init(sink: @escaping Sink = { fd, iov, n in Glibc.writev(fd, iov, n) }) {
        self.sink = sink
        iov = .allocate(capacity: Self.maxSegments)
    }

    deinit { iov.deallocate() }

    /// Hands over one received frame for `fd`: merged into the pending run, or the run is written
    /// first and this frame starts a new one (or is written at once when it cannot be merged).
    /// Without `virtioNetHeader` (a TAP without IFF_VNET_HDR) it is written at once, as it is.
    package func add(fd: Int32, virtioNetHeader: Bool, frame p: UnsafeMutableRawPointer, length: Int) {
        guard virtioNetHeader, let seg = Self.mergeable(p, length) else {
            flush()
            writeSingle(fd: fd, virtioNetHeader: virtioNetHeader, frame: p, length: length)
            return
        }
        if count > 0, canAppend(fd: fd, p, length, seg) {
            let payload = length - seg.layout.headerLength
            iov[count] = iovec(iov_base: p + seg.layout.headerLength, iov_len: payload)
            count += 1
            payloadTotal += payload
            segmentBytes += length
            nextSeq = seg.seq &+ UInt32(payload)
            if payload < mss || seg.flags & TCPSegmentation.psh != 0 { closed = true }
            if seg.flags & TCPSegmentation.psh != 0 { pushed = true }
            return
        }
        flush()
        let payload = length - seg.layout.headerLength
        self.fd = fd
        frame = p
        frameLength = length
        layout = seg.layout
        mss = payload
        nextSeq = seg.seq &+ UInt32(payload)
        payloadTotal = payload
        segmentBytes = length
        pushed = seg.flags & TCPSegmentation.psh != 0
        closed = pushed
        iov[0] = iovec(iov_base: p - VirtioNetHeader.length, iov_len: VirtioNetHeader.length + length)
        count = 1
    }

    /// Writes the pending run (if any): one frame as it came, or the merged super-frame.
    package func flush() {
        guard count > 0 else { return }
        defer { count = 0 }
        if count == 1 {
            writeSingle(fd: fd, virtioNetHeader: true, frame: frame, length: frameLength)
            return
        }
        let l3 = layout.l3, l4 = layout.l4, hl = layout.headerLength
        let ip = frame + l3
        let tcpLen = hl - l4 + payloadTotal
        let pseudo: UInt64
        if layout.isIPv6 {
            storeBE16(UInt16(truncatingIfNeeded: tcpLen), ip, 4)
            pseudo = InternetChecksum.pseudoIPv6(ip, protocol: 6, length: tcpLen)
        } else {
            storeBE16(UInt16(truncatingIfNeeded: hl - l3 + payloadTotal), ip, 2)
            ip.storeBytes(of: UInt16(0), toByteOffset: 10, as: UInt16.self)
            ip.storeBytes(of: ~InternetChecksum.fold(InternetChecksum.add(ip, l4 - l3)), toByteOffset: 10, as: UInt16.self)
            pseudo = InternetChecksum.pseudoIPv4(ip, protocol: 6, length: tcpLen)
        }
        let tcp = frame + l4
        if pushed {
            tcp.storeBytes(of: tcp.load(fromByteOffset: 13, as: UInt8.self) | TCPSegmentation.psh, toByteOffset: 13, as: UInt8.self)
        }
        // CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum, not complemented.
        tcp.storeBytes(of: InternetChecksum.fold(pseudo), toByteOffset: 16, as: UInt16.self)
        VirtioNetHeader(flags: VirtioNetHeader.needsChecksum,
                        gsoType: layout.isIPv6 ? VirtioNetHeader.gsoTCPv6 : VirtioNetHeader.gsoTCPv4,
                        headerLength: UInt16(hl), gsoSize: UInt16(truncatingIfNeeded: mss),
                        checksumStart: UInt16(l4), checksumOffset: 16).store(frame - VirtioNetHeader.length)
        let total = VirtioNetHeader.length + hl + payloadTotal
        if sink(fd, iov, Int32(count)) == total {
            writtenFrames &+= UInt64(count)
            writtenBytes &+= UInt64(segmentBytes)
            mergedWrites &+= 1
        } else {
            failedFrames &+= UInt64(count)
        }
    }

    private func writeSingle(fd: Int32, virtioNetHeader: Bool, frame p: UnsafeMutableRawPointer, length: Int) {
        var v: iovec
        var total = length
        if virtioNetHeader {
            VirtioNetHeader.storeZero(p - VirtioNetHeader.length)
            v = iovec(iov_base: p - VirtioNetHeader.length, iov_len: VirtioNetHeader.length + length)
            total += VirtioNetHeader.length
        } else {
            v = iovec(iov_base: p, iov_len: length)
        }
        if sink(fd, &v, 1) == total {
            writtenFrames &+= 1
            writtenBytes &+= UInt64(length)
        } else {
            failedFrames &+= 1
        }
    }

    package struct Segment {
        var layout: TCPFrameLayout
        var seq: UInt32
        var flags: UInt8
    }

    /// A frame that may be merged: IPv4 without options (total length = the frame's, header
    /// checksum right) or IPv6 (payload length = the frame's), ACK or ACK|PSH only, a payload,
    /// and a TCP checksum that verifies. nil otherwise.
    package static func mergeable(_ p: UnsafeRawPointer, _ length: Int) -> Segment? {
        guard let layout = TCPFrameLayout(frame: p, length: length), length > layout.headerLength else { return nil }
        let l3 = layout.l3, l4 = layout.l4
        let ip = p + l3
        let tcpLen = length - l4
        let sum: UInt64
        if layout.isIPv6 {
            guard Int(loadBE16(ip, 4)) == tcpLen else { return nil }
            sum = InternetChecksum.pseudoIPv6(ip, protocol: 6, length: tcpLen)
        } else {
            guard l4 - l3 == 20, Int(loadBE16(ip, 2)) == length - l3,
                  InternetChecksum.fold(InternetChecksum.add(ip, 20)) == 0xFFFF
            else { return nil }
            sum = InternetChecksum.pseudoIPv4(ip, protocol: 6, length: tcpLen)
        }
        let tcp = p + l4
        let flags = tcp.load(fromByteOffset: 13, as: UInt8.self)
        guard flags & ~TCPSegmentation.psh == TCPSegmentation.ack,
              InternetChecksum.fold(InternetChecksum.add(tcp, tcpLen, to: sum)) == 0xFFFF
        else { return nil }
        return Segment(layout: layout, seq: loadBE32(tcp, 4), flags: flags)
    }

    private func canAppend(fd: Int32, _ p: UnsafeRawPointer, _ length: Int, _ seg: Segment) -> Bool {
        guard !closed, fd == self.fd, count < Self.maxSegments, seg.layout == layout, seg.seq == nextSeq else { return false }
        let hl = layout.headerLength
        let l3 = layout.l3, l4 = layout.l4
        let payload = length - hl
        // At most the first's payload; the IP length field must still hold the merged frame.
        guard payload <= mss, (layout.isIPv6 ? hl - l4 : hl - l3) + payloadTotal + payload <= 65535 else { return false }
        let q = UnsafeRawPointer(frame)
        // Ethernet header (and VLAN tag).
        guard memcmp(p, q, l3) == 0 else { return false }
        if layout.isIPv6 {
            // Version, traffic class, flow label; next header, hop limit, addresses.
            guard memcmp(p + l3, q + l3, 4) == 0, memcmp(p + l3 + 6, q + l3 + 6, 34) == 0 else { return false }
        } else {
            // TOS; flags (DF); TTL, protocol; addresses.
            guard p.load(fromByteOffset: l3 + 1, as: UInt8.self) == q.load(fromByteOffset: l3 + 1, as: UInt8.self),
                  loadBE16(p, l3 + 6) == loadBE16(q, l3 + 6),
                  memcmp(p + l3 + 8, q + l3 + 8, 2) == 0, memcmp(p + l3 + 12, q + l3 + 12, 8) == 0
            else { return false }
        }
        // Ports; ACK number; data offset; window and urgent pointer; options.
        guard memcmp(p + l4, q + l4, 4) == 0, memcmp(p + l4 + 8, q + l4 + 8, 5) == 0,
              memcmp(p + l4 + 14, q + l4 + 14, 2) == 0, memcmp(p + l4 + 18, q + l4 + 18, hl - l4 - 18) == 0
        else { return false }
        return true
    }
}

extension TCPFrameLayout {
    static let placeholder = TCPFrameLayout(l3: 14, l4: 34, headerLength: 54, isIPv6: false)

    init(l3: Int, l4: Int, headerLength: Int, isIPv6: Bool) {
        self.l3 = l3
        self.l4 = l4
        self.headerLength = headerLength
        self.isIPv6 = isIPv6
    }
}
