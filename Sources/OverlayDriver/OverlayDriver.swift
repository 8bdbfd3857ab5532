/// Network sandboxes, endpoints and peer programming over a kernel or userspace VXLAN datapath.
///
/// This module is present so the package's layout is complete; its implementation arrives with
/// its own issue (see README.md, "Module map").
public enum OverlayDriverModule {
    /// One line on what this module is for.
    public static let role = "Network sandboxes, endpoints and peer programming over a kernel or userspace VXLAN datapath."
}
