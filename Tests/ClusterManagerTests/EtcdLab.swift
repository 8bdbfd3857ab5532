import Foundation
import Synchronization
import Testing

@testable import ClusterManager

#if canImport(Glibc)
import Glibc
#endif

/// Real etcd members for a test: `/usr/bin/etcd` on loopback ports of 24000-24999, data under
/// `/tmp/etcd-wt-*`, killed (SIGKILL, then reaped) and removed when the test ends, whether it
/// passed or not. A missing etcd fails the test, saying how to install it.
final class EtcdLab: Sendable {
    static let binary = "/usr/bin/etcd"

    struct Member: Sendable {
        var name: String
        var clientPort: Int
        var peerPort: Int
        var arguments: [String]
    }

    /// Client TLS files made for the lab (a CA, the server's and a client's certificate).
    struct TLSFiles: Sendable {
        var ca: String
        var clientCertificate: String
        var clientKey: String
        var otherCA: String
    }

    let dir: String
    let members: [Member]
    let tls: TLSFiles?
    private let pids: Mutex<[pid_t?]>

    /// Starts `count` members (one cluster) and waits until every one is healthy.
    static func start(members count: Int = 1, tls: Bool = false) async throws -> EtcdLab {
        try #require(
            FileManager.default.isExecutableFile(atPath: binary),
            "etcd is not installed at \(binary): `make deps` installs it (Debian package etcd-server)")
        let dir = "/tmp/etcd-wt-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let files = tls ? try makeCertificates(in: dir) : nil
        let ports = PortPool.take(2 * count)
        let scheme = tls ? "https" : "http"
        let cluster = (0..<count).map { "n\($0)=http://127.0.0.1:\(ports[2 * $0 + 1])" }.joined(separator: ",")
        let members = (0..<count).map { i -> Member in
            let client = ports[2 * i], peer = ports[2 * i + 1]
            var args = [
                "--name", "n\(i)", "--data-dir", "\(dir)/n\(i)",
                "--listen-client-urls", "\(scheme)://127.0.0.1:\(client)", "--advertise-client-urls", "\(scheme)://127.0.0.1:\(client)",
                "--listen-peer-urls", "http://127.0.0.1:\(peer)", "--initial-advertise-peer-urls", "http://127.0.0.1:\(peer)",
                "--initial-cluster", cluster, "--initial-cluster-token", "t-\(dir.suffix(8))", "--initial-cluster-state", "new",
                "--logger", "zap", "--log-outputs", "\(dir)/n\(i).log",
            ]
            if let files {
                args += [
                    "--cert-file", "\(dir)/server.crt", "--key-file", "\(dir)/server.key", "--client-cert-auth", "--trusted-ca-file", files.ca,
                ]
            }
            return Member(name: "n\(i)", clientPort: client, peerPort: peer, arguments: args)
        }
        let lab = EtcdLab(dir: dir, members: members, tls: files)
        do {
            for i in members.indices { try lab.start(i) }
            try await lab.waitHealthy(Array(members.indices))
        } catch {
            lab.stop()
            throw error
        }
        return lab
    }

    private init(dir: String, members: [Member], tls: TLSFiles?) {
        self.dir = dir
        self.members = members
        self.tls = tls
        pids = Mutex(Array(repeating: nil, count: members.count))
    }

    deinit { stop() }

    /// The members' client URLs.
    var endpoints: [String] { members.map { "\(tls == nil ? "http" : "https")://127.0.0.1:\($0.clientPort)" } }

    /// A configuration for this lab (with the client certificate when the lab has TLS).
    func configuration(pageSize: Int = 1000) -> EtcdConfiguration {
        var c = EtcdConfiguration(
            endpoints: endpoints, tls: tls.map { .init(caFile: $0.ca, certificateFile: $0.clientCertificate, keyFile: $0.clientKey) })
        c.pageSize = pageSize
        return c
    }

    /// A store of a cluster of its own on this lab.
    func store(pageSize: Int = 1000, clusterID: String = "c-\(UUID().uuidString.prefix(6))") throws -> EtcdStore {
        try EtcdStore(configuration(pageSize: pageSize), clusterID: clusterID)
    }

    /// Starts member `i` (again: a restart reuses its data).
    func start(_ i: Int) throws {
        let m = members[i]
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "\(dir)/\(m.name).out", O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv: [UnsafeMutablePointer<CChar>?] = ([Self.binary] + m.arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, Self.binary, &actions, nil, argv, environ)
        guard rc == 0 else { throw StoreError("posix_spawn \(Self.binary): \(String(cString: strerror(rc)))") }
        pids.withLock { $0[i] = pid }
    }

    /// Kills member `i` at once (SIGKILL) and reaps it.
    func kill(_ i: Int) {
        guard let pid = pids.withLock({ p -> pid_t? in
            defer { p[i] = nil }
            return p[i]
        }) else { return }
        _ = Glibc.kill(pid, SIGKILL)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    }

    /// Kills every member and removes the data.
    func stop() {
        for i in members.indices { kill(i) }
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// Waits until members `indices` say `{"health":"true"}` (15 s at most).
    func waitHealthy(_ indices: [Int], within limit: Duration = .seconds(15)) async throws {
        var c = configuration()
        c.endpoints = indices.map { endpoints[$0] }
        let client = try EtcdClient(c)
        let deadline = ContinuousClock.now + limit
        var last: [EtcdHealth] = []
        while ContinuousClock.now < deadline {
            last = await client.health(timeout: .seconds(1))
            if last.allSatisfy({ $0 == .healthy }) { break }
            try? await Task.sleep(for: .milliseconds(100))
        }
        try? await client.shutdown()
        if last.allSatisfy({ $0 == .healthy }) { return }
        let logs = indices.map { (try? String(contentsOfFile: "\(dir)/\(members[$0].name).out", encoding: .utf8)) ?? "" }
        throw StoreError("etcd members \(indices) not healthy in \(limit): \(last); output: \(logs.joined().suffix(2000))")
    }

    /// A CA, a server certificate for 127.0.0.1, a client certificate, and a second CA (openssl,
    /// ECDSA P-256, as etcd's own docs make them).
    private static func makeCertificates(in dir: String) throws -> TLSFiles {
        let script = """
            set -e
            cd '\(dir)'
            ca() { openssl ecparam -name prime256v1 -genkey -noout -out $1.key
                   openssl req -x509 -new -key $1.key -sha256 -days 30 -subj "/CN=$1" -out $1.crt \\
                     -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"; }
            leaf() { openssl ecparam -name prime256v1 -genkey -noout -out $1.key
                     openssl req -new -key $1.key -subj "/CN=$1" -out $1.csr
                     printf "$3" > $1.ext
                     openssl x509 -req -in $1.csr -CA $2.crt -CAkey $2.key -CAcreateserial -days 30 -sha256 -extfile $1.ext -out $1.crt; }
            ca ca
            ca other-ca
            leaf server ca "basicConstraints=CA:FALSE\\nkeyUsage=critical,digitalSignature,keyEncipherment\\nextendedKeyUsage=serverAuth,clientAuth\\nsubjectAltName=IP:127.0.0.1,DNS:localhost\\n"
            leaf client ca "basicConstraints=CA:FALSE\\nkeyUsage=critical,digitalSignature,keyEncipherment\\nextendedKeyUsage=clientAuth\\n"
            """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", script]
        p.standardOutput = FileHandle.nullDevice
        let errors = Pipe()
        p.standardError = errors
        try p.run()
        let text = errors.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw StoreError("openssl could not make the test certificates: \(String(decoding: text, as: UTF8.self))")
        }
        return TLSFiles(ca: "\(dir)/ca.crt", clientCertificate: "\(dir)/client.crt", clientKey: "\(dir)/client.key", otherCA: "\(dir)/other-ca.crt")
    }
}

/// Loopback ports of 24000-24999 for the labs of this test run: each handed out once, and only
/// if nothing listens on it now.
enum PortPool {
    private static let next = Mutex(24000 + Int(getpid() % 50) * 20)

    static func take(_ count: Int) -> [Int] {
        var ports: [Int] = []
        while ports.count < count {
            let port = next.withLock { n -> Int in
                defer { n = n >= 24999 ? 24000 : n + 1 }
                return n
            }
            if isFree(port) { ports.append(port) }
        }
        return ports
    }

    /// Whether a TCP socket can bind 127.0.0.1:port.
    static func isFree(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}

/// Runs `body` with a lab of `members` etcd members, stopped when it returns or throws.
func withEtcd<T>(members: Int = 1, tls: Bool = false, _ body: (EtcdLab) async throws -> T) async throws -> T {
    let lab = try await EtcdLab.start(members: members, tls: tls)
    defer { lab.stop() }
    return try await body(lab)
}

/// Runs `body` with `store`, shut down after it.
func using<T>(_ store: EtcdStore, _ body: (EtcdStore) async throws -> T) async throws -> T {
    do {
        let result = try await body(store)
        try await store.shutdown()
        return result
    } catch {
        try? await store.shutdown()
        throw error
    }
}
