import Ingress
import Testing

@Test func ingressModuleHasARole() {
    #expect(!IngressModule.role.isEmpty)
}
