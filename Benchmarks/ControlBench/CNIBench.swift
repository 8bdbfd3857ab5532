import Foundation
import OverlayTestKit
import Synchronization

/// `control-bench cni`: how long a runtime waits for `overlay-cni`. One lab host in a swarm with
/// an attachable network and one container on it; `count` rounds, each an ADD then a DEL of a fresh namespace by our
/// plugin and by Debian's `bridge` + `host-local` (the reference plugins, what podman's default
/// network uses), run the same way (a process with the CNI environment and the configuration on
/// standard input, inside the host's namespace), alternating. Then `parallel` ADDs at once:
/// every one must succeed with an address of its own. Prints p50/p99 of each and the ratios.
func cniBench(ctl: String, dir: String, count: Int, parallel: Int) throws {
    let lab = "ovlb-cni"
    let hostNS = "/run/netns/\(lab)-h1"
    func sh(_ a: [String], timeout: Double = 120) throws -> String {
        let r = try Command.run(a, timeout: timeout)
        guard r.succeeded else { throw LabError("\(a.joined(separator: " ")): \(r.output)") }
        return r.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }
    func on(_ a: [String]) throws -> String { try sh([ctl, "lab", "exec", "--name", lab, "h1", "--", "overlayctl"] + a) }
    defer { _ = try? sh([ctl, "lab", "down", "--name", lab]) }
    _ = try sh([ctl, "lab", "up", "--name", lab, "--hosts", "1"])
    _ = try on(["swarm", "init", "--advertise-addr", "198.18.0.1"])
    _ = try on(["network", "create", "--attachable", "--subnet", "10.64.0.0/16", "bench"])
    let ours = #"{"cniVersion":"1.0.0","name":"bench","type":"overlay-cni","socket":"/run/\#(lab)/h1/overlayd.sock"}"#
    let reference = #"{"cniVersion":"1.0.0","name":"ref","type":"bridge","bridge":"cniref0","isGateway":true,"ipMasq":false,"ipam":{"type":"host-local","subnet":"10.65.0.0/16","dataDir":"/run/\#(lab)/host-local"}}"#

    /// One plugin call as a runtime makes it: (milliseconds, exit status, standard output). The
    /// process is spawned with posix_spawn and reaped with waitpid (Foundation's Process polls for
    /// the child's exit, adding up to 50 ms).
    @Sendable func call(_ plugin: String, _ command: String, id: String, netns: String, config: String) throws -> (Double, Int32, String) {
        let argv = ["/usr/bin/nsenter", "--net=\(hostNS)", plugin]
        let envp = ["CNI_COMMAND=\(command)", "CNI_CONTAINERID=\(id)", "CNI_NETNS=\(netns)", "CNI_IFNAME=eth0",
                    "CNI_PATH=\(dir):/usr/lib/cni", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
        var input: [Int32] = [0, 0], output: [Int32] = [0, 0]
        guard pipe(&input) == 0, pipe(&output) == 0 else { throw LabError("pipe: \(errno)") }
        for fd in input + output { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, input[0], 0)
        posix_spawn_file_actions_adddup2(&actions, output[1], 1)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        let cArgs = argv.map { strdup($0) } + [nil], cEnv = envp.map { strdup($0) } + [nil]
        defer { (cArgs + cEnv).forEach { free($0) } }
        var pid: pid_t = 0
        let start = DispatchTime.now().uptimeNanoseconds
        let rc = posix_spawn(&pid, argv[0], &actions, nil, cArgs, cEnv)
        close(input[0])
        close(output[1])
        guard rc == 0 else {
            close(input[1])
            close(output[0])
            throw LabError("posix_spawn \(plugin): \(rc)")
        }
        let bytes = Array(config.utf8)
        _ = bytes.withUnsafeBytes { write(input[1], $0.baseAddress, $0.count) }
        close(input[1])
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(output[0], &buffer, buffer.count)
            if n <= 0 { break }
            out += buffer[0..<n]
        }
        close(output[0])
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        let ms = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
        let exited = (status & 0x7f) == 0 ? (status >> 8) & 0xff : -1
        return (ms, exited, String(decoding: out, as: UTF8.self))
    }
    func netns(_ name: String) throws -> String {
        _ = try sh(["ip", "netns", "add", "\(lab)-\(name)"])
        return "/run/netns/\(lab)-\(name)"
    }
    func percentile(_ xs: [Double], _ p: Double) -> Double {
        let s = xs.sorted()
        return s[min(s.count - 1, Int((Double(s.count - 1) * p).rounded()))]
    }

    var add: [String: [Double]] = ["overlay-cni": [], "bridge+host-local": []]
    var del: [String: [Double]] = ["overlay-cni": [], "bridge+host-local": []]
    let plugins = [("overlay-cni", dir + "/overlay-cni", ours), ("bridge+host-local", "/usr/lib/cni/bridge", reference)]
    // One container stays attached throughout, as on a host in use: the network's sandbox (our
    // VXLAN device and bridge) then stays, as the reference bridge plugin keeps its bridge. (The
    // first container on a network on a host pays for the sandbox: about 30 ms more here.)
    let anchor = try netns("anchor")
    let (_, anchored, why) = try call(dir + "/overlay-cni", "ADD", id: "anchor", netns: anchor, config: ours)
    guard anchored == 0 else { throw LabError("the anchor container's ADD failed: \(why)") }
    // A few unmeasured rounds first (the first calls load both plugins and make the bridge).
    for i in 0..<(count + 5) {
        for (name, binary, config) in (i % 2 == 0 ? plugins : plugins.reversed()) {
            let id = "r\(i)\(name.prefix(1))"
            let ns = try netns(id)
            let (a, sa, oa) = try call(binary, "ADD", id: id, netns: ns, config: config)
            guard sa == 0 else { throw LabError("\(name) ADD failed: \(oa)") }
            let (d, sd, od) = try call(binary, "DEL", id: id, netns: ns, config: config)
            guard sd == 0 else { throw LabError("\(name) DEL failed: \(od)") }
            _ = try sh(["ip", "netns", "del", "\(lab)-\(id)"])
            if i >= 5 {
                add[name]!.append(a)
                del[name]!.append(d)
            }
        }
    }
    print("CNI ADD and DEL, \(count) rounds each, one lab host, a process per call as a runtime runs it:")
    print("plugin              ADD p50   ADD p99   DEL p50   DEL p99   (ms)")
    for (name, _, _) in plugins {
        print(name.padding(toLength: 18, withPad: " ", startingAt: 0)
              + String(format: "%8.1f  %8.1f  %8.1f  %8.1f", percentile(add[name]!, 0.5), percentile(add[name]!, 0.99),
                       percentile(del[name]!, 0.5), percentile(del[name]!, 0.99)))
    }
    let o = "overlay-cni", r = "bridge+host-local"
    print(String(format: "ratio (ours / reference): ADD p50 %.2f, ADD p99 %.2f, DEL p50 %.2f, DEL p99 %.2f",
                 percentile(add[o]!, 0.5) / percentile(add[r]!, 0.5), percentile(add[o]!, 0.99) / percentile(add[r]!, 0.99),
                 percentile(del[o]!, 0.5) / percentile(del[r]!, 0.5), percentile(del[o]!, 0.99) / percentile(del[r]!, 0.99)))

    // Parallel ADDs: all succeed, no address twice.
    var made: [String] = []
    for i in 0..<parallel { made.append(try netns("p\(i)")) }
    let spaces = made
    let results = Mutex<[(Double, Int32, String)]>([])
    let start = DispatchTime.now().uptimeNanoseconds
    DispatchQueue.concurrentPerform(iterations: parallel) { i in
        let r = (try? call(dir + "/overlay-cni", "ADD", id: "p\(i)", netns: spaces[i], config: ours)) ?? (0, -1, "did not run")
        results.withLock { $0.append(r) }
    }
    let wall = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
    let all = results.withLock { $0 }
    let failed = all.filter { $0.1 != 0 }
    let addresses = all.compactMap { r -> String? in
        guard let json = try? JSONSerialization.jsonObject(with: Data(r.2.utf8)) as? [String: Any],
              let ips = json["ips"] as? [[String: Any]] else { return nil }
        return ips.first?["address"] as? String
    }
    let duplicates = addresses.count - Set(addresses).count
    print(String(format: "%d ADDs at once: %d failed, %d addresses, %d duplicated, %.0f ms in all, slowest %.1f ms",
                 parallel, failed.count, addresses.count, duplicates, wall, all.map(\.0).max() ?? 0))
    if let f = failed.first { print("first failure: \(f.2)") }
    for i in 0..<parallel { _ = try? call(dir + "/overlay-cni", "DEL", id: "p\(i)", netns: spaces[i], config: ours) }
    guard failed.isEmpty, duplicates == 0 else { throw LabError("parallel ADDs: \(failed.count) failed, \(duplicates) duplicated addresses") }
}
