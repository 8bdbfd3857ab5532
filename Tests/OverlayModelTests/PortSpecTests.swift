import OverlayModel
import Testing

@Suite struct PortSpecTests {
    @Test func shortSyntax() throws {
        #expect(try PortSpec.parse("80") == [PortSpec(target: 80)])
        #expect(try PortSpec.parse("8080:80") == [PortSpec(target: 80, published: 8080)])
        #expect(try PortSpec.parse("8080:80/udp") == [PortSpec(target: 80, published: 8080, protocol: .udp)])
        #expect(try PortSpec.parse("53:53/SCTP") == [PortSpec(target: 53, published: 53, protocol: .sctp)])
        #expect(try PortSpec.parse("127.0.0.1:8080:80") ==
                [PortSpec(target: 80, published: 8080, hostIP: IPAddress("127.0.0.1"))])
        #expect(try PortSpec.parse("127.0.0.1::80") == [PortSpec(target: 80, hostIP: IPAddress("127.0.0.1"))])
        #expect(try PortSpec.parse("[::1]:8080:80/tcp") ==
                [PortSpec(target: 80, published: 8080, hostIP: IPAddress("::1"))])
        #expect(try PortSpec.parse("8000-8002:80-82") ==
                [PortSpec(target: 80, published: 8000), PortSpec(target: 81, published: 8001), PortSpec(target: 82, published: 8002)])
        #expect(try PortSpec.parse("80-81/udp") == [PortSpec(target: 80, protocol: .udp), PortSpec(target: 81, protocol: .udp)])
    }

    @Test func longSyntax() throws {
        #expect(try PortSpec.parse("published=8080,target=80,protocol=udp,mode=ingress") ==
                [PortSpec(target: 80, published: 8080, protocol: .udp, mode: .ingress)])
        #expect(try PortSpec.parse("target=80,mode=host") == [PortSpec(target: 80, mode: .host)])
        #expect(try PortSpec.parse("mode=host, target=80, published=81") == [PortSpec(target: 80, published: 81, mode: .host)])
        let spec = PortSpec(target: 80, published: 8080, protocol: .sctp, mode: .host)
        #expect(try PortSpec.parse(spec.description) == [spec])
    }

    @Test(arguments: [
        ("", "'' in '' is not a port number (1...65535)"),
        ("0", "'0' in '0' is not a port number (1...65535)"),
        ("65536", "'65536' in '65536' is not a port number (1...65535)"),
        ("80/icmp", "protocol 'icmp' in '80/icmp' is not tcp, udp or sctp"),
        ("8080:80:90:1", "'8080:80:90:1' is not [IP:][PUBLISHED:]TARGET[/PROTOCOL]"),
        ("x:8080:80", "'x' in 'x:8080:80' is not an IPv4 address (write IPv6 as [addr])"),
        ("[::1:8080:80", "'[::1:8080:80' opens '[' for an IPv6 address but never closes it"),
        ("90-80", "range '90-80' in '90-80' ends before it starts"),
        ("8000-8002:80", "'8000-8002:80' maps 3 published ports to 1 target ports; the ranges must be the same length"),
        ("published=8080", "'published=8080' has no target=PORT (the port inside the container)"),
        ("target=80,target=81", "'target' is given twice in 'target=80,target=81'"),
        ("target=80,mode=global", "mode 'global' in 'target=80,mode=global' is not ingress or host"),
        ("target=80,color=red", "unknown key 'color' in 'target=80,color=red' (keys: published, target, protocol, mode)"),
        ("target=80,published", "'published' in 'target=80,published' is not key=value (keys: published, target, protocol, mode)"),
        ("target=-1", "'-1' in 'target=-1' is not a port number (1...65535)"),
    ])
    func errorsSayWhatIsWrong(_ text: String, _ message: String) {
        #expect(throws: ModelError(.invalidPortSpec, message)) { try PortSpec.parse(text) }
    }
}
