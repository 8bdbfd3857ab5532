import Glibc
import IPsecKeys
import Logging
import OverlayModel

// The hot loops. Buffers, iovecs and message headers are allocated once per thread; per batch
// each loop takes the tables/keys snapshot under one lock and merges its counters under another.

extension UserspaceDatapath {
    static let batch = 64
    /// Bytes before the inner frame in a TX slot: ESP header (16) + UDP (8) + VXLAN (8).
    static let frameOffset = ESP.headerLength + 16

    /// Slot size for a TAP MTU: headers, the frame (MTU + Ethernet + VLAN tag), ESP trailer
    /// (padding up to 3, pad length, next header) and a 16-byte ICV, rounded to 64.
    static func txSlotSize(mtu: UInt32) -> Int {
        (frameOffset + Int(mtu) + 18 + 5 + 16 + 63) & ~63
    }

    /// Bytes of the TX read buffer: a TSO super-frame (64 KiB of IP, BIG TCP not enabled) with
    /// its Ethernet and virtio-net headers fits with room to spare.
    static let txReadBufferSize = 160 * 1024

    /// TX: TAP frames -> (TSO super-frames segmented, partial checksums completed) -> VXLAN ->
    /// ESP -> raw socket (or UDP socket), until the tunnel's wake pipe fires.
    ///
    /// Sealed packets lie back to back in one arena. With ESP in UDP and `gso`, a run of
    /// equal-size packets to one VTEP (a super-frame's segments; only the run's last may be
    /// shorter) becomes one message with a `UDP_SEGMENT` cmsg, which the kernel cuts into datagrams.
    func runTX(_ t: UserspaceTunnel, rawFD: Int32, gso: Bool) {
        let cap = Self.batch
        let slotSize = Self.txSlotSize(mtu: t.spec.mtu)
        let arenaSize = cap * slotSize
        let buf = UnsafeMutableRawPointer.allocate(byteCount: arenaSize, alignment: 64)
        let control = UnsafeMutableRawPointer.allocate(byteCount: cap * UDPOffload.segmentCmsgSpace, alignment: 8)
        let packets = UnsafeMutablePointer<Int>.allocate(capacity: cap)
        let rbuf = UnsafeMutableRawPointer.allocate(byteCount: Self.txReadBufferSize, alignment: 64)
        let iov = UnsafeMutablePointer<iovec>.allocate(capacity: cap)
        let msgs = UnsafeMutablePointer<MMsgHdr>.allocate(capacity: cap)
        let addrs = UnsafeMutablePointer<sockaddr_in>.allocate(capacity: cap)
        let pfds = UnsafeMutablePointer<pollfd>.allocate(capacity: 2)
        defer {
            buf.deallocate(); rbuf.deallocate(); iov.deallocate(); msgs.deallocate(); addrs.deallocate(); pfds.deallocate()
            control.deallocate(); packets.deallocate()
        }
        var udpPort: UInt16 = 0
        if case .udp(let p) = espEncapsulation { udpPort = p }
        for i in 0..<cap {
            addrs[i] = sockaddr_in()
            addrs[i].sin_family = sa_family_t(AF_INET)
            addrs[i].sin_port = udpPort.bigEndian
            msgs[i] = MMsgHdr()
            msgs[i].hdr.msg_name = UnsafeMutableRawPointer(addrs + i)
            msgs[i].hdr.msg_namelen = socklen_t(MemoryLayout<sockaddr_in>.size)
            msgs[i].hdr.msg_iov = iov + i
            msgs[i].hdr.msg_iovlen = 1
        }
        let send = MMsg.send!
        let port = t.spec.port.bigEndian
        let vxlanWord = (t.vni << 8).bigEndian
        var local = [UInt64](repeating: 0, count: CounterBlock.count)
        var lastNoKeys: Bool?
        var lastSealError: String?
        let tapFD = t.tapFD
        let vh = t.virtioNetHeaderLength
        let maxFrame = slotSize - Self.frameOffset - 5 - 16
        let readSize = vh > 0 ? Self.txReadBufferSize : min(Self.txReadBufferSize, maxFrame + 1)

        loop: while true {
            pfds[0] = pollfd(fd: tapFD, events: Int16(POLLIN), revents: 0)
            pfds[1] = pollfd(fd: t.wake.readFD, events: Int16(POLLIN), revents: 0)
            let pr = poll(pfds, 2, -1)
            if pr < 0 {
                if errno == EINTR { continue }
                break
            }
            if pfds[1].revents != 0 { break }
            if pfds[0].revents & Int16(POLLERR | POLLHUP | POLLNVAL) != 0 { break }

            let tables = t.tables.withLock { $0 }
            let keys = txKeys.withLock { $0 }
            var out = 0
            var cursor = 0
            // The open GSO run (the message out - 1): its segment size, packets, bytes and VTEP.
            var runOpen = false, runSize = 0, runBytes = 0, runVTEP: UInt32 = 0
            var noKeysSeen = false
            var sealError: String?
            var lastSealer: ESPSealer?, lastSealerVTEP: UInt32 = 0

            func flush() {
                var sent = 0
                while sent < out {
                    let r = send(rawFD, UnsafeMutableRawPointer(msgs + sent), UInt32(out - sent), 0)
                    if r < 0 {
                        if errno == EINTR { continue }
                        local[CounterBlock.dropBase + UserspaceDropReason.sendFailed.rawValue] &+= UInt64(packets[sent])
                        sent += 1
                        continue
                    }
                    sent += Int(r)
                }
                out = 0
                cursor = 0
                runOpen = false
            }

            /// The next packet's slot in the arena (flushing first when it is full).
            func nextSlot() -> UnsafeMutableRawPointer {
                if out == cap || cursor + slotSize > arenaSize { flush() }
                return buf + cursor
            }

            /// Encapsulates and seals the `frameLen`-byte frame for `vtep` into send slot `out`: the
            /// frame at `slot + frameOffset`, or its headers there and its last `rest.count` bytes
            /// in `rest` (a segment's payload in the super-frame, encrypted from where it lies).
            func prepare(_ slot: UnsafeMutableRawPointer, _ frameLen: Int, _ vtep: UInt32, _ flow: UInt16,
                         rest: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)) {
                let sealer: ESPSealer
                if let cached = lastSealer, lastSealerVTEP == vtep {
                    sealer = cached  // a super-frame's segments all go to one VTEP: one lookup for the lot
                } else {
                    guard let found = keys.sealers[vtep] else {
                        noKeysSeen = true
                        local[CounterBlock.dropBase + UserspaceDropReason.noKeys.rawValue] &+= 1
                        return
                    }
                    sealer = found
                    lastSealer = found
                    lastSealerVTEP = vtep
                }
                let udp = slot + ESP.headerLength
                udp.storeBytes(of: flow.bigEndian, toByteOffset: 0, as: UInt16.self)
                udp.storeBytes(of: port, toByteOffset: 2, as: UInt16.self)
                udp.storeBytes(of: UInt16(16 + frameLen).bigEndian, toByteOffset: 4, as: UInt16.self)
                udp.storeBytes(of: UInt16(0), toByteOffset: 6, as: UInt16.self)
                udp.storeBytes(of: UInt32(0x0800_0000).bigEndian, toByteOffset: 8, as: UInt32.self)
                udp.storeBytes(of: vxlanWord, toByteOffset: 12, as: UInt32.self)
                let total: Int
                do throws(IPsecError) {
                    let into = UnsafeMutableRawBufferPointer(start: slot, count: slotSize)
                    total = rest.isEmpty
                        ? try sealer.seal(into: into, payloadLength: 16 + frameLen, nextHeader: 17)
                        : try sealer.seal(into: into, headLength: 16 + frameLen - rest.count, rest: rest, nextHeader: 17)
                } catch {
                    sealError = error.message
                    local[CounterBlock.dropBase + UserspaceDropReason.sealFailed.rawValue] &+= 1
                    return
                }
                if runOpen, vtep == runVTEP, total <= runSize, packets[out - 1] < UDPOffload.maxSegments,
                   runBytes + total <= UDPOffload.maxPayload {
                    // Joins the run: the kernel cuts the message every `runSize` bytes.
                    iov[out - 1].iov_len += total
                    runBytes += total
                    packets[out - 1] += 1
                    if packets[out - 1] == 2 {
                        let c = control + (out - 1) * UDPOffload.segmentCmsgSpace
                        UDPOffload.storeSegmentCmsg(runSize, c)
                        msgs[out - 1].hdr.msg_control = c
                        msgs[out - 1].hdr.msg_controllen = UDPOffload.segmentCmsgSpace
                    }
                    if total < runSize { runOpen = false }
                } else {
                    iov[out] = iovec(iov_base: slot, iov_len: total)
                    addrs[out].sin_addr.s_addr = vtep.bigEndian
                    msgs[out].hdr.msg_control = nil
                    msgs[out].hdr.msg_controllen = 0
                    packets[out] = 1
                    out += 1
                    if gso { runOpen = true; runSize = total; runBytes = total; runVTEP = vtep }
                }
                cursor += total
                local[CounterBlock.txFrames] &+= 1
                local[CounterBlock.txBytes] &+= UInt64(frameLen)
            }

            var reads = 0
            while reads < cap {
                let n = read(tapFD, rbuf, readSize)
                if n <= 0 {
                    if n < 0 && errno == EINTR { continue }
                    break
                }
                reads += 1
                let frame = rbuf + vh
                let len = Int(n) - vh
                guard len >= 14, len < readSize - vh else {
                    local[CounterBlock.dropBase + UserspaceDropReason.badFrame.rawValue] &+= 1
                    continue
                }
                let hdr = vh > 0 ? VirtioNetHeader(rbuf) : VirtioNetHeader()
                let dst = loadMAC(frame, 0)
                let etherType = loadBE16(frame, 12)
                if etherType == 0x0806 {
                    // Proxy ARP: answer requests for peers here; never flood them (as the kernel's
                    // VXLAN device with proxy ARP does).
                    if len >= 42, loadBE16(frame, 20) == 1, loadBE32(frame, 14) == 0x0001_0800, loadBE16(frame, 18) == 0x0604 {
                        let tpa = loadBE32(frame, 38)
                        if let mac = tables.neighbours[tpa] {
                            let sha = loadMAC(frame, 22)
                            let spa = loadBE32(frame, 28)
                            storeMAC(sha, frame, 0)
                            storeMAC(mac, frame, 6)
                            storeBE16(2, frame, 20)
                            storeMAC(mac, frame, 22)
                            storeBE32(tpa, frame, 28)
                            storeMAC(sha, frame, 32)
                            storeBE32(spa, frame, 38)
                            if vh > 0 { VirtioNetHeader.storeZero(rbuf) }
                            if write(tapFD, rbuf, vh + 42) == vh + 42 {
                                local[CounterBlock.proxyARP] &+= 1
                            } else {
                                local[CounterBlock.dropBase + UserspaceDropReason.tapWriteFailed.rawValue] &+= 1
                            }
                        } else {
                            local[CounterBlock.dropBase + UserspaceDropReason.arpUnanswered.rawValue] &+= 1
                        }
                        continue
                    }
                }
                // Destinations: the FDB's VTEP, or every flood VTEP for broadcast, multicast and
                // unknown unicast (one sealed copy each).
                var single: UInt32 = 0
                let destinations: Int
                if dst & 0x0100_0000_0000 == 0, let vtep = tables.fdb[dst] {
                    single = vtep
                    destinations = 1
                } else if tables.flood.count == 1 {
                    single = tables.flood[0]
                    destinations = 1
                } else {
                    destinations = tables.flood.count
                }
                guard destinations > 0 else {
                    local[CounterBlock.dropBase + UserspaceDropReason.noDestination.rawValue] &+= 1
                    continue
                }
                let flow = flowPort(frame, len)
                switch TXFrameOffload.prepare(header: hdr, frame: frame, length: len, maxFrame: maxFrame) {
                case .badOffload:
                    local[CounterBlock.dropBase + UserspaceDropReason.badOffload.rawValue] &+= 1
                    continue
                case .badFrame:
                    local[CounterBlock.dropBase + UserspaceDropReason.badFrame.rawValue] &+= 1
                    continue
                case .segments(let layout, let mss, let segments):
                    // A TSO super-frame: cut into MSS-sized segments, each sealed on its own, its
                    // payload encrypted from the super-frame into the slot (no copy of its own).
                    local[CounterBlock.txSuperFrames] &+= 1
                    for d in 0..<destinations {
                        for i in 0..<segments {
                            let slot = nextSlot()
                            let (segLen, payload) = TCPSegmentation.writeSegmentHeaders(
                                i, of: frame, length: len, layout: layout, mss: mss, to: slot + Self.frameOffset)
                            prepare(slot, segLen, destinations == 1 ? single : tables.flood[d], flow, rest: payload)
                        }
                    }
                    continue
                case .frame:
                    break
                }
                for d in 0..<destinations {
                    let slot = nextSlot()
                    (slot + Self.frameOffset).copyMemory(from: frame, byteCount: len)
                    prepare(slot, len, destinations == 1 ? single : tables.flood[d], flow)
                }
            }
            flush()
            counterBlock.merge(&local)
            let noKeys = noKeysSeen && !keys.hasKeys
            if noKeys != lastNoKeys || sealError != lastSealError {
                if lastNoKeys != nil || noKeys || sealError != nil {
                    noteTxState(t, noKeys: noKeys, sealError: sealError)
                }
                lastNoKeys = noKeys
                lastSealError = sealError
            }
        }
    }

    /// The outer UDP source port for an inner frame (Linux's range 32768...60999 style): a hash of
    /// the IPv4 addresses, protocol and ports (direction-independent), or of the MACs.
    @inline(__always)
    func flowPort(_ f: UnsafeMutableRawPointer, _ len: Int) -> UInt16 {
        var h: UInt32
        if len >= 34, loadBE16(f, 12) == 0x0800 {
            let s = loadBE32(f, 26), d = loadBE32(f, 30)
            h = (min(s, d) &* 0x9E37_79B1) ^ (max(s, d) &* 0x85EB_CA77) ^ UInt32(f.load(fromByteOffset: 23, as: UInt8.self))
            let ihl = Int(f.load(fromByteOffset: 14, as: UInt8.self) & 0xF) * 4
            let proto = f.load(fromByteOffset: 23, as: UInt8.self)
            if (proto == 6 || proto == 17), len >= 14 + ihl + 4 {
                let a = UInt32(loadBE16(f, 14 + ihl)), b = UInt32(loadBE16(f, 16 + ihl))
                h ^= (min(a, b) << 16 | max(a, b)) &* 0xC2B2_AE3D
            }
        } else {
            h = UInt32(truncatingIfNeeded: loadMAC(f, 0) ^ loadMAC(f, 6)) &* 0x9E37_79B1
        }
        h ^= h >> 15
        h = h &* 0x2C1B_3C6D
        h ^= h >> 12
        return UInt16(32768 + h % 28232)
    }

    /// RX: raw ESP socket (or, with `udp`, the ESP-in-UDP socket, whose coalesced `UDP_GRO`
    /// buffers are cut at the cmsg's segment size) -> open -> UDP/VXLAN checks -> the VNI's TAP,
    /// until `wake` fires.
    func runRX(rawFD: Int32, wake: WakePipe, port: UInt16, udp: Bool) {
        let cap = Self.batch
        let slotSize = udp ? 65536 : 16384
        let buf = UnsafeMutableRawPointer.allocate(byteCount: cap * slotSize, alignment: 64)
        let control = UnsafeMutableRawPointer.allocate(byteCount: cap * UDPOffload.rxControlSize, alignment: 8)
        let iov = UnsafeMutablePointer<iovec>.allocate(capacity: cap)
        let msgs = UnsafeMutablePointer<MMsgHdr>.allocate(capacity: cap)
        let pfds = UnsafeMutablePointer<pollfd>.allocate(capacity: 2)
        let sources = UnsafeMutablePointer<sockaddr_in>.allocate(capacity: cap)
        defer { buf.deallocate(); control.deallocate(); iov.deallocate(); msgs.deallocate(); pfds.deallocate(); sources.deallocate() }
        for i in 0..<cap {
            iov[i] = iovec(iov_base: buf + i * slotSize, iov_len: slotSize)
            msgs[i] = MMsgHdr()
            msgs[i].hdr.msg_iov = iov + i
            msgs[i].hdr.msg_iovlen = 1
            msgs[i].hdr.msg_name = UnsafeMutableRawPointer(sources + i)
        }
        let authFailed = CounterBlock.dropBase + UserspaceDropReason.espAuthFailed.rawValue
        let unknownSPI = CounterBlock.dropBase + UserspaceDropReason.espUnknownSPI.rawValue
        let keyLog = KeyMismatchLog()
        let recv = MMsg.recv!
        let coalescer = TCPCoalescer()
        let path = ReceivePath(opener: opener, port: port, coalescer: coalescer)
        var local = [UInt64](repeating: 0, count: CounterBlock.count)
        @inline(__always) func drop(_ r: UserspaceDropReason) { local[CounterBlock.dropBase + r.rawValue] &+= 1 }

        while true {
            pfds[0] = pollfd(fd: rawFD, events: Int16(POLLIN), revents: 0)
            pfds[1] = pollfd(fd: wake.readFD, events: Int16(POLLIN), revents: 0)
            let pr = poll(pfds, 2, -1)
            if pr < 0 {
                if errno == EINTR { continue }
                break
            }
            if pfds[1].revents != 0 { break }
            for i in 0..<cap { msgs[i].hdr.msg_namelen = socklen_t(MemoryLayout<sockaddr_in>.size) }
            if udp {
                for i in 0..<cap {
                    msgs[i].hdr.msg_control = control + i * UDPOffload.rxControlSize
                    msgs[i].hdr.msg_controllen = UDPOffload.rxControlSize
                }
            }
            let n = recv(rawFD, UnsafeMutableRawPointer(msgs), UInt32(cap), Int32(MSG_DONTWAIT), nil)
            if n <= 0 { continue }
            let tunnels = rxTunnels.withLock { $0 }
            for i in 0..<Int(n) {
                let segment = udp
                    ? UDPOffload.groSegmentSize(control + i * UDPOffload.rxControlSize,
                                                min(Int(msgs[i].hdr.msg_controllen), UDPOffload.rxControlSize))
                    : nil
                let keyDropsBefore = local[authFailed] &+ local[unknownSPI]
                path.receive(buf + i * slotSize, length: Int(msgs[i].len), truncated: msgs[i].hdr.msg_flags & Int32(MSG_TRUNC) != 0,
                             udp: udp, groSegment: segment,
                             tunnel: { vni in tunnels[vni].map { ($0.tapFD, $0.virtioNetHeaderLength > 0) } }, drop: drop)
                if local[authFailed] &+ local[unknownSPI] != keyDropsBefore {
                    keyLog.lastSource = UInt32(bigEndian: sources[i].sin_addr.s_addr)
                }
            }
            // `local` holds this batch's counts (merged and zeroed below).
            keyLog.note(authFailed: local[authFailed], unknownSPI: local[unknownSPI], logger: logger)
            coalescer.flush()
            local[CounterBlock.rxFrames] &+= coalescer.writtenFrames
            local[CounterBlock.rxBytes] &+= coalescer.writtenBytes
            local[CounterBlock.dropBase + UserspaceDropReason.tapWriteFailed.rawValue] &+= coalescer.failedFrames
            local[CounterBlock.rxMerged] &+= coalescer.mergedWrites
            coalescer.writtenFrames = 0
            coalescer.writtenBytes = 0
            coalescer.failedFrames = 0
            coalescer.mergedWrites = 0
            counterBlock.merge(&local)
        }
    }
}

/// The RX thread's warning about ESP that no key here opens (a peer with a wrong or missing key,
/// or a stranger): at most one line per 10 s while such packets keep coming, with the counts
/// since the last line and the last sender. Owned by the RX thread.
final class KeyMismatchLog {
    var lastSource: UInt32 = 0
    private var pendingAuthFailed: UInt64 = 0
    private var pendingUnknownSPI: UInt64 = 0
    private var lastLine: UInt64 = 0
    static let interval: UInt64 = 10_000_000_000

    /// Adds one batch's `authFailed` and `unknownSPI` drops and logs if they are due.
    func note(authFailed: UInt64, unknownSPI: UInt64, logger: Logger) {
        pendingAuthFailed &+= authFailed
        pendingUnknownSPI &+= unknownSPI
        guard pendingAuthFailed != 0 || pendingUnknownSPI != 0 else { return }
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let now = UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
        guard lastLine == 0 || now &- lastLine >= Self.interval else { return }
        lastLine = now
        logger.warning("dropping ESP that no IPsec key here opens: the sender's keys differ from this host's (wrong or missing key, or not a member)",
                       metadata: ["from": "\(IPv4Address(lastSource))", "authFailed": "\(pendingAuthFailed)",
                                  "unknownSPI": "\(pendingUnknownSPI)"])
        pendingAuthFailed = 0
        pendingUnknownSPI = 0
    }
}
