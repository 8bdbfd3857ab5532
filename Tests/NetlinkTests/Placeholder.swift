import Testing
@testable import Netlink
