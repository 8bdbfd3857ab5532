import OverlayModel

/// Why a DNS message could not be decoded; `code` says which rule it broke, `message` where.
public struct DNSError: Error, Sendable, CustomStringConvertible, Hashable {
    /// Which rule a malformed message broke.
    public struct Code: RawRepresentable, Hashable, Sendable {
        /// The code's name.
        public var rawValue: String
        /// Makes a code from its name.
        public init(rawValue: String) { self.rawValue = rawValue }
        /// The message ends inside a header, name, record or field.
        public static let truncated = Code(rawValue: "truncated")
        /// A label has a reserved type (0x40 or 0x80 high bits).
        public static let badLabel = Code(rawValue: "badLabel")
        /// A compression pointer points forward, at itself, or hops too often.
        public static let badPointer = Code(rawValue: "badPointer")
        /// A name is longer than 255 octets.
        public static let tooLong = Code(rawValue: "tooLong")
        /// The section counts cannot fit in the message.
        public static let badCount = Code(rawValue: "badCount")
        /// Bytes follow the last record.
        public static let trailingGarbage = Code(rawValue: "trailingGarbage")
        /// A record's RDATA does not match its type or its RDLENGTH.
        public static let badRData = Code(rawValue: "badRData")
        /// An OPT record that is not the single root-named record of the additional section.
        public static let badOPT = Code(rawValue: "badOPT")
    }

    /// Which rule was broken.
    public var code: Code
    /// What was wrong, for a log line.
    public var message: String

    /// Makes an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// "code: message".
    public var description: String { "\(code.rawValue): \(message)" }
}

/// A resource record type (RFC 1035 3.2.2 and later registrations).
public struct DNSType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The 16-bit type code.
    public var rawValue: UInt16
    /// Makes a type from its code.
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// IPv4 address.
    public static let a = DNSType(rawValue: 1)
    /// Name server.
    public static let ns = DNSType(rawValue: 2)
    /// Canonical name.
    public static let cname = DNSType(rawValue: 5)
    /// Start of authority.
    public static let soa = DNSType(rawValue: 6)
    /// Reverse pointer.
    public static let ptr = DNSType(rawValue: 12)
    /// Mail exchange.
    public static let mx = DNSType(rawValue: 15)
    /// Text strings.
    public static let txt = DNSType(rawValue: 16)
    /// IPv6 address (RFC 3596).
    public static let aaaa = DNSType(rawValue: 28)
    /// Service location (RFC 2782).
    public static let srv = DNSType(rawValue: 33)
    /// EDNS0 pseudo-record (RFC 6891).
    public static let opt = DNSType(rawValue: 41)
    /// Query for every type ("*").
    public static let any = DNSType(rawValue: 255)

    /// The mnemonic ("A", "AAAA", ...) or "TYPEnnn".
    public var description: String {
        switch self {
        case .a: "A"
        case .ns: "NS"
        case .cname: "CNAME"
        case .soa: "SOA"
        case .ptr: "PTR"
        case .mx: "MX"
        case .txt: "TXT"
        case .aaaa: "AAAA"
        case .srv: "SRV"
        case .opt: "OPT"
        case .any: "ANY"
        default: "TYPE\(rawValue)"
        }
    }
}

/// A response code (RFC 1035 4.1.1; `badVers` is the extended code 16 of RFC 6891).
public enum DNSRCode: UInt8, Sendable, Hashable {
    /// No error.
    case noError = 0
    /// The query was malformed.
    case formErr = 1
    /// The server failed (here: every upstream timed out, or too many queries in flight).
    case servFail = 2
    /// The name does not exist.
    case nxDomain = 3
    /// The opcode is not supported.
    case notImp = 4
    /// The server will not answer (here: a name that would need forwarding from an internal network).
    case refused = 5
    /// The EDNS version is not supported (extended RCODE, needs an OPT record).
    case badVers = 16
}

/// The class IN (RFC 1035 3.2.4).
public let dnsClassIN: UInt16 = 1

/// One entry of the question section.
public struct DNSQuestion: Hashable, Sendable {
    /// The name asked about.
    public var name: DNSName
    /// The type asked for.
    public var type: DNSType
    /// The class (1 = IN).
    public var klass: UInt16

    /// Makes a question (class IN unless given).
    public init(name: DNSName, type: DNSType, klass: UInt16 = dnsClassIN) {
        self.name = name
        self.type = type
        self.klass = klass
    }
}

/// The data of a resource record; types this module does not interpret are kept as raw bytes.
public enum DNSRData: Hashable, Sendable {
    /// An IPv4 address (A).
    case a(IPv4Address)
    /// An IPv6 address (AAAA).
    case aaaa(IPv6Address)
    /// A reverse pointer target (PTR).
    case ptr(DNSName)
    /// A canonical name (CNAME).
    case cname(DNSName)
    /// A name server (NS).
    case ns(DNSName)
    /// A mail exchange (MX).
    case mx(preference: UInt16, exchange: DNSName)
    /// A service location (SRV, RFC 2782).
    case srv(priority: UInt16, weight: UInt16, port: UInt16, target: DNSName)
    /// A start of authority (SOA).
    case soa(mname: DNSName, rname: DNSName, serial: UInt32, refresh: UInt32, retry: UInt32, expire: UInt32, minimum: UInt32)
    /// Any other RDATA, uninterpreted.
    case raw([UInt8])
}

/// A resource record.
public struct DNSRecord: Hashable, Sendable {
    /// The owner name.
    public var name: DNSName
    /// The type (should agree with `data`'s case, except for `.raw`).
    public var type: DNSType
    /// The class (1 = IN).
    public var klass: UInt16
    /// Seconds a resolver may cache the record.
    public var ttl: UInt32
    /// The record data.
    public var data: DNSRData

    /// Makes a record.
    public init(name: DNSName, type: DNSType, klass: UInt16 = dnsClassIN, ttl: UInt32, data: DNSRData) {
        self.name = name
        self.type = type
        self.klass = klass
        self.ttl = ttl
        self.data = data
    }
}

/// The EDNS0 OPT pseudo-record's fields (RFC 6891 6.1).
public struct EDNS: Hashable, Sendable {
    /// The largest UDP payload the sender can reassemble.
    public var udpPayloadSize: UInt16
    /// The upper 8 bits of the 12-bit RCODE.
    public var extendedRCode: UInt8
    /// The EDNS version (only 0 is defined).
    public var version: UInt8
    /// The DO bit (RFC 3225).
    public var dnssecOK: Bool
    /// The options, as raw code/length/value bytes.
    public var options: [UInt8]

    /// Makes an OPT record's fields.
    public init(udpPayloadSize: UInt16 = 1232, extendedRCode: UInt8 = 0, version: UInt8 = 0, dnssecOK: Bool = false,
                options: [UInt8] = []) {
        self.udpPayloadSize = udpPayloadSize
        self.extendedRCode = extendedRCode
        self.version = version
        self.dnssecOK = dnssecOK
        self.options = options
    }
}
