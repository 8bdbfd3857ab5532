import Testing
@testable import Gossip

private func randomValue(_ rng: inout SeededRNG, depth: Int = 0) -> MsgPackValue {
    let pick = Int.random(in: 0 ..< (depth > 3 ? 7 : 9), using: &rng)
    switch pick {
    case 0: return .null
    case 1: return .bool(Bool.random(using: &rng))
    case 2:
        // Cover every integer width boundary.
        let edges: [Int64] = [0, 1, 127, 128, 255, 256, 65535, 65536, 4_294_967_295, 4_294_967_296, Int64.max,
                              -1, -32, -33, -128, -129, -32768, -32769, Int64(Int32.min), Int64(Int32.min) - 1, Int64.min]
        return Bool.random(using: &rng) ? .int(edges.randomElement(using: &rng)!) : .int(Int64.random(in: .min ... .max, using: &rng))
    case 3: return .uint(UInt64.random(in: UInt64(Int64.max) + 1 ... .max, using: &rng))
    case 4:
        let n = [0, 1, 31, 32, 255, 256, 300, 70000].randomElement(using: &rng)!
        return .str((0 ..< n).map { _ in UInt8.random(in: 0 ... 255, using: &rng) })
    case 5:
        let n = [0, 1, 255, 256, 65536].randomElement(using: &rng)!
        return .bin((0 ..< n).map { _ in UInt8.random(in: 0 ... 255, using: &rng) })
    case 6: return .float(Double(Int.random(in: -1000 ... 1000, using: &rng)) / 8)
    case 7:
        let n = [0, 1, 15, 16, 20].randomElement(using: &rng)!
        return .array((0 ..< n).map { _ in randomValue(&rng, depth: depth + 1) })
    default:
        let n = [0, 1, 15, 16, 17].randomElement(using: &rng)!
        return .map((0 ..< n).map { _ in MsgPackPair(randomValue(&rng, depth: depth + 1), randomValue(&rng, depth: depth + 1)) })
    }
}

@Suite struct MsgPackTests {
    @Test func roundTripRandomValues() throws {
        var rng = SeededRNG(seed: 0x5eed)
        for _ in 0 ..< 300 {
            let v = randomValue(&rng)
            let bytes = MsgPack.encode(v)
            #expect(try MsgPack.decode(bytes) == v)
        }
    }

    @Test func everyPrefixIsTruncatedNotACrash() throws {
        var rng = SeededRNG(seed: 42)
        for _ in 0 ..< 40 {
            let v = randomValue(&rng)
            let bytes = MsgPack.encode(v)
            guard bytes.count < 3000 else { continue }
            for cut in 0 ..< bytes.count {
                var r = MsgPackReader(Array(bytes[..<cut]))
                let err = #expect(throws: GossipCodecError.self) { try r.read() }
                #expect(err?.code == .truncated)
                #expect(r.offset == 0)
            }
        }
    }

    @Test func goCompatibleForms() {
        // go-msgpack's MsgpackHandle: no str8, unsigned forms for non-negative ints.
        #expect(MsgPack.encode(.str([UInt8](repeating: 0x61, count: 40))).prefix(3) == [0xda, 0x00, 0x28])
        #expect(MsgPack.encode(.int(7946)) == [0xcd, 0x1f, 0x0a])
        #expect(MsgPack.encode(.int(-1)) == [0xff])
        #expect(MsgPack.encode(.int(-200)) == [0xd1, 0xff, 0x38])
        #expect(MsgPack.encode(.int(200)) == [0xcc, 200])
        #expect(MsgPack.encode(.string("Node")) == [0xa4, 0x4e, 0x6f, 0x64, 0x65])
    }

    @Test func hostileInputIsRefusedWithTypedErrors() {
        // 1000 nested one-element arrays.
        let deep = [UInt8](repeating: 0x91, count: 1000) + [0xc0]
        #expect((try? MsgPack.decode(deep)) == nil)
        do { _ = try MsgPack.decode(deep) } catch let e as GossipCodecError { #expect(e.code == .tooDeep) } catch { Issue.record("untyped error") }
        // A 4 GiB string claim in a few bytes.
        let huge: [UInt8] = [0xdb, 0xff, 0xff, 0xff, 0xff, 0x00]
        do { _ = try MsgPack.decode(huge) } catch let e as GossipCodecError { #expect(e.code == .tooLarge) } catch { Issue.record("untyped error") }
        // An array claiming 4 billion elements.
        let wide: [UInt8] = [0xdd, 0xff, 0xff, 0xff, 0xff, 0x00]
        do { _ = try MsgPack.decode(wide) } catch let e as GossipCodecError { #expect(e.code == .tooLarge) } catch { Issue.record("untyped error") }
        do { _ = try MsgPack.decode([0xc1]) } catch let e as GossipCodecError { #expect(e.code == .invalidByte) } catch { Issue.record("untyped error") }
        do { _ = try MsgPack.decode([0xc0, 0xc0]) } catch let e as GossipCodecError { #expect(e.code == .malformed) } catch { Issue.record("untyped error") }
    }

    @Test func seededFuzzNeverCrashes() {
        var rng = SeededRNG(seed: 7)
        var decoded = 0
        for _ in 0 ..< 20000 {
            let n = Int.random(in: 0 ..< 64, using: &rng)
            let bytes = (0 ..< n).map { _ in UInt8.random(in: 0 ... 255, using: &rng) }
            if (try? MsgPack.decode(bytes)) != nil { decoded += 1 }
        }
        // Some random inputs are valid (e.g. a single fixint); most are not.
        #expect(decoded > 0 && decoded < 20000)
    }
}
