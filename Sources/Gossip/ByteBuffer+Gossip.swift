import NIOCore

extension ByteBuffer {
    /// Reads one memberlist TCP stream message (net.go `readStream`) from the readable bytes.
    /// Returns nil and leaves the reader index alone when more bytes are needed; throws on
    /// malformed, oversized or unauthenticated input.
    public mutating func readGossipStreamMessage(keyring: Keyring?, verifyIncoming: Bool = true, label: String = "",
                                                 limits: WireLimits = .init()) throws -> GossipMessage? {
        let bytes = Array(readableBytesView)
        switch try StreamCodec.decode(bytes, keyring: keyring, verifyIncoming: verifyIncoming, label: label, limits: limits) {
        case .needMore:
            return nil
        case .message(let m, let consumed):
            moveReaderIndex(forwardBy: consumed)
            return m
        }
    }

    /// Reads a whole UDP packet (label, encryption, CRC, compound and compression framing) and
    /// returns its messages; the buffer is consumed even when decoding throws.
    public mutating func readGossipPacket(keyring: Keyring?, verifyIncoming: Bool = true, label: String = "",
                                          limits: WireLimits = .init()) throws -> DecodedPacket {
        let bytes = Array(readableBytesView)
        moveReaderIndex(forwardBy: bytes.count)
        return try PacketCodec.decode(bytes, keyring: keyring, verifyIncoming: verifyIncoming, label: label, limits: limits)
    }
}
