import OverlayModel

/// memberlist's message type byte (net.go `messageType`): the first byte of every packet or stream.
public enum MessageType: UInt8, Sendable, CaseIterable {
    /// Direct probe.
    case ping = 0
    /// Ask a peer to probe a target for us.
    case indirectPing = 1
    /// Probe answered.
    case ack = 2
    /// A node is suspected.
    case suspect = 3
    /// A node is alive (also join and refutation).
    case alive = 4
    /// A node is dead (or left, when `from == node`).
    case dead = 5
    /// TCP state exchange.
    case pushPull = 6
    /// Several messages in one packet.
    case compound = 7
    /// Opaque payload for the layer above.
    case user = 8
    /// LZW-compressed message.
    case compress = 9
    /// AES-GCM encrypted TCP stream.
    case encrypt = 10
    /// An indirect probe reached no one.
    case nack = 11
    /// CRC32-checked packet.
    case hasCrc = 12
    /// Error reply on a stream.
    case err = 13
}

/// A node's address on the gossip network: IP plus UDP/TCP port.
public struct NodeAddress: Hashable, Sendable, CustomStringConvertible {
    /// The IP address.
    public var ip: IPAddress
    /// The UDP and TCP port.
    public var port: UInt16
    /// Makes an address.
    public init(ip: IPAddress, port: UInt16) {
        self.ip = ip
        self.port = port
    }
    /// `1.2.3.4:7946` or `[::1]:7946`.
    public var description: String {
        ip.family == .v4 ? "\(ip):\(port)" : "[\(ip)]:\(port)"
    }
    /// memberlist's `Addr` bytes: 4 for IPv4, 16 for IPv6.
    var wireBytes: [UInt8] { ip.bytes }
    /// Parses memberlist `Addr` bytes (4, 16, or 16 IPv4-mapped); nil for any other length.
    static func ip(fromWire b: [UInt8]) -> IPAddress? {
        if b.count == 4, let v4 = IPv4Address(bytes: b) { return .v4(v4) }
        if b.count == 16, let v6 = IPv6Address(bytes: b) {
            if let m = v6.mappedIPv4 { return .v4(m) }
            return .v6(v6)
        }
        return nil
    }
}

/// Protocol and delegate versions a node speaks (memberlist `Vsn`: pmin, pmax, pcur, dmin, dmax, dcur).
public struct ProtocolVersions: Hashable, Sendable {
    /// Lowest memberlist protocol understood.
    public var protocolMin: UInt8
    /// Highest memberlist protocol understood.
    public var protocolMax: UInt8
    /// memberlist protocol spoken.
    public var protocolCurrent: UInt8
    /// Lowest delegate (serf) protocol understood.
    public var delegateMin: UInt8
    /// Highest delegate (serf) protocol understood.
    public var delegateMax: UInt8
    /// Delegate protocol spoken.
    public var delegateCurrent: UInt8
    /// Makes a version set.
    public init(protocolMin: UInt8, protocolMax: UInt8, protocolCurrent: UInt8, delegateMin: UInt8, delegateMax: UInt8, delegateCurrent: UInt8) {
        self.protocolMin = protocolMin
        self.protocolMax = protocolMax
        self.protocolCurrent = protocolCurrent
        self.delegateMin = delegateMin
        self.delegateMax = delegateMax
        self.delegateCurrent = delegateCurrent
    }
    /// memberlist 1..5 speaking 2, delegate 2..5 speaking 5: what serf 0.9.4 speaks and expects of its peers.
    public static let serfCompatible = ProtocolVersions(protocolMin: 1, protocolMax: 5, protocolCurrent: 2, delegateMin: 2, delegateMax: 5, delegateCurrent: 5)
    /// memberlist 1..5 speaking 2 with no delegate versions (0, 0, 0): what a plain memberlist user
    /// such as Docker's NetworkDB advertises. memberlist refuses a push-pull whose delegate version
    /// ranges do not overlap, so pick this one to join such a cluster.
    public static let plainMemberlist = ProtocolVersions(protocolMin: 1, protocolMax: 5, protocolCurrent: 2, delegateMin: 0, delegateMax: 0, delegateCurrent: 0)
    /// All zero: what a node that sent no `Vsn` is taken to speak.
    public static let unknown = ProtocolVersions(protocolMin: 0, protocolMax: 0, protocolCurrent: 0, delegateMin: 0, delegateMax: 0, delegateCurrent: 0)
    var wire: [UInt8] { [protocolMin, protocolMax, protocolCurrent, delegateMin, delegateMax, delegateCurrent] }
    init?(wire b: [UInt8]) {
        guard b.count >= 6 else { return nil }
        self.init(protocolMin: b[0], protocolMax: b[1], protocolCurrent: b[2], delegateMin: b[3], delegateMax: b[4], delegateCurrent: b[5])
    }
}

/// A member's state (memberlist `NodeStateType`).
public enum MemberState: Int, Sendable, Hashable, CustomStringConvertible {
    /// Answering probes.
    case alive = 0
    /// Missed a probe; will be declared dead unless it refutes.
    case suspect = 1
    /// Confirmed failed.
    case dead = 2
    /// Left on purpose.
    case left = 3
    /// `alive`, `suspect`, `dead` or `left`.
    public var description: String {
        switch self {
        case .alive: "alive"
        case .suspect: "suspect"
        case .dead: "dead"
        case .left: "left"
        }
    }
}

/// `ping` (net.go): a direct probe, answered with an `ack` carrying the same sequence number.
public struct PingMessage: Sendable, Hashable {
    /// Matches the ack to the probe.
    public var seqNo: UInt32
    /// Intended recipient's name (guards against a restarted node with a new name).
    public var node: String
    /// Where to send the ack (empty: the packet's source).
    public var source: NodeAddress?
    /// Sender's name.
    public var sourceNode: String
    /// Makes a ping.
    public init(seqNo: UInt32, node: String, source: NodeAddress? = nil, sourceNode: String = "") {
        self.seqNo = seqNo
        self.node = node
        self.source = source
        self.sourceNode = sourceNode
    }
}

/// `indirectPingReq`: ask a peer to probe `target` for us.
public struct IndirectPingMessage: Sendable, Hashable {
    /// Sequence number of the original probe.
    public var seqNo: UInt32
    /// Node to probe.
    public var target: NodeAddress
    /// Its name.
    public var node: String
    /// Whether the requester wants a nack on timeout (protocol >= 4).
    public var nack: Bool
    /// Where to send the ack/nack.
    public var source: NodeAddress?
    /// Requester's name.
    public var sourceNode: String
    /// Makes an indirect ping request.
    public init(seqNo: UInt32, target: NodeAddress, node: String, nack: Bool, source: NodeAddress? = nil, sourceNode: String = "") {
        self.seqNo = seqNo
        self.target = target
        self.node = node
        self.nack = nack
        self.source = source
        self.sourceNode = sourceNode
    }
}

/// `suspect`/`dead` share a shape: incarnation, node, and who accuses it.
public struct AccusationMessage: Sendable, Hashable {
    /// Incarnation being accused.
    public var incarnation: UInt32
    /// Accused node.
    public var node: String
    /// Accuser (for `dead`, `from == node` means the node left).
    public var from: String
    /// Makes an accusation.
    public init(incarnation: UInt32, node: String, from: String) {
        self.incarnation = incarnation
        self.node = node
        self.from = from
    }
}

/// `alive`: a node's address, metadata and versions at an incarnation.
public struct AliveMessage: Sendable, Hashable {
    /// Incarnation; higher wins.
    public var incarnation: UInt32
    /// Node name.
    public var node: String
    /// Address and port.
    public var address: NodeAddress
    /// Opaque metadata (serf: tags).
    public var meta: [UInt8]
    /// Versions spoken.
    public var versions: ProtocolVersions
    /// Makes an alive message.
    public init(incarnation: UInt32, node: String, address: NodeAddress, meta: [UInt8], versions: ProtocolVersions) {
        self.incarnation = incarnation
        self.node = node
        self.address = address
        self.meta = meta
        self.versions = versions
    }
}

/// One node in a push-pull exchange (`pushNodeState`).
public struct PushNodeState: Sendable, Hashable {
    /// Node name.
    public var name: String
    /// Address and port.
    public var address: NodeAddress
    /// Metadata.
    public var meta: [UInt8]
    /// Incarnation.
    public var incarnation: UInt32
    /// State as the sender sees it.
    public var state: MemberState
    /// Versions spoken.
    public var versions: ProtocolVersions
    /// Makes a node state.
    public init(name: String, address: NodeAddress, meta: [UInt8], incarnation: UInt32, state: MemberState, versions: ProtocolVersions) {
        self.name = name
        self.address = address
        self.meta = meta
        self.incarnation = incarnation
        self.state = state
        self.versions = versions
    }
}

/// A full push-pull exchange: header flag, node states and the delegate's user state.
public struct PushPullMessage: Sendable, Hashable {
    /// True when sent as part of a join.
    public var join: Bool
    /// All nodes the sender knows.
    public var nodes: [PushNodeState]
    /// Delegate state (serf's), opaque here.
    public var userState: [UInt8]
    /// Makes a push-pull message.
    public init(join: Bool, nodes: [PushNodeState], userState: [UInt8] = []) {
        self.join = join
        self.nodes = nodes
        self.userState = userState
    }
}

/// One decoded memberlist message (not compound, compress or encrypt, which are framing).
public enum GossipMessage: Sendable, Hashable {
    /// Direct probe.
    case ping(PingMessage)
    /// Indirect probe request.
    case indirectPing(IndirectPingMessage)
    /// Probe answer (with optional payload).
    case ack(seqNo: UInt32, payload: [UInt8])
    /// Indirect probe failed.
    case nack(seqNo: UInt32)
    /// Suspicion.
    case suspect(AccusationMessage)
    /// Alive/join/refute.
    case alive(AliveMessage)
    /// Death or leave.
    case dead(AccusationMessage)
    /// Opaque payload for the layer above.
    case user([UInt8])
    /// State exchange (streams only).
    case pushPull(PushPullMessage)
    /// Error text from the remote (streams only).
    case err(String)

    /// The message type byte.
    public var type: MessageType {
        switch self {
        case .ping: .ping
        case .indirectPing: .indirectPing
        case .ack: .ack
        case .nack: .nack
        case .suspect: .suspect
        case .alive: .alive
        case .dead: .dead
        case .user: .user
        case .pushPull: .pushPull
        case .err: .err
        }
    }
}

// MARK: - MessagePack mapping (Go field names, keys sorted as go-msgpack writes them)

private func field(_ k: String, _ v: MsgPackValue) -> MsgPackPair { MsgPackPair(.string(k), v) }
private func u(_ v: some BinaryInteger) -> MsgPackValue { .int(Int64(v)) }

/// Reads a Go struct encoded as a map with string keys; missing fields read as zero like Go's decoder.
struct GoStruct {
    var fields: [String: MsgPackValue] = [:]
    let what: String

    init(_ v: MsgPackValue, _ what: String) throws {
        self.what = what
        guard case .map(let pairs) = v else {
            throw GossipCodecError(.typeMismatch, "\(what): expected a MessagePack map")
        }
        for p in pairs {
            guard let k = p.key.text else { throw GossipCodecError(.typeMismatch, "\(what): non-string map key") }
            fields[k] = p.value
        }
    }

    func uint<T: FixedWidthInteger & UnsignedInteger>(_ k: String, _: T.Type = T.self) throws -> T {
        guard let v = fields[k], v != .null else { return 0 }
        guard let x = v.uint64, let t = T(exactly: x) else {
            throw GossipCodecError(.typeMismatch, "\(what).\(k): expected an unsigned integer up to \(T.max)")
        }
        return t
    }

    func int(_ k: String) throws -> Int {
        guard let v = fields[k], v != .null else { return 0 }
        guard case .int(let x) = v, let i = Int(exactly: x) else {
            throw GossipCodecError(.typeMismatch, "\(what).\(k): expected an integer")
        }
        return i
    }

    func bool(_ k: String) throws -> Bool {
        guard let v = fields[k], v != .null else { return false }
        guard case .bool(let b) = v else { throw GossipCodecError(.typeMismatch, "\(what).\(k): expected a bool") }
        return b
    }

    func bytes(_ k: String) throws -> [UInt8] {
        guard let v = fields[k], v != .null else { return [] }
        if let b = v.bytes { return b }
        // Go also accepts an array of small integers for []byte.
        if case .array(let items) = v {
            return try items.map {
                guard let x = $0.uint64, let b = UInt8(exactly: x) else {
                    throw GossipCodecError(.typeMismatch, "\(what).\(k): expected bytes")
                }
                return b
            }
        }
        throw GossipCodecError(.typeMismatch, "\(what).\(k): expected bytes")
    }

    func string(_ k: String) throws -> String { String(decoding: try bytes(k), as: UTF8.self) }

    func address(_ addrKey: String, _ portKey: String) throws -> NodeAddress {
        let raw = try bytes(addrKey)
        guard let ip = NodeAddress.ip(fromWire: raw) else {
            throw GossipCodecError(.typeMismatch, "\(what).\(addrKey): \(raw.count)-byte address; expected 4 or 16 bytes")
        }
        return NodeAddress(ip: ip, port: try uint(portKey))
    }

    func optionalAddress(_ addrKey: String, _ portKey: String) throws -> NodeAddress? {
        let raw = try bytes(addrKey)
        let port: UInt16 = try uint(portKey)
        guard !raw.isEmpty, port != 0, let ip = NodeAddress.ip(fromWire: raw) else { return nil }
        return NodeAddress(ip: ip, port: port)
    }
}

extension PingMessage {
    var msgpack: MsgPackValue {
        var f = [field("Node", .string(node)), field("SeqNo", u(seqNo))]
        if let s = source { f.append(field("SourceAddr", .str(s.wireBytes))) }
        if !sourceNode.isEmpty { f.append(field("SourceNode", .string(sourceNode))) }
        if let s = source, s.port != 0 { f.append(field("SourcePort", u(s.port))) }
        return .map(f)
    }
    init(msgpack v: MsgPackValue) throws {
        let g = try GoStruct(v, "ping")
        self.init(seqNo: try g.uint("SeqNo"), node: try g.string("Node"), source: try g.optionalAddress("SourceAddr", "SourcePort"), sourceNode: try g.string("SourceNode"))
    }
}

extension IndirectPingMessage {
    var msgpack: MsgPackValue {
        var f = [field("Nack", .bool(nack)), field("Node", .string(node)), field("Port", u(target.port)), field("SeqNo", u(seqNo))]
        if let s = source { f.append(field("SourceAddr", .str(s.wireBytes))) }
        if !sourceNode.isEmpty { f.append(field("SourceNode", .string(sourceNode))) }
        if let s = source, s.port != 0 { f.append(field("SourcePort", u(s.port))) }
        f.append(field("Target", .str(target.wireBytes)))
        return .map(f)
    }
    init(msgpack v: MsgPackValue) throws {
        let g = try GoStruct(v, "indirectPingReq")
        self.init(seqNo: try g.uint("SeqNo"), target: try g.address("Target", "Port"), node: try g.string("Node"), nack: try g.bool("Nack"),
                  source: try g.optionalAddress("SourceAddr", "SourcePort"), sourceNode: try g.string("SourceNode"))
    }
}

extension AccusationMessage {
    var msgpack: MsgPackValue {
        .map([field("From", .string(from)), field("Incarnation", u(incarnation)), field("Node", .string(node))])
    }
    init(msgpack v: MsgPackValue, _ what: String) throws {
        let g = try GoStruct(v, what)
        self.init(incarnation: try g.uint("Incarnation"), node: try g.string("Node"), from: try g.string("From"))
    }
}

extension AliveMessage {
    var msgpack: MsgPackValue {
        .map([field("Addr", .str(address.wireBytes)), field("Incarnation", u(incarnation)), field("Meta", .str(meta)),
              field("Node", .string(node)), field("Port", u(address.port)), field("Vsn", .str(versions.wire))])
    }
    init(msgpack v: MsgPackValue) throws {
        let g = try GoStruct(v, "alive")
        let vsn = try g.bytes("Vsn")
        guard vsn.isEmpty || vsn.count >= 6 else {
            throw GossipCodecError(.typeMismatch, "alive.Vsn: \(vsn.count) bytes; expected 6")
        }
        self.init(incarnation: try g.uint("Incarnation"), node: try g.string("Node"), address: try g.address("Addr", "Port"),
                  meta: try g.bytes("Meta"), versions: ProtocolVersions(wire: vsn) ?? .unknown)
    }
}

extension PushNodeState {
    var msgpack: MsgPackValue {
        .map([field("Addr", .str(address.wireBytes)), field("Incarnation", u(incarnation)), field("Meta", .str(meta)),
              field("Name", .string(name)), field("Port", u(address.port)), field("State", u(state.rawValue)), field("Vsn", .str(versions.wire))])
    }
    init(msgpack v: MsgPackValue) throws {
        let g = try GoStruct(v, "pushNodeState")
        guard let st = MemberState(rawValue: try g.int("State")) else {
            throw GossipCodecError(.typeMismatch, "pushNodeState.State: not 0...3")
        }
        let vsn = try g.bytes("Vsn")
        guard vsn.isEmpty || vsn.count >= 6 else {
            throw GossipCodecError(.typeMismatch, "pushNodeState.Vsn: \(vsn.count) bytes; expected 6")
        }
        self.init(name: try g.string("Name"), address: try g.address("Addr", "Port"), meta: try g.bytes("Meta"),
                  incarnation: try g.uint("Incarnation"), state: st, versions: ProtocolVersions(wire: vsn) ?? .unknown)
    }
}

extension GossipMessage {
    /// Encodes the message as memberlist does: type byte, then the MessagePack body (user and
    /// push-pull carry raw bytes after it).
    public func encode() -> [UInt8] {
        var out: [UInt8] = [type.rawValue]
        switch self {
        case .ping(let p): MsgPack.encode(p.msgpack, into: &out)
        case .indirectPing(let p): MsgPack.encode(p.msgpack, into: &out)
        case .ack(let seq, let payload):
            MsgPack.encode(.map([field("Payload", payload.isEmpty ? .null : .str(payload)), field("SeqNo", u(seq))]), into: &out)
        case .nack(let seq): MsgPack.encode(.map([field("SeqNo", u(seq))]), into: &out)
        case .suspect(let s), .dead(let s): MsgPack.encode(s.msgpack, into: &out)
        case .alive(let a): MsgPack.encode(a.msgpack, into: &out)
        case .user(let b): out.append(contentsOf: b)
        case .err(let e): MsgPack.encode(.map([field("Error", .string(e))]), into: &out)
        case .pushPull(let pp):
            MsgPack.encode(.map([field("Join", .bool(pp.join)), field("Nodes", u(pp.nodes.count)), field("UserStateLen", u(pp.userState.count))]), into: &out)
            for n in pp.nodes { MsgPack.encode(n.msgpack, into: &out) }
            out.append(contentsOf: pp.userState)
        }
        return out
    }

    /// Decodes one message body of type `type` from `reader`. Push-pull reads its node states and
    /// user state; `.truncated` means more bytes are needed. User packets take everything left.
    static func decodeBody(_ type: MessageType, _ r: inout MsgPackReader, limits: WireLimits) throws -> GossipMessage {
        switch type {
        case .ping: return .ping(try PingMessage(msgpack: r.read()))
        case .indirectPing: return .indirectPing(try IndirectPingMessage(msgpack: r.read()))
        case .ack:
            let g = try GoStruct(r.read(), "ackResp")
            return .ack(seqNo: try g.uint("SeqNo"), payload: try g.bytes("Payload"))
        case .nack:
            let g = try GoStruct(r.read(), "nackResp")
            return .nack(seqNo: try g.uint("SeqNo"))
        case .suspect: return .suspect(try AccusationMessage(msgpack: r.read(), "suspect"))
        case .dead: return .dead(try AccusationMessage(msgpack: r.read(), "dead"))
        case .alive: return .alive(try AliveMessage(msgpack: r.read()))
        case .err:
            let g = try GoStruct(r.read(), "errResp")
            return .err(try g.string("Error"))
        case .user: return .user(try r.readRaw(r.remaining))
        case .pushPull:
            let start = r
            do {
                let g = try GoStruct(r.read(), "pushPullHeader")
                let n = try g.int("Nodes"), userLen = try g.int("UserStateLen")
                guard n >= 0, n <= limits.maxPushNodes, userLen >= 0, userLen <= limits.maxStreamBytes else {
                    throw GossipCodecError(.tooLarge, "push-pull header claims \(n) nodes and \(userLen) user bytes; limits are \(limits.maxPushNodes) and \(limits.maxStreamBytes)")
                }
                var nodes: [PushNodeState] = []
                nodes.reserveCapacity(min(n, 1024))
                for _ in 0 ..< n { nodes.append(try PushNodeState(msgpack: r.read())) }
                let user = try r.readRaw(userLen)
                return .pushPull(PushPullMessage(join: try g.bool("Join"), nodes: nodes, userState: user))
            } catch {
                r = start
                throw error
            }
        case .compound, .compress, .encrypt, .hasCrc:
            throw GossipCodecError(.malformed, "\(type) is framing, not a message body")
        }
    }
}
