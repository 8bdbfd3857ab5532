import NIOCore

extension ByteBuffer {
    /// Reads one memberlist TCP stream message (net.go `readStream`) from the readable bytes.
    /// Returns nil and leaves the reader index alone when more bytes are needed; throws on
    /// malformed, oversized or unauthenticated input.
    public mutating func readGossipStreamMessage(keyring: Keyring?, verifyIncoming: Bool = true, label: String = "",
                                                 limits: WireLimits = .init()) throws -> GossipMessage? {
        // An encrypted frame says its length up front: until all of it is here nothing is copied
        // or decoded, so a sender trickling a large frame costs one copy, not one per read.
        if keyring != nil, let whole = try encryptedGossipFrameLength(limits: limits), readableBytes < whole { return nil }
        let bytes = Array(readableBytesView)
        switch try StreamCodec.decode(bytes, keyring: keyring, verifyIncoming: verifyIncoming, label: label, limits: limits) {
        case .needMore:
            return nil
        case .message(let m, let consumed):
            moveReaderIndex(forwardBy: consumed)
            return m
        }
    }

    /// The length of the encrypted stream frame at the reader index (label header, `encrypt`
    /// type, 4-byte length, payload: memberlist net.go), nil when something else starts there or
    /// its header is not complete yet. Throws when the frame claims more than `limits` allow.
    public func encryptedGossipFrameLength(limits: WireLimits = .init()) throws -> Int? {
        guard let first = getInteger(at: readerIndex, as: UInt8.self) else { return nil }
        var header = 0
        if first == LabelHeader.typeByte {
            guard let n = getInteger(at: readerIndex + 1, as: UInt8.self) else { return nil }
            header = 2 + Int(n)
        }
        guard readableBytes >= header + 5, getInteger(at: readerIndex + header, as: UInt8.self) == MessageType.encrypt.rawValue,
              let len = getInteger(at: readerIndex + header + 1, endianness: .big, as: UInt32.self) else { return nil }
        guard Int(len) <= limits.maxStreamBytes else {
            throw GossipCodecError(.tooLarge, "encrypted stream of \(len) bytes exceeds \(limits.maxStreamBytes)")
        }
        return header + 5 + Int(len)
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
