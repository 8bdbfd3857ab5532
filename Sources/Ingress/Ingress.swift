/// Service VIPs, load balancing on nftables, published ports and the routing mesh.
///
/// This module is present so the package's layout is complete; its implementation arrives with
/// its own issue (see README.md, "Module map").
public enum IngressModule {
    /// One line on what this module is for.
    public static let role = "Service VIPs, load balancing on nftables, published ports and the routing mesh."
}
