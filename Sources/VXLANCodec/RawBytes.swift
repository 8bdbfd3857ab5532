/// Bounds-checked big-endian loads from raw bytes: the fast paths parse whole header stacks inside one
/// `withUnsafeReadableBytes` instead of one `ByteBuffer.getInteger` call per field. Every load returns
/// nil past the end, so a short buffer can never be over-read.
struct RawBytes {
    let p: UnsafeRawBufferPointer

    init(_ p: UnsafeRawBufferPointer) { self.p = p }

    var count: Int { p.count }

    @inline(__always)
    func u8(_ o: Int) -> UInt8? { o >= 0 && o < p.count ? p.load(fromByteOffset: o, as: UInt8.self) : nil }

    @inline(__always)
    func u16(_ o: Int) -> UInt16? {
        o >= 0 && o <= p.count - 2 ? UInt16(bigEndian: p.loadUnaligned(fromByteOffset: o, as: UInt16.self)) : nil
    }

    @inline(__always)
    func u32(_ o: Int) -> UInt32? {
        o >= 0 && o <= p.count - 4 ? UInt32(bigEndian: p.loadUnaligned(fromByteOffset: o, as: UInt32.self)) : nil
    }

    @inline(__always)
    func u64(_ o: Int) -> UInt64? {
        o >= 0 && o <= p.count - 8 ? UInt64(bigEndian: p.loadUnaligned(fromByteOffset: o, as: UInt64.self)) : nil
    }

    /// `length` bytes at `o`, or nil if they are not all there.
    func bytes(_ o: Int, _ length: Int) -> UnsafeRawBufferPointer? {
        guard o >= 0, length >= 0, o <= p.count - length else { return nil }
        return UnsafeRawBufferPointer(rebasing: p[o..<(o + length)])
    }
}

/// Big-endian stores into a raw buffer the caller has sized.
extension UnsafeMutableRawBufferPointer {
    @inline(__always)
    func put<T: FixedWidthInteger>(_ v: T, _ o: Int) {
        storeBytes(of: v.bigEndian, toByteOffset: o, as: T.self)
    }
}
