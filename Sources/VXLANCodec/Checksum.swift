import NIOCore
import OverlayModel

/// The Internet checksum (RFC 1071): a running one's-complement sum of 16-bit big-endian words.
///
/// Chunks may have any length; a chunk that follows an odd-length one is byte-swapped before it is
/// added (RFC 1071 section 2(B)), so the result is the same as summing the concatenation.
public struct InternetChecksum: Sendable, Hashable {
    private var sum: UInt64 = 0
    private var odd = false

    /// Makes an empty running sum.
    public init() {}

    /// Adds a big-endian 16-bit word (swapped into place if an odd-length chunk came before it).
    public mutating func add(_ word: UInt16) {
        addRaw(odd ? UInt64(word.byteSwapped) : UInt64(word))
    }

    /// Adds a 32-bit value as two big-endian 16-bit words.
    public mutating func add(_ word: UInt32) {
        add(UInt16(truncatingIfNeeded: word >> 16))
        add(UInt16(truncatingIfNeeded: word))
    }

    /// Adds an IPv4 address (two words).
    public mutating func add(_ address: IPv4Address) { add(address.value) }

    /// Adds an IPv6 address (eight words).
    public mutating func add(_ address: IPv6Address) {
        let v = address.value
        add(UInt32(truncatingIfNeeded: v >> 96))
        add(UInt32(truncatingIfNeeded: v >> 64))
        add(UInt32(truncatingIfNeeded: v >> 32))
        add(UInt32(truncatingIfNeeded: v))
    }

    /// Adds raw bytes.
    public mutating func add(bytes: UnsafeRawBufferPointer) {
        var s = InternetChecksum.sumBigEndian(bytes)
        if odd { s = UInt64(UInt16(truncatingIfNeeded: s).byteSwapped) }
        addRaw(s)
        if bytes.count & 1 == 1 { odd.toggle() }
    }

    /// Adds the readable bytes of `buffer` (not consuming them).
    public mutating func add(buffer: ByteBuffer) {
        buffer.withUnsafeReadableBytes { add(bytes: $0) }
    }

    /// Adds `length` bytes of `buffer` starting at absolute index `index`.
    public mutating func add(buffer: ByteBuffer, at index: Int, length: Int) {
        buffer.withUnsafeReadableBytes { raw in
            let start = index - buffer.readerIndex
            add(bytes: UnsafeRawBufferPointer(rebasing: raw[start..<(start + length)]))
        }
    }

    mutating func addRaw(_ v: UInt64) {
        sum &+= v
        if sum > 0xFFFF_FFFF_0000 { sum = (sum & 0xFFFF_FFFF) &+ (sum >> 32) }
    }

    /// The folded sum, not complemented.
    public var foldedSum: UInt16 {
        var s = sum
        while s > 0xFFFF { s = (s & 0xFFFF) &+ (s >> 16) }
        return UInt16(s)
    }

    /// The checksum to put in a header: the complement of the folded sum.
    public var checksum: UInt16 { ~foldedSum }

    /// Whether data that includes its own checksum field verifies (folds to 0xFFFF).
    public var verifies: Bool { foldedSum == 0xFFFF }

    /// One's-complement sum of `bytes` as big-endian 16-bit words, an odd last byte padded with zero,
    /// returned unfolded-but-reduced to 32 bits.
    static func sumBigEndian(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var acc: UInt64 = 0
        let n = bytes.count
        var i = 0
        // Sum native-order 32-bit words into 64 bits; byte order is fixed up at the end (RFC 1071 2(B)).
        while i + 32 <= n {
            acc &+= UInt64(bytes.loadUnaligned(fromByteOffset: i, as: UInt32.self))
            acc &+= UInt64(bytes.loadUnaligned(fromByteOffset: i + 4, as: UInt32.self))
            acc &+= UInt64(bytes.loadUnaligned(fromByteOffset: i + 8, as: UInt32.self))
            acc &+= UInt64(bytes.loadUnaligned(fromByteOffset: i + 12, as: UInt32.self))
            acc &+= UInt64(bytes.loadUnaligned(fromByteOffset: i + 16, as: UInt32.self))
            acc &+= UInt64(bytes.loadUnaligned(fromByteOffset: i + 20, as: UInt32.self))
            acc &+= UInt64(bytes.loadUnaligned(fromByteOffset: i + 24, as: UInt32.self))
            acc &+= UInt64(bytes.loadUnaligned(fromByteOffset: i + 28, as: UInt32.self))
            i += 32
        }
        while i + 4 <= n {
            acc &+= UInt64(bytes.loadUnaligned(fromByteOffset: i, as: UInt32.self))
            i += 4
        }
        if i + 2 <= n {
            acc &+= UInt64(bytes.loadUnaligned(fromByteOffset: i, as: UInt16.self))
            i += 2
        }
        if i < n {
            #if _endian(little)
            acc &+= UInt64(bytes[i])
            #else
            acc &+= UInt64(bytes[i]) << 8
            #endif
        }
        while acc > 0xFFFF { acc = (acc & 0xFFFF) &+ (acc >> 16) }
        #if _endian(little)
        return UInt64(UInt16(truncatingIfNeeded: acc).byteSwapped)
        #else
        return acc
        #endif
    }
}

extension InternetChecksum {
    /// Starts a sum with the IPv4 pseudo-header (RFC 768; RFC 9293 section 3.1).
    public static func pseudoHeader(source: IPv4Address, destination: IPv4Address, protocol proto: UInt8, length: Int) -> InternetChecksum {
        var c = InternetChecksum()
        c.add(source)
        c.add(destination)
        c.add(UInt16(proto))
        c.add(UInt16(truncatingIfNeeded: length))
        return c
    }

    /// Starts a sum with the IPv6 pseudo-header (RFC 8200 section 8.1): addresses, 32-bit upper-layer
    /// length, three zero bytes and the next header.
    public static func pseudoHeader(source: IPv6Address, destination: IPv6Address, nextHeader: UInt8, length: Int) -> InternetChecksum {
        var c = InternetChecksum()
        c.add(source)
        c.add(destination)
        c.add(UInt32(truncatingIfNeeded: length))
        c.add(UInt32(nextHeader))
        return c
    }
}
