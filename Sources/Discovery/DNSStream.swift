// DNS over TCP (RFC 1035 4.2.2, RFC 7766): each message is preceded by its 16-bit length.

/// Framing of DNS messages on a TCP stream.
public enum DNSStream {
    /// The message with its 2-byte big-endian length in front (messages over 65535 bytes are cut to
    /// 65535; `DNSMessage.encode` never makes longer ones).
    public static func frame(_ message: [UInt8]) -> [UInt8] {
        let n = min(message.count, 65535)
        var out: [UInt8] = []
        out.reserveCapacity(n + 2)
        out.append(UInt8(n >> 8))
        out.append(UInt8(truncatingIfNeeded: n))
        out.append(contentsOf: message[0..<n])
        return out
    }
}

/// Splits a TCP byte stream into whole DNS messages. Call `append` with what arrived, then `next()`
/// until it returns nil. A reader that is drained this way never holds more than one partial frame
/// (at most 65535 + 2 bytes) plus the last chunk; `append` refuses bytes (returns false, and the
/// connection should be closed) while more than `capacity` unread bytes are waiting.
public struct DNSStreamReader: Sendable {
    private var buffer: [UInt8] = []
    private var head = 0

    /// The most unread bytes the reader holds: one frame of the largest size.
    public static let capacity = 65535 + 2

    /// Makes an empty reader.
    public init() {}

    /// Bytes received but not yet returned by `next()`.
    public var bufferedCount: Int { buffer.count - head }

    /// Adds received bytes; false (and nothing added) when more than `capacity` unread bytes are
    /// already waiting, which only happens when `next()` is not being called.
    @discardableResult
    public mutating func append(_ bytes: some Sequence<UInt8>) -> Bool {
        guard buffer.count - head <= Self.capacity else { return false }
        if head > 0 {
            buffer.removeSubrange(0..<head)
            head = 0
        }
        buffer.append(contentsOf: bytes)
        return true
    }

    /// The next whole message (without its length prefix), or nil until more bytes arrive.
    public mutating func next() -> [UInt8]? {
        guard buffer.count - head >= 2 else { return nil }
        let n = Int(buffer[head]) << 8 | Int(buffer[head + 1])
        guard buffer.count - head - 2 >= n else { return nil }
        let message = Array(buffer[(head + 2)..<(head + 2 + n)])
        head += 2 + n
        if head == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 4096 {
            buffer.removeSubrange(0..<head)
            head = 0
        }
        return message
    }
}
