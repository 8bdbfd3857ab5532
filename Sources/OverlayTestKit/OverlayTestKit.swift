/// The lab (hosts as network namespaces joined by a bridge), fakes and fixtures, for tests and examples.
public enum OverlayTestKitModule {}
