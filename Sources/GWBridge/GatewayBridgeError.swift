/// A failure of the gateway bridge: a code to branch on and one line a person can act on.
public struct GatewayBridgeError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure this is; extensible, compare with `==`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        /// An option or argument is malformed (bad subnet, port 0, bad interface name).
        public static let invalidArgument = Code(name: "invalidArgument")
        /// What was asked conflicts with what exists (subnet overlap, port already published,
        /// address in use, a non-bridge link with the bridge's name).
        public static let conflict = Code(name: "conflict")
        /// The thing named is not there (an unpublished port, an unknown attachment).
        public static let notFound = Code(name: "notFound")
        /// `ensure` has not run yet on this object.
        public static let notReady = Code(name: "notReady")
        /// No subnet or address is left to hand out.
        public static let exhausted = Code(name: "exhausted")
        /// The kernel (netlink, nftables, sysctl) refused; the message carries its reason.
        public static let kernel = Code(name: "kernel")
        /// The code's name, for messages.
        public var description: String { name }
    }

    /// What kind of failure this is.
    public let code: Code
    /// One line: what was wrong and what to do.
    public let message: String

    /// Makes an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// Same as ``message``.
    public var description: String { message }
}
