/// Why a packet could not be parsed or was refused by validation: a datapath counts drops by `code`.
public struct VXLANCodecError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What was wrong. Extensible: match with `==`, not an exhaustive switch.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        /// The packet ends before a length field says it should.
        public static let truncated = Code(name: "truncated")
        /// A length field is impossible (too small, or larger than its container).
        public static let badLength = Code(name: "badLength")
        /// The IP version nibble is not the one expected.
        public static let badIPVersion = Code(name: "badIPVersion")
        /// The IPv4 header checksum does not verify (RFC 791 section 3.1).
        public static let badIPv4Checksum = Code(name: "badIPv4Checksum")
        /// The UDP checksum does not verify, or is zero where it is mandatory (RFC 768, RFC 8200 section 8.1).
        public static let badUDPChecksum = Code(name: "badUDPChecksum")
        /// The ICMP or ICMPv6 checksum does not verify (RFC 792, RFC 4443 section 2.3).
        public static let badICMPChecksum = Code(name: "badICMPChecksum")
        /// The outer IPv4 packet is a fragment; VXLAN endpoints here do not reassemble.
        public static let fragmented = Code(name: "fragmented")
        /// The outer packet is not UDP.
        public static let notUDP = Code(name: "notUDP")
        /// The outer UDP destination port is not the VXLAN port in use.
        public static let wrongPort = Code(name: "wrongPort")
        /// The VXLAN I flag is clear (RFC 7348 section 5).
        public static let badVXLANFlags = Code(name: "badVXLANFlags")
        /// A VXLAN reserved field is not zero (RFC 7348 section 5; Linux drops these too).
        public static let reservedBitsSet = Code(name: "reservedBitsSet")
        /// The VNI is 0 or not the one this endpoint serves.
        public static let vniMismatch = Code(name: "vniMismatch")
        /// The inner Ethernet frame is shorter than an Ethernet header.
        public static let innerFrameTooShort = Code(name: "innerFrameTooShort")
        /// An ARP packet is not Ethernet/IPv4 ARP (RFC 826).
        public static let unsupportedARP = Code(name: "unsupportedARP")
        /// The ICMP message is not an echo request or reply.
        public static let notEcho = Code(name: "notEcho")
        /// Outer source and destination addresses are of different families.
        public static let addressFamilyMismatch = Code(name: "addressFamilyMismatch")
        /// The packet would be larger than its length field can say (65,535 bytes).
        public static let tooLarge = Code(name: "tooLarge")

        public var description: String { name }
    }

    /// What was wrong.
    public let code: Code
    /// One line for a person: which field, what it held, and what was expected.
    public let message: String

    /// Makes an error with a code and a message.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}
