import Glibc
import Ingress
import Netlink
import OverlayModel
import OverlayTestKit
import PacketFilter
import Testing

/// A lab `ovlt-ing-<random>`: hosts h1... on one bridge (198.18.0.i/15), plus helpers to start
/// tagged servers and to talk to them from Swift sockets opened inside a namespace.
/// `destroy()` in a defer kills the servers (SIGKILL by pid) and removes every namespace.
final class LBLab {
    let lab: Lab
    private var servers: [pid_t] = []
    private let scratch: String

    init(hosts: Int) throws {
        lab = try Lab.create(name: "ovlt-ing-" + String(UInt32.random(in: 0...0xFFFFF), radix: 16), hosts: hosts)
        var template = Array("/tmp/ovlt-ing-XXXXXX".utf8CString)
        guard let dir = mkdtemp(&template) else {
            lab.destroy()
            throw LabError("mkdtemp failed")
        }
        scratch = String(cString: dir)
        guard let f = fopen(scratch + "/server.py", "w") else {
            lab.destroy()
            throw LabError("cannot write the server script")
        }
        fputs(serverScript, f)
        fclose(f)
    }

    func host(_ i: Int) -> Lab.Host { lab.hosts[i - 1] }

    /// Kills the servers this lab started and removes every namespace.
    func destroy() {
        for pid in servers {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, WNOHANG)
        }
        lab.destroy()
        _ = try? Command.run(["rm", "-rf", scratch])
    }

    /// Runs a command in `ns` and fails when it fails.
    @discardableResult
    func sh(_ ns: NetworkNamespace, _ args: String...) throws -> String {
        let r = try lab.run(args, in: ns)
        guard r.succeeded else { throw LabError("\(args.joined(separator: " ")) in \(ns.name): \(r.output)") }
        return r.output
    }

    /// Starts a server in `ns` on `port`: TCP answers each connection with "<tag> <peer>\n" and
    /// then echoes each line as "<tag> <line>"; UDP answers each datagram with "<tag> <peer>".
    func startServer(in ns: NetworkNamespace, proto: String, port: Int, tag: String) throws {
        let log = "\(scratch)/server-\(tag)-\(proto)-\(port).log"
        let r = try lab.run(
            ["sh", "-c", "python3 \(scratch)/server.py \(proto) \(port) \(tag) >\(log) 2>&1 & echo $!"], in: ns)
        guard r.succeeded, let pid = pid_t(r.output.split(separator: "\n").last ?? "") else {
            throw LabError("could not start server: \(r.output)")
        }
        servers.append(pid)
        for _ in 0..<100 {
            if let text = try? Command.run(["cat", log]).output, text.contains("ready") { return }
            usleep(50_000)
        }
        throw LabError("server \(tag) did not start: \((try? Command.run(["cat", log]).output) ?? "")")
    }

    /// The nft table `name` in `ns` as nft text.
    func table(_ name: String, in ns: NetworkNamespace) throws -> String {
        try ns.run { try PacketFilter().listTable(family: .ip, name: name) }
    }
}

/// A TCP connection opened inside a namespace and used from any thread.
final class TCPClient {
    let fd: Int32

    /// Connects from `ns` to address:port (3 s timeouts); nil when it fails.
    init?(from ns: NetworkNamespace, to address: IPv4Address, port: UInt16) {
        let fd = (try? ns.run { () -> Int32 in
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { return -1 }
            var tv = timeval(tv_sec: 3, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            var sa = sockaddr_in.make(address, port)
            let rc = withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            if rc != 0 {
                close(fd)
                return -1
            }
            return fd
        }) ?? -1
        guard fd >= 0 else { return nil }
        self.fd = fd
    }

    deinit { close(fd) }

    /// Reads one line (without the newline), or nil on timeout or close.
    func readLine() -> String? {
        var bytes: [UInt8] = []
        var c: UInt8 = 0
        while true {
            let n = read(fd, &c, 1)
            if n <= 0 { return nil }
            if c == 10 { return String(decoding: bytes, as: UTF8.self) }
            bytes.append(c)
        }
    }

    /// Sends a line and returns the answer line.
    func ask(_ line: String) -> String? {
        let bytes = Array((line + "\n").utf8)
        guard write(fd, bytes, bytes.count) == bytes.count else { return nil }
        return readLine()
    }
}

/// Connects from `ns`, returns the server's greeting "<tag> <peer>" (nil when nothing answered).
func tcpGreeting(from ns: NetworkNamespace, _ address: IPv4Address, _ port: UInt16) -> String? {
    TCPClient(from: ns, to: address, port: port)?.readLine()
}

/// Sends one datagram from a new socket in `ns` (a new flow each time) and returns the answer.
func udpAsk(from ns: NetworkNamespace, _ address: IPv4Address, _ port: UInt16) -> String? {
    try? ns.run { () -> String? in
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var tv = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var sa = sockaddr_in.make(address, port)
        for _ in 0..<3 {
            let sent = withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, "hi", 2, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            guard sent == 2 else { return nil }
            var buf = [UInt8](repeating: 0, count: 512)
            let n = recv(fd, &buf, buf.count, 0)
            if n > 0 {
                return String(decoding: buf[0..<n], as: UTF8.self).trimmedLine()
            }
        }
        return nil
    }
}

extension sockaddr_in {
    static func make(_ address: IPv4Address, _ port: UInt16) -> sockaddr_in {
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = port.bigEndian
        sa.sin_addr.s_addr = address.value.bigEndian
        return sa
    }
}

extension String {
    func trimmedLine() -> String {
        var s = Substring(self)
        while let c = s.last, c == "\n" || c == " " || c == "\r" { s.removeLast() }
        return String(s)
    }

    /// The first word (a server's tag).
    var tag: String { String(split(separator: " ").first ?? "") }
}

/// The elements and types of every map in an `nft list table` text, as "map: key : value" strings,
/// and the names and rules of its chains: enough to compare two tables whatever order the kernel lists them in.
func tableShape(_ text: String) -> Set<String> {
    var result = Set<String>()
    var map: String?
    var chain: String?
    var inElements = false
    for raw in text.split(separator: "\n") {
        let line = raw.trimmed(" \t")
        if line.hasPrefix("map ") {
            map = String(line.dropFirst(4).split(separator: " ").first ?? "")
            chain = nil
            result.insert("map " + map!)
            continue
        }
        if line.hasPrefix("chain ") {
            chain = line.dropFirst(6).split(separator: " ").first.map(String.init) ?? ""
            result.insert("chain " + chain!)
            map = nil
            continue
        }
        if let map, !inElements, line.hasPrefix("type") {
            result.insert("\(map): \(line)")
            continue
        }
        if let chain {
            if !line.isEmpty && line != "}" { result.insert("\(chain): \(line)") }
            continue
        }
        var body = Substring(line)
        if body.hasPrefix("elements = {") {
            inElements = true
            body = body.dropFirst("elements = {".count)
        }
        guard inElements, let map else { continue }
        var closing = false
        if body.hasSuffix("}") {
            body = body.dropLast()
            closing = true
        }
        for item in body.split(separator: ",") {
            let t = String(item).trimmed(" \t")
            if !t.isEmpty { result.insert("\(map): \(t)") }
        }
        if closing { inElements = false }
    }
    return result
}

extension StringProtocol {
    func trimmed(_ set: String) -> String {
        var s = Substring(self)
        while let c = s.first, set.contains(c) { s.removeFirst() }
        while let c = s.last, set.contains(c) { s.removeLast() }
        return String(s)
    }
}

private let serverScript = """
    import socket, socketserver, sys, threading
    proto, port, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if proto == "tcp":
        class H(socketserver.StreamRequestHandler):
            def handle(self):
                self.wfile.write((tag + " " + self.client_address[0] + "\\n").encode())
                self.wfile.flush()
                for line in self.rfile:
                    self.wfile.write((tag + " " + line.decode().strip() + "\\n").encode())
                    self.wfile.flush()
        class S(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True
        s = S(("0.0.0.0", port), H)
        print("ready", flush=True)
        s.serve_forever()
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", port))
        print("ready", flush=True)
        while True:
            d, a = s.recvfrom(2048)
            s.sendto((tag + " " + a[0]).encode(), a)

    """
