import Glibc
import GWBridge
import Netlink
import OverlayModel
import OverlayTestKit
import PacketFilter
import Testing

/// A two-host lab `ovlt-gw<random>` with a gateway bridge object for h1; `destroy()` in a defer.
final class GWLab {
    let lab: Lab
    let gw: GatewayBridge
    private var servers: [pid_t] = []
    private let scratch: String

    var h1: Lab.Host { lab.hosts[0] }
    var h2: Lab.Host { lab.hosts[1] }

    init() throws {
        lab = try Lab.create(name: "ovlt-gw" + String(UInt32.random(in: 0...0xFFFFF), radix: 16), hosts: 2)
        gw = GatewayBridge(namespace: lab.hosts[0].namespace)
        var template = Array("/tmp/ovlt-gw-XXXXXX".utf8CString)
        guard let dir = mkdtemp(&template) else {
            lab.destroy()
            throw LabError("mkdtemp failed")
        }
        scratch = String(cString: dir)
        try Self.write(serverScript, to: scratch + "/server.py")
        try Self.write(clientScript, to: scratch + "/client.py")
    }

    /// Kills the servers this lab started (by pid) and removes every namespace.
    func destroy() {
        for pid in servers {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, WNOHANG)
        }
        lab.destroy()
        _ = try? Command.run(["rm", "-rf", scratch])
    }

    /// A container namespace of the lab with `lo` up.
    func container(_ suffix: String) throws -> NetworkNamespace {
        let ns = try lab.makeNamespace(suffix)
        try NetlinkSocket(namespace: ns).setUp("lo")
        return ns
    }

    /// Starts a server in `ns` answering each TCP connection or UDP datagram on `port` with
    /// "<tag> <peer address>", and waits until it listens.
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

    /// Connects from `ns` to host:port and returns the server's answer ("<tag> <peer>"), or nil
    /// when nothing answered.
    func ask(from ns: NetworkNamespace, _ proto: String, _ host: String, _ port: Int) throws -> String? {
        let r = try lab.run(["python3", "\(scratch)/client.py", proto, host, String(port)], in: ns, timeout: 15)
        guard r.succeeded else { return nil }
        return r.output.split(separator: "\n").last.map(String.init)
    }

    /// Whether any of three pings from `ns` to `address` is answered.
    func ping(from ns: NetworkNamespace, _ address: String) throws -> Bool {
        try lab.run(["ping", "-c3", "-i0.3", "-W1", address], in: ns).succeeded
    }

    /// The owned nftables tables in h1, as text (empty when absent).
    func rules(_ table: String = "ovl_gwbridge") throws -> String {
        try h1.namespace.run {
            let nft = try PacketFilter()
            var text = ""
            for family in [NFTFamily.ip, .bridge] where try nft.tableExists(family: family, name: table) {
                text += try nft.listTable(family: family, name: table)
            }
            return text
        }
    }

    private static func write(_ text: String, to path: String) throws {
        guard let f = fopen(path, "w") else { throw LabError("cannot write \(path)") }
        fputs(text, f)
        fclose(f)
    }
}

private let serverScript = """
    import socket, sys
    proto, port, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if proto == "tcp":
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(16)
        print("ready", flush=True)
        while True:
            c, a = s.accept()
            print("peer", a[0], flush=True)
            c.sendall((tag + " " + a[0] + "\\n").encode())
            c.close()
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", port))
        print("ready", flush=True)
        while True:
            d, a = s.recvfrom(2048)
            print("peer", a[0], flush=True)
            s.sendto((tag + " " + a[0] + "\\n").encode(), a)

    """

private let clientScript = """
    import socket, sys
    proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if proto == "tcp":
        s = socket.create_connection((host, port), timeout=3)
        print(s.recv(200).decode().strip())
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(1)
        for attempt in range(3):
            s.sendto(b"hi", (host, port))
            try:
                d, _ = s.recvfrom(200)
                print(d.decode().strip())
                sys.exit(0)
            except socket.timeout:
                continue
        sys.exit(1)

    """
