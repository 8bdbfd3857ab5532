import Discovery
import OverlayModel
import Testing

let up1 = Upstream(address: .v4(IPv4Address(192, 0, 2, 1)))
let up2 = Upstream(address: .v4(IPv4Address(192, 0, 2, 2)), port: 5353)
let up3 = Upstream(address: .v6(IPv6Address("2001:db8::3")!))
let up4 = Upstream(address: .v4(IPv4Address(192, 0, 2, 4)))

func query(_ id: UInt16, _ qname: String = "example.com") -> DNSMessage {
    DNSMessage(id: id, recursionDesired: true, questions: [DNSQuestion(name: DNSName(qname)!, type: .a)])
}

/// What an upstream would answer to `sent`.
func upstreamReply(to sent: [UInt8], address: IPv4Address = IPv4Address(93, 184, 216, 34)) -> [UInt8] {
    var m = try! DNSMessage.decode(sent)
    m = m.response(rcode: .noError)
    m.answers = [DNSRecord(name: m.questions[0].name, type: .a, ttl: 60, data: .a(address))]
    return m.encode()
}

func sends(_ actions: [ForwarderAction]) -> [([UInt8], Upstream)] {
    actions.compactMap { if case .send(let b, let u) = $0 { (b, u) } else { nil } }
}

func replies(_ actions: [ForwarderAction]) -> [([UInt8], UInt64)] {
    actions.compactMap { if case .reply(let b, let c) = $0 { (b, c) } else { nil } }
}

@Suite struct ForwarderTests {
    @Test func idsAreRemappedAndRestored() throws {
        var f = ForwarderCore(upstreams: [up1, up2, up3, up4], seed: 42)
        #expect(f.upstreams == [up1, up2, up3])
        let out = sends(f.forward(query(0x1111), client: 77, now: .seconds(1)))
        #expect(out.count == 1 && out[0].1 == up1)
        let sent = try DNSMessage.decode(out[0].0)
        #expect(sent.questions == query(0x1111).questions && sent.recursionDesired)
        #expect(f.inFlight == 1 && f.nextDeadline == .seconds(3))
        let back = replies(f.receive(upstreamReply(to: out[0].0), from: up1, now: .seconds(1.1)))
        #expect(back.count == 1 && back[0].1 == 77)
        let msg = try DNSMessage.decode(back[0].0)
        #expect(msg.id == 0x1111 && msg.answers.count == 1)
        #expect(f.inFlight == 0 && f.nextDeadline == nil)
        #expect(f.counters.forwarded == 1 && f.counters.answered == 1 && f.counters.droppedResponses == 0)
        // The same reply again is a drop.
        #expect(f.receive(upstreamReply(to: out[0].0), from: up1, now: .seconds(1.2)).isEmpty)
        #expect(f.counters.droppedResponses == 1)
    }

    @Test func inFlightIDsAreUnique() throws {
        var f = ForwarderCore(upstreams: [up1], maxInFlight: 5000, seed: 7)
        var ids = Set<UInt16>()
        for i in 0..<5000 {
            let out = sends(f.forward(query(1), client: UInt64(i), now: .zero))
            ids.insert(try DNSMessage.decode(out[0].0).id)
        }
        #expect(ids.count == 5000)
        #expect(f.inFlight == 5000)
    }

    @Test func mismatchedRepliesAreDropped() throws {
        var f = ForwarderCore(upstreams: [up1, up2], seed: 1)
        let wire = sends(f.forward(query(9), client: 1, now: .zero))[0].0
        // Wrong source (up2 has not been tried yet), unknown ID, wrong question, a query, garbage.
        #expect(f.receive(upstreamReply(to: wire), from: up2, now: .zero).isEmpty)
        var otherID = upstreamReply(to: wire)
        otherID[0] ^= 0xFF
        #expect(f.receive(otherID, from: up1, now: .zero).isEmpty)
        var otherQuestion = try DNSMessage.decode(upstreamReply(to: wire))
        otherQuestion.questions[0].name = DNSName("evil.example")!
        #expect(f.receive(otherQuestion.encode(), from: up1, now: .zero).isEmpty)
        #expect(f.receive(wire, from: up1, now: .zero).isEmpty)  // QR=0
        #expect(f.receive([1, 2, 3], from: up1, now: .zero).isEmpty)
        #expect(f.counters.droppedResponses == 5)
        // Case differences in the echoed question are fine (0x20 randomisation).
        var upper = try DNSMessage.decode(upstreamReply(to: wire))
        upper.questions[0].name = DNSName("EXAMPLE.com")!
        #expect(replies(f.receive(upper.encode(), from: up1, now: .zero)).count == 1)
    }

    @Test func timeoutsRetryOnTheNextUpstreamThenSERVFAIL() throws {
        var f = ForwarderCore(upstreams: [up1, up2, up3], timeout: .seconds(2), seed: 3)
        let first = sends(f.forward(query(0xBEEF), client: 5, now: .zero))[0]
        #expect(f.tick(now: .seconds(1.9)).isEmpty)
        let retry = sends(f.tick(now: .seconds(2)))
        #expect(retry.count == 1 && retry[0].1 == up2 && retry[0].0 == first.0)
        #expect(f.nextDeadline == .seconds(4))
        let third = sends(f.tick(now: .seconds(4.5)))
        #expect(third.count == 1 && third[0].1 == up3)
        #expect(f.counters.timedOut == 2)
        let fail = replies(f.tick(now: .seconds(6.5)))
        #expect(fail.count == 1 && fail[0].1 == 5)
        let m = try DNSMessage.decode(fail[0].0)
        #expect(m.id == 0xBEEF && m.responseCode == .servFail && m.questions == query(1).questions)
        #expect(f.counters.timedOut == 3 && f.counters.servfails == 1 && f.inFlight == 0 && f.nextDeadline == nil)
    }

    @Test func nextDeadlineFollowsTheOldestLiveQuery() throws {
        var f = ForwarderCore(upstreams: [up1], timeout: .seconds(2), seed: 5)
        var wires: [[UInt8]] = []
        for i in 0..<3 { wires.append(sends(f.forward(query(UInt16(i)), client: UInt64(i), now: .seconds(Double(i))))[0].0) }
        #expect(f.nextDeadline == .seconds(2))
        _ = f.receive(upstreamReply(to: wires[0]), from: up1, now: .seconds(2.5))
        #expect(f.nextDeadline == .seconds(3))
        _ = f.receive(upstreamReply(to: wires[1]), from: up1, now: .seconds(2.5))
        #expect(f.nextDeadline == .seconds(4))
        let fail = replies(f.tick(now: .seconds(4)))
        #expect(fail.count == 1 && fail[0].1 == 2 && f.nextDeadline == nil)
    }

    @Test func aLateReplyFromAnEarlierUpstreamIsAccepted() throws {
        var f = ForwarderCore(upstreams: [up1, up2], timeout: .seconds(2), seed: 3)
        let first = sends(f.forward(query(1), client: 5, now: .zero))[0]
        _ = f.tick(now: .seconds(2))
        #expect(replies(f.receive(upstreamReply(to: first.0), from: up1, now: .seconds(2.5))).count == 1)
        #expect(f.tick(now: .seconds(10)).isEmpty)  // the retry's timeout no longer fires
    }

    @Test func overTheLimitAndWithoutUpstreamsRepliesSERVFAIL() throws {
        var f = ForwarderCore(upstreams: [up1], maxInFlight: 2, seed: 1)
        #expect(sends(f.forward(query(1), client: 1, now: .zero)).count == 1)
        #expect(sends(f.forward(query(2), client: 2, now: .zero)).count == 1)
        let third = replies(f.forward(query(3), client: 3, now: .zero))
        #expect(third.count == 1 && third[0].1 == 3)
        #expect(try DNSMessage.decode(third[0].0).responseCode == .servFail)
        #expect(f.counters.overLimit == 1 && f.counters.servfails == 1 && f.counters.forwarded == 2)

        var none = ForwarderCore(upstreams: [], seed: 1)
        let r = replies(none.forward(query(4), client: 4, now: .zero))
        #expect(r.count == 1)
        #expect(try DNSMessage.decode(r[0].0).id == 4)
        #expect(none.counters.servfails == 1)
    }
}
