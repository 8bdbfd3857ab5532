import Glibc
import Netlink
import OverlayTestKit
import Testing

@Suite("Kernel IPsec probe", .enabled(if: isRoot, rootNeeded))
struct KernelIPsecTests {
    /// The probe agrees with iproute2 adding the same SA in a throwaway namespace, gives the
    /// kernel's own reason when it refuses, and leaves no SA in the namespace it was called from.
    @Test func agreesWithIPXfrmAndLeavesNothing() throws {
        let result = KernelIPsec.probe()
        let ns = "ovlt-xfrm-\(getpid())"
        _ = try Command.run(["ip", "netns", "add", ns])
        defer { _ = try? Command.run(["ip", "netns", "del", ns]) }
        let ip = try Command.run([
            "ip", "netns", "exec", ns, "ip", "xfrm", "state", "add", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp",
            "spi", "0x0ff1ce02", "reqid", "1", "mode", "transport", "aead", "rfc4106(gcm(aes))",
            "0x5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a", "64",
        ])
        switch result {
        case .available:
            #expect(ip.status == 0, "the probe says available, ip xfrm said: \(ip.output)")
        case .unavailable(let why):
            #expect(ip.status != 0, "the probe says \(why), ip xfrm added the SA")
            // iproute2 prints the kernel's extended ack ("Error: <text>."): the probe has the same text.
            if let line = ip.output.split(separator: "\n").first(where: { $0.hasPrefix("Error: ") }) {
                let text = line.dropFirst("Error: ".count).trimmingCharacters(in: ["."])
                #expect(why.contains(text), "probe: \(why); ip: \(ip.output)")
            }
            #expect(!why.isEmpty)
        }
        let here = try Command.run(["ip", "xfrm", "state", "list", "spi", "0x0ff1ce01"])
        #expect(!here.output.contains("0x0ff1ce01"))
    }
}

private extension Substring {
    func trimmingCharacters(in set: Set<Character>) -> String {
        var s = self
        while let c = s.last, set.contains(c) { s.removeLast() }
        return String(s)
    }
}
