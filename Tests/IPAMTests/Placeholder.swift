import Testing
@testable import IPAM
