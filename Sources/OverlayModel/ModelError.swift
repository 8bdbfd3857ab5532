/// An error in a value a person or a peer gave us: what was wrong and, where it helps, what to do.
public struct ModelError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of value was wrong. Extensible: match with `==`, not an exhaustive switch.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public static let invalidAddress = Code(name: "invalidAddress")
        public static let invalidCIDR = Code(name: "invalidCIDR")
        public static let invalidMAC = Code(name: "invalidMAC")
        public static let invalidVNI = Code(name: "invalidVNI")
        public static let invalidID = Code(name: "invalidID")
        public static let invalidPortSpec = Code(name: "invalidPortSpec")
        public var description: String { name }
    }

    /// What kind of value was wrong.
    public let code: Code
    /// One line for a person: the value, what is wrong with it, and what would be right.
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
