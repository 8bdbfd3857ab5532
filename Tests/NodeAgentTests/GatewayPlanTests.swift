import GWBridge
import NodeAgent
import OverlayAPI
import OverlayModel
import Testing

/// The gateway bridge's settings from `network create -d bridge`, and `-p` as port mappings.
@Suite struct GatewayPlanTests {
    func status(_ body: () throws -> Void) -> (Int, String)? {
        do { try body() } catch let e as APIError { return (e.status, e.message) } catch { return (-1, "\(error)") }
        return nil
    }

    func bridge(_ name: String = GatewayBridge.defaultBridgeName, options: [String] = [], subnets: [String] = [], gateways: [String] = []) -> NetworkCreateRequest {
        var r = NetworkCreateRequest(name: name, driver: "bridge")
        r.options = options
        r.subnets = subnets
        r.gateways = gateways
        return r
    }

    @Test func dockersCustomGatewayBridgeIsUnderstood() throws {
        let s = try GatewaySettings(bridgeRequest: bridge(
            options: ["com.docker.network.bridge.name=" + GatewayBridge.defaultBridgeName, "com.docker.network.bridge.enable_icc=true",
                      "com.docker.network.bridge.enable_ip_masquerade=false"],
            subnets: ["10.11.0.0/16"], gateways: ["10.11.0.1"]))
        #expect(s.icc && !s.ipMasquerade && s.subnet == "10.11.0.0/16" && s.gateway == "10.11.0.1")
        #expect(s.options.subnet == CIDR("10.11.0.0/16") && s.options.gateway == IPv4Address("10.11.0.1"))
        #expect(try GatewaySettings(bridgeRequest: bridge()) == GatewaySettings())
    }

    @Test func whatTheBridgeDriverDoesNotDoIsA400() {
        for (req, words) in [
            (bridge("mybridge"), "name it \(GatewayBridge.defaultBridgeName)"),
            (bridge(options: ["com.docker.network.bridge.enable_icc=yes"]), "use true or false"),
            (bridge(options: ["com.docker.network.driver.mtu=1400"]), "unknown --opt 'com.docker.network.driver.mtu'"),
            (bridge(subnets: ["fd00::/64"]), "use an IPv4 CIDR"),
            (bridge(subnets: ["10.1.0.0/16", "10.2.0.0/16"]), "one --subnet"),
            (bridge(gateways: ["10.1.0.300"]), "invalid --gateway"),
        ] {
            let e = status { _ = try GatewaySettings(bridgeRequest: req) }
            #expect(e?.0 == 400 && e?.1.contains(words) == true, "\(req.options) \(req.subnets): \(String(describing: e))")
        }
    }

    @Test func publishSpecsBecomeMappingsToTheContainer() throws {
        let to = IPv4Address("172.18.0.5")!
        let m = try PublishedPorts.mappings(["8080:80", "127.0.0.1:5353:53/udp", "9000-9001:7000-7001"], to: to)
        #expect(m.map { "\($0.hostAddress.map { "\($0)" } ?? "*"):\($0.hostPort)->\($0.containerAddress):\($0.containerPort)/\($0.protocol)" }
                    == ["*:8080->172.18.0.5:80/tcp", "127.0.0.1:5353->172.18.0.5:53/udp",
                        "*:9000->172.18.0.5:7000/tcp", "*:9001->172.18.0.5:7001/tcp"])
        #expect(status { _ = try PublishedPorts.mappings(["80"], to: to) }?.1.contains("give the host port too") == true)
        #expect(status { _ = try PublishedPorts.mappings(["[::1]:8080:80"], to: to) }?.1.contains("only IPv4 host addresses") == true)
        #expect(status { _ = try PublishedPorts.mappings(["8080:80/icmp"], to: to) }?.0 == 400)
    }
}
