import Netlink

/// An error from the overlay driver: what was wrong, named with the network, endpoint or peer it
/// concerns, and what to do about it. A call that throws leaves no half-built kernel objects.
public struct OverlayDriverError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure this was. Extensible: match with `==`, not an exhaustive switch.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        /// No network of that name exists on this driver.
        public static let unknownNetwork = Code(name: "unknownNetwork")
        /// No endpoint of that ID exists on this driver.
        public static let unknownEndpoint = Code(name: "unknownEndpoint")
        /// A network name, endpoint ID, interface name or node ID is not acceptable.
        public static let invalidName = Code(name: "invalidName")
        /// A subnet or gateway is not valid (bad CIDR, gateway outside the subnet, overlapping subnets).
        public static let invalidSubnet = Code(name: "invalidSubnet")
        /// A VXLAN ID is out of range (1...16777215).
        public static let invalidVNI = Code(name: "invalidVNI")
        /// The MTU does not fit the underlay or is below the IPv4 minimum.
        public static let invalidMTU = Code(name: "invalidMTU")
        /// A network of that name already exists on this driver.
        public static let duplicateNetwork = Code(name: "duplicateNetwork")
        /// Another network on this driver already uses that VXLAN ID.
        public static let duplicateVNI = Code(name: "duplicateVNI")
        /// An endpoint of that ID already exists.
        public static let duplicateEndpoint = Code(name: "duplicateEndpoint")
        /// The address is already used by an endpoint or a peer of the network.
        public static let duplicateAddress = Code(name: "duplicateAddress")
        /// The address lies in none of the network's subnets (or is its gateway).
        public static let addressNotInNetwork = Code(name: "addressNotInNetwork")
        /// The namespace to attach does not exist (no such path or process).
        public static let namespaceNotFound = Code(name: "namespaceNotFound")
        /// The network still has endpoints.
        public static let networkInUse = Code(name: "networkInUse")
        /// A subnet on this host is full: its bridge (veth + bridge mode, ``OverlayDriver/maxEndpointsPerBridge``) or its addresses (``OverlayDriver/maxEndpoints(on:)``).
        public static let capacityExceeded = Code(name: "capacityExceeded")
        /// The kernel (or the datapath) refused an operation; the message says which.
        public static let kernel = Code(name: "kernel")
        public var description: String { name }
    }

    /// What kind of failure this was.
    public let code: Code
    /// One line for a person: what was wrong and what to do.
    public let message: String

    /// Makes an error from its code and message.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }

    /// The error for a kernel failure while doing `what`.
    static func kernel(_ error: NetlinkError, while what: String) -> OverlayDriverError {
        OverlayDriverError(.kernel, "\(what): \(error.message)")
    }
}

/// Runs `body`, turning a ``NetlinkError`` into an ``OverlayDriverError`` that says what was being done.
@inline(__always)
func kernel<T>(_ what: @autoclosure () -> String, _ body: () throws(NetlinkError) -> T) throws(OverlayDriverError) -> T {
    do { return try body() } catch { throw OverlayDriverError.kernel(error, while: what()) }
}
