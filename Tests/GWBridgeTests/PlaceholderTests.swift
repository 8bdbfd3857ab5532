import Testing
@testable import GWBridge

@Test func gwBridgeModuleLinks() { #expect(!GWBridgeModule.role.isEmpty) }
