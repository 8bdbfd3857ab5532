import DockerPlugin
import Foundation
import Logging
import NIOPosix
import Testing

/// A backend that records the calls and answers from a script.
final class FakeBackend: DockerNetworkBackend, @unchecked Sendable {
    // Touched only under `lock`.
    private let lock = NSLock()
    private var _calls: [String] = []
    var calls: [String] { lock.withLock { _calls } }
    var failing: String?

    func record(_ call: String) throws {
        lock.withLock { _calls.append(call) }
        if let failing, call.hasPrefix(failing) { throw DockerPluginError("refused \(call)") }
    }

    func requestPool(_ r: RequestPoolRequest) async throws -> RequestPoolResponse {
        try record("RequestPool \(r.Pool ?? "")")
        return RequestPoolResponse(PoolID: "10.9.0.0/24", Pool: "10.9.0.0/24", Data: ["com.docker.network.gateway": "10.9.0.1/24"])
    }
    func releasePool(_ r: ReleasePoolRequest) async throws { try record("ReleasePool \(r.PoolID)") }
    func requestAddress(_ r: RequestAddressRequest) async throws -> RequestAddressResponse {
        try record("RequestAddress \(r.PoolID) \(r.Address ?? "")")
        return RequestAddressResponse(Address: "10.9.0.2/24")
    }
    func releaseAddress(_ r: ReleaseAddressRequest) async throws { try record("ReleaseAddress \(r.Address)") }
    func createNetwork(_ r: CreateNetworkRequest, options: DockerNetworkOptions) async throws {
        try record("CreateNetwork \(r.NetworkID) encrypted=\(options.encrypted) internal=\(options.internal)")
    }
    func deleteNetwork(_ r: NetworkRequest) async throws { try record("DeleteNetwork \(r.NetworkID)") }
    func createEndpoint(_ r: CreateEndpointRequest) async throws -> CreateEndpointResponse {
        try record("CreateEndpoint \(r.EndpointID) \(r.Interface?.Address ?? "")")
        return CreateEndpointResponse(Interface: EndpointInterface(MacAddress: "02:42:0a:09:00:02"))
    }
    func deleteEndpoint(_ r: EndpointRequest) async throws { try record("DeleteEndpoint \(r.EndpointID)") }
    func join(_ r: DriverJoinRequest) async throws -> DriverJoinResponse {
        try record("Join \(r.EndpointID)")
        return DriverJoinResponse(InterfaceName: InterfaceName(SrcName: "swo0123456789a"))
    }
    func leave(_ r: EndpointRequest) async throws { try record("Leave \(r.EndpointID)") }
}

let networkID = String(repeating: "0e62", count: 16)
let endpointID = String(repeating: "ab", count: 32)

func json(_ reply: DockerPluginReply) throws -> [String: Any] {
    try #require(JSONSerialization.jsonObject(with: reply.body) as? [String: Any])
}

@Suite struct DockerPluginTests {
    @Test func activationAndCapabilitiesAreAnsweredWithoutTheBackend() async throws {
        let backend = FakeBackend()
        let plugin = DockerPlugin(backend: backend)
        // Docker sends these with an empty body.
        let activate = await plugin.handle(path: "/Plugin.Activate", body: Data())
        #expect(activate.status == 200)
        #expect(try json(activate)["Implements"] as? [String] == ["NetworkDriver", "IpamDriver"])
        let caps = try json(await plugin.handle(path: "/NetworkDriver.GetCapabilities", body: Data()))
        #expect(caps["Scope"] as? String == "local")
        #expect(caps["ConnectivityScope"] as? String == "global")
        let ipam = try json(await plugin.handle(path: "/IpamDriver.GetCapabilities", body: Data()))
        #expect(ipam["RequiresRequestReplay"] as? Bool == false)
        let spaces = try json(await plugin.handle(path: "/IpamDriver.GetDefaultAddressSpaces", body: Data()))
        #expect(spaces["LocalDefaultAddressSpace"] as? String == "swift-overlay")
        let info = await plugin.handle(path: "/NetworkDriver.EndpointOperInfo", body: Data(#"{"NetworkID":"a","EndpointID":"b"}"#.utf8))
        #expect(info.text == #"{"Value":{}}"#)
        for call in ["ProgramExternalConnectivity", "RevokeExternalConnectivity", "DiscoverNew", "DiscoverDelete"] {
            #expect(await plugin.handle(path: "/NetworkDriver.\(call)", body: Data("{}".utf8)).text == "{}")
        }
        #expect(backend.calls.isEmpty)
    }

    /// The bodies dockerd 20.10.24 sent (captured by the probe plugin of the research notes).
    @Test func dockersRequestsReachTheBackend() async throws {
        let backend = FakeBackend()
        let plugin = DockerPlugin(backend: backend)
        let pool = await plugin.handle(path: "/IpamDriver.RequestPool", body: Data(
            #"{"AddressSpace":"swift-overlay","Pool":"","SubPool":"","Options":{"ipo":"2"},"V6":false}"#.utf8 + [10]))
        #expect(try json(pool)["PoolID"] as? String == "10.9.0.0/24")
        #expect((try json(pool)["Data"] as? [String: String])?["com.docker.network.gateway"] == "10.9.0.1/24")
        let create = await plugin.handle(path: "/NetworkDriver.CreateNetwork", body: Data("""
            {"NetworkID":"\(networkID)","Options":{"com.docker.network.enable_ipv6":false,"com.docker.network.generic":{"encrypted":""}},\
            "IPv4Data":[{"AddressSpace":"swift-overlay","Gateway":"10.9.0.1/24","Pool":"10.9.0.0/24"}],"IPv6Data":[]}
            """.utf8))
        #expect(create.text == "{}")
        let address = await plugin.handle(path: "/IpamDriver.RequestAddress", body: Data(#"{"PoolID":"10.9.0.0/24","Address":"","Options":null}"#.utf8))
        #expect(try json(address)["Address"] as? String == "10.9.0.2/24")
        let endpoint = await plugin.handle(path: "/NetworkDriver.CreateEndpoint", body: Data("""
            {"NetworkID":"\(networkID)","EndpointID":"\(endpointID)","Interface":{"Address":"10.9.0.2/24","AddressIPv6":"","MacAddress":""},\
            "Options":{"com.docker.network.endpoint.exposedports":[{"Proto":6,"Port":80}],"com.docker.network.portmap":[{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080}]}}
            """.utf8))
        #expect((try json(endpoint)["Interface"] as? [String: String])?["MacAddress"] == "02:42:0a:09:00:02")
        let join = await plugin.handle(path: "/NetworkDriver.Join", body: Data("""
            {"NetworkID":"\(networkID)","EndpointID":"\(endpointID)","SandboxKey":"/x/exec/netns/339e3068b2f4","Options":{}}
            """.utf8))
        #expect((try json(join)["InterfaceName"] as? [String: String]) == ["SrcName": "swo0123456789a", "DstPrefix": "eth"])
        for call in ["Leave", "DeleteEndpoint"] {
            #expect(await plugin.handle(path: "/NetworkDriver.\(call)", body: Data(#"{"NetworkID":"\#(networkID)","EndpointID":"\#(endpointID)"}"#.utf8)).text == "{}")
        }
        #expect(await plugin.handle(path: "/IpamDriver.ReleaseAddress", body: Data(#"{"PoolID":"10.9.0.0/24","Address":"10.9.0.2"}"#.utf8)).text == "{}")
        #expect(await plugin.handle(path: "/NetworkDriver.DeleteNetwork", body: Data(#"{"NetworkID":"\#(networkID)"}"#.utf8)).text == "{}")
        #expect(await plugin.handle(path: "/IpamDriver.ReleasePool", body: Data(#"{"PoolID":"10.9.0.0/24"}"#.utf8)).text == "{}")
        #expect(backend.calls == [
            "RequestPool ", "CreateNetwork \(networkID) encrypted=true internal=false", "RequestAddress 10.9.0.0/24 ",
            "CreateEndpoint \(endpointID) 10.9.0.2/24", "Join \(endpointID)", "Leave \(endpointID)", "DeleteEndpoint \(endpointID)",
            "ReleaseAddress 10.9.0.2", "DeleteNetwork \(networkID)", "ReleasePool 10.9.0.0/24",
        ])
    }

    @Test func refusalsUseTheFieldEachInterfaceReads() async throws {
        let backend = FakeBackend()
        backend.failing = "RequestPool"
        let plugin = DockerPlugin(backend: backend)
        let ipam = await plugin.handle(path: "/IpamDriver.RequestPool", body: Data(#"{"Pool":"10.1.0.0/24"}"#.utf8))
        #expect(ipam.status == 200)
        #expect(try json(ipam)["Error"] as? String == "refused RequestPool 10.1.0.0/24")
        backend.failing = "Join"
        let join = await plugin.handle(path: "/NetworkDriver.Join", body: Data(#"{"NetworkID":"\#(networkID)","EndpointID":"\#(endpointID)"}"#.utf8))
        #expect(try json(join)["Err"] as? String == "refused Join \(endpointID)")
    }

    @Test func badInputIsOneClearLineAndNeverReachesTheBackend() async throws {
        let backend = FakeBackend()
        let plugin = DockerPlugin(backend: backend)
        let malformed = await plugin.handle(path: "/NetworkDriver.CreateNetwork", body: Data("{\"NetworkID\":".utf8))
        #expect(malformed.status == 400)
        #expect(try json(malformed)["Err"] as? String == "NetworkDriver.CreateNetwork: the request is not the JSON Docker sends: it is not valid JSON")
        let missing = await plugin.handle(path: "/NetworkDriver.Join", body: Data(#"{"NetworkID":"abc"}"#.utf8))
        #expect(try json(missing)["Err"] as? String == #"NetworkDriver.Join: the request is not the JSON Docker sends: "EndpointID" is missing"#)
        let wrongType = await plugin.handle(path: "/IpamDriver.RequestAddress", body: Data(#"{"PoolID":7}"#.utf8))
        #expect(wrongType.status == 400)
        let badID = await plugin.handle(path: "/NetworkDriver.DeleteNetwork", body: Data(#"{"NetworkID":"../../etc"}"#.utf8))
        #expect(try json(badID)["Err"] as? String == "NetworkID '../../etc' is not a Docker ID (1 to 128 letters and digits)")
        let unknown = await plugin.handle(path: "/NetworkDriver.CreateNetwork", body: Data("""
            {"NetworkID":"\(networkID)","Options":{"com.docker.network.generic":{"com.docker.network.driver.mtu":"9000"}}}
            """.utf8))
        #expect(try json(unknown)["Err"] as? String == "unknown driver option 'com.docker.network.driver.mtu': swift-overlay takes -o encrypted")
        let v6 = await plugin.handle(path: "/IpamDriver.RequestPool", body: Data(#"{"Pool":"","V6":true}"#.utf8))
        #expect(try json(v6)["Error"] as? String == "swift-overlay's Docker networks are IPv4 only: drop --ipv6")
        let notACall = await plugin.handle(path: "/VolumeDriver.Create", body: Data("{}".utf8))
        #expect(notACall.status == 404)
        let swarm = await plugin.handle(path: "/NetworkDriver.AllocateNetwork", body: Data("{}".utf8))
        #expect((try json(swarm)["Err"] as? String)?.contains("not Docker swarm networks") == true)
        #expect(backend.calls.isEmpty)
    }

    @Test func theServerAnswersOnItsSocketAndReplacesAStaleOne() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dp-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/plugins/swift-overlay.sock"
        let plugin = DockerPlugin(backend: FakeBackend())
        let first = try await DockerPluginServer.start(plugin, path: path, group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "t"))
        await first.close()
        // A socket file left by a killed daemon: the next start takes its place.
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { p in path.utf8CString.withUnsafeBytes { p.copyMemory(from: $0) } }
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        #expect(bound == 0)
        close(fd)
        let server = try await DockerPluginServer.start(plugin, path: path, group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "t"))
        let out = try curl(path, "/Plugin.Activate", body: "")
        await server.close()
        #expect(out.contains(#"{"Implements":["NetworkDriver","IpamDriver"]}"#))
        #expect(!FileManager.default.fileExists(atPath: path))
        // A server whose socket another has taken over (a second daemon started on the same
        // path) leaves the newer socket in place when it stops.
        let old = try await DockerPluginServer.start(plugin, path: path, group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "t"))
        let new = try await DockerPluginServer.start(plugin, path: path, group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "t"))
        let before = SocketIdentity(path: path)
        await old.close()
        let answer = try curl(path, "/Plugin.Activate", body: "")
        #expect(answer.contains("Implements"), "\(answer) \(String(describing: before)) \(String(describing: SocketIdentity(path: path)))")
        await new.close()
        #expect(!FileManager.default.fileExists(atPath: path))
        // Not a socket: refused with a line saying so.
        #expect(FileManager.default.createFile(atPath: path, contents: Data()))
        await #expect(throws: DockerPluginError("\(path) exists and is not a socket: remove it or pick another --docker-plugin-socket")) {
            _ = try await DockerPluginServer.start(plugin, path: path, group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "t"))
        }
    }
}

func curl(_ socket: String, _ path: String, body: String) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
    p.arguments = ["-sS", "--unix-socket", socket, "-X", "POST", "--data-binary", body, "http://localhost" + path]
    let pipe = Pipe()
    p.standardOutput = pipe
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return String(decoding: data, as: UTF8.self)
}

/// Bodies dockerd sends, cut, flipped and spliced at random: every answer is a status dockerd
/// reads (200, 400 or 404) with a JSON object body, never a crash or a hang.
@Suite struct DockerPluginMutationTests {
    static let calls: [(String, String)] = [
        ("/IpamDriver.RequestPool", #"{"AddressSpace":"swift-overlay","Pool":"10.9.0.0/24","SubPool":"","Options":{},"V6":false}"#),
        ("/IpamDriver.RequestAddress", #"{"PoolID":"10.9.0.0/24","Address":"","Options":{"RequestAddressType":"com.docker.network.gateway"}}"#),
        ("/IpamDriver.ReleaseAddress", #"{"PoolID":"10.9.0.0/24","Address":"10.9.0.2"}"#),
        ("/NetworkDriver.CreateNetwork", #"{"NetworkID":"\#(networkID)","Options":{"com.docker.network.enable_ipv6":false,"com.docker.network.generic":{"encrypted":""}},"IPv4Data":[{"AddressSpace":"swift-overlay","Gateway":"10.9.0.1/24","Pool":"10.9.0.0/24"}],"IPv6Data":[]}"#),
        ("/NetworkDriver.CreateEndpoint", #"{"NetworkID":"\#(networkID)","EndpointID":"\#(endpointID)","Interface":{"Address":"10.9.0.2/24","AddressIPv6":"","MacAddress":""},"Options":{"com.docker.network.portmap":[{"Proto":6,"Port":80}]}}"#),
        ("/NetworkDriver.Join", #"{"NetworkID":"\#(networkID)","EndpointID":"\#(endpointID)","SandboxKey":"/x/netns/1","Options":{}}"#),
        ("/NetworkDriver.Leave", #"{"NetworkID":"\#(networkID)","EndpointID":"\#(endpointID)"}"#),
    ]

    @Test func mutatedBodiesAreAnsweredAndNeverCrash() async throws {
        let plugin = DockerPlugin(backend: FakeBackend())
        var rng = SystemRandomNumberGenerator()
        var seen: [Int: Int] = [:]
        for round in 0..<3000 {
            let (path, body) = Self.calls[round % Self.calls.count]
            var bytes = Array(body.utf8)
            switch round % 4 {
            case 0: bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &rng)))
            case 1:
                for _ in 0..<Int.random(in: 1...4, using: &rng) where !bytes.isEmpty {
                    bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                }
            case 2:
                let other = Array(Self.calls.randomElement(using: &rng)!.1.utf8)
                let cut = Int.random(in: 0...bytes.count, using: &rng)
                bytes = Array(bytes.prefix(cut)) + Array(other.suffix(Int.random(in: 0...other.count, using: &rng)))
            default:
                let at = Int.random(in: 0...bytes.count, using: &rng)
                bytes.insert(contentsOf: Array(#"{"NetworkID":[1,{"a":null}],"V6":"yes"}"#.utf8), at: at)
            }
            let reply = await plugin.handle(path: path, body: Data(bytes))
            seen[reply.status, default: 0] += 1
            #expect([200, 400, 404].contains(reply.status), "\(path) with \(String(decoding: bytes, as: UTF8.self)): \(reply.status)")
            #expect((try? JSONSerialization.jsonObject(with: reply.body)) is [String: Any], "\(path): body \(reply.text)")
        }
        #expect(seen[400, default: 0] > 0 && seen[200, default: 0] > 0, "\(seen)")
    }
}

extension DockerPluginMutationTests {
    /// The fuzzer's seeds (Fuzz/Docker/seeds: the first byte picks the call as `fuzz-docker` does)
    /// are answered here as in the harness.
    @Test func fuzzSeedsReplay() async throws {
        let dir = String(#filePath.dropLast("Tests/DockerPluginTests/DockerPluginTests.swift".count)) + "Fuzz/Docker/seeds/"
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        #expect(files.count >= 10)
        let calls = ["/Plugin.Activate", "/NetworkDriver.GetCapabilities", "/IpamDriver.GetCapabilities", "/IpamDriver.GetDefaultAddressSpaces",
                     "/IpamDriver.RequestPool", "/IpamDriver.ReleasePool", "/IpamDriver.RequestAddress", "/IpamDriver.ReleaseAddress",
                     "/NetworkDriver.CreateNetwork", "/NetworkDriver.DeleteNetwork", "/NetworkDriver.CreateEndpoint", "/NetworkDriver.DeleteEndpoint",
                     "/NetworkDriver.Join", "/NetworkDriver.Leave"]
        let plugin = DockerPlugin(backend: FakeBackend())
        for f in files {
            let bytes = try #require(FileManager.default.contents(atPath: dir + f))
            let reply = await plugin.handle(path: calls[Int(bytes[0]) % calls.count], body: bytes.dropFirst())
            #expect((try? JSONSerialization.jsonObject(with: reply.body)) is [String: Any], "\(f): \(reply.text)")
            #expect(reply.status == (f == "malformed" ? 400 : 200), "\(f): \(reply.status) \(reply.text)")
        }
    }
}
