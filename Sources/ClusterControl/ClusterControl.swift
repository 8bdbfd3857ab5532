/// Manager (store, API on 2377, join tokens, keys, scheduler) and agent (join, sync, gossip, drive the driver).
///
/// This module is present so the package's layout is complete; its implementation arrives with
/// its own issue (see README.md, "Module map").
public enum ClusterControlModule {
    /// One line on what this module is for.
    public static let role = "Manager (store, API on 2377, join tokens, keys, scheduler) and agent (join, sync, gossip, drive the driver)."
}
