import Discovery
import Foundation
import OverlayModel
import Testing

func hex(_ s: String) -> [UInt8] {
    var out: [UInt8] = []
    var it = s.utf8.makeIterator()
    while let a = it.next(), let b = it.next() { out.append(UInt8(String(decoding: [a, b], as: UTF8.self), radix: 16)!) }
    return out
}

func name(_ s: String) -> DNSName { DNSName(s)! }

/// `dig @127.0.0.1 -p 5301 web.example A` (dig 9.18, Debian 12), captured with a UDP socket.
let digQuery = hex(
    "afec0120000100000000000103776562076578616d706c65000001000100002904d000000000000c000a00084f002a38b26622ad")
/// dnsmasq 2.89's reply to it from a hosts file with two addresses (`--addn-hosts`).
let dnsmasqReply = hex(
    "afec8580000100020000000103776562076578616d706c650000010001c00c000100010000000000040a000105c00c000100010000000000040a00010600002904d0000000000000")

@Suite struct CodecTests {
    @Test func digQueryDecodesAndEncodesByteForByte() throws {
        let m = try DNSMessage.decode(digQuery)
        #expect(m.id == 0xAFEC)
        #expect(!m.isResponse && m.recursionDesired && m.authenticData && m.opcode == 0)
        #expect(m.questions == [DNSQuestion(name: name("web.example"), type: .a)])
        #expect(m.answers.isEmpty && m.additionals.isEmpty)
        #expect(m.edns?.udpPayloadSize == 1232)
        #expect(m.edns?.version == 0 && m.edns?.dnssecOK == false)
        #expect(m.edns?.options == hex("000a00084f002a38b26622ad"))  // COOKIE
        #expect(m.encode() == digQuery)
    }

    @Test func dnsmasqReplyDecodesAndEncodesWithTheSameCompression() throws {
        let m = try DNSMessage.decode(dnsmasqReply)
        #expect(m.isResponse && m.authoritative && m.recursionAvailable && m.rcode == 0)
        #expect(m.answers.map(\.data) == [.a(IPv4Address(10, 0, 1, 5)), .a(IPv4Address(10, 0, 1, 6))])
        #expect(m.answers.allSatisfy { $0.name == name("WEB.example.") && $0.ttl == 0 })
        #expect(m.encode() == dnsmasqReply)
    }

    @Test func ourAnswerHasTheExactExpectedBytes() throws {
        var table = NameTable()
        table.upsert(EndpointName(id: "c1", network: "front", name: "web", ipv4: IPv4Address(10, 0, 1, 2)))
        let query = DNSMessage(id: 7, recursionDesired: true, questions: [DNSQuestion(name: name("web"), type: .a)])
        var rng = SystemRandomNumberGenerator()
        guard case .answer(let reply) = Resolver().resolve(query, client: ResolverClient(networks: ["front"]), table: table, rng: &rng)
        else {
            Issue.record("not answered")
            return
        }
        let expected = hex("0007" + "8580" + "0001000100000000" + "03776562000001" + "0001"
            + "c00c" + "0001" + "0001" + "00000258" + "0004" + "0a000102")
        #expect(reply.encode(limit: 512) == expected)
        // The raw-memory overload decodes the same.
        let viaRaw = try expected.withUnsafeBytes { raw throws(DNSError) in try DNSMessage.decode(raw) }
        #expect(viaRaw == reply)
    }

    @Test func everyRecordTypeRoundTrips() throws {
        let n = name("svc.example.org")
        var m = DNSMessage(id: 7, isResponse: true, authoritative: true, recursionDesired: true, recursionAvailable: true,
                           rcode: 3, questions: [DNSQuestion(name: n, type: .any)])
        m.answers = [
            DNSRecord(name: n, type: .a, ttl: 1, data: .a(IPv4Address(1, 2, 3, 4))),
            DNSRecord(name: n, type: .aaaa, ttl: 2, data: .aaaa(IPv6Address("2001:db8::1")!)),
            DNSRecord(name: n, type: .cname, ttl: 3, data: .cname(name("other.example.org"))),
            DNSRecord(name: n, type: .ptr, ttl: 4, data: .ptr(name("p.example.org"))),
            DNSRecord(name: n, type: .mx, ttl: 5, data: .mx(preference: 10, exchange: name("mail.example.org"))),
            DNSRecord(name: name("_http._tcp.svc.example.org"), type: .srv, ttl: 6,
                      data: .srv(priority: 1, weight: 2, port: 8080, target: name("t1.example.org"))),
            DNSRecord(name: n, type: .txt, ttl: 7, data: .raw([5] + Array("hello".utf8))),
        ]
        m.authorities = [
            DNSRecord(name: name("example.org"), type: .soa, ttl: 8,
                      data: .soa(mname: name("ns1.example.org"), rname: name("hostmaster.example.org"), serial: 1,
                                 refresh: 2, retry: 3, expire: 4, minimum: 5)),
            DNSRecord(name: name("example.org"), type: .ns, ttl: 9, data: .ns(name("ns1.example.org"))),
        ]
        m.additionals = [DNSRecord(name: name("ns1.example.org"), type: .a, ttl: 10, data: .a(IPv4Address(9, 9, 9, 9)))]
        m.edns = EDNS(udpPayloadSize: 4096, extendedRCode: 0, version: 0, dnssecOK: true, options: [0, 10, 0, 0])
        let wire = m.encode()
        #expect(try DNSMessage.decode(wire) == m)
        // Compression: "example.org" is written in full once, plus once inside the uncompressed SRV
        // target; without compression it would appear 13 times.
        let needle = Array("\u{7}example\u{3}org\u{0}".utf8)
        let occurrences = (0...(wire.count - needle.count)).filter { Array(wire[$0..<($0 + needle.count)]) == needle }
        #expect(occurrences.count == 2)
        // The SRV target is not compressed (RFC 2782).
        #expect(wire.contains(subsequence: Array("\u{2}t1\u{7}example\u{3}org\u{0}".utf8)))
    }

    @Test func namesParseCompareAndPrint() {
        #expect(DNSName("a.b") == DNSName("A.B."))
        #expect(DNSName("a.b")!.hashValue == DNSName("A.b.")!.hashValue)
        #expect(DNSName("a.b")!.description == "a.b.")
        #expect(DNSName(".") == .root && DNSName.root.description == ".")
        #expect(DNSName("") == nil && DNSName("a..b") == nil && DNSName("..") == nil)
        #expect(DNSName(String(repeating: "x", count: 63)) != nil)
        #expect(DNSName(String(repeating: "x", count: 64)) == nil)
        // 4 labels of 63 = 4 * 64 + 1 = 257 octets: too long; 3 labels + one of 61 = 255: fits.
        let l63 = String(repeating: "x", count: 63)
        #expect(DNSName([l63, l63, l63, l63].joined(separator: ".")) == nil)
        #expect(DNSName([l63, l63, l63, String(repeating: "y", count: 61)].joined(separator: "."))?.wireLength == 255)
        #expect(DNSName([l63, l63, l63, String(repeating: "y", count: 62)].joined(separator: ".")) == nil)
        #expect(DNSName(labels: [[UInt8(ascii: "a"), UInt8(ascii: ".")]])?.description == "a\\046.")
        #expect(DNSName("a")!.labelCount == 1 && DNSName("a.b.c")!.labels.count == 3)
    }

    @Test func pointerLoopsAndForwardPointersAreRefused() {
        let header: [UInt8] = [0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]
        // Pointer to itself.
        #expect(throws: DNSError.self) { try DNSMessage.decode(header + [0xC0, 12, 0, 1, 0, 1]) }
        // Two pointers pointing at each other: the label "a" at 12, then a pointer back to 12.
        #expect(decodeError(header + [1, 97, 0xC0, 12, 0, 1, 0, 1]) == .badPointer)
        // Forward pointer.
        #expect(decodeError(header + [0xC0, 16, 0, 1, 0, 1, 0]) == .badPointer)
        // Reserved label types.
        #expect(decodeError(header + [0x40, 0, 0, 1, 0, 1]) == .badLabel)
        #expect(decodeError(header + [0x80, 0, 0, 1, 0, 1]) == .badLabel)
    }

    @Test func longPointerChainsAreBoundedBy255Octets() {
        // A chain of "a" labels each pointing back to the previous one: 200 labels = 400 octets.
        var bytes: [UInt8] = [0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]
        bytes += [0]  // offset 12: root
        var prev = 12
        for _ in 0..<200 {
            let here = bytes.count
            bytes += [1, 97, 0xC0 | UInt8(prev >> 8), UInt8(prev & 0xFF)]
            prev = here
        }
        bytes[5] = 1
        let q = bytes.count
        bytes += [0xC0 | UInt8(prev >> 8), UInt8(prev & 0xFF), 0, 1, 0, 1]
        _ = q
        #expect(decodeError(bytes) != nil)
    }

    @Test func countsLengthsAndTrailingBytesAreChecked() {
        #expect(decodeError([0, 1, 1]) == .truncated)
        #expect(decodeError([0, 1, 1, 0, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0]) == .badCount)
        var m = DNSMessage(id: 1, questions: [DNSQuestion(name: name("a"), type: .a)])
        var wire = m.encode()
        #expect(decodeError(wire + [0]) == .trailingGarbage)
        m.answers = [DNSRecord(name: name("a"), type: .a, ttl: 1, data: .raw([1, 2, 3]))]
        wire = m.encode()
        #expect(decodeError(wire) == .badRData)  // an A record with 3 bytes
        m.answers = [DNSRecord(name: name("a"), type: .cname, ttl: 1, data: .raw([1, 97, 0, 0]))]
        #expect(decodeError(m.encode()) == .badRData)  // a name that does not fill RDLENGTH
        // Two OPT records, or an OPT in the answers.
        let opt: [UInt8] = [0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0]
        var two = DNSMessage(id: 1).encode()
        two[11] = 2
        #expect(decodeError(two + opt + opt) == .badOPT)
        var inAnswer = DNSMessage(id: 1).encode()
        inAnswer[7] = 1
        #expect(decodeError(inAnswer + opt) == .badOPT)
    }

    @Test func everyPrefixOfAValidMessageFailsCleanly() {
        for bytes in [digQuery, dnsmasqReply] {
            for n in 0..<bytes.count { #expect(throws: DNSError.self) { try DNSMessage.decode(Array(bytes[0..<n])) } }
        }
    }

    @Test func hundredAnswersAreTruncatedToTheLimitWithTC() throws {
        var m = DNSMessage(id: 9, isResponse: true, questions: [DNSQuestion(name: name("tasks.big"), type: .a)])
        for i in 0..<100 {
            m.answers.append(DNSRecord(name: name("tasks.big"), type: .a, ttl: 600, data: .a(IPv4Address(10, 0, 0, UInt8(i)))))
        }
        let full = m.encode()
        #expect(full.count > 512)
        let cut = m.encode(limit: 512)
        #expect(cut.count <= 512)
        let back = try DNSMessage.decode(cut)
        #expect(back.truncated && back.answers.isEmpty && back.questions == m.questions)
        // The OPT record survives truncation.
        m.edns = EDNS(udpPayloadSize: 1232)
        let cutOPT = try DNSMessage.decode(m.encode(limit: 512))
        #expect(cutOPT.truncated && cutOPT.edns != nil)
        // Over TCP everything fits.
        #expect(try DNSMessage.decode(m.encode(limit: 65535)).answers.count == 100)
        // Absurd limits still hold.
        #expect(m.encode(limit: 20).count <= 20)
        #expect(m.encode(limit: 0).count == 12)
    }

    @Test func ednsRulesAndUDPLimits() throws {
        var q = DNSMessage(id: 1, recursionDesired: true, questions: [DNSQuestion(name: name("web"), type: .a)])
        #expect(udpLimit(for: q) == 512)
        #expect(q.response(rcode: .noError).edns == nil)
        q.edns = EDNS(udpPayloadSize: 100)
        #expect(udpLimit(for: q) == 512)
        q.edns = EDNS(udpPayloadSize: 1232, dnssecOK: true)
        #expect(udpLimit(for: q) == 1232)
        q.edns = EDNS(udpPayloadSize: 65000, dnssecOK: true)
        #expect(udpLimit(for: q) == 4096)
        let r = q.response(rcode: .noError)
        #expect(r.edns?.udpPayloadSize == 1232 && r.edns?.version == 0 && r.edns?.dnssecOK == true)
        #expect(r.isResponse && r.recursionAvailable && r.recursionDesired && r.id == 1 && r.questions == q.questions)
        let bad = q.response(rcode: .badVers)
        #expect(bad.rcode == 0 && bad.edns?.extendedRCode == 1 && bad.fullRCode == 16 && bad.responseCode == .badVers)
        let back = try DNSMessage.decode(bad.encode())
        #expect(back.responseCode == .badVers)
    }

    @Test func formErrRepliesKeepTheIDOrDrop() {
        #expect(dnsFormErr(for: [1, 2, 3]) == nil)
        #expect(dnsFormErr(for: [0xAB, 0xCD, 0x80] + Array(repeating: 0, count: 9)) == nil)  // a response
        let r = dnsFormErr(for: [0xAB, 0xCD, 0x01, 0, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 99])
        #expect(r == [0xAB, 0xCD, 0x81, 0x81, 0, 0, 0, 0, 0, 0, 0, 0])
    }

    @Test func tcpFramingSplitsAndJoins() {
        let a = DNSMessage(id: 1, questions: [DNSQuestion(name: name("a"), type: .a)]).encode()
        let b = DNSMessage(id: 2, questions: [DNSQuestion(name: name("b"), type: .a)]).encode()
        let stream = DNSStream.frame(a) + DNSStream.frame(b)
        #expect(Array(stream[0..<2]) == [0, UInt8(a.count)])
        // Byte by byte.
        var r = DNSStreamReader()
        var got: [[UInt8]] = []
        for byte in stream {
            r.append([byte])
            while let m = r.next() { got.append(m) }
        }
        #expect(got == [a, b])
        #expect(r.bufferedCount == 0)
        // All at once.
        var r2 = DNSStreamReader()
        r2.append(stream)
        let first = r2.next(), second = r2.next(), third = r2.next()
        #expect(first == a && second == b && third == nil)
        // A reader that is not drained refuses more than one largest frame.
        var r3 = DNSStreamReader()
        let fits = r3.append([0xFF, 0xFF] + [UInt8](repeating: 0, count: 65535))
        let oneMore = r3.append([1])
        let refused = !r3.append([1])
        #expect(fits && oneMore && refused)
        let big = r3.next()
        #expect(big?.count == 65535)
    }

    @Test func randomCorruptionNeverCrashes() {
        var rng = SystemRandomNumberGenerator()
        let valid = [digQuery, dnsmasqReply, bigMessage()]
        var decoded = 0
        for i in 0..<3000 {
            var bytes = valid[i % valid.count]
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                case 1: bytes.removeLast(Int.random(in: 0..<min(bytes.count, 8), using: &rng))
                default: bytes.insert(UInt8.random(in: 0...255, using: &rng), at: Int.random(in: 0...bytes.count, using: &rng))
                }
                if bytes.isEmpty { bytes = [0] }
            }
            if let problem = checkDNSInput(bytes) {
                Issue.record("\(problem): \(bytes)")
                return
            }
            if (try? DNSMessage.decode(bytes)) != nil { decoded += 1 }
        }
        #expect(decoded > 0)  // some mutations stay valid, so the round-trip checks ran
    }

    @Test func fuzzSeedsReplay() throws {
        let dir = String(#filePath.dropLast("Tests/DiscoveryTests/CodecTests.swift".count)) + "Fuzz/DNS/seeds/"
        let names = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        #expect(names.count >= 12)
        for n in names {
            let bytes = try #require(readFile(dir + n), "seed \(n)")
            #expect(checkDNSInput(bytes) == nil, "seed \(n)")
        }
        #expect(readFile(dir + "dig-a-web-example") == digQuery)
    }
}

func decodeError(_ bytes: [UInt8]) -> DNSError.Code? {
    do {
        _ = try DNSMessage.decode(bytes)
        return nil
    } catch {
        return error.code
    }
}

func bigMessage() -> [UInt8] {
    var m = DNSMessage(id: 3, isResponse: true, questions: [DNSQuestion(name: name("_x._tcp.svc.net"), type: .srv)])
    for i in 0..<5 {
        let t = name("t\(i).net")
        m.answers.append(DNSRecord(name: name("_x._tcp.svc.net"), type: .srv, ttl: 1,
                                   data: .srv(priority: 0, weight: 0, port: 80, target: t)))
        m.additionals.append(DNSRecord(name: t, type: .a, ttl: 1, data: .a(IPv4Address(10, 0, 0, UInt8(i)))))
    }
    m.edns = EDNS()
    return m.encode()
}

func readFile(_ path: String) -> [UInt8]? { FileManager.default.contents(atPath: path).map { Array($0) } }

extension Array where Element == UInt8 {
    func contains(subsequence s: [UInt8]) -> Bool {
        guard s.count <= count else { return false }
        return (0...(count - s.count)).contains { Array(self[$0..<($0 + s.count)]) == s }
    }
}
