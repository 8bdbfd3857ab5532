import Ingress
import OverlayModel
import Testing

@Test func duplicateVIPIsRefused() {
    let vip = IPv4Address(10, 0, 1, 10)
    #expect(throws: IngressError.self) {
        try LoadBalancerRuleset(
            options: LoadBalancerOptions(tableName: "ovl_lb"),
            vips: [VIPEntry(service: "a", vip: vip, backends: []), VIPEntry(service: "b", vip: vip, backends: [])],
            ports: [])
    }
}
