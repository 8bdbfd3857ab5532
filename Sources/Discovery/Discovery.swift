/// DNS codec and the embedded resolver served at 127.0.0.11 in each container namespace.
///
/// This module is present so the package's layout is complete; its implementation arrives with
/// its own issue (see README.md, "Module map").
public enum DiscoveryModule {
    /// One line on what this module is for.
    public static let role = "DNS codec and the embedded resolver served at 127.0.0.11 in each container namespace."
}
