import Glibc
import Netlink
import OverlayModel
import OverlayTestKit
import Testing

let isRoot = getuid() == 0

@Suite struct LabTests {
    @Test(.enabled(if: isRoot, "needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) to create network namespaces"))
    func hostsReachEachOtherAndTeardownRemovesEverything() throws {
        let name = "ovlt-lab\(UInt16.random(in: 0...0xFFFF))"
        let lab = try Lab.create(name: name, hosts: 3)
        defer { lab.destroy() }
        #expect(lab.hosts.map(\.address.description) == ["198.18.0.1", "198.18.0.2", "198.18.0.3"])
        #expect(lab.hosts.allSatisfy { Lab.underlay.contains(.v4($0.address)) })
        let ping = try lab.run(["ping", "-c1", "-W2", "198.18.0.3"], on: lab.hosts[0])
        #expect(ping.succeeded, "\(ping.output)")
        // No host has a route off the lab: the machine's uplink is unreachable from inside.
        let off = try lab.run(["ping", "-c1", "-W1", "192.0.2.1"], on: lab.hosts[0])
        #expect(!off.succeeded)
        #expect(off.output.contains("unreachable"), "\(off.output)")
        let extra = try lab.makeNamespace("c1")
        #expect(extra.name == "\(name)-c1")
        let names = NetworkNamespace.list().filter { $0.hasPrefix(name + "-") }
        #expect(Set(names) == ["\(name)-sw", "\(name)-h1", "\(name)-h2", "\(name)-h3", "\(name)-c1"])
        lab.destroy()
        #expect(NetworkNamespace.list().filter { $0.hasPrefix(name + "-") }.isEmpty)
    }

    @Test(.enabled(if: isRoot, "needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) to create network namespaces"))
    func leftoversOfACrashedRunAreRemovedOnCreate() throws {
        let name = "ovlt-lab\(UInt16.random(in: 0...0xFFFF))"
        _ = try NetworkNamespace.create(named: "\(name)-stale")
        let lab = try Lab.create(name: name, hosts: 1)
        defer { lab.destroy() }
        #expect(!NetworkNamespace.list().contains("\(name)-stale"))
    }

    @Test(.enabled(if: isRoot, "needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) to create network namespaces"),
          .enabled(if: access("/proc/sys/net/bridge", F_OK) == 0, "br_netfilter is not in this kernel: no bridge firewall hooks to turn off"))
    func theSwitchIsAPlainBridgeAndTheHostsKeepTheirFirewall() throws {
        let lab = try Lab.create(name: "ovlt-lab\(UInt16.random(in: 0...0xFFFF))", hosts: 1)
        defer { lab.destroy() }
        for family in ["iptables", "ip6tables", "arptables"] {
            let key = "net.bridge.bridge-nf-call-\(family)"
            #expect(try lab.switchNamespace.sysctl(key) == "0")
            // A host's own bridges (dockerd's) keep the kernel's default.
            #expect(try lab.hosts[0].namespace.sysctl(key) == "1")
        }
    }

    @Test func refusesBadLabs() {
        #expect(throws: LabError.self) { try Lab.create(name: "mylab", hosts: 2) }
        #expect(throws: LabError.self) { try Lab.create(name: "ovlt-x", hosts: 0) }
    }

    @Test func commandReportsStatusOutputAndTimeout() throws {
        let ok = try Command.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
        #expect(ok.status == 3)
        #expect(ok.output.contains("out") && ok.output.contains("err"))
        let slow = try Command.run(["sleep", "10"], timeout: 0.3)
        #expect(slow.status == 128 + SIGKILL)
        #expect(slow.output.contains("killed after"))
        #expect(throws: LabError.self) { try Command.run(["/nonexistent/program"]) }
    }

    /// A descriptor the caller opened without close-on-exec (SwiftNIO opens its sockets that way)
    /// must not reach the child: a long-lived child holding a listening socket kept its port
    /// bound after the test closed it, and a later bind met "address in use".
    @Test func childrenInheritNoDescriptorBeyondTheStandardThree() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(fd >= 0)
        defer { close(fd) }
        let high = dup2(fd, 201)
        #expect(high == 201)
        defer { close(201) }
        #expect(fcntl(201, F_GETFD) & FD_CLOEXEC == 0)
        let r = try Command.run(["sh", "-c", "ls /proc/$$/fd"])
        let open = Set(r.output.split(whereSeparator: \.isWhitespace).map(String.init))
        #expect(open == ["0", "1", "2"], "the child had open: \(r.output)")
    }
}

@Suite struct CommandSignalTests {
    /// A child must not inherit the caller's blocked signals: with SIGCHLD blocked, `sh`'s `wait`
    /// would never return; with SIGTERM blocked, `timeout` could not stop its child.
    @Test func childrenStartWithNoBlockedSignals() throws {
        var blocked = sigset_t()
        sigemptyset(&blocked)
        sigaddset(&blocked, SIGCHLD)
        sigaddset(&blocked, SIGTERM)
        var old = sigset_t()
        pthread_sigmask(SIG_BLOCK, &blocked, &old)
        defer { pthread_sigmask(SIG_SETMASK, &old, nil) }
        let r = try Command.run(["sh", "-c", "grep SigBlk /proc/self/status; sleep 0.1 & wait; timeout -s TERM 0.2 sleep 5; echo rc=$?"], timeout: 10)
        #expect(r.output.contains("SigBlk:\t0000000000000000"), "\(r.output)")
        #expect(r.output.contains("rc=124"), "\(r.output)")
    }
}
