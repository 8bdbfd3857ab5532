// libFuzzer harness for the Gossip decoders. See Documentation/Fuzzing.md.
import NIOCore
import OverlayCrypto
import Gossip

/// The key the serf test vectors were captured with (bytes 00 01 .. 0f).
let vectorKeyring = try! Keyring(primary: SecretKey(bytes: Array(0 ..< 16)))

/// Runs one input through every Gossip decoder: MessagePack, the UDP packet codec (plain, with a
/// keyring, with a keyring that also accepts plaintext, with a label), the TCP stream codec and its
/// ByteBuffer reader, and the NetworkDB table wire. Bad input must throw or return nil, never crash.
func fuzzGossip(_ bytes: [UInt8]) {
    _ = try? MsgPack.decode(bytes)
    var reader = MsgPackReader(bytes, limits: MsgPackLimits(maxDepth: 8, maxBytesLength: 1 << 16, maxContainerCount: 1 << 12))
    while reader.remaining > 0, (try? reader.read()) != nil {}

    _ = try? PacketCodec.decode(bytes, keyring: nil)
    _ = try? PacketCodec.decode(bytes, keyring: vectorKeyring)
    _ = try? PacketCodec.decode(bytes, keyring: vectorKeyring, verifyIncoming: false)
    _ = try? PacketCodec.decode(bytes, keyring: nil, label: "fuzz")

    _ = try? StreamCodec.decode(bytes, keyring: nil)
    _ = try? StreamCodec.decode(bytes, keyring: vectorKeyring, verifyIncoming: false)
    var buffer = ByteBuffer(bytes: bytes)
    while buffer.readableBytes > 0, (try? buffer.readGossipStreamMessage(keyring: nil)) != nil {}
    var packet = ByteBuffer(bytes: bytes)
    _ = try? packet.readGossipPacket(keyring: nil)

    var db = NetworkDBCore(config: NetworkDBConfig(nodeName: "fuzz"))
    _ = db.joinNetwork("n1", now: .zero)
    _ = db.receive(bytes, now: .seconds(1))
    if !TableWire.isTableMessage(bytes) {
        _ = db.receive(TableWire.prefix + bytes, now: .seconds(2))
    }
    _ = db.visibleEntries()
    _ = db.localState()
}

/// The libFuzzer entry point.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    fuzzGossip(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

/// Under Scripts/fuzz.sh (-DFUZZING) runs libFuzzer; in a plain build replays the files named as
/// arguments (a corpus or a crash input) through the same function.
@main struct Main {
    static func main() {
        #if FUZZING
        runLibFuzzer(fuzzOneInput)
        #else
        replayFiles(name: "fuzz-gossip", fuzzGossip)
        #endif
    }
}
