// libFuzzer harness for the DNS codec, resolver and forwarder. See Documentation/Fuzzing.md.

/// Runs one input through `checkDNSInput`; a broken rule stops the run as a finding.
func fuzzDNS(_ bytes: [UInt8]) {
    if let problem = checkDNSInput(bytes) { fatalError("\(problem): \(bytes)") }
}

/// The libFuzzer entry point.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    fuzzDNS(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

/// Under Scripts/fuzz.sh (-DFUZZING) runs libFuzzer; in a plain build replays the files named as
/// arguments (a corpus or a crash input) through the same function.
@main struct Main {
    static func main() {
        #if FUZZING
        runLibFuzzer(fuzzOneInput)
        #else
        replayFiles(name: "fuzz-dns", fuzzDNS)
        #endif
    }
}
