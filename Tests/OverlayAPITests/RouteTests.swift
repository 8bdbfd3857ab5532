import Foundation
import OverlayAPI
import Testing

/// The routes the daemon and its clients share.
@Suite struct RouteTests {
    @Test func aTargetFillsTheParametersEscapedAndLeavesNilQueryItemsOut() {
        #expect(LocalAPI.inspectNetwork.target(["web"]) == "/v1/networks/web")
        #expect(LocalAPI.inspectNetwork.target(["a b/c"], query: [("verbose", "1")]) == "/v1/networks/a%20b%2Fc?verbose=1")
        #expect(LocalAPI.removeContainer.target(["c1"], query: [("force", nil)]) == "/v1/containers/c1")
        #expect(LocalAPI.joinToken.target(query: [("role", "worker"), ("rotate", "1")]) == "/v1/swarm/join-token?role=worker&rotate=1")
        #expect(ManagerAPI.state.target(query: [("since", "7"), ("wait", "25")]) == "/v1/state?since=7&wait=25")
        #expect(LocalAPI.joinToken.target(query: [("role", "a&b=c")]) == "/v1/swarm/join-token?role=a%26b%3Dc")
    }

    @Test func everyRouteIsOneOfAKindAndSaysWhatItTakes() {
        #expect(LocalAPI.serviceTasks.parameterNames == ["name"])
        #expect(LocalAPI.removeNode.parameterNames == ["node"])
        #expect(LocalAPI.nodes.parameterNames.isEmpty)
        #expect(LocalAPI.createNetwork.status == 201 && LocalAPI.inspectNetwork.status == 200)
        #expect("\(ManagerAPI.report)" == "POST /v1/report")
    }
}
