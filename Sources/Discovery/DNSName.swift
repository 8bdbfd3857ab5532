// Domain names (RFC 1035 3.1, RFC 2181 11): up to 63 octets a label, 255 octets in wire form.

/// A domain name, stored in uncompressed wire form; compares and hashes ASCII case-insensitively
/// (RFC 4343) and keeps the case it was given for printing and encoding.
public struct DNSName: Hashable, Sendable, CustomStringConvertible {
    /// Length-prefixed labels ending with the zero-length root label (at most 255 octets).
    @usableFromInline internal var wire: [UInt8]

    /// The root name ".".
    public static let root = DNSName(uncheckedWire: [0])

    internal init(uncheckedWire: [UInt8]) { wire = uncheckedWire }

    /// Parses presentation text: "a.b" and "a.b." are the same name, "." is the root. Nil for empty
    /// labels, labels over 63 octets or names over 255 octets. No escapes: every byte but "." is
    /// label data.
    public init?(_ text: String) {
        var utf8 = Array(text.utf8)
        if utf8 == [UInt8(ascii: ".")] {
            self = .root
            return
        }
        if utf8.last == UInt8(ascii: ".") { utf8.removeLast() }
        guard !utf8.isEmpty else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(utf8.count + 2)
        var start = 0
        var i = 0
        while i <= utf8.count {
            if i == utf8.count || utf8[i] == UInt8(ascii: ".") {
                let len = i - start
                guard len >= 1, len <= 63 else { return nil }
                out.append(UInt8(len))
                out.append(contentsOf: utf8[start..<i])
                start = i + 1
            }
            i += 1
        }
        out.append(0)
        guard out.count <= 255 else { return nil }
        wire = out
    }

    /// Makes a name from its labels (most specific first); nil if a label is empty or over 63
    /// octets, or the name is over 255 octets.
    public init?<Labels: Sequence>(labels: Labels) where Labels.Element: Collection, Labels.Element.Element == UInt8 {
        var out: [UInt8] = []
        for label in labels {
            guard label.count >= 1, label.count <= 63 else { return nil }
            out.append(UInt8(label.count))
            out.append(contentsOf: label)
            guard out.count < 255 else { return nil }
        }
        out.append(0)
        wire = out
    }

    /// The labels, most specific first (the root label is not included).
    public var labels: [[UInt8]] {
        var result: [[UInt8]] = []
        var i = 0
        while wire[i] != 0 {
            let len = Int(wire[i])
            result.append(Array(wire[(i + 1)...(i + len)]))
            i += 1 + len
        }
        return result
    }

    /// How many labels the name has (0 for the root).
    public var labelCount: Int {
        var n = 0
        var i = 0
        while wire[i] != 0 {
            n += 1
            i += 1 + Int(wire[i])
        }
        return n
    }

    /// The name's length in uncompressed wire form, root label included.
    public var wireLength: Int { wire.count }

    /// Presentation form with the trailing dot ("a.b."); bytes that are not printable ASCII, and
    /// "." or "\" inside a label, are written as \DDD.
    public var description: String {
        if wire.count == 1 { return "." }
        var out: [UInt8] = []
        out.reserveCapacity(wire.count + 4)
        var i = 0
        while wire[i] != 0 {
            let len = Int(wire[i])
            for b in wire[(i + 1)...(i + len)] {
                if b > 0x20, b < 0x7F, b != UInt8(ascii: "."), b != UInt8(ascii: "\\") {
                    out.append(b)
                } else {
                    out.append(UInt8(ascii: "\\"))
                    out.append(UInt8(ascii: "0") + b / 100)
                    out.append(UInt8(ascii: "0") + (b / 10) % 10)
                    out.append(UInt8(ascii: "0") + b % 10)
                }
            }
            out.append(UInt8(ascii: "."))
            i += 1 + len
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// True when the two names are equal ignoring ASCII case.
    public static func == (lhs: DNSName, rhs: DNSName) -> Bool {
        wireEqualIgnoringCase(lhs.wire[...], rhs.wire[...])
    }

    /// Hashes the lowercased wire form, so equal names hash alike.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(wire.count)
        for b in wire { hasher.combine(asciiLower(b)) }
    }

    /// The name with `other`'s labels appended (nil if the result would be too long).
    public func appending(_ other: DNSName) -> DNSName? {
        guard wire.count - 1 + other.wire.count <= 255 else { return nil }
        var out = wire
        out.removeLast()
        out.append(contentsOf: other.wire)
        return DNSName(uncheckedWire: out)
    }

    /// The lowercased labels joined by "." without a trailing dot ("web.front"); nil for the root or
    /// when a label itself contains a "." (such a name can never match a table entry).
    internal var lowercasedDottedKey: [UInt8]? {
        guard wire.count > 1 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(wire.count - 2)
        var i = 0
        while wire[i] != 0 {
            let len = Int(wire[i])
            if i != 0 { out.append(UInt8(ascii: ".")) }
            var j = i + 1
            while j <= i + len {
                let b = wire[j]
                if b == UInt8(ascii: ".") { return nil }
                out.append(asciiLower(b))
                j += 1
            }
            i += 1 + len
        }
        return out
    }
}

@inline(__always)
internal func asciiLower(_ b: UInt8) -> UInt8 {
    b &- 65 < 26 ? b | 0x20 : b
}

/// Compares two byte runs ignoring ASCII case.
@inline(__always)
internal func wireEqualIgnoringCase(_ a: ArraySlice<UInt8>, _ b: ArraySlice<UInt8>) -> Bool {
    guard a.count == b.count else { return false }
    var i = a.startIndex
    var j = b.startIndex
    while i < a.endIndex {
        if a[i] != b[j], asciiLower(a[i]) != asciiLower(b[j]) { return false }
        i += 1
        j += 1
    }
    return true
}

/// Lowercases ASCII letters in UTF-8 text (the DNS notion of case).
internal func lowercasedKey(_ text: String) -> [UInt8] {
    var out = Array(text.utf8)
    for i in out.indices { out[i] = asciiLower(out[i]) }
    if out.last == UInt8(ascii: ".") { out.removeLast() }
    return out
}
