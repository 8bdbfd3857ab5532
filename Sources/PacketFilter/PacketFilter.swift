import CNFTables

/// Swift API over libnftables: each owner replaces its own table atomically.
///
/// This module is present so the package's layout is complete; its implementation arrives with
/// its own issue (see README.md, "Module map").

public enum PacketFilterModule {
    /// One line on what this module is for.
    public static let role = "Swift API over libnftables: each owner replaces its own table atomically."
}
