import Testing
@testable import OverlayCrypto
