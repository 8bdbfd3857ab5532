// libFuzzer harness for the CNI plugin's inputs as a container runtime gives them: the network
// configuration on standard input and the CNI_* environment. See Documentation/Fuzzing.md.
import Foundation
import OverlayAPI
import OverlayCNI

/// An overlayd that attaches whatever it is asked to (the answer built from the request), so that
/// every configuration that parses reaches the result it makes.
struct AcceptingDaemon: OverlayDaemonLink {
    func attach(_ request: AttachRequest) async throws -> ContainerInspect {
        ContainerInspect(
            Id: "x", Name: request.name, Created: Date(timeIntervalSince1970: 0), State: .init(Status: "attached", Running: false, Pid: 0),
            Config: .init(Cmd: []),
            NetworkSettings: .init(
                SandboxKey: request.namespacePath ?? "", Ports: [:],
                Networks: [request.network: .init(NetworkID: "n", EndpointID: "e", Gateway: "10.70.0.1", IPAddress: request.ip ?? "10.70.0.5",
                                                  IPPrefixLen: 24, MacAddress: "02:42:0a:46:00:05", Aliases: request.aliases ?? [],
                                                  Interface: request.interface)],
                GatewayBridgeAddress: request.gateway == true ? "172.18.0.3" : nil,
                GatewayBridge: request.gateway == true
                    ? .init(Interface: "ovgw0", IPAddress: "172.18.0.3", IPPrefixLen: 16, Gateway: "172.18.0.1", MacAddress: "02:42:ac:12:00:03")
                    : nil),
            ResolvConfPath: nil, DaemonPid: 1)
    }
    func detach(_ request: DetachRequest) async throws -> Bool { true }
    func inspect(_ name: String) async throws -> ContainerInspect { throw APIError(404, "no such container: \(name)") }
    func ping() async throws {}
}

let plugin = CNIPlugin(daemon: AcceptingDaemon(), hasInterface: { _, _, _ in true })
let commands = ["ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC", "ADD"]

/// Runs one input: its first byte picks the command, the bytes up to the next NUL are CNI_ARGS
/// and CNI_IFNAME (split at the first `|`), the rest is the configuration. The answer must be
/// empty (success without a result) or a JSON object, and the exit status 0 or 1.
func fuzzCNI(_ bytes: [UInt8]) {
    guard let first = bytes.first else { return }
    let rest = bytes.dropFirst()
    let cut = rest.firstIndex(of: 0) ?? rest.endIndex
    let head = String(decoding: rest[..<cut], as: UTF8.self).split(separator: "|", maxSplits: 1, omittingEmptySubsequences: false)
    let config = Data(cut < rest.endIndex ? rest[(cut + 1)...] : [])
    let env = ["CNI_COMMAND": commands[Int(first) % commands.count], "CNI_CONTAINERID": "c0ffee", "CNI_NETNS": "/run/netns/x",
               "CNI_ARGS": head.first.map(String.init) ?? "", "CNI_IFNAME": head.count > 1 ? String(head[1]) : "eth0"]
    let (out, status) = runDetached { await plugin.run(env: env, stdin: config) }
    guard status == 0 || status == 1 else { fatalError("exit status \(status): \(bytes)") }
    guard out.isEmpty || (try? JSONSerialization.jsonObject(with: out)) is [String: Any] else {
        fatalError("the answer is not a JSON object: \(String(decoding: out, as: UTF8.self)): \(bytes)")
    }
}

/// The libFuzzer entry point.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    fuzzCNI(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

/// Under Scripts/fuzz.sh (-DFUZZING) runs libFuzzer; in a plain build replays the files named as
/// arguments (a corpus or a crash input) through the same function.
@main struct Main {
    static func main() {
        #if FUZZING
        runLibFuzzer(fuzzOneInput)
        #else
        replayFiles(name: "fuzz-cni", fuzzCNI)
        #endif
    }
}
