/// The host gateway bridge (docker_gwbridge's role): egress NAT, ICC, options.
///
/// This module is present so the package's layout is complete; its implementation arrives with
/// its own issue (see README.md, "Module map").
public enum GWBridgeModule {
    /// One line on what this module is for.
    public static let role = "The host gateway bridge (docker_gwbridge's role): egress NAT, ICC, options."
}
