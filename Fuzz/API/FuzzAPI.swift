// libFuzzer harness for the API's JSON models: every request body overlayd decodes (from
// overlayctl on the local socket, from nodes on 2377) and the cluster state nodes decode from the
// manager. See Documentation/Fuzzing.md.
import Foundation
import OverlayAPI

/// Decodes `bytes` as `T`; what decodes must encode, decode again, and encode to the same bytes
/// (a value that changes on its way through JSON would be stored or forwarded as another).
func roundTrip<T: Codable>(_: T.Type, _ bytes: Data) {
    guard let value = try? JSONDecoder().decode(T.self, from: bytes) else { return }
    let encoder = JSONEncoder()
    encoder.outputFormatting = .sortedKeys
    guard let once = try? encoder.encode(value) else { fatalError("\(T.self) decoded but does not encode: \(Array(bytes))") }
    guard let again = try? JSONDecoder().decode(T.self, from: once) else {
        fatalError("\(T.self) does not decode its own encoding \(String(decoding: once, as: UTF8.self)): \(Array(bytes))")
    }
    guard let twice = try? encoder.encode(again), twice == once else {
        fatalError("\(T.self) changed on a round trip: \(String(decoding: once, as: UTF8.self)): \(Array(bytes))")
    }
}

/// The models, picked by the input's first byte; the rest of the input is the JSON.
let models: [@Sendable (Data) -> Void] = [
    { roundTrip(SwarmInitRequest.self, $0) }, { roundTrip(SwarmJoinRequest.self, $0) },
    { roundTrip(NetworkCreateRequest.self, $0) }, { roundTrip(ContainerCreateRequest.self, $0) },
    { roundTrip(AttachRequest.self, $0) }, { roundTrip(DetachRequest.self, $0) }, { roundTrip(JoinRequest.self, $0) },
    { roundTrip(ClusterState.self, $0) }, { roundTrip(AllocateRequest.self, $0) }, { roundTrip(ReleaseRequest.self, $0) },
    { roundTrip(ServiceCreateRequest.self, $0) }, { roundTrip(ServiceUpdateRequest.self, $0) }, { roundTrip(NodeReport.self, $0) },
    { roundTrip(NetworkConnectRequest.self, $0) }, { roundTrip(NodeUpdateRequest.self, $0) }, { roundTrip(LogAnswer.self, $0) },
]

/// Runs one input. Bad JSON must be refused, never crash.
func fuzzAPI(_ bytes: [UInt8]) {
    guard let first = bytes.first else { return }
    models[Int(first) % models.count](Data(bytes.dropFirst()))
}

/// The libFuzzer entry point.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    fuzzAPI(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

/// Under Scripts/fuzz.sh (-DFUZZING) runs libFuzzer; in a plain build replays the files named as
/// arguments (a corpus or a crash input) through the same function.
@main struct Main {
    static func main() {
        #if FUZZING
        runLibFuzzer(fuzzOneInput)
        #else
        replayFiles(name: "fuzz-api", fuzzAPI)
        #endif
    }
}
