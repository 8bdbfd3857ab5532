// libFuzzer harness for Docker's plugin calls as dockerd (or anyone on the plugin socket) sends
// them. See Documentation/Fuzzing.md.
import DockerPlugin
import Foundation

/// The calls, picked by the input's first byte; the rest of the input is the body.
let calls = [
    "/Plugin.Activate", "/NetworkDriver.GetCapabilities", "/IpamDriver.GetCapabilities", "/IpamDriver.GetDefaultAddressSpaces",
    "/IpamDriver.RequestPool", "/IpamDriver.ReleasePool", "/IpamDriver.RequestAddress", "/IpamDriver.ReleaseAddress",
    "/NetworkDriver.CreateNetwork", "/NetworkDriver.DeleteNetwork", "/NetworkDriver.CreateEndpoint", "/NetworkDriver.DeleteEndpoint",
    "/NetworkDriver.Join", "/NetworkDriver.Leave", "/NetworkDriver.EndpointOperInfo", "/NetworkDriver.ProgramExternalConnectivity",
    "/NetworkDriver.RevokeExternalConnectivity", "/NetworkDriver.DiscoverNew", "/NetworkDriver.AllocateNetwork", "/Unknown.Call",
]

/// A backend that accepts everything and answers in Docker's shapes, so every decoded request
/// reaches its answer.
struct AcceptingBackend: DockerNetworkBackend {
    func requestPool(_ r: RequestPoolRequest) async throws -> RequestPoolResponse {
        RequestPoolResponse(PoolID: r.Pool ?? "", Pool: r.Pool ?? "", Data: ["com.docker.network.gateway": "10.0.0.1/24"])
    }
    func releasePool(_ r: ReleasePoolRequest) async throws {}
    func requestAddress(_ r: RequestAddressRequest) async throws -> RequestAddressResponse {
        if r.Address == "refuse" { throw DockerPluginError("refused") }
        return RequestAddressResponse(Address: (r.Address ?? "") + "/24")
    }
    func releaseAddress(_ r: ReleaseAddressRequest) async throws {}
    func createNetwork(_ r: CreateNetworkRequest, options: DockerNetworkOptions) async throws {}
    func deleteNetwork(_ r: NetworkRequest) async throws {}
    func createEndpoint(_ r: CreateEndpointRequest) async throws -> CreateEndpointResponse {
        CreateEndpointResponse(Interface: EndpointInterface(MacAddress: r.Interface?.MacAddress))
    }
    func deleteEndpoint(_ r: EndpointRequest) async throws {}
    func join(_ r: DriverJoinRequest) async throws -> DriverJoinResponse {
        DriverJoinResponse(InterfaceName: InterfaceName(SrcName: String(r.EndpointID.prefix(15))))
    }
    func leave(_ r: EndpointRequest) async throws {}
}

let plugin = DockerPlugin(backend: AcceptingBackend())

/// Runs one input: the answer must be a status dockerd reads (200, 400, 404) with a JSON object.
func fuzzDocker(_ bytes: [UInt8]) {
    guard let first = bytes.first else { return }
    let path = calls[Int(first) % calls.count]
    let body = Data(bytes.dropFirst())
    let reply = runDetached { await plugin.handle(path: path, body: body) }
    guard [200, 400, 404].contains(reply.status) else { fatalError("\(path): status \(reply.status): \(bytes)") }
    guard (try? JSONSerialization.jsonObject(with: reply.body)) is [String: Any] else {
        fatalError("\(path): the answer is not a JSON object: \(reply.text): \(bytes)")
    }
}

/// The libFuzzer entry point.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    fuzzDocker(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

/// Under Scripts/fuzz.sh (-DFUZZING) runs libFuzzer; in a plain build replays the files named as
/// arguments (a corpus or a crash input) through the same function.
@main struct Main {
    static func main() {
        #if FUZZING
        runLibFuzzer(fuzzOneInput)
        #else
        replayFiles(name: "fuzz-docker", fuzzDocker)
        #endif
    }
}
