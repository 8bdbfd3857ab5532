import Crypto
import Foundation
import OverlayAPI
import X509

/// A node's identity in the cluster: its P-256 key, the certificate the cluster CA issued for it
/// (CN = node ID, OU = role, O = cluster ID) and the CA certificate it trusts.
public struct NodeIdentity: Sendable {
    /// A node's role, as written in its certificate's OU.
    public typealias Role = NodeRole

    /// A fresh key and the certificate signing request for it, made by a node before it has a certificate
    /// (joining, or renewing with a new key). Send ``csrPEM`` to the manager; keep the value to build the identity.
    public struct Request: Sendable {
        let privateKey: P256.Signing.PrivateKey
        /// The PKCS#10 request in PEM, signed with the new key.
        public let csrPEM: String

        /// Makes a new P-256 key and its CSR (subject CN `swift-overlay-node`; the CA sets the real subject).
        public init() throws {
            try self.init(privateKey: P256.Signing.PrivateKey())
        }

        init(privateKey: P256.Signing.PrivateKey) throws {
            self.privateKey = privateKey
            let csr = try CertificateSigningRequest(
                version: .v1,
                subject: try DistinguishedName { CommonName("swift-overlay-node") },
                privateKey: Certificate.PrivateKey(privateKey),
                attributes: CertificateSigningRequest.Attributes(),
                signatureAlgorithm: .ecdsaWithSHA256)
            csrPEM = try csr.serializeAsPEM().pemString
        }

        /// The new key's public half, as ``NodeRecord/signingKey`` carries it.
        public var signingKey: String { NodeIdentity.signingKey(privateKey.publicKey) }
    }

    static func signingKey(_ key: P256.Signing.PublicKey) -> String { Data(key.x963Representation).base64EncodedString() }

    /// This node's public key, as ``NodeRecord/signingKey`` carries it (base64 of X9.63).
    public var signingKey: String { Self.signingKey(privateKey.publicKey) }

    /// The public key a certificate signing request is for, as ``NodeRecord/signingKey`` carries
    /// it; nil when the request does not parse or its key is not P-256.
    public static func signingKey(ofCSR pem: String) -> String? {
        guard let csr = try? CertificateSigningRequest(pemEncoded: pem), let key = P256.Signing.PublicKey(csr.publicKey) else { return nil }
        return signingKey(key)
    }

    /// Signs `message` with this node's key (ECDSA P-256 over SHA-256; the raw 64-byte form).
    public func sign(_ message: [UInt8]) throws -> [UInt8] {
        Array(try privateKey.signature(for: message).rawRepresentation)
    }

    /// Whether `signature` (raw, 64 bytes) is the holder of `signingKey`'s over `message`.
    public static func verify(_ signature: [UInt8], of message: [UInt8], signingKey: String) -> Bool {
        guard let der = Data(base64Encoded: signingKey), let key = try? P256.Signing.PublicKey(x963Representation: der),
              let sig = try? P256.Signing.ECDSASignature(rawRepresentation: signature) else { return false }
        return key.isValidSignature(sig, for: message)
    }

    let privateKey: P256.Signing.PrivateKey
    /// The node's certificate.
    public let certificate: Certificate
    /// The cluster CA's certificate.
    public let caCertificate: Certificate
    /// Who the certificate names.
    let peer: ClusterTLS.PeerIdentity

    /// File names used by ``save(to:)`` and ``load(from:)``.
    static let keyFile = "node.key"
    static let certificateFile = "node.crt"
    static let caFile = "ca.crt"

    /// The identity for a `request` whose CSR the CA answered with `certificatePEM`; checks that the
    /// certificate is for the request's key and was issued by `caCertificatePEM`.
    public init(request: Request, certificatePEM: String, caCertificatePEM: String) throws {
        try self.init(privateKey: request.privateKey, certificatePEM: certificatePEM, caCertificatePEM: caCertificatePEM)
    }

    /// An identity from PEM texts (key PKCS#8 or SEC1 P-256), with the same checks.
    public init(privateKeyPEM: String, certificatePEM: String, caCertificatePEM: String) throws {
        let key: P256.Signing.PrivateKey
        do {
            key = try P256.Signing.PrivateKey(pemRepresentation: privateKeyPEM)
        } catch {
            throw PKIError(.invalidCertificate, "the node key is not a PEM P-256 private key (\(error))")
        }
        try self.init(privateKey: key, certificatePEM: certificatePEM, caCertificatePEM: caCertificatePEM)
    }

    init(privateKey: P256.Signing.PrivateKey, certificatePEM: String, caCertificatePEM: String) throws {
        let certificate = try Certificate.pkiParse(pem: certificatePEM, what: "the node certificate")
        let ca = try Certificate.pkiParse(pem: caCertificatePEM, what: "the CA certificate")
        guard certificate.publicKey == Certificate.PublicKey(privateKey.publicKey) else {
            throw PKIError(.keyMismatch, "the node certificate is not for this node's key; request a certificate with this key's CSR")
        }
        guard certificate.issuer == ca.subject, ca.publicKey.isValidSignature(certificate.signature, for: certificate) else {
            throw PKIError(.untrustedCertificate, "the node certificate was not issued by the given CA certificate")
        }
        guard let nodeID = certificate.subject.pkiCommonName, !nodeID.isEmpty,
            let role = certificate.subject.pkiOrganizationalUnit.flatMap(Role.init(certificateOU:)),
            let clusterID = certificate.subject.pkiOrganization
        else {
            throw PKIError(.invalidCertificate, "the node certificate lacks a node ID (CN), role (OU) or cluster ID (O)")
        }
        self.privateKey = privateKey
        self.certificate = certificate
        self.caCertificate = ca
        self.peer = ClusterTLS.PeerIdentity(nodeID: nodeID, role: role, clusterID: clusterID)
    }

    /// The same key with a renewed certificate (from a CSR made by ``makeCSR()``), with the same checks.
    public func renewed(certificatePEM: String, caCertificatePEM: String) throws -> NodeIdentity {
        try NodeIdentity(privateKey: privateKey, certificatePEM: certificatePEM, caCertificatePEM: caCertificatePEM)
    }

    /// Loads `node.key`, `node.crt` and `ca.crt` from `directory`.
    public static func load(from directory: String) throws -> NodeIdentity {
        try NodeIdentity(
            privateKeyPEM: PEMFiles.read(directory + "/" + keyFile),
            certificatePEM: PEMFiles.read(directory + "/" + certificateFile),
            caCertificatePEM: PEMFiles.read(directory + "/" + caFile))
    }

    /// Writes `node.key`, `node.crt` and `ca.crt` (all 0600: only the daemon reads them) into `directory`, creating it (0700) if needed.
    public func save(to directory: String) throws {
        try PEMFiles.makeDirectory(directory)
        try PEMFiles.write(privateKey.pemRepresentation, to: directory + "/" + Self.keyFile, mode: 0o600)
        try PEMFiles.write(certificatePEM, to: directory + "/" + Self.certificateFile, mode: 0o600)
        try PEMFiles.write(caCertificatePEM, to: directory + "/" + Self.caFile, mode: 0o600)
    }

    /// The node ID (the certificate's CN).
    public var nodeID: String { peer.nodeID }
    /// The node's role (the certificate's OU).
    public var role: Role { peer.role }
    /// The cluster ID (the certificate's O).
    public var clusterID: String { peer.clusterID }
    /// When the certificate starts being valid.
    public var notBefore: Date { certificate.notValidBefore }
    /// When the certificate stops being valid.
    public var notAfter: Date { certificate.notValidAfter }
    /// The node certificate in PEM.
    public var certificatePEM: String { (try? certificate.pkiPEM) ?? "" }
    /// The CA certificate in PEM.
    public var caCertificatePEM: String { (try? caCertificate.pkiPEM) ?? "" }

    /// A CSR for this identity's own key (renewal that keeps the key).
    public func makeCSR() throws -> String {
        try Request(privateKey: privateKey).csrPEM
    }

    /// Where in the lifetime renewal starts: a fraction in [0.5, 0.8), fixed per certificate by its serial
    /// number (Docker picks a random point in the same window so nodes do not all renew at once).
    public var renewalFraction: Double {
        let hash = Array(SHA256.hash(data: Array(certificate.serialNumber.bytes)))
        let word = hash.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return 0.5 + 0.3 * (Double(word >> 11) / Double(UInt64(1) << 53))
    }

    /// The moment after which the certificate should be renewed.
    public var renewalPoint: Date {
        notBefore.addingTimeInterval(notAfter.timeIntervalSince(notBefore) * renewalFraction)
    }

    /// Whether the certificate should be renewed now: past ``renewalPoint`` (or already expired).
    public func renewalDue(now: Date = Date()) -> Bool { now >= renewalPoint }
}
