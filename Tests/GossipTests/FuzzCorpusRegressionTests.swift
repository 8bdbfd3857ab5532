import NIOCore
import OverlayCrypto
import Testing
@testable import Gossip

/// Inputs from the libFuzzer harness (Fuzz/Gossip, Scripts/fuzz.sh): its seeds and inputs it found
/// worth keeping, run through the same decoders as the harness in the normal test run.
@Suite struct FuzzCorpusRegressionTests {
    static let keyring = try! Keyring(primary: SecretKey(bytes: Array(0 ..< 16)))

    /// The harness body (Fuzz/Gossip/FuzzGossip.swift): every Gossip decoder over `bytes`.
    static func exercise(_ bytes: [UInt8]) {
        _ = try? MsgPack.decode(bytes)
        var reader = MsgPackReader(bytes, limits: MsgPackLimits(maxDepth: 8, maxBytesLength: 1 << 16, maxContainerCount: 1 << 12))
        while reader.remaining > 0, (try? reader.read()) != nil {}
        _ = try? PacketCodec.decode(bytes, keyring: nil)
        _ = try? PacketCodec.decode(bytes, keyring: keyring)
        _ = try? PacketCodec.decode(bytes, keyring: keyring, verifyIncoming: false)
        _ = try? PacketCodec.decode(bytes, keyring: nil, label: "fuzz")
        _ = try? StreamCodec.decode(bytes, keyring: nil)
        _ = try? StreamCodec.decode(bytes, keyring: keyring, verifyIncoming: false)
        var buffer = ByteBuffer(bytes: bytes)
        while buffer.readableBytes > 0, (try? buffer.readGossipStreamMessage(keyring: nil)) != nil {}
        var db = NetworkDBCore(config: NetworkDBConfig(nodeName: "fuzz"))
        _ = db.joinNetwork("n1", now: .zero)
        _ = db.receive(bytes, now: .seconds(1))
        _ = db.receive(TableWire.prefix + bytes, now: .seconds(2))
    }

    /// The harness's hand-made table seeds (Fuzz/Gossip/seeds/table-*) are well-formed table messages.
    static let tableSeeds: [[UInt8]] = [
        hex("f74e01920397a56e6f646541a26e31a9656e64706f696e7473a26b31c4017605c2"),
        hex("f74e019604a56e6f646541a26e3107c39197a56e6f646541a26e31a9656e64706f696e7473a26b31c4017605c2"),
        hex("f74e0192029194a56e6f646541a26e3103c2"),
    ]

    @Test func tableSeedsDecode() {
        for seed in Self.tableSeeds {
            #expect(TableWire.decode(seed) != nil, "seed \(seed)")
            var db = NetworkDBCore(config: NetworkDBConfig(nodeName: "fuzz"))
            _ = db.joinNetwork("n1", now: .zero)
            _ = db.receive(seed, now: .seconds(1))
            #expect(db.malformedMessages == 0)
            Self.exercise(seed)
        }
    }

    /// Every prefix of every seed (the serf captures and the table seeds) is refused or decoded,
    /// never a crash: the truncations the fuzzer starts from.
    @Test func truncatedSeeds() {
        let seeds = (serfPlainCapture + serfEncryptedCapture).map { hex($0.hex) } + Self.tableSeeds
        for seed in seeds {
            for n in stride(from: 0, through: seed.count, by: max(1, seed.count / 64)) { Self.exercise(Array(seed[..<n])) }
        }
    }
}
