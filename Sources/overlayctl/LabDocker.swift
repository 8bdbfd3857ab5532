import Foundation
import OverlayTestKit

/// Docker on lab hosts (`lab up --docker`): Debian's dockerd (with its own containerd and runc)
/// on every host, in the host's mount namespace (`LabMountNamespace`), which its overlayd shares,
/// so dockerd finds overlayd's plugin at /run/docker/plugins/swift-overlay.sock as on a real host.
/// Its data root, configuration, pid file and API socket are under the host's state directory
/// (`docker/`); the API socket is what `lab exec` sets DOCKER_HOST to. dockerd runs with
/// `--live-restore` (containers outlive its restarts), no docker0 (`--bridge=none`) and without
/// iptables rules (the lab has no way out; published ports use docker-proxy). A busybox image
/// (`busybox:lab`) is imported from busybox-static: no registry.
enum LabDocker {
    static func directory(_ lab: LabOptions, _ host: String) -> String { lab.stateDir(host) + "/docker" }
    static func socket(_ lab: LabOptions, _ host: String) -> String { directory(lab, host) + "/docker.sock" }
    static let image = "busybox:lab"
    static let pluginSocket = "/run/docker/plugins/swift-overlay.sock"

    /// Whether the host was made with Docker.
    static func isOn(_ lab: LabOptions, _ host: String) -> Bool {
        FileManager.default.fileExists(atPath: directory(lab, host) + "/daemon.json")
    }

    /// What the docker CLI needs in its environment on the host.
    static func environment(_ lab: LabOptions, _ host: String) -> [String] {
        ["DOCKER_HOST=unix://\(socket(lab, host))"]
    }

    /// overlayd's flags on a host with Docker.
    static func overlaydArguments(_ lab: LabOptions, _ host: String) -> [String] {
        ["--docker-plugin-socket", pluginSocket, "--docker-host", "unix://\(socket(lab, host))"]
    }

    /// Makes the host's mount namespace and dockerd's files (before its overlayd starts).
    static func setUp(_ lab: LabOptions, _ host: String, extra: [String] = []) throws {
        for (tool, package) in [("/usr/sbin/dockerd", "docker.io"), ("/usr/bin/containerd", "containerd"), ("/bin/busybox", "busybox-static")]
        where !FileManager.default.isExecutableFile(atPath: tool) {
            throw CLIError("lab up --docker needs \(tool) (Debian's \(package); `make deps` installs it)")
        }
        let d = directory(lab, host)
        try FileManager.default.createDirectory(atPath: d + "/data", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try """
            {"deprecated-key-path": "\(d)/key.json"}

            """.write(toFile: d + "/daemon.json", atomically: true, encoding: .utf8)
        // Kept for every start (`lab restart --dockerd` too).
        guard FileManager.default.createFile(atPath: d + "/dockerd.args", contents: try JSONEncoder().encode(extra),
                                             attributes: [.posixPermissions: 0o600]) else {
            throw CLIError("cannot create \(d)/dockerd.args")
        }
        try LabMountNamespace.make(lab, host)
        // dockerd forwards the names its resolver does not know (containers on other hosts) to a
        // loopback nameserver of its resolv.conf, from its own namespace: overlayd answers there.
        try "nameserver 127.0.0.11\n".write(toFile: d + "/resolv.conf", atomically: true, encoding: .utf8)
        let r = try Command.run(LabMountNamespace.enter(lab, host) + ["mount", "--bind", d + "/resolv.conf", "/etc/resolv.conf"])
        guard r.succeeded else { throw CLIError("cannot give dockerd on \(host) its resolv.conf: \(r.output)") }
    }

    /// Starts dockerd on the host (in its namespaces) and waits until it answers.
    static func start(_ lab: LabOptions, _ host: String) throws {
        let d = directory(lab, host)
        let extra = FileManager.default.contents(atPath: d + "/dockerd.args").flatMap { try? JSONDecoder().decode([String].self, from: $0) } ?? []
        do {
            _ = try Command.start(LabMountNamespace.enter(lab, host) + [
                "/usr/sbin/dockerd", "--data-root", d + "/data", "--exec-root", "/run/docker", "--pidfile", d + "/docker.pid",
                "-H", "unix://\(socket(lab, host))", "--config-file", d + "/daemon.json",
                "--bridge=none", "--iptables=false", "--ip-masq=false", "--live-restore",
            ] + extra, log: d + "/dockerd.log")
        } catch { throw CLIError("cannot start dockerd on \(host): \(error)") }
        for _ in 0..<300 {
            if let r = try? Command.run(["env"] + environment(lab, host) + ["docker", "version", "--format", "{{.Server.Version}}"], timeout: 10),
               r.succeeded { return }
            usleep(100_000)
        }
        let text = (try? String(contentsOfFile: d + "/dockerd.log", encoding: .utf8)) ?? ""
        throw CLIError("dockerd on \(host) did not answer in 30 s: \(text.split(separator: "\n").suffix(3).joined(separator: " | "))")
    }

    /// dockerd's process on the host, from its pid file.
    static func pid(_ lab: LabOptions, _ host: String) -> Int32? {
        guard let text = try? String(contentsOfFile: directory(lab, host) + "/docker.pid", encoding: .utf8),
              let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), kill(pid, 0) == 0 else { return nil }
        return pid
    }

    /// Imports the busybox image on the host.
    static func importImage(_ lab: LabOptions, _ host: String) throws {
        let tar = try LabPodman.rootfsTar(lab)
        let r = try Command.run(["env"] + environment(lab, host) + ["docker", "import", "--change", "CMD [\"/bin/sh\"]", tar, image], timeout: 120)
        guard r.succeeded else { throw CLIError("docker import on \(host): \(r.output.suffix(500))") }
    }

    /// Removes every container of the host and stops its dockerd (before its overlayd stops).
    static func tearDown(_ lab: LabOptions, _ host: String) {
        guard isOn(lab, host) else { return }
        let env = ["env"] + environment(lab, host)
        if let ids = try? Command.run(env + ["docker", "ps", "-aq"], timeout: 30), ids.succeeded {
            let list = ids.output.split(whereSeparator: \.isWhitespace).map(String.init)
            if !list.isEmpty { _ = try? Command.run(env + ["docker", "rm", "-f"] + list, timeout: 60) }
        }
        guard let pid = pid(lab, host) else { return }
        kill(pid, SIGTERM)
        for _ in 0..<150 where kill(pid, 0) == 0 { usleep(100_000) }
        if kill(pid, 0) == 0 { kill(pid, SIGKILL) }
    }
}
