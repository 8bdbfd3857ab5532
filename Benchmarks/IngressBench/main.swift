// ingress-bench: the nftables service load balancer against baselines measured in the same run.
//
// (a) Programming time for S services x 10 backends in one transaction: LoadBalancer.apply (the
//     first, full replace, sent as libnftables JSON; the same table as nft text is timed too) against "one chain per service with an anonymous numgen map" sent to
//     libnftables as one transaction; then one incremental update (one service's backends
//     changed) at the largest S, for both.
// (b) First-packet latency: median TCP connect time (a new flow each) from a client namespace
//     through the LB namespace (DNAT + SNAT) to a VIP's backend, with 10 and with 10,000 services
//     installed, against connecting to the backend directly.
//
// Usage: swift run -c release ingress-bench [--services 10,1000,10000] [--connects 400]
// Run as root. Namespaces are named ovl-ingbench-<random>-* and removed at the end.
import Foundation
import Glibc
import Ingress
import Netlink
import OverlayModel
import OverlayTestKit
import PacketFilter

/// The benchmark's code, kept out of main.swift's top level (which is main-actor isolated, so its
/// closures would trap when a namespace thread runs them).
enum IngressBench {
    static func run() throws {

        var serviceCounts = [10, 1_000, 10_000]
        var connects = 400
        var dump: String?
        var diffLoop = 0
        var arguments = CommandLine.arguments.dropFirst().makeIterator()
        while let a = arguments.next() {
            switch a {
            case "--services": serviceCounts = (arguments.next() ?? "").split(separator: ",").compactMap { Int($0) }
            case "--connects": connects = Int(arguments.next() ?? "") ?? connects
            case "--dump": dump = arguments.next()
            case "--diff-loop": diffLoop = Int(arguments.next() ?? "") ?? 0
            case "--load":
                // Times libnftables in this process on a saved JSON document (from --dump), three
                // times in the calling namespace: to compare with `nft -j -f PATH` run alone.
                let path = arguments.next() ?? ""
                let text = try String(contentsOfFile: path, encoding: .utf8)
                for round in 1...3 {
                    var ts = timespec()
                    clock_gettime(CLOCK_MONOTONIC, &ts)
                    let t0 = Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
                    _ = try PacketFilter().run(text, json: true)
                    clock_gettime(CLOCK_MONOTONIC, &ts)
                    print(String(format: "load %d: %.1f ms", round, (Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9 - t0) * 1000))
                }
                exit(0)
            default:
                print("usage: ingress-bench [--services 10,1000,10000] [--connects 400] | --dump PATH | --load PATH.json"); fflush(nil)
                exit(2)
            }
        }
        let backendsPerService = 10

        func now() -> Double {
            var ts = timespec()
            clock_gettime(CLOCK_MONOTONIC, &ts)
            return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
        }

        func median(_ xs: [Double]) -> Double {
            let s = xs.sorted()
            guard !s.isEmpty else { return .nan }
            return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
        }

        func fmt(_ seconds: Double) -> String {
            seconds >= 1 ? String(format: "%.2f s", seconds) : String(format: "%.1f ms", seconds * 1000)
        }

        /// Service i: VIP 10.100.x.y, backends 10.200.0.0/16 upwards (10 per service).
        func services(_ count: Int, measured: VIPEntry? = nil) -> [VIPEntry] {
            var list = (0..<count).map { i in
                VIPEntry(
                    service: "svc\(i)", vip: IPv4Address(0x0A64_0000 + UInt32(i)),
                    backends: (0..<backendsPerService).map { IPv4Address(0x0AC8_0000 + UInt32(i * backendsPerService + $0)) })
            }
            if let measured { list[list.count - 1] = measured }
            return list
        }

        /// The baseline: a dispatch map VIP -> jump s<i>, and per service a chain whose one rule DNATs
        /// through an anonymous numgen map.
        func baselineChainRule(_ v: VIPEntry) -> String {
            let slots = v.backends.enumerated().map { "\($0.offset) : \($0.element)" }.joined(separator: ", ")
            return "dnat to numgen random mod \(v.backends.count) map { \(slots) }"
        }

        func baselineText(_ vips: [VIPEntry]) -> String {
            var s = "add table ip base\ndelete table ip base\ntable ip base {\n"
            s += "    map vips {\n        type ipv4_addr : verdict\n"
            s += "        elements = { " + vips.enumerated().map { "\($0.element.vip) : jump s\($0.offset)" }.joined(separator: ",\n") + " }\n    }\n"
            for (i, v) in vips.enumerated() {
                s += "    chain s\(i) {\n        \(baselineChainRule(v))\n    }\n"
            }
            s += "    chain prerouting {\n        type nat hook prerouting priority dstnat; policy accept;\n        ip daddr vmap @vips\n    }\n"
            s += "    chain postrouting {\n        type nat hook postrouting priority srcnat; policy accept;\n        ct status dnat snat to 10.99.0.1\n    }\n}\n"
            return s
        }

        /// Wall time of one transaction in `ns`, entering the namespace and making the libnftables
        /// context included (as in LoadBalancer.apply).
        func nft(_ ns: NetworkNamespace, _ text: String) throws -> Double {
            let t0 = now()
            _ = try ns.run { try PacketFilter().run(text) }
            return now() - t0
        }

        func pad(_ s: String, _ width: Int) -> String { String(repeating: " ", count: max(0, width - s.count)) + s }

        if let dump {
            // Writes our full text and JSON for the largest service count (to try them with
            // `nft -f <path>` and `nft -j -f <path>.json`).
            let options = LoadBalancerOptions(tableName: "ovl_lb", portMatch: .address(IPv4Address(10, 99, 0, 1)), snat: IPv4Address(10, 99, 0, 1))
            let r = try LoadBalancerRuleset(options: options, vips: services(serviceCounts.max() ?? 10), ports: [])
            try r.fullText.write(toFile: dump, atomically: true, encoding: .utf8)
            try r.fullJSON.write(toFile: dump + ".json", atomically: true, encoding: .utf8)
            return
        }

        if diffLoop > 0 {
            // Validation and diff alone, in a loop (for profiling the Swift side of an update).
            let options = LoadBalancerOptions(tableName: "ovl_lb", portMatch: .address(IPv4Address(10, 99, 0, 1)), snat: IPv4Address(10, 99, 0, 1))
            var vips = services(serviceCounts.max() ?? 10)
            var state = try LoadBalancerRuleset(options: options, vips: vips, ports: [])
            let t0 = now()
            for round in 0..<diffLoop {
                vips[round % vips.count].backends[3] = IPv4Address(0x0B00_0000 + UInt32(round))
                let next = try LoadBalancerRuleset(options: options, vips: vips, ports: [])
                precondition(!next.commands(from: state).isEmpty)
                state = next.aligned(to: state)
            }
            print("validate + diff + align: \(fmt((now() - t0) / Double(diffLoop))) per update at \(vips.count) services")
            return
        }

        let lab = try Lab.create(name: "ovl-ingbench-" + String(UInt32.random(in: 0...0xFFFF), radix: 16), hosts: 3)
        defer { lab.destroy() }
        signal(SIGINT) { _ in
            Lab.destroyAll(prefix: "ovl-ingbench-")
            exit(130)
        }

        print("ingress-bench: nftables service load balancer (this machine: \(ProcessInfo.processInfo.activeProcessorCount) cores)"); fflush(nil)
        print(""); fflush(nil)
        print("(a) programming time, services x \(backendsPerService) backends, one transaction"); fflush(nil)
        print("    services | ours: apply (full, JSON) | of which render | same table as nft text | baseline: chain per service | baseline/ours"); fflush(nil)
        var largest: (ours: NetworkNamespace, base: NetworkNamespace, vips: [VIPEntry], lb: LoadBalancer)?
        // Warm-up: libnftables' first use in a process reads its configuration files.
        let warm = try lab.makeNamespace("warm")
        _ = try nft(warm, "add table ip warm\ndelete table ip warm\n")
        try? NetworkNamespace.delete(named: warm.name)
        for (k, count) in serviceCounts.enumerated() {
            let oursNS = try lab.makeNamespace("a\(k)")
            let baseNS = try lab.makeNamespace("b\(k)")
            let textNS = try lab.makeNamespace("t\(k)")
            let vips = services(count)
            let options = LoadBalancerOptions(tableName: "ovl_lb", portMatch: .address(IPv4Address(10, 99, 0, 1)), snat: IPv4Address(10, 99, 0, 1))
            let r0 = now()
            let ruleset = try LoadBalancerRuleset(options: options, vips: vips, ports: [])
            let rendered = ruleset.fullJSON
            let render = now() - r0
            precondition(!rendered.isEmpty)
            let lb = LoadBalancer(namespace: oursNS, options: options)
            let t0 = now()
            let update = try lb.apply(vips: vips, ports: [])
            let ours = now() - t0
            precondition(update.full)
            let asText = try nft(textNS, ruleset.fullText)
            try? NetworkNamespace.delete(named: textNS.name)
            let text = baselineText(vips)
            let base = try nft(baseNS, text)
            print("    \(pad(String(count), 8)) | \(pad(fmt(ours), 24)) | \(pad(fmt(render), 15)) | \(pad(fmt(asText), 22)) | \(pad(fmt(base), 27)) | \(pad(String(format: "%.1fx", base / ours), 13))")
            fflush(nil)
            if k == serviceCounts.count - 1 { largest = (oursNS, baseNS, vips, lb) }
            else {
                try? NetworkNamespace.delete(named: "\(lab.name)-a\(k)")
                try? NetworkNamespace.delete(named: "\(lab.name)-b\(k)")
            }
        }

        if let largest {
            // One service's backends change (one replaced): ours sends a diff; the baseline rewrites the
            // service's chain.
            var oursTimes: [Double] = [], baseTimes: [Double] = [], swiftTimes: [Double] = [], commands = 0
            var vips = largest.vips
            for round in 0..<5 {
                let i = vips.count / 2 + round
                vips[i].backends[3] = IPv4Address(0x0B00_0000 + UInt32(round))
                let s0 = now()
                let next = try LoadBalancerRuleset(options: largest.lb.options, vips: vips, ports: [])
                precondition(!next.commands(from: largest.lb.current!).isEmpty)
                swiftTimes.append(now() - s0)
                let t0 = now()
                let u = try largest.lb.apply(vips: vips, ports: [])
                oursTimes.append(now() - t0)
                precondition(!u.full)
                commands = u.commands
                baseTimes.append(try nft(largest.base, "flush chain ip base s\(i)\nadd rule ip base s\(i) \(baselineChainRule(vips[i]))\n"))
            }
            print(""); fflush(nil)
            print("    one service changed at \(vips.count) services (median of 5):"); fflush(nil)
            print("    ours (diff, \(commands) element ops): \(fmt(median(oursTimes))) (validate + diff in Swift \(fmt(median(swiftTimes))))   baseline (rewrite the chain): \(fmt(median(baseTimes)))   baseline/ours \(String(format: "%.1fx", median(baseTimes) / median(oursTimes)))")
            fflush(nil)
            try? largest.lb.remove()
            try? NetworkNamespace.delete(named: largest.ours.name)
            try? NetworkNamespace.delete(named: largest.base.name)
        }

        // (b) First-packet latency. h1 client, h2 LB namespace (VIP local, DNAT + SNAT), h3 backend with
        // ten addresses (the measured service's ten backends), all on the lab's bridge.
        print(""); fflush(nil)
        print("(b) first-packet latency: median TCP connect (new flow each, \(connects) connects)"); fflush(nil)
        let client = lab.hosts[0].namespace, lbNS = lab.hosts[1].namespace, backendNS = lab.hosts[2].namespace
        let lbAddress = lab.hosts[1].address
        let measuredVIP = IPv4Address(198, 18, 1, 100)
        let backendAddresses = (1...10).map { IPv4Address(198, 18, 2, UInt8($0)) }
        func sh(_ ns: NetworkNamespace, _ args: [String]) throws {
            let r = try lab.run(args, in: ns)
            guard r.succeeded else { throw LabError("\(args.joined(separator: " ")): \(r.output)") }
        }
        for a in backendAddresses { try sh(backendNS, ["ip", "addr", "add", "\(a)/32", "dev", "eth0"]) }
        try sh(lbNS, ["ip", "addr", "add", "\(measuredVIP)/32", "dev", "eth0"])
        try lbNS.setSysctl("net.ipv4.ip_forward", to: "1")
        try lbNS.setSysctl("net.ipv4.conf.all.send_redirects", to: "0")
        try lbNS.setSysctl("net/ipv4/conf/eth0/send_redirects", to: "0")
        // The client reaches the backend addresses directly over the bridge for the baseline.
        try sh(client, ["ip", "route", "add", "198.18.2.0/24", "via", "\(lab.hosts[2].address)"])

        // A listener in the backend namespace; a thread accepts and closes.
        let listener = try backendNS.run { () throws -> Int32 in
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            var sa = sockaddr_in()
            sa.sin_family = sa_family_t(AF_INET)
            sa.sin_port = UInt16(80).bigEndian
            let rc = withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard rc == 0, listen(fd, 4096) == 0 else { throw LabError("listen: \(String(cString: strerror(errno)))") }
            return fd
        }
        let acceptor = Thread {
            while true {
                let c = accept(listener, nil, nil)
                if c < 0 { if errno == EINTR { continue } else { break } }
                close(c)
            }
        }
        acceptor.start()

        /// Connect times from the client to address:80 over `count` new connections.
        func connectTimes(_ address: IPv4Address, count: Int) throws -> [Double] {
            try client.run { () throws -> [Double] in
                var times: [Double] = []
                var sa = sockaddr_in()
                sa.sin_family = sa_family_t(AF_INET)
                sa.sin_port = UInt16(80).bigEndian
                sa.sin_addr.s_addr = address.value.bigEndian
                for _ in 0..<count {
                    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                    var linger = Glibc.linger(l_onoff: 1, l_linger: 0)  // RST on close: no TIME_WAIT pile-up
                    setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
                    let t0 = now()
                    let rc = withUnsafePointer(to: &sa) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                    }
                    let t1 = now()
                    close(fd)
                    guard rc == 0 else { throw LabError("connect to \(address): \(String(cString: strerror(errno)))") }
                    times.append(t1 - t0)
                }
                return times
            }
        }

        let measured = VIPEntry(service: "measured", vip: measuredVIP, backends: backendAddresses)
        let lb = LoadBalancer(namespace: lbNS, options: LoadBalancerOptions(tableName: "ovl_lb", portMatch: .address(lbAddress), snat: lbAddress))
        // Rounds alternate direct, 10 services, the largest count (switching by diff), so that load
        // from elsewhere on the machine falls on all three alike; medians over all rounds.
        _ = try connectTimes(backendAddresses[0], count: 50)  // warm up
        let small = 10, large = serviceCounts.max() ?? 10_000
        var direct: [Double] = [], viaSmall: [Double] = [], viaLarge: [Double] = []
        var switchTimes: [String] = []
        let rounds = 3
        for _ in 0..<rounds {
            direct += try connectTimes(backendAddresses[0], count: connects)
            let u1 = try lb.apply(vips: services(small, measured: measured), ports: [])
            usleep(1_000_000)  // let the kernel's deferred work (hash table resizes, frees) settle
            _ = try connectTimes(measuredVIP, count: 20)
            viaSmall += try connectTimes(measuredVIP, count: connects)
            let u2 = try lb.apply(vips: services(large, measured: measured), ports: [])
            usleep(1_000_000)
            _ = try connectTimes(measuredVIP, count: 20)
            viaLarge += try connectTimes(measuredVIP, count: connects)
            switchTimes.append("\(u1.full ? "full" : "diff") \(fmt(u1.seconds)) / \(u2.full ? "full" : "diff") \(fmt(u2.seconds))")
        }
        let d = median(direct), s10 = median(viaSmall), sL = median(viaLarge)
        print(String(format: "    direct to the backend (baseline)       %8.1f us", d * 1e6)); fflush(nil)
        print(String(format: "    via VIP, %6d services installed     %8.1f us   %.2fx direct", small, s10 * 1e6, s10 / d)); fflush(nil)
        print(String(format: "    via VIP, %6d services installed     %8.1f us   %.2fx direct", large, sL * 1e6, sL / d)); fflush(nil)
        print(String(format: "    %d services / %d services: %.2fx   (%d rounds x %d connects each)", large, small, sL / s10, rounds, connects)); fflush(nil)
        print("    switching \(small) -> \(large) -> \(small) services by apply: " + switchTimes.joined(separator: ", ")); fflush(nil)
        try? lb.remove()
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)

    }
}

do {
    try IngressBench.run()
} catch {
    print("ingress-bench failed: \(error)"); fflush(nil)
    exit(1)
}
