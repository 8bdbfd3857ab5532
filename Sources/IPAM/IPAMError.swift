/// An IPAM refusal: which address, subnet or pool conflicts with what, and what to do about it.
public struct IPAMError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of refusal this is. Extensible: match with `==`, not an exhaustive switch.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        /// A requested subnet overlaps one that is already allocated.
        public static let subnetOverlap = Code(name: "subnetOverlap")
        /// No pool of the family has a free subnet of its size left.
        public static let poolExhausted = Code(name: "poolExhausted")
        /// No pool of the family is configured.
        public static let noPool = Code(name: "noPool")
        /// A subnet (or its ip-range) has no free address left.
        public static let addressesExhausted = Code(name: "addressesExhausted")
        /// A requested address is already handed out.
        public static let addressInUse = Code(name: "addressInUse")
        /// A requested or released address is reserved (network, broadcast, gateway, aux).
        public static let addressReserved = Code(name: "addressReserved")
        /// An address lies outside the subnet (or every subnet) it was meant for.
        public static let addressOutsideSubnet = Code(name: "addressOutsideSubnet")
        /// A released address was not allocated.
        public static let addressNotAllocated = Code(name: "addressNotAllocated")
        /// Options that contradict each other or are out of range.
        public static let invalidConfiguration = Code(name: "invalidConfiguration")
        /// No network has this name.
        public static let unknownNetwork = Code(name: "unknownNetwork")
        /// A network of this name already exists.
        public static let networkExists = Code(name: "networkExists")
        /// A snapshot that cannot be restored as it stands.
        public static let invalidSnapshot = Code(name: "invalidSnapshot")

        /// The code's name, as in `poolExhausted`.
        public var description: String { name }
    }

    /// What kind of refusal this is.
    public let code: Code
    /// One line for a person: what conflicts with what, and what to do.
    public let message: String

    /// Makes an error from a code and a message.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// The message, so `print(error)` shows one actionable line.
    public var description: String { message }
}
