import Foundation
import Netlink
import PacketFilter

/// Applies rulesets in one network namespace, atomically (one nft transaction per apply).
///
/// The first ``apply(vips:ports:)`` (and the first after a failure) replaces the balancer's table
/// whole, sent as one libnftables JSON document (``LoadBalancerRuleset/fullJSON``); later ones send only the commands for what changed (``LoadBalancerRuleset/commands(from:)``),
/// unless the change is large (over 1,000 operations and over half the new table), which nft
/// rebuilds faster. When the kernel
/// refuses a diff, the balancer falls back to a full replace in the same call and says so
/// (`Update.full`).
///
/// ```swift
/// let lb = LoadBalancer(namespace: lbNamespace,
///                       options: LoadBalancerOptions(tableName: "ovl_lb", snat: IPv4Address("10.0.1.2")))
/// try lb.apply(vips: [VIPEntry(service: "web", vip: IPv4Address("10.0.1.10")!,
///                              backends: [IPv4Address("10.0.1.3")!, IPv4Address("10.0.1.4")!])],
///              ports: [])
/// ```
public final class LoadBalancer: @unchecked Sendable {
    // @unchecked: `namespace` and `options` are lets of Sendable types; `state` is only read or
    // written with `lock` held, and every nft transaction runs with it held too.

    /// The namespace the table lives in.
    public let namespace: NetworkNamespace
    /// The balancer's options (table name, port match, SNAT address).
    public let options: LoadBalancerOptions
    private let lock = NSLock()
    private var state: LoadBalancerRuleset?

    /// Makes a balancer for `namespace`; nothing is written until the first apply.
    public init(namespace: NetworkNamespace, options: LoadBalancerOptions) {
        self.namespace = namespace
        self.options = options
    }

    /// What one apply did.
    public struct Update: Sendable, Hashable {
        /// Whether the whole table was replaced (first apply, after a failure, or a refused diff).
        public var full: Bool
        /// Element and chain operations sent (each element counts one; 0 when nothing changed).
        public var commands: Int
        /// Wall time of the nft transaction(s), in seconds.
        public var seconds: Double

        /// Makes an update record.
        public init(full: Bool, commands: Int, seconds: Double) {
            self.full = full
            self.commands = commands
            self.seconds = seconds
        }
    }

    /// Makes the kernel's table match `vips` and `ports`, in one transaction. Throws when the
    /// input is invalid (nothing is sent; the kernel and ``current`` keep the previous state) or
    /// when nft refuses even a full replace (then ``current`` is nil and the next apply is a full
    /// replace).
    @discardableResult
    public func apply(vips: [VIPEntry], ports: [PortEntry]) throws(IngressError) -> Update {
        let next = try LoadBalancerRuleset(options: options, vips: vips, ports: ports)
        lock.lock()
        defer { lock.unlock() }
        let start = Self.now()
        if let current = state {
            // A diff has at least as many operations as the tables' sizes differ by: when that
            // alone makes it "large" (below), rebuild without working the diff out (for 10 ->
            // 10,000 services that is 110,000 element commands rendered for nothing).
            let growth = abs(next.fullCount - current.fullCount)
            if growth > 1_000 && growth * 2 > next.fullCount { return try replace(with: next, start: start) }
            let target = next.aligned(to: current)
            let d = target.diff(from: current)
            if d.count == 0 {
                state = target
                return Update(full: false, commands: 0, seconds: Self.now() - start)
            }
            // A large diff (over 1,000 operations and over half the new table) is slower for nft
            // than rebuilding the table (measured: 10 -> 10,000 services by diff 2.5 s, by full
            // replace 1.4 s), and a full replace is as safe: it is one transaction, and existing
            // flows keep their conntrack NAT bindings whatever the table holds.
            if d.full || (d.count > 1_000 && d.count * 2 > target.fullCount) { return try replace(with: target, start: start) }
            do {
                try run(d.text)
                state = target
                return Update(full: d.full, commands: d.count, seconds: Self.now() - start)
            } catch {
                // Fall through to a full replace: the kernel may hold something other than we think.
            }
        }
        return try replace(with: next, start: start)
    }

    /// Replaces the whole table with `next`; on failure forgets the state (the next apply is full).
    private func replace(with next: LoadBalancerRuleset, start: Double) throws(IngressError) -> Update {
        do {
            try run(next.fullJSON, json: true)
        } catch {
            state = nil
            throw error
        }
        state = next
        return Update(full: true, commands: next.fullCount, seconds: Self.now() - start)
    }

    /// Deletes the balancer's table; idempotent (no table is not an error).
    public func remove() throws(IngressError) {
        lock.lock()
        defer { lock.unlock() }
        let t = "ip \(options.tableName)"
        guard PacketFilter.isValidName(options.tableName) else {
            throw IngressError(.invalidTableName, "'\(options.tableName)' is not a usable nft table name")
        }
        try run("add table \(t)\ndelete table \(t)\n")
        state = nil
    }

    /// The state last applied successfully (backends in the slot order the kernel holds), or nil
    /// before the first apply, after a failure or after ``remove()``.
    public var current: LoadBalancerRuleset? {
        lock.lock()
        defer { lock.unlock() }
        return state
    }

    /// Runs `text` (nft text, or a libnftables JSON document when `json`) as one nft transaction
    /// inside the namespace.
    private func run(_ text: String, json: Bool = false) throws(IngressError) {
        do {
            try namespace.run {
                let nft = try PacketFilter()
                // With JSON output set, libnftables 1.0.6 also parses its input as JSON.
                try nft.run(text, json: json)
            }
        } catch let e as PacketFilterError {
            let code: IngressError.Code = e.code == .system ? .system : .rejected
            throw IngressError(code, "table ip \(options.tableName) in namespace \(namespace.name): \(e.message)")
        } catch {
            throw IngressError(.system, "table ip \(options.tableName) in namespace \(namespace.name): \(error)")
        }
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
