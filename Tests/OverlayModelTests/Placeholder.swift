import Testing
@testable import OverlayModel
