import Foundation
import Testing

@testable import ClusterManager

#if canImport(Glibc)
import Glibc
#endif

/// `overlayd --cluster-store` against a real etcd that asks for TLS client certificates: the
/// wrong credentials are one line at start, and the daemon serves nothing; the right ones start it.
@Suite(.serialized) struct EtcdCredentialsTests {
    /// overlayd, next to the test bundle's products.
    static var overlayd: String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = (exe as NSString).deletingLastPathComponent
        while !FileManager.default.isExecutableFile(atPath: dir + "/overlayd") && dir.count > 1 {
            dir = (dir as NSString).deletingLastPathComponent
        }
        return dir + "/overlayd"
    }

    /// Starts overlayd with `options` against `lab`; returns its exit status and output once it
    /// exits, or nil (after stopping it) if it was still serving after `limit`.
    func start(_ lab: EtcdLab, _ options: [String], limit: Duration = .seconds(15)) throws -> (status: Int32, output: String)? {
        let dir = lab.dir + "/overlayd-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try Data("{}\n".utf8).write(to: URL(fileURLWithPath: dir + "/daemon.json"))
        let members = lab.members.map { "127.0.0.1:\($0.clientPort)" }.joined(separator: ",")
        let argv = [Self.overlayd, "--config-file", dir + "/daemon.json", "--state-dir", dir + "/state", "--socket", dir + "/s.sock",
                    "--cluster-store", "etcd://\(members)"] + options.flatMap { ["--cluster-store-opt", $0] }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, dir + "/out", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let cargv: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { cargv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, Self.overlayd, &actions, nil, cargv, environ)
        try #require(rc == 0, "posix_spawn overlayd: \(String(cString: strerror(rc)))")
        let deadline = ContinuousClock.now + limit
        var status: Int32 = 0
        while ContinuousClock.now < deadline {
            if waitpid(pid, &status, WNOHANG) == pid {
                let output = (try? String(contentsOfFile: dir + "/out", encoding: .utf8)) ?? ""
                return ((status >> 8) & 0xff, output)
            }
            if FileManager.default.fileExists(atPath: dir + "/s.sock") {
                kill(pid, SIGTERM)
                while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                return nil
            }
            usleep(50_000)
        }
        kill(pid, SIGKILL)
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        Issue.record("overlayd neither served nor exited in \(limit)")
        return nil
    }

    @Test func wrongCredentialsAreOneLineAndTheRightOnesStart() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.overlayd), "build overlayd first (swift build)")
        try await withEtcd(tls: true) { lab in
            let tls = try #require(lab.tls)
            let cases: [(options: [String], says: String)] = [
                // A CA that did not sign the members' certificates.
                (["kv.cacertfile=\(tls.otherCA)", "kv.certfile=\(tls.clientCertificate)", "kv.keyfile=\(tls.clientKey)"], "certificate"),
                // No client certificate, where the members ask for one.
                (["kv.cacertfile=\(tls.ca)"], "etcd"),
            ]
            for (options, says) in cases {
                let result = try #require(try start(lab, options), "overlayd started with \(options)")
                #expect(result.status == 1, "\(options): \(result.output)")
                let lines = result.output.split(separator: "\n").filter { $0.hasPrefix("overlayd:") }
                #expect(lines.count == 1, "one line: \(result.output)")
                #expect(lines.first?.lowercased().contains(says) == true, "\(options): \(result.output)")
            }
            // The right ones: it serves.
            let ok = try start(lab, ["kv.cacertfile=\(tls.ca)", "kv.certfile=\(tls.clientCertificate)", "kv.keyfile=\(tls.clientKey)"])
            #expect(ok == nil, "overlayd with the right credentials exited: \(String(describing: ok))")
        }
    }
}
