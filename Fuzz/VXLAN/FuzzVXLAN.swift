// libFuzzer harness for the VXLANCodec decoders. See Documentation/Fuzzing.md.
import NIOCore
import OverlayModel
import VXLANCodec

/// Runs one input through every VXLANCodec decoder; bad input must throw or return nil, never crash.
func fuzzVXLAN(_ bytes: [UInt8]) {
    let buffer = ByteBuffer(bytes: bytes)
    for dec in [
        VXLANDecapsulator(vni: nil),
        VXLANDecapsulator(vni: nil, strictReservedBits: false, allowZeroIPv6UDPChecksum: true, verifyUDPChecksum: false),
    ] {
        if let p = try? dec.decapsulate(packet: buffer) { readFrame(p.innerFrame) }
        if let f = try? dec.decapsulate(udpPayload: buffer) { readFrame(f.innerFrame) }
    }
    readFrame(buffer)
    var b = buffer
    _ = try? b.readIPv4Packet()
    b = buffer
    _ = try? b.readIPv6Packet()
    b = buffer
    _ = try? b.readARPPacket()
}

/// Decodes an Ethernet frame, as a receiver of the inner frame would.
private func readFrame(_ frame: ByteBuffer) {
    var b = frame
    _ = try? b.readEthernetFrame()
}

/// The libFuzzer entry point.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    fuzzVXLAN(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

/// Under Scripts/fuzz.sh (-DFUZZING) runs libFuzzer; in a plain build replays the files named as
/// arguments (a corpus or a crash input) through the same function.
@main struct Main {
    static func main() {
        #if FUZZING
        runLibFuzzer(fuzzOneInput)
        #else
        replayFiles(name: "fuzz-vxlan", fuzzVXLAN)
        #endif
    }
}
