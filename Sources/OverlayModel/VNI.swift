/// A VXLAN Network Identifier (RFC 7348 section 5): 24 bits, 1...16,777,215.
///
/// VNI 0 is refused: the kernel uses it for "no VNI" in some paths and Docker never allocates it.
public struct VNI: Hashable, Sendable, Comparable {
    /// The identifier, 1...0xFF_FFFF.
    public let value: UInt32

    /// The range of valid VNIs.
    public static let validRange: ClosedRange<UInt32> = 1...0xFF_FFFF
    /// Where Docker's swarm allocator starts handing VNIs out, serially.
    public static let firstAllocated = VNI(unchecked: 4096)

    /// Makes a VNI, refusing 0 and anything over 24 bits.
    public init(_ value: UInt32) throws(ModelError) {
        guard VNI.validRange.contains(value) else {
            throw ModelError(.invalidVNI, "VXLAN ID \(value) is out of range (1...16777215)")
        }
        self.value = value
    }

    /// Makes a VNI from a decimal string, with the same checks.
    public init(parsing text: String) throws(ModelError) {
        guard let v = UInt32(text) else {
            throw ModelError(.invalidVNI, "VXLAN ID '\(text)' is not a number in 1...16777215")
        }
        try self.init(v)
    }

    init(unchecked value: UInt32) { self.value = value }

    public static func < (lhs: VNI, rhs: VNI) -> Bool { lhs.value < rhs.value }
}

extension VNI: CustomStringConvertible {
    public var description: String { String(value) }
}

extension VNI: Codable {
    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        let v = try c.decode(UInt32.self)
        do { try self.init(v) } catch {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: error.message)
        }
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(value)
    }
}
