/// SWIM membership (Lifeguard) on hashicorp/memberlist's wire protocol, plus network-scoped replicated tables.
///
/// This module is present so the package's layout is complete; its implementation arrives with
/// its own issue (see README.md, "Module map").
public enum GossipModule {
    /// One line on what this module is for.
    public static let role = "SWIM membership (Lifeguard) on hashicorp/memberlist's wire protocol, plus network-scoped replicated tables."
}
