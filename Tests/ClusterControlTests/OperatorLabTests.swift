import Foundation
import Glibc
import OverlayTestKit
import Testing

/// What an operator reaches for first: versions, Docker's global `-H`, the health endpoints and
/// `-q` on the lists, `run`'s exit status.
@Suite(.serialized) struct OperatorLabTests {
    @Test func versionsGlobalHostHealthAndQuietLists() async throws {
        guard getuid() == 0 else {
            Issue.record("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for the lab")
            return
        }
        let bin = CLILab.binDirectory()
        // --version on both binaries: one line, exit 0.
        for program in ["overlayd", "overlayctl"] {
            let r = try Command.run([bin + "/" + program, "--version"])
            #expect(r.succeeded && r.output.hasPrefix("\(program) version ") && r.output.contains(", API 1, linux/"), "\(r.output)")
        }
        let lab = try CLILab.up("ovlt-op", hosts: 1)
        defer { lab.down() }
        let socket = "/run/\(lab.name)/h1/overlayd.sock"
        let ctl = bin + "/overlayctl"
        // -H before the command (Docker's habit), in each spelling, and after it; OVERLAY_HOST unset.
        for args in [["-H", "unix://" + socket, "info"], ["--host", "unix://" + socket, "info"], ["-H=unix://" + socket, "info"],
                     ["--host=unix://" + socket, "info"], ["info", "-H", "unix://" + socket]] {
            let r = try Command.run(["env", "-u", "OVERLAY_HOST", ctl] + args)
            #expect(r.succeeded && r.output.contains("\"hostname\" : \"h1\"") && r.output.contains("\"version\" : \""), "\(args): \(r.output)")
        }
        let wrong = try Command.run(["env", "-u", "OVERLAY_HOST", ctl, "-H", "tcp://1.2.3.4:2375", "info"])
        #expect(!wrong.succeeded && wrong.output.contains("only unix:///path") && wrong.output.split(separator: "\n").count == 1, "\(wrong.output)")
        // `version`: the client's and the daemon's, with the kernel's release.
        let version = try lab.must("h1", ["version"])
        let kernel = try Command.run(["uname", "-r"]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(version.contains("Client:") && version.contains("Server:") && version.contains(" Version:           0.")
                    && version.contains("Kernel Version:    \(kernel)"), "\(version)")
        // Health on the API socket: Docker's /_ping, /healthz, /readyz.
        func get(_ path: String) throws -> (Int, String) {
            let r = try Command.run(["curl", "-s", "-m", "5", "--unix-socket", socket, "-w", "\n%{http_code}", "http://overlayd" + path])
            let lines = r.output.split(separator: "\n", omittingEmptySubsequences: false)
            return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n").trimmingCharacters(in: .whitespacesAndNewlines))
        }
        #expect(try get("/_ping") == (200, "OK"))
        #expect(try get("/healthz") == (200, "ok"))
        #expect(try get("/readyz") == (200, "ready (not in a swarm)"))
        let v = try get("/v1/version")
        let json = try JSONSerialization.jsonObject(with: Data(v.1.utf8)) as? [String: Any] ?? [:]
        #expect(v.0 == 200 && json["ApiVersion"] as? String == "1" && (json["Version"] as? String)?.isEmpty == false, "\(v)")
        _ = try lab.must("h1", ["swarm", "init", "--advertise-addr", "198.18.0.1"])
        _ = try lab.must("h1", ["network", "create", "-d", "overlay", "--attachable", "--subnet", "10.40.0.0/24", "ops"])
        #expect(try get("/readyz") == (200, "ready"))
        // -q on the lists: the IDs the table shows, one per line.
        _ = try lab.must("h1", ["run", "-d", "--name", "q1", "--network", "ops", "--", "sleep", "infinity"])
        let networkIDs = try lab.must("h1", ["network", "ls", "-q"]).split(separator: "\n").map(String.init)
        let table = try lab.must("h1", ["network", "ls"])
        #expect(!networkIDs.isEmpty && networkIDs.allSatisfy { $0.count == 12 && table.contains($0) }, "\(networkIDs) vs \(table)")
        let containerIDs = try lab.must("h1", ["ps", "--quiet"]).split(separator: "\n").map(String.init)
        let id = try JSONSerialization.jsonObject(with: Data(try lab.must("h1", ["inspect", "q1"]).utf8)) as? [[String: Any]]
        #expect(containerIDs.count == 1 && (id?.first?["Id"] as? String)?.hasPrefix(containerIDs[0]) == true, "\(containerIDs)")
        let nodeIDs = try lab.must("h1", ["node", "ls", "-q"]).split(separator: "\n").map(String.init)
        let me = try JSONSerialization.jsonObject(with: Data(try lab.must("h1", ["info"]).utf8)) as? [String: Any]
        #expect(nodeIDs == [me?["nodeID"] as? String ?? "?"], "\(nodeIDs)")
        #expect(try lab.must("h1", ["service", "ls", "-q"]).isEmpty)
        // `run`'s exit status, as Docker's: 125 for the daemon's refusal or bad flags, 127 for a
        // command not found, else the command's own.
        #expect(try lab.on("h1", ["run", "--network", "nope", "--", "true"]).status == 125)
        #expect(try lab.on("h1", ["run", "--bogus", "--network", "ops", "--", "true"]).status == 125)
        #expect(try lab.on("h1", ["run", "--name", "e3", "--network", "ops", "--", "sh", "-c", "exit 3"]).status == 3)
        #expect(try lab.on("h1", ["run", "--name", "e127", "--network", "ops", "--", "no-such-command"]).status == 127)
        _ = try lab.must("h1", ["rm", "-f", "e3", "e127"])
        // What -q is for: `rm -f $(ps -q)`.
        _ = try lab.must("h1", ["rm", "-f"] + containerIDs)
        #expect(try lab.must("h1", ["ps", "-q"]).isEmpty)
    }
}
