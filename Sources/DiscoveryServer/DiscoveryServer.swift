/// The embedded DNS server: serves the Discovery resolver at 127.0.0.11 inside container namespaces.
public enum DiscoveryServerModule {}
