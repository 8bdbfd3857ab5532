/// The transport protocol of a published port.
public enum PortProtocol: String, Hashable, Sendable, Codable, CaseIterable {
    case tcp, udp, sctp
}

/// How a published port is exposed: through the routing mesh on every node, or only on the
/// nodes that run a task.
public enum PublishMode: String, Hashable, Sendable, Codable, CaseIterable {
    case ingress, host
}

/// One published port: `published` on the host (or mesh) leads to `target` in the container.
///
/// Docker's two syntaxes are both accepted: the short `[IP:][PUBLISHED:]TARGET[/PROTO]` (with port
/// ranges, `8000-8001:80-81`) and the long `published=8080,target=80,protocol=udp,mode=ingress`.
public struct PortSpec: Hashable, Sendable, Codable {
    /// The port inside the container.
    public var target: UInt16
    /// The port on the host or mesh; nil lets the daemon pick one.
    public var published: UInt16?
    /// TCP, UDP or SCTP.
    public var `protocol`: PortProtocol
    /// Ingress (routing mesh) or host.
    public var mode: PublishMode
    /// The host address to bind (short syntax only, standalone containers); nil for all.
    public var hostIP: IPAddress?

    /// Makes a port spec from its parts.
    public init(target: UInt16, published: UInt16? = nil, protocol: PortProtocol = .tcp,
                mode: PublishMode = .ingress, hostIP: IPAddress? = nil) {
        self.target = target
        self.published = published
        self.protocol = `protocol`
        self.mode = mode
        self.hostIP = hostIP
    }

    /// Parses either of Docker's syntaxes; a string with `=` is read as the long one. The short
    /// one may give a range, so this returns one spec per port.
    public static func parse(_ text: String) throws(ModelError) -> [PortSpec] {
        if text.contains("=") { return [try parseLong(text)] }
        return try parseShort(text)
    }

    /// Parses the long syntax: comma-separated `key=value` with keys published, target,
    /// protocol, mode. `target` is required.
    public static func parseLong(_ text: String) throws(ModelError) -> PortSpec {
        var target: UInt16?
        var published: UInt16?
        var proto = PortProtocol.tcp
        var mode = PublishMode.ingress
        var seen = Set<String>()
        for field in text.split(separator: ",", omittingEmptySubsequences: false) {
            let kv = field.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard kv.count == 2 else {
                throw ModelError(.invalidPortSpec, "'\(field)' in '\(text)' is not key=value (keys: published, target, protocol, mode)")
            }
            let key = kv[0].trimmingSpaces.lowercased()
            let value = kv[1].trimmingSpaces
            guard seen.insert(key).inserted else {
                throw ModelError(.invalidPortSpec, "'\(key)' is given twice in '\(text)'")
            }
            switch key {
            case "target": target = try port(Substring(value), in: text)
            case "published": published = try port(Substring(value), in: text)
            case "protocol":
                guard let p = PortProtocol(rawValue: value.lowercased()) else {
                    throw ModelError(.invalidPortSpec, "protocol '\(value)' in '\(text)' is not tcp, udp or sctp")
                }
                proto = p
            case "mode":
                guard let m = PublishMode(rawValue: value.lowercased()) else {
                    throw ModelError(.invalidPortSpec, "mode '\(value)' in '\(text)' is not ingress or host")
                }
                mode = m
            default:
                throw ModelError(.invalidPortSpec, "unknown key '\(key)' in '\(text)' (keys: published, target, protocol, mode)")
            }
        }
        guard let target else {
            throw ModelError(.invalidPortSpec, "'\(text)' has no target=PORT (the port inside the container)")
        }
        return PortSpec(target: target, published: published, protocol: proto, mode: mode)
    }

    /// Parses the short syntax: `TARGET`, `PUBLISHED:TARGET`, `IP:PUBLISHED:TARGET`,
    /// `IP::TARGET`, `[IPv6]:PUBLISHED:TARGET`, each with an optional `/tcp|/udp|/sctp` and with
    /// equal-length ranges `A-B` for published and target.
    public static func parseShort(_ text: String) throws(ModelError) -> [PortSpec] {
        var rest = Substring(text)
        var proto = PortProtocol.tcp
        if let slash = rest.lastIndex(of: "/") {
            let p = rest[rest.index(after: slash)...]
            guard let parsed = PortProtocol(rawValue: p.lowercased()) else {
                throw ModelError(.invalidPortSpec, "protocol '\(p)' in '\(text)' is not tcp, udp or sctp")
            }
            proto = parsed
            rest = rest[..<slash]
        }
        var hostIP: IPAddress?
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else {
                throw ModelError(.invalidPortSpec, "'\(text)' opens '[' for an IPv6 address but never closes it")
            }
            let ip = rest[rest.index(after: rest.startIndex)..<close]
            guard let v6 = IPv6Address(String(ip)) else {
                throw ModelError(.invalidPortSpec, "'\(ip)' in '\(text)' is not an IPv6 address")
            }
            hostIP = .v6(v6)
            rest = rest[rest.index(after: close)...]
            guard rest.hasPrefix(":") else {
                throw ModelError(.invalidPortSpec, "'\(text)' needs ':PUBLISHED:TARGET' after the address")
            }
            rest = rest.dropFirst()
        }
        let parts = rest.split(separator: ":", omittingEmptySubsequences: false)
        let publishedText: Substring?
        let targetText: Substring
        switch (parts.count, hostIP) {
        case (1, nil):
            publishedText = nil
            targetText = parts[0]
        case (2, nil):
            publishedText = parts[0]
            targetText = parts[1]
        case (1, .some):
            throw ModelError(.invalidPortSpec, "'\(text)' needs PUBLISHED:TARGET after the address")
        case (2, .some):
            publishedText = parts[0].isEmpty ? nil : parts[0]
            targetText = parts[1]
        case (3, nil):
            guard let ip = IPv4Address(String(parts[0])) else {
                throw ModelError(.invalidPortSpec, "'\(parts[0])' in '\(text)' is not an IPv4 address (write IPv6 as [addr])")
            }
            hostIP = .v4(ip)
            publishedText = parts[1].isEmpty ? nil : parts[1]
            targetText = parts[2]
        default:
            throw ModelError(.invalidPortSpec, "'\(text)' is not [IP:][PUBLISHED:]TARGET[/PROTOCOL]")
        }
        let targets = try range(targetText, in: text)
        var specs: [PortSpec] = []
        guard let publishedText else {
            for t in targets { specs.append(PortSpec(target: t, protocol: proto, hostIP: hostIP)) }
            return specs
        }
        let published = try range(publishedText, in: text)
        if published.count == targets.count {
            for (p, t) in zip(published, targets) {
                specs.append(PortSpec(target: t, published: p, protocol: proto, hostIP: hostIP))
            }
            return specs
        }
        // Docker allows a published range for a single target: the first free one is used; we
        // keep it strict instead of guessing which port a person meant.
        throw ModelError(.invalidPortSpec,
            "'\(text)' maps \(published.count) published ports to \(targets.count) target ports; the ranges must be the same length")
    }

    private static func port(_ text: Substring, in whole: String) throws(ModelError) -> UInt16 {
        guard !text.isEmpty, text.allSatisfy({ $0.isASCII && $0.isNumber }), let v = UInt16(text), v > 0 else {
            throw ModelError(.invalidPortSpec, "'\(text)' in '\(whole)' is not a port number (1...65535)")
        }
        return v
    }

    private static func range(_ text: Substring, in whole: String) throws(ModelError) -> [UInt16] {
        let ends = text.split(separator: "-", omittingEmptySubsequences: false)
        switch ends.count {
        case 1: return [try port(ends[0], in: whole)]
        case 2:
            let lo = try port(ends[0], in: whole), hi = try port(ends[1], in: whole)
            guard lo <= hi else {
                throw ModelError(.invalidPortSpec, "range '\(text)' in '\(whole)' ends before it starts")
            }
            return Array(lo...hi)
        default:
            throw ModelError(.invalidPortSpec, "'\(text)' in '\(whole)' is not a port or a range A-B")
        }
    }
}

extension PortSpec: CustomStringConvertible {
    /// The long syntax, which says everything: `published=8080,target=80,protocol=tcp,mode=ingress`.
    public var description: String {
        var fields: [String] = []
        if let published { fields.append("published=\(published)") }
        fields.append("target=\(target)")
        fields.append("protocol=\(`protocol`.rawValue)")
        fields.append("mode=\(mode.rawValue)")
        return fields.joined(separator: ",")
    }
}

extension Substring {
    var trimmingSpaces: String {
        String(drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}
