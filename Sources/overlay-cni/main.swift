// overlay-cni: a CNI plugin (spec 1.0.0; VERSION, ADD, DEL, CHECK, and 1.1's STATUS and GC) that
// attaches a container runtime's containers (podman, containerd, CRI-O, Kubernetes) to
// swift-overlay networks through the local overlayd. See README.md, "Containers from other
// runtimes: CNI".
import FoundationEssentials
import Glibc
import Netlink
import NIOCore
import NIOPosix
import OverlayAPI
import OverlayCNI
import OverlayModel

/// overlayd's local API, over its Unix socket.
struct SocketLink: OverlayDaemonLink {
    let socket: String

    func call<Body, Reply>(_ route: APIRoute<Body, Reply>, _ parameters: String..., body: Body? = nil) async throws -> Reply {
        guard FileManager.default.fileExists(atPath: socket) else {
            throw APIError(0, "no socket at \(socket) (is overlayd running? the configuration's \"socket\" names another)")
        }
        let client = APIClient(endpoint: .unix(socket), timeout: .seconds(30))
        do {
            return try await client.call(route, parameters: parameters, query: [], body: body, group: MultiThreadedEventLoopGroup.singleton)
        } catch let e as APIError {
            throw e
        } catch {
            throw APIError(0, "\(error)")
        }
    }

    func attach(_ request: AttachRequest) async throws -> ContainerInspect { try await call(LocalAPI.attach, body: request) }
    func detach(_ request: DetachRequest) async throws -> Bool { try await call(LocalAPI.detach, body: request)["detached"] ?? false }
    func inspect(_ name: String) async throws -> ContainerInspect { try await call(LocalAPI.inspectContainer, name) }
    func ping() async throws { _ = try await call(LocalAPI.version) }
}

/// Whether `ifname` is in the namespace at `netns` with `address`.
func hasInterface(_ netns: String, _ ifname: String, _ address: String) -> Bool {
    guard let ns = try? NetworkNamespace.open(path: netns), let sock = try? NetlinkSocket(namespace: ns),
          let ip = IPAddress(address) else { return false }
    return ((try? sock.addresses(on: ifname)) ?? []).contains { $0.address == ip }
}

let env = ProcessInfo.processInfo.environment
/// All of standard input (the network configuration).
func readStandardInput() -> Data {
    var data = Data()
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(0, &buffer, buffer.count)
        if n > 0 { data.append(contentsOf: buffer[0..<n]) } else if n < 0 && errno == EINTR { continue } else { break }
        // Past the plugin's limit one byte is enough to refuse it.
        if data.count > CNIPlugin.maxConfigBytes { break }
    }
    return data
}

let stdin = readStandardInput()
// The socket comes from the configuration only: a DEL may run in a cleanup process that has
// none of the runtime's environment.
let socket = (try? JSONDecoder().decode([String: AnyCodableString].self, from: stdin))?["socket"]?.value ?? CNIPlugin.defaultSocket
let plugin = CNIPlugin(daemon: SocketLink(socket: socket), hasInterface: hasInterface)
let (out, status) = await plugin.run(env: env, stdin: stdin)
out.withUnsafeBytes { b in
    var offset = 0
    while offset < b.count {
        let n = write(1, b.baseAddress! + offset, b.count - offset)
        if n > 0 { offset += n } else if n < 0 && errno == EINTR { continue } else { break }
    }
}
exit(status)

/// A JSON value kept only when it is a string (the configuration's other fields are anything).
struct AnyCodableString: Decodable {
    let value: String?
    init(from decoder: Decoder) throws { value = try? decoder.singleValueContainer().decode(String.self) }
}
