// gossip-bench: throughput of the Gossip codecs and core, each printed with a baseline measured in
// the same run (a raw CRC32 pass or raw AES-GCM over the same bytes), so the ratio shows what the
// framing, MessagePack and state machine add. Build in release: swift run -c release gossip-bench
import Gossip
import OverlayCrypto
import OverlayModel

@inline(never) func blackHole<T>(_ x: T) { withExtendedLifetime(x) {} }

func nsPerOp(_ iterations: Int, _ body: () throws -> Void) rethrows -> Double {
    for _ in 0 ..< max(1, iterations / 10) { try body() }  // warm up
    let start = ContinuousClock.now
    for _ in 0 ..< iterations { try body() }
    let d = ContinuousClock.now - start
    return (Double(d.components.seconds) * 1e9 + Double(d.components.attoseconds) / 1e9) / Double(iterations)
}

func report(_ name: String, _ ns: Double, baseline: (String, Double)? = nil) {
    let padded = name + String(repeating: " ", count: max(0, 48 - name.count))
    var line = "\(padded) \(Int(ns.rounded())) ns/op"
    if let (b, bns) = baseline {
        let tenths = Int((ns / bns * 10).rounded())
        line += "   (\(tenths / 10).\(tenths % 10)x \(b))"
    }
    print(line)
}

let addr = NodeAddress(ip: IPAddress("10.0.0.1")!, port: 7946)
let alive = GossipMessage.alive(AliveMessage(incarnation: 7, node: "node-0001", address: addr, meta: SerfTags.encode(["role": "worker"]), versions: .serfCompatible))
let ping = GossipMessage.ping(PingMessage(seqNo: 1234, node: "node-0002", source: addr, sourceNode: "node-0001"))
let packet = try PacketCodec.encode([ping.encode(), alive.encode(), alive.encode()], crc: true, keyring: nil)

print("gossip-bench: \(packet.count)-byte packet (ping + 2 alives, CRC)")
let crc = nsPerOp(200_000) { blackHole(CRC32.checksum(packet)) }
report("baseline: CRC32 of the packet", crc)
report("PacketCodec.decode (plain)", try nsPerOp(50_000) { blackHole(try PacketCodec.decode(packet, keyring: nil)) }, baseline: ("CRC32", crc))
report("PacketCodec.encode (plain)", nsPerOp(50_000) { blackHole(try? PacketCodec.encode([ping.encode(), alive.encode(), alive.encode()], crc: true, keyring: nil)) }, baseline: ("CRC32", crc))

let key = try SecretKey.random(byteCount: 32)
let nonce = try SecureRandom.bytes(count: 12)
let ring = try Keyring(primary: key)
let sealed = try PacketCodec.encode([ping.encode(), alive.encode(), alive.encode()], crc: true, keyring: ring)
let aes = try nsPerOp(50_000) { blackHole(try AESGCM.openCombined(AESGCM.sealCombined(packet, key: key, nonce: nonce), key: key, nonce: nonce)) }
report("baseline: AES-256-GCM seal+open of the packet", aes)
report("encrypted encode+decode", try nsPerOp(20_000) {
    blackHole(try PacketCodec.decode(PacketCodec.encode([ping.encode(), alive.encode(), alive.encode()], crc: true, keyring: ring), keyring: ring))
}, baseline: ("AES-GCM", aes))
var rotated = try Keyring(primary: try SecretKey.random(byteCount: 32))
try rotated.install(try SecretKey.random(byteCount: 32))
try rotated.install(key)
report("decrypt with the right key 3rd of 3", try nsPerOp(20_000) { blackHole(try PacketCodec.decode(sealed, keyring: rotated)) },
       baseline: ("1st of 1", try nsPerOp(20_000) { blackHole(try PacketCodec.decode(sealed, keyring: ring)) }))

let nodes = (0 ..< 1000).map { i in
    PushNodeState(name: "node-\(i)", address: NodeAddress(ip: .v4(IPv4Address(UInt32(0x0a00_0000 + i))), port: 7946),
                  meta: SerfTags.encode(["role": "worker"]), incarnation: UInt32(i), state: .alive, versions: .serfCompatible)
}
let state = GossipMessage.pushPull(PushPullMessage(join: false, nodes: nodes))
let stream = try StreamCodec.encode(state, keyring: nil)
let streamCrc = nsPerOp(200) { blackHole(CRC32.checksum(stream)) }
print("push-pull of 1000 nodes: \(stream.count) bytes")
report("baseline: CRC32 of the stream", streamCrc)
report("StreamCodec.decode (1000 nodes)", try nsPerOp(50) { blackHole(try StreamCodec.decode(stream, keyring: nil)) }, baseline: ("CRC32", streamCrc))

var core = try SwimCore(config: SwimConfig(name: "bench", advertise: addr, randomSeed: 1))
_ = core.start(now: .zero)
for n in nodes.prefix(100) {
    _ = core.onMessages([.alive(AliveMessage(incarnation: 1, node: n.name, address: n.address, meta: [], versions: .serfCompatible))], from: n.address, now: .zero)
}
var t = Duration.zero
let handle = nsPerOp(50_000) {
    t += .microseconds(1)
    blackHole(core.onMessages([.ping(PingMessage(seqNo: 1, node: "bench"))], from: nodes[1].address, now: t))
}
report("SwimCore: answer a ping (100 members)", handle, baseline: ("CRC32 of a packet", crc))
