import Foundation

/// Where an etcd v3 cluster is and how to reach it: what `--cluster-store` and
/// `--cluster-store-opt` say.
///
/// ```swift
/// let store = try EtcdStore(
///     EtcdConfiguration(endpoints: ["https://10.0.0.1:2379", "https://10.0.0.2:2379"],
///                       tls: .init(caFile: "ca.pem", certificateFile: "client.pem", keyFile: "client-key.pem")),
///     clusterID: "3xk1")
/// defer { Task { try await store.shutdown() } }
/// ```
public struct EtcdConfiguration: Sendable {
    /// Client TLS for `https://` endpoints: the CA that signed the members' certificates, and
    /// the client certificate and key that members started with `--client-cert-auth` ask for
    /// (PEM files; Docker's `kv.cacertfile`, `kv.certfile`, `kv.keyfile`).
    public struct TLS: Sendable, Equatable {
        /// The CA certificate(s) to trust for the members' certificates.
        public var caFile: String
        /// The client certificate (chain), or nil to connect without one.
        public var certificateFile: String?
        /// The client certificate's private key.
        public var keyFile: String?

        /// Client TLS from PEM files.
        public init(caFile: String, certificateFile: String? = nil, keyFile: String? = nil) {
            self.caFile = caFile
            self.certificateFile = certificateFile
            self.keyFile = keyFile
        }
    }

    /// The members' client URLs, `http://host:port` or `https://host:port`.
    public var endpoints: [String]
    /// TLS for `https://` endpoints (nil: trust the system's roots, send no client certificate).
    public var tls: TLS?
    /// How long a call (read, transaction, lease grant) may wait for an answer. etcd itself
    /// answers a write without quorum only after 7 s, so this is shorter.
    public var requestTimeout: Duration = .seconds(3)
    /// After etcd was found unavailable, how long calls fail at once without asking it again.
    public var failFast: Duration = .seconds(1)
    /// How many keys one range request returns; a load reads more in pages at the same revision.
    public var pageSize = 1000

    /// A cluster at `endpoints`.
    public init(endpoints: [String], tls: TLS? = nil) {
        self.endpoints = endpoints
        self.tls = tls
    }

    /// Checks what a client would check before asking anything: every endpoint's shape and the
    /// TLS files (read and parsed), each with a ``StoreError`` naming it. No connection is made.
    public func check() throws {
        guard !endpoints.isEmpty else { throw StoreError("no etcd endpoint given") }
        let parsed = try endpoints.map(EtcdEndpoint.init)
        if parsed.contains(where: \.isTLS) { _ = try EtcdClient.tls(tls) }
    }
}

/// One member's client URL, checked.
struct EtcdEndpoint: Sendable, Equatable {
    /// `http://host:port` or `https://host:port`, without a trailing slash.
    var base: String
    /// `host:port`, for messages.
    var address: String
    var isTLS: Bool

    init(_ text: String) throws {
        var text = text.trimmingCharacters(in: .whitespaces)
        while text.hasSuffix("/") { text.removeLast() }
        guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
            let host = url.host, !host.isEmpty, url.path.isEmpty, url.query == nil
        else {
            throw StoreError("etcd endpoint '\(text)' is not http://host:port or https://host:port")
        }
        let port = url.port ?? 2379
        isTLS = scheme == "https"
        let shown = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        address = "\(shown):\(port)"
        base = "\(scheme)://\(address)"
    }
}
