/// Service VIPs, load balancing on nftables, published ports and the routing mesh.
///
/// ``LoadBalancerRuleset`` renders a balancer's state as nft text (the whole table, or the few
/// commands from one state to the next); ``LoadBalancer`` applies it in one network namespace.
/// The same object serves the per-network LB namespace (VIPs, SNAT to its own address), the
/// ingress namespace (published ports at one address, SNAT) and the host namespace (published
/// ports on every local address, no SNAT).
public enum IngressModule {
    /// One line on what this module is for.
    public static let role = "Service VIPs, load balancing on nftables, published ports and the routing mesh."
}
