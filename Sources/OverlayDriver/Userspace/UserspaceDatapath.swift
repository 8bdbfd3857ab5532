import Foundation
import Glibc
import IPsecKeys
import Logging
import Netlink
import OverlayModel
import PacketFilter
import Synchronization

/// Whether an encrypted network can send: what `network inspect` and `node ls` show.
public enum EncryptionStatus: Hashable, Sendable, CustomStringConvertible {
    /// Keys are installed; frames are sealed and sent.
    case ok
    /// No IPsec keys yet: the network sends nothing (fail closed) until the managers send a keyring.
    case noKeys
    /// Sealing failed (the message says why, without key bytes); frames are dropped.
    case error(String)

    public var description: String {
        switch self {
        case .ok: "ok"
        case .noKeys: "no IPsec keys yet, sending nothing"
        case .error(let m): "error: \(m)"
        }
    }
}

/// Why the userspace datapath dropped a frame or packet (each is counted).
public enum UserspaceDropReason: Int, CaseIterable, Sendable, CustomStringConvertible {
    /// TX: no keyring (or no SA for the VTEP): fail closed.
    case noKeys
    /// TX: the sealer refused (sequence numbers exhausted, OpenSSL failure).
    case sealFailed
    /// TX: the kernel refused to send the ESP packet (`sendmmsg` error).
    case sendFailed
    /// TX: no VTEP to send to (unknown destination and no flood VTEP).
    case noDestination
    /// TX: an ARP request for an address no peer has (proxy ARP answers known peers only).
    case arpUnanswered
    /// TX: a frame too short for Ethernet.
    case badFrame
    /// RX: not an IPv4 ESP packet, or truncated.
    case notESP
    /// RX: ESP packet too short for its SA.
    case espTooShort
    /// RX: no inbound SA has the packet's SPI (wrong or missing key on one side).
    case espUnknownSPI
    /// RX: the ICV did not verify (wrong key, or altered).
    case espAuthFailed
    /// RX: sequence number already seen (a replay).
    case espReplayed
    /// RX: sequence number behind the anti-replay window.
    case espOutsideWindow
    /// RX: malformed ESP trailer.
    case espBadPadding
    /// RX: the ESP payload is not UDP (next header != 17) or too short for UDP + VXLAN + Ethernet.
    case notUDP
    /// RX: UDP destination port is not the data-path port.
    case wrongPort
    /// RX: the VXLAN header lacks the I flag.
    case notVXLAN
    /// RX: no local tunnel has the VNI.
    case unknownVNI
    /// RX: writing the inner frame to the TAP device failed.
    case tapWriteFailed
    /// TX: a TAP frame whose virtio-net header asks for what cannot be done (a GSO type other
    /// than TCP, headers that do not parse, segments larger than the MTU, checksum offsets
    /// outside the frame).
    case badOffload
    /// RX (ESP in UDP): a datagram that is not ESP: the non-ESP marker (a zero SPI, RFC 3948
    /// 2.2: IKE, which this datapath does not speak) or a NAT keep-alive (one 0xFF byte).
    case nonESPMarker

    public var description: String { String(describing: Self.names[rawValue]) }
    static let names = ["noKeys", "sealFailed", "sendFailed", "noDestination", "arpUnanswered", "badFrame", "notESP",
                        "espTooShort", "espUnknownSPI", "espAuthFailed", "espReplayed", "espOutsideWindow", "espBadPadding",
                        "notUDP", "wrongPort", "notVXLAN", "unknownVNI", "tapWriteFailed", "badOffload", "nonESPMarker"]
}

/// What the userspace datapath moved and dropped since it started (all tunnels).
public struct UserspaceDatapathCounters: Sendable, Equatable, CustomStringConvertible {
    /// Frames read from TAP devices and sent (each flood copy counts once per VTEP).
    public var txFrames: UInt64 = 0
    /// Inner Ethernet bytes of ``txFrames``.
    public var txBytes: UInt64 = 0
    /// Inner frames opened and written to a TAP device.
    public var rxFrames: UInt64 = 0
    /// Inner Ethernet bytes of ``rxFrames``.
    public var rxBytes: UInt64 = 0
    /// ARP requests answered locally from the peer table.
    public var proxyARPReplies: UInt64 = 0
    /// TCP super-frames (TSO, up to 64 KiB) read from TAP devices and segmented here; their
    /// segments count in ``txFrames``.
    public var txSuperFrames: UInt64 = 0
    /// Writes to TAP devices that carried several received TCP segments merged into one
    /// super-frame; the segments count in ``rxFrames``.
    public var rxMergedWrites: UInt64 = 0
    /// Drops by reason (absent reasons are zero).
    public var drops: [UserspaceDropReason: UInt64] = [:]
    /// The ESP sealers' and opener's counters, summed.
    public var esp = ESPCounters()

    /// The drops counted for `reason`.
    public func dropped(_ reason: UserspaceDropReason) -> UInt64 { drops[reason] ?? 0 }

    public var description: String {
        let d = UserspaceDropReason.allCases.compactMap { r in drops[r].map { "\(r)=\($0)" } }.joined(separator: " ")
        return "tx \(txFrames) frames/\(txBytes) B (\(txSuperFrames) TSO super-frames), rx \(rxFrames) frames/\(rxBytes) B (\(rxMergedWrites) merged writes), proxy ARP \(proxyARPReplies), drops [\(d)], esp [\(esp)]"
    }
}

/// Counter slots shared by the worker threads: each thread counts into a private array and adds
/// it here once per batch (one uncontended lock per batch).
final class CounterBlock: Sendable {
    static let txFrames = 0, txBytes = 1, rxFrames = 2, rxBytes = 3, proxyARP = 4, txSuperFrames = 5, rxMerged = 6, dropBase = 7
    static let count = dropBase + UserspaceDropReason.allCases.count
    private let slots = Mutex([UInt64](repeating: 0, count: CounterBlock.count))

    /// Adds `local` and zeroes it.
    func merge(_ local: inout [UInt64]) {
        slots.withLock { s in
            for i in 0..<CounterBlock.count where local[i] != 0 {
                s[i] &+= local[i]
                local[i] = 0
            }
        }
    }

    var snapshot: [UInt64] { slots.withLock { $0 } }
}

/// One tunnel's forwarding tables, as the TX thread reads them (a snapshot per batch).
struct TunnelTables: Sendable {
    /// MAC (48-bit value) -> VTEP (IPv4, host order).
    var fdb: [UInt64: UInt32] = [:]
    /// Peer IPv4 address (host order) -> MAC: proxy ARP.
    var neighbours: [UInt32: UInt64] = [:]
    /// Flood VTEPs (broadcast, multicast, unknown unicast).
    var flood: [UInt32] = []
}

/// The SAs the TX threads seal with: the primary key's sealer per remote VTEP.
struct TxKeys: Sendable {
    var hasKeys = false
    var sealers: [UInt32: ESPSealer] = [:]
}

/// One encrypted subnet on this host: its TAP device, its TX thread and its tables.
final class UserspaceTunnel: @unchecked Sendable {
    // @unchecked: `thread`, `floodSet` and `peerRefs` change only under the datapath's lock;
    // the rest are lets of Sendable types or Mutexes.
    let spec: TunnelSpec
    let vni: UInt32
    let tap: TapDevice
    let tapFD: Int32
    /// 10 when frames on the TAP carry a virtio-net header (offloads on), else 0.
    let virtioNetHeaderLength: Int
    let wake: WakePipe
    let tableName: String
    let tables = Mutex(TunnelTables())
    /// The last seal failure (for ``EncryptionStatus/error(_:)``); nil when sealing works.
    let lastError = Mutex<String?>(nil)
    var thread: WorkerThread?

    init(spec: TunnelSpec, tap: TapDevice, tapFD: Int32, wake: WakePipe, tableName: String) {
        self.spec = spec
        self.vni = spec.vni.value
        self.tap = tap
        self.tapFD = tapFD
        self.virtioNetHeaderLength = tap.virtioNetHeaderLength
        self.wake = wake
        self.tableName = tableName
    }
}

/// A self-closing pipe used to wake a worker out of `poll`.
final class WakePipe: Sendable {
    let readFD: Int32
    let writeFD: Int32

    init?() {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { return nil }
        for fd in fds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        readFD = fds[0]
        writeFD = fds[1]
    }

    func wake() {
        var b: UInt8 = 1
        _ = Glibc.write(writeFD, &b, 1)
    }

    deinit {
        Glibc.close(readFD)
        Glibc.close(writeFD)
    }
}

struct SAKey: Hashable {
    let vtep: UInt32
    let tag: UInt32
}

/// The userspace datapath for encrypted networks, on kernels without ESP/GCM: per tunnel a TAP
/// device in the sandbox (made in the host namespace, moved and renamed like the kernel's VXLAN
/// device) whose frames are VXLAN-encapsulated, sealed as ESP (transport mode, AES-GCM, Docker's
/// SAs) and sent on one raw IP-protocol-50 socket in the host namespace (or, with
/// ``espEncapsulation`` `.udp`, one UDP socket: ESP in UDP, RFC 3948, with UDP GSO/GRO); one
/// receive thread opens ESP, checks UDP port and VNI and writes the inner frame to its tunnel's TAP.
///
/// Fail closed: without keys nothing is sent (counted, logged once per change, and reported by
/// ``encryptionStatus(vni:)``). Cleartext VXLAN for an encrypted VNI arriving on the data-path
/// port is dropped and counted by an nftables rule in the host namespace (``cleartextDrops(vni:)``).
///
/// Threads: one TX thread per TAP (poll, read up to 64 frames, seal, one `sendmmsg`) and one RX
/// thread per datapath (`recvmmsg` up to 64). The hot paths allocate nothing and take one lock
/// per batch (plus each sealer's own uncontended lock per packet).
///
/// Only IPv4 VTEPs are supported (the raw socket is AF_INET).
public final class UserspaceDatapath: Datapath, @unchecked Sendable {
    // @unchecked: every `var` is read and written only while holding `lock`; the hot paths read
    // the Mutex-guarded snapshots `txKeys` and `rxTunnels`.

    /// The host namespace's socket, where TAP devices are made and the raw ESP socket lives.
    public let host: NetlinkSocket
    /// The prefix of every link this datapath names in the host namespace (`<tag>u<vni hex>`).
    public let linkPrefix: String
    /// The prefix of its nftables tables in the host namespace (`ovl_<tag>_enc_<vni>`).
    public let tablePrefix: String
    /// `userspace`.
    public var name: String { "userspace" }
    /// Whether TAP devices are made with a virtio-net header and offloads (partial checksums,
    /// TSO4/6 super-frames read and segmented here, received segments merged into super-frames).
    /// On unless the environment says `OVERLAY_TAP_OFFLOADS=0` (or `off`), or the kernel refused
    /// them for the first tunnel (then off, with a warning).
    public var tapOffloads: Bool { lock.withLock { useOffloads } }
    /// How ESP goes on the underlay: bare ESP (default) or ESP in UDP (RFC 3948) with UDP GSO/GRO.
    /// Both ends must agree. In UDP mode the container MTU must be 8 lower
    /// (``ESPEncapsulation/containerMTU(underlayMTU:)``: 1416 on a 1500 underlay).
    public let espEncapsulation: ESPEncapsulation
    /// ESP in UDP: whether the kernel took `UDP_SEGMENT` (one send per run of equal-size ESP
    /// packets) and `UDP_GRO` (coalesced receives); false before the first tunnel or in raw mode.
    public var udpOffloads: (segmentation: Bool, receiveCoalescing: Bool) { lock.withLock { (udpGSO, udpGRO) } }

    let logger: Logger
    private let lock = NSLock()
    private var tunnels: [UInt32: UserspaceTunnel] = [:]
    private var ring: IPsecKeyring?
    private var vtepRefs: [UInt32: Int] = [:]
    private var sealers: [SAKey: ESPSealer] = [:]
    private var rxInstalled: Set<SAKey> = []
    /// The highest sequence number seen on each inbound SA whose VTEP was released, so that
    /// retaining the VTEP again resumes its window instead of opening a fresh one.
    private var releasedWindows: [SAKey: UInt64] = [:]
    /// Each peer VTEP's boot ID (boot-bound SAs), as its gossip metadata says.
    private var peerBoots: [UInt32: [UInt8]] = [:]
    private var localVTEP: UInt32?
    private var rawFD: Int32 = -1
    private var rxThread: WorkerThread?
    private var rxWake: WakePipe?
    private var useOffloads: Bool
    private var udpGSO = false
    private var udpGRO = false

    let opener = ESPOpener()
    let txKeys = Mutex(TxKeys())
    let rxTunnels = Mutex([UInt32: UserspaceTunnel]())
    let counterBlock = CounterBlock()

    /// Makes a userspace datapath working in `host`; `nodeTag` is the driver's short node tag.
    /// Nothing is opened until the first tunnel.
    /// `tapOffloads` nil takes the environment's `OVERLAY_TAP_OFFLOADS` (default on);
    /// `espEncapsulation` nil takes `OVERLAY_ESP_ENCAP` (`esp`, `udp` or `udp:<port>`; default
    /// ESP in UDP on port 4500, and that with a warning when the value does not parse).
    /// This host's boot ID, when SAs are bound to boots (see
    /// `ESPSecurityAssociation.derive(local:remote:key:extendedSequenceNumbers:replayWindowSize:localBoot:remoteBoot:)`);
    /// nil: Docker's keys as they are. With it, a peer's inbound SAs wait for its boot ID
    /// (``setPeerBootID(_:_:)``).
    public let bootID: [UInt8]?

    public init(host: NetlinkSocket, nodeTag: String, tapOffloads: Bool? = nil, espEncapsulation: ESPEncapsulation? = nil,
                bootID: [UInt8]? = nil, logger: Logger = Logger(label: "overlay-userspace-datapath")) {
        self.bootID = bootID.flatMap { $0.isEmpty ? nil : $0 }
        if let espEncapsulation {
            self.espEncapsulation = espEncapsulation
        } else if let v = ProcessInfo.processInfo.environment["OVERLAY_ESP_ENCAP"] {
            if let e = ESPEncapsulation(v) {
                self.espEncapsulation = e
            } else {
                self.espEncapsulation = .udp
                logger.warning("OVERLAY_ESP_ENCAP is not esp, udp or udp:<port>; using ESP in UDP", metadata: ["value": "\(v)"])
            }
        } else {
            self.espEncapsulation = .udp
        }
        if let tapOffloads {
            useOffloads = tapOffloads
        } else {
            let v = ProcessInfo.processInfo.environment["OVERLAY_TAP_OFFLOADS"]?.lowercased()
            useOffloads = !(v == "0" || v == "off" || v == "no" || v == "false")
        }
        self.host = host
        self.linkPrefix = nodeTag + "u"
        self.tablePrefix = "ovl_\(nodeTag)_enc_"
        self.logger = logger
    }

    deinit { stopReceiver() }

    /// What the TX threads take from a TAP: partial checksums and TCP super-frames (with ECN).
    static let offloads: TapOffloads = [.checksum, .tso4, .tso6, .tsoECN]

    func hostName(_ tunnel: TunnelSpec) -> String { linkPrefix + String(tunnel.vni.value, radix: 16) }
    func tableName(_ vni: VNI) -> String { tablePrefix + String(vni.value) }

    // MARK: Datapath

    /// The MTU of the host-namespace link holding `local`, or nil when none does.
    private func underlayMTU(of local: IPv4Address) -> UInt32? {
        guard let links = try? host.links() else { return nil }
        for link in links {
            if let addrs = try? host.addresses(on: link.name, family: .v4), addrs.contains(where: { $0.address == .v4(local) }) {
                return link.mtu
            }
        }
        return nil
    }

    /// Deletes TAP links and nftables tables in the host namespace that carry this node's prefixes.
    public func removeStale() throws(OverlayDriverError) -> [String] {
        let links = try kernel("list links in the host namespace") { () throws(NetlinkError) in try host.links() }
        var removed: [String] = []
        for link in links where link.name.hasPrefix(linkPrefix) && (link.kind == "tun" || link.kind == nil) {
            try? host.deleteLink(named: link.name)
            removed.append("link \(link.name)")
        }
        let prefix = tablePrefix
        let tables = (try? host.namespace.run { () throws -> [String] in
            let pf = try PacketFilter()
            var gone: [String] = []
            for t in try pf.tables(family: .ip) where t.name.hasPrefix(prefix) {
                _ = try pf.deleteTable(family: .ip, name: t.name)
                gone.append("nft table ip \(t.name)")
            }
            return gone
        }) ?? []
        return removed + tables
    }

    /// Creates the TAP device in the host namespace, moves it into the sandbox, renames it, sets
    /// its MTU, enslaves it to the bridge (if any), sets it up, installs the cleartext-drop rule and
    /// starts its TX thread (and the RX thread with the first tunnel).
    public func createTunnel(_ tunnel: TunnelSpec, in sandbox: NetlinkSocket) throws(OverlayDriverError) {
        guard let local = tunnel.localVTEP.v4 else {
            throw OverlayDriverError(.kernel, "encrypted network on VNI \(tunnel.vni): the userspace datapath needs an IPv4 data-path address, this host has \(tunnel.localVTEP)")
        }
        lock.lock()
        defer { lock.unlock() }
        guard tunnels[tunnel.vni.value] == nil else {
            throw OverlayDriverError(.duplicateVNI, "the userspace datapath already has a tunnel for VNI \(tunnel.vni)")
        }
        if espEncapsulation != .raw, let underlay = underlayMTU(of: local) {
            let most = espEncapsulation.containerMTU(underlayMTU: underlay)
            guard tunnel.mtu <= most else {
                throw OverlayDriverError(.invalidMTU, "encrypted network on VNI \(tunnel.vni): MTU \(tunnel.mtu) is too large for ESP in UDP on a \(underlay)-byte underlay (UDP adds 8 bytes); give the network an MTU of at most \(most)")
            }
        }
        if localVTEP == nil { localVTEP = local.value }
        try startReceiver(local: local, port: tunnel.port)
        let temp = hostName(tunnel)
        let tap = try kernel("create TAP device \(temp) (VNI \(tunnel.vni)) in the host namespace") { () throws(NetlinkError) in
            if useOffloads {
                do throws(NetlinkError) {
                    return try host.createTap(named: temp, virtioNetHeader: true, offloads: Self.offloads)
                } catch where error.code == .invalidArgument || error.code == .unsupported {
                    useOffloads = false
                    logger.warning("TAP offloads refused by the kernel; frames go one by one", metadata: ["error": "\(error)"])
                }
            }
            return try host.createTap(named: temp)
        }
        var tableName: String?
        do throws(OverlayDriverError) {
            guard let fd = tap.fileDescriptor else { throw OverlayDriverError(.kernel, "TAP device \(temp) has no descriptor") }
            let flags = fcntl(fd, F_GETFL)
            guard flags >= 0, fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0 else {
                throw OverlayDriverError(.kernel, "cannot make TAP device \(temp) non-blocking (errno \(errno))")
            }
            try kernel("move \(temp) into sandbox \(sandbox.namespace.name)") { () throws(NetlinkError) in
                try host.moveLink(temp, to: sandbox.namespace)
            }
            try kernel("set up \(tunnel.deviceName) in sandbox \(sandbox.namespace.name)") { () throws(NetlinkError) in
                try sandbox.renameLink(temp, to: tunnel.deviceName)
                try sandbox.setMTU(tunnel.mtu, of: tunnel.deviceName)
                if let bridge = tunnel.bridge { try sandbox.setMaster(bridge, of: tunnel.deviceName) }
                try sandbox.setUp(tunnel.deviceName)
            }
            let name = self.tableName(tunnel.vni)
            try installCleartextDrop(table: name, vni: tunnel.vni.value, port: tunnel.port)
            tableName = name
            guard let wake = WakePipe() else { throw OverlayDriverError(.kernel, "cannot make a pipe for the TX thread of VNI \(tunnel.vni) (errno \(errno))") }
            let t = UserspaceTunnel(spec: tunnel, tap: tap, tapFD: fd, wake: wake, tableName: name)
            let rawFD = self.rawFD
            let gso = udpGSO
            guard let thread = WorkerThread(name: "ovl-tx-\(tunnel.vni.value)", { [self] in runTX(t, rawFD: rawFD, gso: gso) }) else {
                throw OverlayDriverError(.kernel, "cannot start the TX thread of VNI \(tunnel.vni)")
            }
            t.thread = thread
            tunnels[t.vni] = t
            rxTunnels.withLock { $0[t.vni] = t }
        } catch {
            tap.close()
            try? sandbox.deleteLink(named: temp)
            try? sandbox.deleteLink(named: tunnel.deviceName)
            if let tableName { removeCleartextDrop(table: tableName) }
            if tunnels.isEmpty { stopReceiver() }
            throw error
        }
        logger.debug("userspace tunnel created", metadata: ["vni": "\(tunnel.vni)", "network": "\(tunnel.network)"])
    }

    /// Stops the tunnel's TX thread, deletes its TAP device and cleartext-drop rule, and stops the
    /// RX thread (closing the raw socket) with the last tunnel. Idempotent.
    public func removeTunnel(_ tunnel: TunnelSpec, in sandbox: NetlinkSocket) throws(OverlayDriverError) {
        lock.lock()
        defer { lock.unlock() }
        guard let t = tunnels.removeValue(forKey: tunnel.vni.value) else {
            try? sandbox.deleteLink(named: tunnel.deviceName)
            return
        }
        rxTunnels.withLock { $0[t.vni] = nil }
        t.wake.wake()
        t.thread?.join()
        t.thread = nil
        // The device goes now; the descriptor closes when the RX thread's batch (if any) lets go.
        try? sandbox.deleteLink(named: tunnel.deviceName)
        let flood = t.tables.withLock { $0.flood }
        for v in flood { releaseVTEP(v) }
        removeCleartextDrop(table: t.tableName)
        if tunnels.isEmpty { stopReceiver() }
        logger.debug("userspace tunnel removed", metadata: ["vni": "\(tunnel.vni)"])
    }

    /// Starts flooding to `vtep` and installs its SAs (all keys inbound, the primary outbound).
    public func addRemoteVTEP(_ vtep: IPAddress, on tunnel: TunnelSpec, in sandbox: NetlinkSocket) throws(OverlayDriverError) {
        guard let v = vtep.v4?.value else {
            throw OverlayDriverError(.kernel, "encrypted network on VNI \(tunnel.vni): peer VTEP \(vtep) is not IPv4; the userspace datapath carries IPv4 underlays only")
        }
        lock.lock()
        defer { lock.unlock() }
        guard let t = tunnels[tunnel.vni.value] else { return }
        let added = t.tables.withLock { tb -> Bool in
            guard !tb.flood.contains(v) else { return false }
            tb.flood.append(v)
            return true
        }
        if added { retainVTEP(v) }
    }

    /// Stops flooding to `vtep` on the tunnel.
    public func removeRemoteVTEP(_ vtep: IPAddress, on tunnel: TunnelSpec, in sandbox: NetlinkSocket) throws(OverlayDriverError) {
        guard let v = vtep.v4?.value else { return }
        lock.lock()
        defer { lock.unlock() }
        guard let t = tunnels[tunnel.vni.value] else { return }
        let removed = t.tables.withLock { tb -> Bool in
            guard let i = tb.flood.firstIndex(of: v) else { return false }
            tb.flood.remove(at: i)
            return true
        }
        if removed { releaseVTEP(v) }
    }

    /// Adds the peer's proxy-ARP entry (IPv4) and its MAC -> VTEP entry, replacing older ones.
    public func programPeer(_ peer: PeerEntry, on tunnel: TunnelSpec, in sandbox: NetlinkSocket) throws(OverlayDriverError) {
        guard let v = peer.vtep.v4?.value else {
            throw OverlayDriverError(.kernel, "encrypted network on VNI \(tunnel.vni): peer VTEP \(peer.vtep) is not IPv4")
        }
        lock.lock()
        defer { lock.unlock() }
        guard let t = tunnels[tunnel.vni.value] else { return }
        t.tables.withLock { tb in
            tb.fdb[peer.mac.value] = v
            if let a = peer.address.v4 { tb.neighbours[a.value] = peer.mac.value }
        }
    }

    /// Removes the peer's entries (only those still pointing at it).
    public func unprogramPeer(_ peer: PeerEntry, on tunnel: TunnelSpec, in sandbox: NetlinkSocket) throws(OverlayDriverError) {
        lock.lock()
        defer { lock.unlock() }
        guard let t = tunnels[tunnel.vni.value] else { return }
        t.tables.withLock { tb in
            if let v = peer.vtep.v4?.value, tb.fdb[peer.mac.value] == v { tb.fdb[peer.mac.value] = nil }
            if let a = peer.address.v4, tb.neighbours[a.value] == peer.mac.value { tb.neighbours[a.value] = nil }
        }
    }

    // MARK: Keys

    /// Installs a keyring (nil removes every key: encrypted networks then send nothing). For every
    /// remote VTEP, inbound SAs for every key of the ring and the outbound SA of the primary are
    /// derived Docker's way; a change is applied in `IPsecRotationPlan` order (new inbound SAs,
    /// then the new primary, then removals), so traffic across a rotation loses nothing. Key bytes
    /// are never logged.
    public func setKeys(_ newRing: IPsecKeyring?) {
        lock.lock()
        defer { lock.unlock() }
        let old = ring
        guard let newRing else {
            for k in rxInstalled { _ = opener.remove(spi: inboundSPI(k)) }
            rxInstalled = []
            sealers = [:]
            ring = nil
            publishTx()
            logger.notice("IPsec keys removed: encrypted networks send nothing")
            return
        }
        let plan = IPsecRotationPlan(from: old, to: newRing)
        for step in plan.steps {
            switch step {
            case .addRx(let key):
                for v in vtepRefs.keys { addRx(v, key) }
            case .setPrimaryTx(let key):
                ring = newRing
                for v in vtepRefs.keys { ensureSealer(v, key) }
                publishTx()
            case .removeTx(let tag):
                for k in sealers.keys where k.tag == tag { sealers[k] = nil }
            case .removeRx(let tag):
                for k in releasedWindows.keys where k.tag == tag { releasedWindows[k] = nil }
                for k in rxInstalled where k.tag == tag {
                    _ = opener.remove(spi: inboundSPI(k))
                    rxInstalled.remove(k)
                }
            }
        }
        ring = newRing
        publishTx()
        logger.notice("IPsec keys installed", metadata: ["keyring": "\(newRing)", "plan": "\(plan)"])
    }

    /// Reinstalls the inbound SAs from `vtep` with fresh replay windows: for a peer host known to
    /// have restarted (its sequence numbers start at 1 again) while its endpoints stayed
    /// programmed here. Returns whether the VTEP is in use.
    @discardableResult
    public func resetPeer(_ vtep: IPAddress) -> Bool {
        guard let v = vtep.v4?.value else { return false }
        lock.lock()
        defer { lock.unlock() }
        guard vtepRefs[v] != nil else { return false }
        for k in rxInstalled where k.vtep == v {
            _ = opener.remove(spi: inboundSPI(k))
            rxInstalled.remove(k)
        }
        for key in ring?.keys ?? [] { addRx(v, key) }
        logger.notice("inbound SAs reset for a restarted peer", metadata: ["vtep": "\(vtep)"])
        return true
    }

    /// Records a peer VTEP's boot ID (boot-bound SAs only). When it changed (the peer restarted),
    /// its inbound SAs are replaced by ones under keys bound to the new boot: its new sequence
    /// numbers get fresh windows, and anything it sent before, replayed, no longer authenticates.
    /// Returns whether the SAs were replaced.
    @discardableResult
    public func setPeerBootID(_ vtep: IPAddress, _ boot: [UInt8]) -> Bool {
        guard bootID != nil, let v = vtep.v4?.value, !boot.isEmpty else { return false }
        lock.lock()
        defer { lock.unlock() }
        guard peerBoots[v] != boot else { return false }
        let restarted = peerBoots[v] != nil
        peerBoots[v] = boot
        for k in rxInstalled where k.vtep == v {
            _ = opener.remove(spi: inboundSPI(k))
            rxInstalled.remove(k)
        }
        for k in releasedWindows.keys where k.vtep == v { releasedWindows[k] = nil }
        guard vtepRefs[v] != nil else { return restarted }
        for key in ring?.keys ?? [] { addRx(v, key) }
        if restarted { logger.notice("a peer restarted: its inbound SAs now use its new boot's keys", metadata: ["vtep": "\(vtep)"]) }
        return restarted
    }

    /// The keyring's tags (oldest first) and primary tag, without key bytes; nil without keys.
    public var keyTags: (tags: [UInt32], primary: UInt32)? {
        lock.withLock { ring.map { ($0.tags, $0.primary.tag) } }
    }

    /// The status of the tunnel for `vni` (or, with no tunnel, of the datapath's keys).
    public func encryptionStatus(vni: VNI?) -> EncryptionStatus {
        lock.lock()
        defer { lock.unlock() }
        guard ring != nil else { return .noKeys }
        if let vni, let t = tunnels[vni.value], let e = t.lastError.withLock({ $0 }) { return .error(e) }
        return .ok
    }

    /// The counters of every tunnel and the ESP sealers/opener.
    public var counters: UserspaceDatapathCounters {
        let s = counterBlock.snapshot
        var c = UserspaceDatapathCounters()
        c.txFrames = s[CounterBlock.txFrames]
        c.txBytes = s[CounterBlock.txBytes]
        c.rxFrames = s[CounterBlock.rxFrames]
        c.rxBytes = s[CounterBlock.rxBytes]
        c.proxyARPReplies = s[CounterBlock.proxyARP]
        c.txSuperFrames = s[CounterBlock.txSuperFrames]
        c.rxMergedWrites = s[CounterBlock.rxMerged]
        for r in UserspaceDropReason.allCases where s[CounterBlock.dropBase + r.rawValue] != 0 {
            c.drops[r] = s[CounterBlock.dropBase + r.rawValue]
        }
        var esp = opener.counters
        for sealer in lock.withLock({ Array(sealers.values) }) {
            let sc = sealer.counters
            esp.sealedPackets &+= sc.sealedPackets
            esp.sealedBytes &+= sc.sealedBytes
            esp.sequenceExhausted &+= sc.sequenceExhausted
        }
        c.esp = esp
        return c
    }

    /// The VNIs with a tunnel (TAP device and threads) now.
    public var tunnelVNIs: [VNI] {
        lock.withLock { tunnels.keys.sorted().compactMap { try? VNI($0) } }
    }

    /// The running TX and RX threads' names and kernel thread IDs (for tests: a test process
    /// runs many datapaths at once, so a thread is told apart by its ID, not its name).
    package var workerThreads: [(name: String, tid: Int32)] {
        lock.withLock {
            (tunnels.values.compactMap(\.thread) + [rxThread].compactMap { $0 }).map { ($0.name, $0.tid) }
        }
    }

    /// Whether the receive thread and the ESP socket (raw or UDP) exist (they do while any tunnel does).
    public var isReceiving: Bool { lock.withLock { rawFD >= 0 } }

    // MARK: Internals (under lock)

    private func inboundSPI(_ k: SAKey) -> SPI {
        SPI.derive(source: .v4(IPv4Address(k.vtep)), destination: .v4(IPv4Address(localVTEP ?? 0)), tag: k.tag)
    }

    private func retainVTEP(_ v: UInt32) {
        let n = vtepRefs[v, default: 0]
        vtepRefs[v] = n + 1
        guard n == 0, let ring else { return }
        for key in ring.keys { addRx(v, key) }
        ensureSealer(v, ring.primary)
        publishTx()
    }

    /// Drops a reference. With the last one the VTEP's inbound SAs go (a host that comes back
    /// after a restart starts its sequence numbers again, and gets fresh replay windows when its
    /// peers are added again); its outbound sealers stay, so our sequence numbers continue.
    private func releaseVTEP(_ v: UInt32) {
        let n = vtepRefs[v, default: 0]
        vtepRefs[v] = n > 1 ? n - 1 : nil
        guard n <= 1 else { return }
        for k in rxInstalled where k.vtep == v {
            // Kept: a later retain resumes the window past it (no replay of what came before).
            // (Boot-bound SAs only: without boot IDs a restarted peer starts at 1 under the same
            // key, and a resumed window would drop it until `resetPeer`.)
            if bootID != nil, let top = opener.highestSequenceNumber(spi: inboundSPI(k)), top > 0 { releasedWindows[k] = top }
            _ = opener.remove(spi: inboundSPI(k))
            rxInstalled.remove(k)
        }
        publishTx()
    }

    private func addRx(_ v: UInt32, _ key: IPsecKey) {
        let k = SAKey(vtep: v, tag: key.tag)
        guard !rxInstalled.contains(k), let local = localVTEP else { return }
        // Boot-bound: nothing is opened from a peer before its boot ID is known.
        if bootID != nil && peerBoots[v] == nil { return }
        do throws(IPsecError) {
            let pair = try ESPSecurityAssociation.derive(local: .v4(IPv4Address(local)), remote: .v4(IPv4Address(v)), key: key,
                                                         localBoot: bootID, remoteBoot: peerBoots[v])
            // A window resumed past everything seen before the VTEP was released: the whole
            // window counts as received, so none of those packets is taken twice.
            let resume = releasedWindows.removeValue(forKey: k).map { $0 + UInt64(pair.inbound.replayWindowSize) } ?? 0
            try opener.add(pair.inbound, highestReceived: resume)
            rxInstalled.insert(k)
        } catch {
            logger.warning("cannot install an inbound SA", metadata: ["vtep": "\(IPv4Address(v))", "tag": "\(key.tag)", "error": "\(error)"])
        }
    }

    private func ensureSealer(_ v: UInt32, _ key: IPsecKey) {
        let k = SAKey(vtep: v, tag: key.tag)
        guard sealers[k] == nil, let local = localVTEP else { return }
        do throws(IPsecError) {
            let pair = try ESPSecurityAssociation.derive(local: .v4(IPv4Address(local)), remote: .v4(IPv4Address(v)), key: key,
                                                         localBoot: bootID, remoteBoot: peerBoots[v])
            sealers[k] = try ESPSealer(pair.outbound)
        } catch {
            logger.warning("cannot make an outbound SA", metadata: ["vtep": "\(IPv4Address(v))", "tag": "\(key.tag)", "error": "\(error)"])
        }
    }

    private func publishTx() {
        var keys = TxKeys()
        if let ring {
            keys.hasKeys = true
            for v in vtepRefs.keys { if let s = sealers[SAKey(vtep: v, tag: ring.primary.tag)] { keys.sealers[v] = s } }
        }
        txKeys.withLock { $0 = keys }
    }

    private func startReceiver(local: IPv4Address, port: UInt16) throws(OverlayDriverError) {
        guard rawFD < 0 else { return }
        guard MMsg.send != nil, MMsg.recv != nil else {
            throw OverlayDriverError(.kernel, "the userspace datapath needs sendmmsg/recvmmsg, which this C library lacks")
        }
        let fd: Int32
        do {
            let encap = espEncapsulation
            fd = try host.namespace.run { () -> Int32 in
                let s: Int32
                var addr = sockaddr_in()
                if case .udp(let port) = encap {
                    s = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
                    addr.sin_port = port.bigEndian
                } else {
                    s = socket(AF_INET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), Int32(ESP.ipProtocol))
                }
                guard s >= 0 else { return -errno }
                addr.sin_family = sa_family_t(AF_INET)
                addr.sin_addr.s_addr = local.value.bigEndian
                let rc = withUnsafePointer(to: &addr) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                }
                guard rc == 0 else {
                    let e = errno
                    close(s)
                    return -e
                }
                var size: Int32 = 8 << 20
                _ = setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size))
                _ = setsockopt(s, SOL_SOCKET, SO_SNDBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size))
                return s
            }
        } catch {
            throw OverlayDriverError(.kernel, "cannot open the raw ESP socket in the host namespace: \(error)")
        }
        if case .udp(let port) = espEncapsulation, fd < 0 {
            throw OverlayDriverError(.kernel, "cannot open the ESP-in-UDP socket on \(local):\(port) in the host namespace: \(String(cString: strerror(-fd))) (another process may hold the port; choose another with .udp(port:) on both hosts)")
        }
        if case .udp = espEncapsulation {
            // A zero gso_size as the socket default: accepted only where UDP GSO exists.
            var zero: Int32 = 0
            udpGSO = setsockopt(fd, UDPOffload.solUDP, UDPOffload.segment, &zero, socklen_t(MemoryLayout<Int32>.size)) == 0
            var one: Int32 = 1
            udpGRO = setsockopt(fd, UDPOffload.solUDP, UDPOffload.gro, &one, socklen_t(MemoryLayout<Int32>.size)) == 0
            if !udpGSO || !udpGRO {
                logger.warning("ESP in UDP without kernel offloads: packets go one by one", metadata: ["gso": "\(udpGSO)", "gro": "\(udpGRO)"])
            }
        }
        guard fd >= 0 else {
            throw OverlayDriverError(.kernel, "cannot open a raw ESP (IP protocol 50) socket on \(local) in the host namespace: \(String(cString: strerror(-fd))) (the userspace datapath needs CAP_NET_RAW and the address on a host interface)")
        }
        guard let wake = WakePipe() else {
            close(fd)
            throw OverlayDriverError(.kernel, "cannot make a pipe for the RX thread (errno \(errno))")
        }
        guard let thread = WorkerThread(name: "ovl-esp-rx", { [self] in runRX(rawFD: fd, wake: wake, port: port, udp: espEncapsulation != .raw) }) else {
            close(fd)
            throw OverlayDriverError(.kernel, "cannot start the ESP receive thread")
        }
        rawFD = fd
        rxWake = wake
        rxThread = thread
    }

    private func stopReceiver() {
        guard rawFD >= 0 else { return }
        rxWake?.wake()
        rxThread?.join()
        rxThread = nil
        rxWake = nil
        close(rawFD)
        rawFD = -1
        udpGSO = false
        udpGRO = false
    }

    /// Stops every tunnel's thread and the receiver (what the driver's shutdown does through
    /// ``removeTunnel(_:in:)``; this is for a datapath used on its own).
    public func stop() {
        lock.lock()
        let all = Array(tunnels.values)
        tunnels = [:]
        rxTunnels.withLock { $0 = [:] }
        for t in all {
            t.wake.wake()
            t.thread?.join()
            t.thread = nil
            t.tap.close()
            removeCleartextDrop(table: t.tableName)
        }
        stopReceiver()
        lock.unlock()
    }

    // MARK: Cleartext drop rule

    private func installCleartextDrop(table: String, vni: UInt32, port: UInt16) throws(OverlayDriverError) {
        // VXLAN's VNI is bits 32..55 of its header, which starts after the 8-byte UDP header.
        let body = """
            chain input {
                type filter hook input priority -200; policy accept;
                udp dport \(port) @th,96,24 \(vni) counter drop
            }
            """
        do {
            try host.namespace.run { () throws in try PacketFilter().replaceTable(family: .ip, name: table, body: body) }
        } catch {
            throw OverlayDriverError(.kernel, "cannot install the cleartext-VXLAN drop rule for VNI \(vni) (nft table ip \(table)) in the host namespace: \(error)")
        }
    }

    private func removeCleartextDrop(table: String) {
        do {
            try host.namespace.run { () throws in _ = try PacketFilter().deleteTable(family: .ip, name: table) }
        } catch {
            logger.warning("cannot remove nft table", metadata: ["table": "\(table)", "error": "\(error)"])
        }
    }

    /// Cleartext VXLAN packets for `vni` dropped by the nftables rule (nil when it has no rule now).
    public func cleartextDrops(vni: VNI) -> UInt64? {
        let table = tableName(vni)
        guard let text = try? host.namespace.run({ () throws -> String in try PacketFilter().listTable(family: .ip, name: table) }) else {
            return nil
        }
        guard let r = text.range(of: "counter packets ") else { return nil }
        return UInt64(text[r.upperBound...].prefix { $0.isNumber })
    }

    /// Whether the nftables table for `vni` exists in the host namespace.
    public func hasCleartextDropRule(vni: VNI) -> Bool {
        let table = tableName(vni)
        return (try? host.namespace.run { () throws -> Bool in try PacketFilter().tableExists(family: .ip, name: table) }) ?? false
    }

    // MARK: Logging from the TX thread

    /// Called by a TX thread when its state changes (never under `lock`: removeTunnel holds it
    /// while joining the thread).
    func noteTxState(_ t: UserspaceTunnel, noKeys: Bool, sealError: String?) {
        t.lastError.withLock { $0 = sealError }
        if noKeys {
            logger.warning("network \(t.spec.network): no IPsec keys yet, sending nothing", metadata: ["vni": "\(t.vni)"])
        } else if let sealError {
            logger.error("network \(t.spec.network): sealing failed, dropping frames", metadata: ["vni": "\(t.vni)", "error": "\(sealError)"])
        } else {
            logger.notice("network \(t.spec.network): IPsec keys present, sending", metadata: ["vni": "\(t.vni)"])
        }
    }
}
