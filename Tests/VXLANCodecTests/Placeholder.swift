import Testing
@testable import VXLANCodec
