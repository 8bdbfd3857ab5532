// libFuzzer harness for the OverlayModel text parsers. See Documentation/Fuzzing.md.
import OverlayModel

/// Parses one input as text with every OverlayModel parser; whatever parses must print as text that
/// parses back to the same value. Bad input must throw or return nil, never crash.
func fuzzModel(_ bytes: [UInt8]) {
    let text = String(decoding: bytes, as: UTF8.self)
    if let a = IPAddress(text) { check(IPAddress(a.description) == a, "IPAddress", text) }
    if let a = IPv4Address(text) { check(IPv4Address(a.description) == a, "IPv4Address", text) }
    if let a = IPv6Address(text) { check(IPv6Address(a.description) == a, "IPv6Address", text) }
    if let c = try? CIDR.parse(text) {
        check((try? CIDR.parse(c.description)) == c, "CIDR", text)
        _ = c.last
        _ = c.netmask
    }
    _ = CIDR(text)
    _ = try? PortSpec.parse(text)
    _ = try? PortSpec.parseLong(text)
    _ = try? PortSpec.parseShort(text)
    if let m = MACAddress(text) { check(MACAddress(m.description) == m, "MACAddress", text) }
}

/// Stops the run (a finding for libFuzzer) when a round trip fails.
private func check(_ ok: Bool, _ what: String, _ text: String) {
    if !ok { fatalError("\(what) round trip failed for \(Array(text.utf8))") }
}

/// The libFuzzer entry point.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    fuzzModel(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

/// Under Scripts/fuzz.sh (-DFUZZING) runs libFuzzer; in a plain build replays the files named as
/// arguments (a corpus or a crash input) through the same function.
@main struct Main {
    static func main() {
        #if FUZZING
        runLibFuzzer(fuzzOneInput)
        #else
        replayFiles(name: "fuzz-model", fuzzModel)
        #endif
    }
}
