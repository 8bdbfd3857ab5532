import Testing
@testable import OverlayDriver
