import OverlayModel

/// A DNS message (RFC 1035 4.1): header flags, the four sections, and the EDNS0 OPT record kept
/// apart from the additional section.
public struct DNSMessage: Hashable, Sendable {
    /// The transaction ID.
    public var id: UInt16
    /// QR: a response rather than a query.
    public var isResponse: Bool
    /// The opcode (0 = QUERY).
    public var opcode: UInt8
    /// AA: the answer comes from the name's authority.
    public var authoritative: Bool
    /// TC: records were left out because the message did not fit.
    public var truncated: Bool
    /// RD: the client wants recursion.
    public var recursionDesired: Bool
    /// RA: the server offers recursion.
    public var recursionAvailable: Bool
    /// AD (RFC 4035).
    public var authenticData: Bool
    /// CD (RFC 4035).
    public var checkingDisabled: Bool
    /// The header's 4-bit RCODE (the upper bits live in `edns.extendedRCode`).
    public var rcode: UInt8
    /// The question section.
    public var questions: [DNSQuestion]
    /// The answer section.
    public var answers: [DNSRecord]
    /// The authority section.
    public var authorities: [DNSRecord]
    /// The additional section, without the OPT record.
    public var additionals: [DNSRecord]
    /// The OPT record, if the message has one.
    public var edns: EDNS?

    /// Makes a message; everything but the ID defaults to an empty query.
    public init(id: UInt16, isResponse: Bool = false, opcode: UInt8 = 0, authoritative: Bool = false,
                truncated: Bool = false, recursionDesired: Bool = false, recursionAvailable: Bool = false,
                authenticData: Bool = false, checkingDisabled: Bool = false, rcode: UInt8 = 0,
                questions: [DNSQuestion] = [], answers: [DNSRecord] = [], authorities: [DNSRecord] = [],
                additionals: [DNSRecord] = [], edns: EDNS? = nil) {
        self.id = id
        self.isResponse = isResponse
        self.opcode = opcode
        self.authoritative = authoritative
        self.truncated = truncated
        self.recursionDesired = recursionDesired
        self.recursionAvailable = recursionAvailable
        self.authenticData = authenticData
        self.checkingDisabled = checkingDisabled
        self.rcode = rcode
        self.questions = questions
        self.answers = answers
        self.authorities = authorities
        self.additionals = additionals
        self.edns = edns
    }

    /// The 12-bit response code: the header's 4 bits plus the OPT record's upper 8.
    public var fullRCode: UInt16 {
        UInt16(edns?.extendedRCode ?? 0) << 4 | UInt16(rcode & 0x0F)
    }

    /// The response code as a `DNSRCode`, or nil for codes this module does not name.
    public var responseCode: DNSRCode? {
        fullRCode <= 0xFF ? DNSRCode(rawValue: UInt8(fullRCode)) : nil
    }

    /// A reply skeleton for this query: same ID, opcode, question and RD, QR and RA set, `rcode` set
    /// (BADVERS through the OPT record), and an OPT record (payload 1232, version 0, DO copied) when
    /// the query had one.
    public func response(rcode: DNSRCode) -> DNSMessage {
        var r = DNSMessage(id: id, isResponse: true, opcode: opcode, recursionDesired: recursionDesired,
                           recursionAvailable: true, checkingDisabled: checkingDisabled,
                           rcode: rcode.rawValue & 0x0F, questions: questions)
        if let q = edns {
            r.edns = EDNS(udpPayloadSize: 1232, extendedRCode: rcode.rawValue >> 4, version: 0, dnssecOK: q.dnssecOK)
        }
        return r
    }

    // MARK: Decoding

    /// Decodes a whole message. Every count and length is checked, compression pointers must point
    /// backwards (so they cannot loop), names over 255 octets and bytes after the last record are
    /// refused.
    public static func decode(_ bytes: [UInt8]) throws(DNSError) -> DNSMessage {
        let result: Result<DNSMessage, DNSError> = bytes.withUnsafeBufferPointer { p in
            do throws(DNSError) {
                var r = DNSReader(p)
                return .success(try r.readMessage())
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    /// Decodes a whole message from raw memory (see `decode(_: [UInt8])`).
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(DNSError) -> DNSMessage {
        var r = DNSReader(bytes.assumingMemoryBound(to: UInt8.self))
        return try r.readMessage()
    }

    // MARK: Encoding

    /// Encodes the message with name compression. If it would be longer than `limit` bytes, every
    /// answer, authority and additional record is dropped (the question and OPT stay) and TC is set;
    /// the result is never longer than `limit` (a limit under 12 is taken as 12: a bare header).
    public func encode(limit: Int = 65535) -> [UInt8] {
        let limit = max(limit, 12)
        var w = DNSWriter(capacity: min(limit, 512))
        writeHeader(&w, truncated: truncated, qd: questions.count, an: answers.count, ns: authorities.count,
                    ar: additionals.count + (edns == nil ? 0 : 1))
        for q in questions {
            w.writeName(q.name, compress: true)
            w.u16(q.type.rawValue)
            w.u16(q.klass)
        }
        let afterQuestions = w.out.count
        let tableAfterQuestions = w.table.count
        for r in answers { w.writeRecord(r) }
        for r in authorities { w.writeRecord(r) }
        for r in additionals { w.writeRecord(r) }
        if let e = edns { w.writeOPT(e) }
        if w.out.count <= limit { return w.out }

        // Too long: keep header + questions (+ OPT if it fits), set TC.
        w.out.removeSubrange(afterQuestions...)
        w.table.removeSubrange(tableAfterQuestions...)
        var withOPT = false
        if let e = edns, afterQuestions + 11 + e.options.count <= limit {
            w.writeOPT(e)
            withOPT = true
        }
        if w.out.count <= limit {
            w.out.replaceSubrange(0..<12, with: headerBytes(truncated: true, qd: questions.count, ar: withOPT ? 1 : 0))
            return w.out
        }
        // Even the question does not fit: a bare header.
        return headerBytes(truncated: true, qd: 0, ar: 0)
    }

    private func flagBytes(truncated tc: Bool) -> (UInt8, UInt8) {
        var b2: UInt8 = (opcode & 0x0F) << 3
        if isResponse { b2 |= 0x80 }
        if authoritative { b2 |= 0x04 }
        if tc { b2 |= 0x02 }
        if recursionDesired { b2 |= 0x01 }
        var b3: UInt8 = rcode & 0x0F
        if recursionAvailable { b3 |= 0x80 }
        if authenticData { b3 |= 0x20 }
        if checkingDisabled { b3 |= 0x10 }
        return (b2, b3)
    }

    private func writeHeader(_ w: inout DNSWriter, truncated tc: Bool, qd: Int, an: Int, ns: Int, ar: Int) {
        let (b2, b3) = flagBytes(truncated: tc)
        w.u16(id)
        w.out.append(b2)
        w.out.append(b3)
        w.u16(UInt16(truncatingIfNeeded: qd))
        w.u16(UInt16(truncatingIfNeeded: an))
        w.u16(UInt16(truncatingIfNeeded: ns))
        w.u16(UInt16(truncatingIfNeeded: ar))
    }

    private func headerBytes(truncated tc: Bool, qd: Int, ar: Int) -> [UInt8] {
        var w = DNSWriter(capacity: 12)
        writeHeader(&w, truncated: tc, qd: qd, an: 0, ns: 0, ar: ar)
        return w.out
    }
}

/// The largest UDP reply for `query`: 512 without EDNS (RFC 1035 4.2.1), else the client's
/// advertised payload size clamped to 512...4096.
public func udpLimit(for query: DNSMessage) -> Int {
    guard let e = query.edns else { return 512 }
    return max(512, min(Int(e.udpPayloadSize), 4096))
}

/// A FORMERR reply for bytes that did not decode: the query's ID, opcode and RD, QR and RA set, no
/// sections. Nil (drop it) when there is no 12-byte header or the bytes are a response (QR=1).
public func dnsFormErr(for bytes: [UInt8]) -> [UInt8]? {
    guard bytes.count >= 12, bytes[2] & 0x80 == 0 else { return nil }
    return [bytes[0], bytes[1], 0x80 | (bytes[2] & 0x79), 0x80 | DNSRCode.formErr.rawValue, 0, 0, 0, 0, 0, 0, 0, 0]
}

// MARK: - Reader

/// Reads a message from a buffer, checking every bound.
internal struct DNSReader {
    let p: UnsafeBufferPointer<UInt8>
    var pos = 0

    init(_ p: UnsafeBufferPointer<UInt8>) { self.p = p }

    @inline(__always)
    mutating func u8() throws(DNSError) -> UInt8 {
        guard pos < p.count else { throw DNSError(.truncated, "message ends at byte \(pos)") }
        defer { pos += 1 }
        return p[pos]
    }

    @inline(__always)
    mutating func u16() throws(DNSError) -> UInt16 {
        guard pos + 2 <= p.count else { throw DNSError(.truncated, "message ends at byte \(pos) inside a 16-bit field") }
        defer { pos += 2 }
        return UInt16(p[pos]) << 8 | UInt16(p[pos + 1])
    }

    @inline(__always)
    mutating func u32() throws(DNSError) -> UInt32 {
        guard pos + 4 <= p.count else { throw DNSError(.truncated, "message ends at byte \(pos) inside a 32-bit field") }
        defer { pos += 4 }
        return UInt32(p[pos]) << 24 | UInt32(p[pos + 1]) << 16 | UInt32(p[pos + 2]) << 8 | UInt32(p[pos + 3])
    }

    /// Reads a possibly compressed name at `pos` (RFC 1035 4.1.4) and moves past it. Each pointer
    /// must point before the label run it ends, so pointers strictly decrease and cannot loop.
    mutating func name() throws(DNSError) -> DNSName {
        var out: [UInt8] = []
        out.reserveCapacity(32)
        var at = pos
        var segmentStart = pos
        var resume = -1
        while true {
            guard at < p.count else { throw DNSError(.truncated, "name at byte \(pos) runs past the end") }
            let len = p[at]
            switch len & 0xC0 {
            case 0x00:
                if len == 0 {
                    out.append(0)
                    pos = resume >= 0 ? resume : at + 1
                    return DNSName(uncheckedWire: out)
                }
                let n = Int(len)
                guard at + 1 + n <= p.count else { throw DNSError(.truncated, "label at byte \(at) runs past the end") }
                guard out.count + 1 + n + 1 <= 255 else {
                    throw DNSError(.tooLong, "name at byte \(pos) is longer than 255 octets")
                }
                out.append(len)
                out.append(contentsOf: UnsafeBufferPointer(rebasing: p[(at + 1)..<(at + 1 + n)]))
                at += 1 + n
            case 0xC0:
                guard at + 1 < p.count else { throw DNSError(.truncated, "pointer at byte \(at) runs past the end") }
                let target = Int(len & 0x3F) << 8 | Int(p[at + 1])
                guard target < segmentStart else {
                    throw DNSError(.badPointer, "pointer at byte \(at) to byte \(target) does not point backwards")
                }
                if resume < 0 { resume = at + 2 }
                at = target
                segmentStart = target
            default:
                throw DNSError(.badLabel, "label at byte \(at) has reserved type bits \(len >> 6)")
            }
        }
    }

    mutating func readMessage() throws(DNSError) -> DNSMessage {
        guard p.count >= 12 else { throw DNSError(.truncated, "\(p.count) bytes is shorter than the 12-byte header") }
        let id = try u16()
        let b2 = try u8()
        let b3 = try u8()
        let qd = Int(try u16())
        let an = Int(try u16())
        let ns = Int(try u16())
        let ar = Int(try u16())
        // Smallest question is 5 bytes, smallest record 11.
        guard qd * 5 + (an + ns + ar) * 11 <= p.count - 12 else {
            throw DNSError(.badCount, "counts \(qd)/\(an)/\(ns)/\(ar) cannot fit in \(p.count) bytes")
        }
        var m = DNSMessage(id: id, isResponse: b2 & 0x80 != 0, opcode: (b2 >> 3) & 0x0F, authoritative: b2 & 0x04 != 0,
                           truncated: b2 & 0x02 != 0, recursionDesired: b2 & 0x01 != 0,
                           recursionAvailable: b3 & 0x80 != 0, authenticData: b3 & 0x20 != 0,
                           checkingDisabled: b3 & 0x10 != 0, rcode: b3 & 0x0F)
        if qd > 0 {
            m.questions.reserveCapacity(qd)
            for _ in 0..<qd {
                let n = try name()
                let t = try u16()
                let c = try u16()
                m.questions.append(DNSQuestion(name: n, type: DNSType(rawValue: t), klass: c))
            }
        }
        if an > 0 {
            m.answers.reserveCapacity(an)
            for _ in 0..<an { m.answers.append(try record(optAllowed: false, message: &m)) }
        }
        if ns > 0 {
            m.authorities.reserveCapacity(ns)
            for _ in 0..<ns { m.authorities.append(try record(optAllowed: false, message: &m)) }
        }
        if ar > 0 {
            m.additionals.reserveCapacity(ar)
            for _ in 0..<ar {
                let r = try record(optAllowed: true, message: &m)
                if r.type != .opt { m.additionals.append(r) }
            }
        }
        guard pos == p.count else {
            throw DNSError(.trailingGarbage, "\(p.count - pos) bytes follow the last record")
        }
        return m
    }

    /// Reads one record; an OPT record (RFC 6891 6.1.1) is stored in `message.edns` and returned
    /// with type OPT for the caller to skip.
    mutating func record(optAllowed: Bool, message: inout DNSMessage) throws(DNSError) -> DNSRecord {
        let start = pos
        let owner = try name()
        let type = DNSType(rawValue: try u16())
        let klass = try u16()
        let ttl = try u32()
        let rdlength = Int(try u16())
        guard pos + rdlength <= p.count else {
            throw DNSError(.truncated, "record at byte \(start) has RDLENGTH \(rdlength) past the end")
        }
        let end = pos + rdlength
        if type == .opt {
            guard optAllowed, message.edns == nil, owner.wire.count == 1 else {
                throw DNSError(.badOPT, "OPT record at byte \(start) is not the only root-named OPT of the additional section")
            }
            message.edns = EDNS(udpPayloadSize: klass, extendedRCode: UInt8(ttl >> 24), version: UInt8((ttl >> 16) & 0xFF),
                                dnssecOK: ttl & 0x8000 != 0, options: Array(UnsafeBufferPointer(rebasing: p[pos..<end])))
            pos = end
            return DNSRecord(name: owner, type: type, klass: klass, ttl: ttl, data: .raw([]))
        }
        let data: DNSRData
        switch type {
        case .a:
            guard rdlength == 4 else { throw DNSError(.badRData, "A record at byte \(start) has RDLENGTH \(rdlength), not 4") }
            data = .a(IPv4Address(try u32()))
        case .aaaa:
            guard rdlength == 16 else {
                throw DNSError(.badRData, "AAAA record at byte \(start) has RDLENGTH \(rdlength), not 16")
            }
            let hi = UInt128(try u32()) << 96 | UInt128(try u32()) << 64
            let lo = UInt128(try u32()) << 32 | UInt128(try u32())
            data = .aaaa(IPv6Address(hi | lo))
        case .ptr, .cname, .ns:
            let n = try boundedName(end: end, start: start)
            data = type == .ptr ? .ptr(n) : type == .cname ? .cname(n) : .ns(n)
        case .mx:
            let pref = try bounded16(end: end, start: start)
            data = .mx(preference: pref, exchange: try boundedName(end: end, start: start))
        case .srv:
            let prio = try bounded16(end: end, start: start)
            let weight = try bounded16(end: end, start: start)
            let port = try bounded16(end: end, start: start)
            data = .srv(priority: prio, weight: weight, port: port, target: try boundedName(end: end, start: start))
        case .soa:
            let mname = try boundedName(end: end, start: start)
            let rname = try boundedName(end: end, start: start)
            guard pos + 20 <= end else { throw DNSError(.badRData, "SOA record at byte \(start) is too short") }
            data = .soa(mname: mname, rname: rname, serial: try u32(), refresh: try u32(), retry: try u32(),
                        expire: try u32(), minimum: try u32())
        default:
            data = .raw(Array(UnsafeBufferPointer(rebasing: p[pos..<end])))
            pos = end
        }
        guard pos == end else {
            throw DNSError(.badRData, "\(type) record at byte \(start): RDATA does not fill RDLENGTH \(rdlength)")
        }
        return DNSRecord(name: owner, type: type, klass: klass, ttl: ttl, data: data)
    }

    private mutating func boundedName(end: Int, start: Int) throws(DNSError) -> DNSName {
        guard pos < end else { throw DNSError(.badRData, "record at byte \(start): name past RDLENGTH") }
        let n = try name()
        guard pos <= end else { throw DNSError(.badRData, "record at byte \(start): name runs past RDLENGTH") }
        return n
    }

    private mutating func bounded16(end: Int, start: Int) throws(DNSError) -> UInt16 {
        guard pos + 2 <= end else { throw DNSError(.badRData, "record at byte \(start): field past RDLENGTH") }
        return try u16()
    }
}

// MARK: - Writer

/// Builds a message into one array, compressing names against earlier ones (RFC 1035 4.1.4).
internal struct DNSWriter {
    var out: [UInt8]
    /// Offsets (< 0x4000) of name suffixes already written, with the suffix's uncompressed wire form.
    var table: [(offset: Int, suffix: ArraySlice<UInt8>)]

    init(capacity: Int) {
        out = []
        out.reserveCapacity(capacity)
        table = []
        table.reserveCapacity(16)
    }

    @inline(__always)
    mutating func u16(_ v: UInt16) {
        out.append(UInt8(v >> 8))
        out.append(UInt8(truncatingIfNeeded: v))
    }

    @inline(__always)
    mutating func u32(_ v: UInt32) {
        out.append(UInt8(v >> 24))
        out.append(UInt8(truncatingIfNeeded: v >> 16))
        out.append(UInt8(truncatingIfNeeded: v >> 8))
        out.append(UInt8(truncatingIfNeeded: v))
    }

    private func lookup(_ suffix: ArraySlice<UInt8>) -> Int? {
        for e in table where wireEqualIgnoringCase(e.suffix, suffix) { return e.offset }
        return nil
    }

    /// Writes `name`, replacing its longest already-written suffix by a pointer when `compress`
    /// is set; remembers the new suffixes for later names either way... unless not compressing
    /// (RFC 2782 asks that SRV targets be left uncompressed and we do not point into them).
    mutating func writeName(_ name: DNSName, compress: Bool) {
        let w = name.wire
        let base = out.count
        var i = 0
        var pointer: Int?
        if compress {
            while w[i] != 0 {
                if let off = lookup(w[i...]) {
                    pointer = off
                    break
                }
                i += 1 + Int(w[i])
            }
        } else {
            i = w.count - 1
        }
        // Labels before index i are written out.
        if compress {
            var j = 0
            while j < i {
                if base + j < 0x4000 { table.append((base + j, w[j...])) }
                j += 1 + Int(w[j])
            }
        }
        out.append(contentsOf: w[0..<i])
        if let off = pointer {
            u16(0xC000 | UInt16(off))
        } else {
            out.append(0)
        }
    }

    mutating func writeRecord(_ r: DNSRecord) {
        writeName(r.name, compress: true)
        u16(r.type.rawValue)
        u16(r.klass)
        u32(r.ttl)
        let lengthAt = out.count
        u16(0)
        switch r.data {
        case .a(let a):
            u32(a.value)
        case .aaaa(let a):
            let v = a.value
            u32(UInt32(truncatingIfNeeded: v >> 96))
            u32(UInt32(truncatingIfNeeded: v >> 64))
            u32(UInt32(truncatingIfNeeded: v >> 32))
            u32(UInt32(truncatingIfNeeded: v))
        case .ptr(let n), .cname(let n), .ns(let n):
            writeName(n, compress: true)
        case .mx(let pref, let n):
            u16(pref)
            writeName(n, compress: true)
        case .srv(let prio, let weight, let port, let target):
            u16(prio)
            u16(weight)
            u16(port)
            writeName(target, compress: false)
        case .soa(let mname, let rname, let serial, let refresh, let retry, let expire, let minimum):
            writeName(mname, compress: true)
            writeName(rname, compress: true)
            u32(serial)
            u32(refresh)
            u32(retry)
            u32(expire)
            u32(minimum)
        case .raw(let bytes):
            out.append(contentsOf: bytes)
        }
        let len = out.count - lengthAt - 2
        out[lengthAt] = UInt8(truncatingIfNeeded: len >> 8)
        out[lengthAt + 1] = UInt8(truncatingIfNeeded: len)
    }

    mutating func writeOPT(_ e: EDNS) {
        out.append(0)
        u16(DNSType.opt.rawValue)
        u16(e.udpPayloadSize)
        u32(UInt32(e.extendedRCode) << 24 | UInt32(e.version) << 16 | (e.dnssecOK ? 0x8000 : 0))
        u16(UInt16(truncatingIfNeeded: e.options.count))
        out.append(contentsOf: e.options)
    }
}
