import Testing
@testable import PacketFilter

@Test func packetFilterModuleLinks() { #expect(!PacketFilterModule.role.isEmpty) }
