import NIOCore

/// Splits a streaming answer of the gateway (watch, keepalive) into its messages: each is one
/// JSON object followed by `\n` (grpc-gateway's newline-delimited JSON), and the transport's
/// chunks may cut a message anywhere. Bytes in; complete lines out, without the newline.
struct EtcdLineFramer: Sendable {
    /// Longer than any message etcd sends (a watch message is at most its request limit of
    /// 1.5 MiB per value, times the events of one txn): past this, the stream is not etcd's.
    static let defaultMaximum = 64 << 20

    private var buffer = ByteBuffer()
    private let maximum: Int

    init(maximum: Int = EtcdLineFramer.defaultMaximum) {
        self.maximum = maximum
    }

    /// Takes the next bytes of the stream.
    mutating func append(_ bytes: ByteBuffer) {
        var bytes = bytes
        buffer.writeBuffer(&bytes)
    }

    /// The next complete line (blank lines skipped), or nil until more bytes come. Throws when
    /// a line grows past the maximum without ending.
    mutating func next() throws -> ByteBuffer? {
        while let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
            let length = newline - buffer.readerIndex
            let line = buffer.readSlice(length: length)!
            buffer.moveReaderIndex(forwardBy: 1)
            if line.readableBytesView.contains(where: { !Self.isBlank($0) }) { return line }
        }
        if buffer.readableBytes > maximum {
            throw EtcdError(status: 200, code: 0, message: "a streamed message is longer than \(maximum) bytes without a newline")
        }
        if buffer.readerIndex > 1 << 16 { buffer.discardReadBytes() }
        return nil
    }

    /// What is left when the stream ends: a last line without its newline, if any.
    mutating func finish() -> ByteBuffer? {
        defer { buffer.clear() }
        return buffer.readableBytesView.contains(where: { !Self.isBlank($0) }) ? buffer.slice() : nil
    }

    private static func isBlank(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\r") || byte == UInt8(ascii: "\t") || byte == UInt8(ascii: "\n")
    }
}
