import Netlink
import OverlayModel

/// A lab: several "hosts" on one machine, each a network namespace with an `eth0` on one underlay
/// bridge that lives in a lab namespace of its own.
///
/// The underlay is addressed from 198.18.0.0/15 (the benchmarking range) and has no link to the
/// machine's uplink, so nothing a test sends can leave the machine. Every namespace is named
/// `<name>-…` and removed by name on ``destroy()``, and ``destroyAll(prefix:handleDirectory:)``
/// removes what a crashed run left behind.
///
/// ```swift
/// let lab = try Lab.create(name: "ovl-demo", hosts: 3)
/// defer { lab.destroy() }
/// print(try lab.run(["ping", "-c1", "198.18.0.2"], on: lab.hosts[0]).output)
/// ```
public final class Lab: @unchecked Sendable {
    // @unchecked: every stored property is a `let`; the namespaces are themselves Sendable.

    /// A host of the lab.
    public struct Host: Sendable {
        /// The host's name in the lab (`h1`, `h2`, ...).
        public let name: String
        /// The host's network namespace.
        public let namespace: NetworkNamespace
        /// The host's underlay address on `eth0`.
        public let address: IPv4Address
        /// The underlay interface name inside the host.
        public let interface: String
    }

    /// The prefix every lab, demo and test namespace carries.
    public static let namePrefix = "ovl"
    /// The underlay subnet.
    public static let underlay = try! CIDR.parse("198.18.0.0/15")

    /// The lab's name; every namespace it makes is `<name>-<something>`.
    public let name: String
    /// Where namespace handles live.
    public let handleDirectory: String
    /// The lab namespace holding the underlay bridge `lab0`.
    public let switchNamespace: NetworkNamespace
    /// The hosts, in order.
    public let hosts: [Host]

    private init(name: String, handleDirectory: String, switchNamespace: NetworkNamespace, hosts: [Host]) {
        self.name = name
        self.handleDirectory = handleDirectory
        self.switchNamespace = switchNamespace
        self.hosts = hosts
    }

    /// Builds a lab of `hostCount` hosts. Host `i` (from 1) is `<name>-h<i>` at 198.18.0.i/15.
    /// Anything left from an earlier lab of the same name is removed first. On failure, whatever
    /// was made is removed before the error is thrown.
    public static func create(
        name: String, hosts hostCount: Int, handleDirectory: String = NetworkNamespace.defaultHandleDirectory
    ) throws -> Lab {
        guard name.hasPrefix(namePrefix) else {
            throw LabError("lab name '\(name)' must start with '\(namePrefix)' so teardown can find it")
        }
        guard (1...250).contains(hostCount) else {
            throw LabError("a lab has 1...250 hosts, not \(hostCount)")
        }
        destroyAll(prefix: name + "-", handleDirectory: handleDirectory)
        do {
            let sw = try NetworkNamespace.create(named: "\(name)-sw", handleDirectory: handleDirectory)
            let swSocket = try NetlinkSocket(namespace: sw)
            try swSocket.setUp("lo")
            try swSocket.createBridge(named: "lab0")
            try swSocket.setUp("lab0")
            try Lab.quietSwitchFirewall(sw)
            var hosts: [Host] = []
            for i in 1...hostCount {
                let hostName = "h\(i)"
                let ns = try NetworkNamespace.create(named: "\(name)-\(hostName)", handleDirectory: handleDirectory)
                let address = IPv4Address(198, 18, 0, UInt8(i))
                try swSocket.createVeth(named: "p-\(hostName)", peerName: "eth0", peerNamespace: ns)
                try swSocket.setMaster("lab0", of: "p-\(hostName)")
                try swSocket.setUp("p-\(hostName)")
                let hostSocket = try NetlinkSocket(namespace: ns)
                try hostSocket.setUp("lo")
                try hostSocket.addAddress(InterfaceAddress(.v4(address), prefixLength: underlay.prefixLength)!, to: "eth0")
                try hostSocket.setUp("eth0")
                hosts.append(Host(name: hostName, namespace: ns, address: address, interface: "eth0"))
            }
            return Lab(name: name, handleDirectory: handleDirectory, switchNamespace: sw, hosts: hosts)
        } catch {
            destroyAll(prefix: name + "-", handleDirectory: handleDirectory)
            throw error
        }
    }

    /// The switch is a plain L2 bridge, like the hardware switch it stands for. Where the kernel
    /// has `br_netfilter` (built in, or loaded by dockerd), a new namespace's bridges pass every
    /// frame through the IPv4/IPv6/ARP firewall hooks too (`net.bridge.bridge-nf-call-*` start at 1
    /// in each namespace): a per-packet cost that made the lab's speed depend on whether the module
    /// was there. The switch namespace turns them off; without `br_netfilter` there is nothing to
    /// turn off.
    static func quietSwitchFirewall(_ sw: NetworkNamespace) throws {
        for family in ["iptables", "ip6tables", "arptables"] {
            let key = "net.bridge.bridge-nf-call-\(family)"
            guard (try? sw.sysctl(key)) != nil else { continue }
            try sw.setSysctl(key, to: "0")
        }
    }

    /// Makes another namespace that belongs to this lab (a container, a network sandbox), named
    /// `<lab>-<suffix>` so teardown removes it.
    public func makeNamespace(_ suffix: String) throws -> NetworkNamespace {
        try NetworkNamespace.create(named: "\(name)-\(suffix)", handleDirectory: handleDirectory)
    }

    /// Removes every namespace of this lab, links and all (the kernel removes a namespace's links
    /// with it). Never throws: teardown after a failure must not fail itself.
    public func destroy() {
        Lab.destroyAll(prefix: name + "-", handleDirectory: handleDirectory)
    }

    /// Removes every namespace handle in `handleDirectory` whose name starts with `prefix`
    /// (default: every lab's). Returns the names removed.
    @discardableResult
    public static func destroyAll(prefix: String = namePrefix, handleDirectory: String = NetworkNamespace.defaultHandleDirectory) -> [String] {
        let names = NetworkNamespace.list(handleDirectory: handleDirectory).filter { $0.hasPrefix(prefix) }
        for n in names { try? NetworkNamespace.delete(named: n, handleDirectory: handleDirectory) }
        return names
    }

    /// Runs a command inside `namespace` (through `nsenter --net=<handle>`) and returns its exit
    /// status and combined output. The command is killed after `timeout` seconds.
    public func run(_ command: [String], in namespace: NetworkNamespace, timeout: Double = 30) throws -> CommandResult {
        guard let path = namespace.path else {
            throw LabError("namespace \(namespace.name) has no handle path to enter")
        }
        return try Lab.run(["nsenter", "--net=\(path)", "--"] + command, timeout: timeout)
    }

    /// Runs a command on a host of the lab.
    public func run(_ command: [String], on host: Host, timeout: Double = 30) throws -> CommandResult {
        try run(command, in: host.namespace, timeout: timeout)
    }

    /// Runs a command and returns its exit status and combined output, killing it after `timeout`.
    public static func run(_ command: [String], timeout: Double = 30) throws -> CommandResult {
        try Command.run(command, timeout: timeout)
    }
}

/// What a command run in the lab returned.
public struct CommandResult: Sendable {
    /// The exit status (0 is success).
    public let status: Int32
    /// Standard output and standard error, interleaved.
    public let output: String
    /// Whether the command exited 0.
    public var succeeded: Bool { status == 0 }
}

/// A lab that could not be built or used, with what to do about it.
public struct LabError: Error, CustomStringConvertible, Sendable {
    /// One line for a person.
    public let message: String
    /// Makes an error from its message.
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
