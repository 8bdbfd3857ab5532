import Foundation
import OverlayTestKit

/// etcd on lab hosts (`lab up --etcd N`): member eI runs on host hI, in its namespace, on its lab
/// address (clients 2379, peers 2380), with its data under the host's state directory, as managers
/// and etcd members share hosts in a stacked cluster. Every host's overlayd is started with
/// `--cluster-store` naming all of them. `lab down` kills them with the hosts.
enum LabEtcd {
    static let binary = "/usr/bin/etcd"
    static let clientPort = 2379
    static let peerPort = 2380

    static func directory(_ lab: LabOptions, _ host: String) -> String { lab.stateDir(host) + "/etcd" }

    /// `etcd://A:2379,B:2379,...` for the members on `hosts`.
    static func url(_ hosts: [Lab.Host]) -> String {
        "etcd://" + hosts.map { "\($0.address):\(clientPort)" }.joined(separator: ",")
    }

    /// Starts one member on each of `hosts` (one cluster) and waits until it answers with a quorum.
    static func start(_ lab: LabOptions, _ hosts: [Lab.Host]) async throws {
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw CLIError("lab up --etcd needs \(binary) (Debian's etcd-server; `make deps` installs it)")
        }
        let cluster = hosts.map { "e\($0.name.dropFirst())=http://\($0.address):\(peerPort)" }.joined(separator: ",")
        for h in hosts {
            let dir = directory(lab, h.name)
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            guard FileManager.default.createFile(atPath: dir + "/etcd.log", contents: nil, attributes: [.posixPermissions: 0o600]) else {
                throw CLIError("cannot create \(dir)/etcd.log")
            }
            let log = FileHandle(forWritingAtPath: dir + "/etcd.log")!
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/setsid")
            let arguments = ["ip", "netns", "exec", lab.namespace(h.name), binary,
                           "--name", "e\(h.name.dropFirst())", "--data-dir", dir + "/data",
                           "--listen-client-urls", "http://\(h.address):\(clientPort)",
                           "--advertise-client-urls", "http://\(h.address):\(clientPort)",
                           "--listen-peer-urls", "http://\(h.address):\(peerPort)",
                           "--initial-advertise-peer-urls", "http://\(h.address):\(peerPort)",
                           "--initial-cluster", cluster, "--initial-cluster-state", "new",
                           "--initial-cluster-token", lab.name]
            p.arguments = arguments
            // How to start the member again (a test that kills one brings it back with its data).
            try Data(arguments.joined(separator: "\n").utf8).write(to: URL(fileURLWithPath: dir + "/command"))
            p.standardOutput = log
            p.standardError = log
            p.standardInput = FileHandle.nullDevice
            do { try p.run() } catch { throw CLIError("cannot start etcd on \(h.name): \(error)") }
        }
        // Healthy: a member answers a quorum read (etcdctl's endpoint health), from the first host.
        let endpoints = hosts.map { "http://\($0.address):\(clientPort)" }.joined(separator: ",")
        for _ in 0..<150 {
            let r = try? Command.run(["ip", "netns", "exec", lab.namespace(hosts[0].name), "/usr/bin/etcdctl",
                                      "--endpoints", endpoints, "--command-timeout", "1s", "endpoint", "health"], timeout: 10)
            if r?.succeeded == true { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        let log = (try? String(contentsOfFile: directory(lab, hosts[0].name) + "/etcd.log", encoding: .utf8)) ?? ""
        throw CLIError("the lab's etcd did not become healthy in 15 s: \(log.split(separator: "\n").suffix(3).joined(separator: " | "))")
    }

    /// The process of the host's member: the etcd whose data directory is the host's (found in
    /// /proc, whoever started it: `setsid` may have forked).
    static func memberPID(_ lab: LabOptions, _ host: String) -> Int32? {
        let needle = Data((directory(lab, host) + "/data").utf8)
        for e in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(e), let cmdline = FileManager.default.contents(atPath: "/proc/\(e)/cmdline"),
                  cmdline.starts(with: Data(binary.utf8)), cmdline.range(of: needle) != nil else { continue }
            return pid
        }
        return nil
    }

    /// Kills the host's member, if it has one (SIGKILL: its data goes with the lab).
    static func stop(_ lab: LabOptions, _ host: String) {
        if let pid = memberPID(lab, host) { kill(pid, SIGKILL) }
    }
}
