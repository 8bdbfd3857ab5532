import Foundation
import COverlayShims
import Glibc
import Testing
import ClusterControl
import Gossip
import OverlayDriver
import OverlayModel
import OverlayTestKit

/// A long-running child: started without waiting (Command.run waits), output to a file, no
/// blocked signals, so SIGKILL/SIGTERM from the test act at once.
struct Child {
    let pid: pid_t
    let log: String

    static func spawn(_ arguments: [String], log: String) throws -> Child {
        let pid = try Command.start(arguments, log: log)
        return Child(pid: pid, log: log)
    }

    var isRunning: Bool {
        var status: Int32 = 0
        return waitpid(pid, &status, WNOHANG) == 0
    }

    /// Sends `signal` and waits up to `timeout` seconds for the exit (then SIGKILL). Returns the raw wait status.
    @discardableResult
    func stop(_ signal: Int32 = SIGKILL, timeout: Double = 5) -> Int32 {
        kill(pid, signal)
        var status: Int32 = 0
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid || r < 0 { return status }
            usleep(20_000)
        }
        kill(pid, SIGKILL)
        waitpid(pid, &status, 0)
        return status
    }

    var output: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

    /// Starts `tcpdump` (its full command line in `arguments`, e.g. behind `ip netns exec`) in
    /// immediate mode and returns once it says it is listening. A capture started with a fixed
    /// sleep misses packets when the machine is busy; without immediate mode libpcap holds packets
    /// in its ring until a block retires (up to a second), and the SIGINT that ends the capture
    /// loses them. The log is emptied first, so an earlier run's line does not count.
    static func capture(_ arguments: [String], log: String, within seconds: Double = 20) throws -> Child {
        guard let at = arguments.firstIndex(of: "tcpdump") else { throw LabError("not a tcpdump command: \(arguments)") }
        var arguments = arguments
        arguments.insert("--immediate-mode", at: at + 1)
        unlink(log)
        let child = try spawn(arguments, log: log)
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if child.output.contains("listening on") { return child }
            guard child.isRunning else { throw LabError("tcpdump exited before listening: \(child.output)") }
            usleep(20_000)
        }
        child.stop()
        throw LabError("tcpdump did not start listening within \(seconds) s: \(child.output)")
    }

    /// Ends a capture: SIGINT, so tcpdump flushes its file, then waits for the exit.
    func finishCapture() {
        stop(SIGINT, timeout: 10)
    }
}

/// The overlay-node binary: next to the test bundle (`.build/<config>/`), or `.build/debug`.
func overlayNodeBinary() throws -> String {
    var candidates: [String] = []
    var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for _ in 0 ..< 5 {
        candidates.append(dir.appendingPathComponent("overlay-node").path)
        dir = dir.deletingLastPathComponent()
    }
    candidates.append(FileManager.default.currentDirectoryPath + "/.build/debug/overlay-node")
    if let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) { return found }
    throw LabError("overlay-node is not built (looked in \(candidates.joined(separator: ", "))); run `swift build --build-tests` or `swift build --product overlay-node` first")
}

func waitFor(_ seconds: Double, _ check: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try check() { return true }
        usleep(100_000)
    }
    return try check()
}

@Suite(.serialized) struct OverlayAgentLabTests {
    @Test func threeHostsLearnLoseAndRegainPeersThroughGossip() throws {
        guard getuid() == 0 else {
            Issue.record("needs root (network namespaces)")
            return
        }
        let binary = try overlayNodeBinary()
        let labName = "ovlt-g\(String(UInt32.random(in: 0 ..< 0xffff), radix: 16))"
        let stateRoot = "/run/\(labName)-state"
        let lab = try Lab.create(name: labName, hosts: 3)
        var children: [Int: Child] = [:]
        defer {
            for c in children.values { c.stop(SIGTERM, timeout: 5) }
            for i in 1 ... 3 {
                // Sandboxes a killed agent left, then the handle directory's own (shared) bind mount.
                let handles = "\(stateRoot)/h\(i)/netns"
                Lab.destroyAll(prefix: "sb-", handleDirectory: handles)
                for _ in 0 ..< 3 where (try? Lab.run(["umount", handles], timeout: 5))?.succeeded == true {}
            }
            lab.destroy()
            try? FileManager.default.removeItem(atPath: stateRoot)
        }
        try FileManager.default.createDirectory(atPath: stateRoot, withIntermediateDirectories: true)
        var containers: [String] = []
        for i in 1 ... 3 { containers.append(try lab.makeNamespace("c\(i)").path!) }
        func address(_ i: Int) -> String { "10.0.0.\(i + 1)" }

        func start(_ i: Int) throws {
            let host = lab.hosts[i - 1]
            var args = ["nsenter", "--net=\(host.namespace.path!)", "--", binary, "--node", "h\(i)", "--bind", "\(host.address)",
                        "--state-dir", "\(stateRoot)/h\(i)", "--network", "demo:10.0.0.0/24:4096",
                        "--container-ns", containers[i - 1], "--ip", address(i), "--host-ns", host.namespace.path!, "--fast"]
            for j in 1 ... 3 where j != i { args += ["--join", "198.18.0.\(j)"] }
            children[i] = try Child.spawn(args, log: "\(stateRoot)/h\(i).log")
        }
        /// Whether host `i`'s sandbox has a neighbour entry for host `j`'s container.
        func knows(_ i: Int, _ j: Int) -> Bool {
            let sandbox = "\(stateRoot)/h\(i)/netns/sb-4096"
            guard FileManager.default.fileExists(atPath: sandbox),
                  let r = try? Lab.run(["nsenter", "--net=\(sandbox)", "--", "ip", "neigh", "show", address(j)], timeout: 5)
            else { return false }
            return r.succeeded && r.output.contains("lladdr")
        }
        func ping(_ i: Int, _ j: Int) -> Bool {
            (try? Lab.run(["nsenter", "--net=\(containers[i - 1])", "--", "ping", "-c", "1", "-W", "1", address(j)], timeout: 5))?.succeeded ?? false
        }
        func logs() -> String { children.keys.sorted().map { "--- h\($0):\n\(children[$0]!.output)" }.joined(separator: "\n") }

        let t0 = Date()
        for i in 1 ... 3 { try start(i) }
        let allKnown = waitFor(20) { (1 ... 3).allSatisfy { i in (1 ... 3).allSatisfy { j in i == j || knows(i, j) } } }
        let learned = Date().timeIntervalSince(t0)
        #expect(allKnown, "not every host learned every peer:\n\(logs())")
        guard allKnown else { return }
        for i in 1 ... 3 { for j in 1 ... 3 where i != j { #expect(ping(i, j), "c\(i) cannot reach \(address(j))") } }

        // SIGKILL h1's agent: the others withdraw its endpoint once gossip declares it dead.
        let t1 = Date()
        children[1]!.stop(SIGKILL)
        children[1] = nil
        let withdrawn = waitFor(15) { !knows(2, 1) && !knows(3, 1) }
        let withdrawal = Date().timeIntervalSince(t1)
        #expect(withdrawn, "h1's peer was not withdrawn:\n\(logs())")
        #expect(knows(2, 3) && knows(3, 2))

        // Start it again: its endpoint comes back everywhere, and it learns the others.
        let t2 = Date()
        try start(1)
        let back = waitFor(20) { knows(2, 1) && knows(3, 1) && knows(1, 2) && knows(1, 3) }
        let restored = Date().timeIntervalSince(t2)
        #expect(back, "h1's peer did not come back:\n\(logs())")
        if back { #expect(ping(2, 1) && ping(1, 3)) }

        // A graceful stop withdraws at once (the record is deleted before leaving).
        let t3 = Date()
        let status = children[3]!.stop(SIGTERM, timeout: 10)
        let h3log = children[3]!.output
        children[3] = nil
        #expect(status == 0, "overlay-node did not exit cleanly on SIGTERM (wait status \(status)):\n\(h3log)")
        let gone = waitFor(10) { !knows(1, 3) && !knows(2, 3) }
        let graceful = Date().timeIntervalSince(t3)
        #expect(gone)
        print(String(format: "overlay-node lab: all peers learned %.2f s after start, withdrawn %.2f s after SIGKILL, back %.2f s after restart, withdrawn %.2f s after SIGTERM",
                     learned, withdrawal, restored, graceful))
    }
}
