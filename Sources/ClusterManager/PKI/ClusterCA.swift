import Crypto
import Foundation
import OverlayModel
import X509

/// The cluster's certificate authority: a P-256 key and a self-signed root that issues every node's
/// certificate. Only managers hold it; nodes trust it by the digest in their join token.
public struct ClusterCA: Sendable {
    /// The CA's self-signed root certificate (CN `swift-overlay-ca`, O = cluster ID).
    public let certificate: Certificate
    let privateKey: P256.Signing.PrivateKey

    /// The common name of every cluster CA.
    public static let commonName = "swift-overlay-ca"
    /// How long a new CA is valid: 20 years.
    public static let defaultValidity: TimeInterval = 20 * 365.25 * 86_400
    /// How long node certificates are valid unless told otherwise: 90 days.
    public static let defaultNodeValidity: TimeInterval = 90 * 86_400
    /// How far back `notBefore` is set, to tolerate clock skew between machines: 5 minutes.
    public static let backdate: TimeInterval = 5 * 60
    /// File names used by ``save(to:)`` and ``load(from:)``.
    static let certificateFile = "ca.crt"
    static let keyFile = "ca.key"

    /// Creates a new CA for a new cluster; `clusterID` defaults to a fresh random 25-character ID.
    public static func create(clusterID: String = ClusterCA.newID(), now: Date = Date()) throws -> ClusterCA {
        guard isValidID(clusterID) else {
            throw PKIError(.invalidInput, "cluster ID \"\(clusterID)\" must be 1-64 characters of a-z and 0-9")
        }
        let now = Certificate.pkiWholeSeconds(now)
        let key = P256.Signing.PrivateKey()
        let publicKey = Certificate.PublicKey(key.publicKey)
        let name = try DistinguishedName {
            OrganizationName(clusterID)
            CommonName(commonName)
        }
        let certificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: publicKey,
            notValidBefore: now.addingTimeInterval(-backdate),
            notValidAfter: now.addingTimeInterval(defaultValidity),
            issuer: name,
            subject: name,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: publicKey)
            },
            issuerPrivateKey: Certificate.PrivateKey(key))
        return ClusterCA(certificate: certificate, privateKey: key)
    }

    /// Loads a CA from its PEM certificate and PEM (PKCS#8 or SEC1) P-256 private key, checking they belong together.
    public init(certificatePEM: String, privateKeyPEM: String) throws {
        let certificate = try Certificate.pkiParse(pem: certificatePEM, what: "the CA certificate")
        let key: P256.Signing.PrivateKey
        do {
            key = try P256.Signing.PrivateKey(pemRepresentation: privateKeyPEM)
        } catch {
            throw PKIError(.invalidCertificate, "the CA key is not a PEM P-256 private key (\(error))")
        }
        guard certificate.publicKey == Certificate.PublicKey(key.publicKey) else {
            throw PKIError(.keyMismatch, "the CA key does not belong to the CA certificate; restore the matching ca.key")
        }
        guard (try? certificate.extensions.basicConstraints) == .isCertificateAuthority(maxPathLength: 0),
            certificate.subject.pkiOrganization != nil
        else {
            throw PKIError(.invalidCertificate, "the CA certificate is not a swift-overlay cluster CA (no CA constraint or cluster ID)")
        }
        self.init(certificate: certificate, privateKey: key)
    }

    init(certificate: Certificate, privateKey: P256.Signing.PrivateKey) {
        self.certificate = certificate
        self.privateKey = privateKey
    }

    /// Loads `ca.crt` and `ca.key` from `directory`.
    public static func load(from directory: String) throws -> ClusterCA {
        try ClusterCA(
            certificatePEM: PEMFiles.read(directory + "/" + certificateFile),
            privateKeyPEM: PEMFiles.read(directory + "/" + keyFile))
    }

    /// Writes `ca.crt` and `ca.key` (both 0600: only the daemon reads them) into `directory`, creating it (0700) if needed.
    public func save(to directory: String) throws {
        try PEMFiles.makeDirectory(directory)
        try PEMFiles.write(certificatePEM, to: directory + "/" + Self.certificateFile, mode: 0o600)
        try PEMFiles.write(privateKey.pemRepresentation, to: directory + "/" + Self.keyFile, mode: 0o600)
    }

    /// The CA's private key in PEM (PKCS#8): for the cluster store managers share, never a log.
    public var privateKeyPEM: String { privateKey.pemRepresentation }

    /// The cluster ID (the CA's organization name).
    public var clusterID: String { certificate.subject.pkiOrganization ?? "" }

    /// The CA certificate in PEM, as nodes receive it.
    public var certificatePEM: String {
        // A certificate built or parsed by X509 always re-serializes.
        (try? certificate.pkiPEM) ?? ""
    }

    /// The SHA-256 of the CA certificate's DER encoding.
    public var digest: [UInt8] { (try? certificate.pkiDigest) ?? [] }

    /// ``digest`` as it appears in a join token: base 36, zero-padded to 50 characters.
    public var tokenDigest: String { Base36.encode(digest, width: JoinToken.digestLength) }

    /// Issues a node certificate for the key in `csrPEM`: CN = `nodeID`, OU = the role, O = the cluster ID,
    /// serverAuth+clientAuth, DNS names `[role, nodeID] + dnsNames` and `ipAddresses` as SANs, valid from
    /// `now` (less ``backdate``) for `validity` seconds. The CSR's own subject is ignored; its signature
    /// must verify and its key must be P-256. Returns the certificate in PEM.
    public func issue(
        csrPEM: String, nodeID: String, role: NodeIdentity.Role, dnsNames: [String] = [], ipAddresses: [IPAddress] = [],
        validity: TimeInterval = ClusterCA.defaultNodeValidity, now: Date = Date()
    ) throws -> String {
        let csr: CertificateSigningRequest
        do {
            csr = try CertificateSigningRequest(pemEncoded: csrPEM)
        } catch {
            throw PKIError(.invalidCSR, "the certificate signing request is not a PEM PKCS#10 request (\(error)); send the CSR made by NodeIdentity.Request")
        }
        guard csr.publicKey.isValidSignature(csr.signature, for: csr) else {
            throw PKIError(.invalidCSR, "the certificate signing request's signature does not verify with its own key; it was altered or made with another key")
        }
        guard P256.Signing.PublicKey(csr.publicKey) != nil else {
            throw PKIError(.invalidCSR, "the certificate signing request's key is not P-256; nodes must use P-256 keys")
        }
        guard Self.isValidID(nodeID) else {
            throw PKIError(.invalidInput, "node ID \"\(nodeID)\" must be 1-64 characters of a-z and 0-9")
        }
        guard validity > 0 else {
            throw PKIError(.invalidInput, "certificate validity must be positive, got \(validity) seconds")
        }
        for name in dnsNames where name.isEmpty || name.utf8.count > 253 || name.contains(where: { $0.isWhitespace }) {
            throw PKIError(.invalidInput, "\"\(name)\" is not a DNS name")
        }
        let now = Certificate.pkiWholeSeconds(now)
        var names: [GeneralName] = ([role.certificateOU, nodeID] + dnsNames).map { .dnsName($0) }
        names += ipAddresses.map { .ipAddress(.init(contentBytes: ArraySlice($0.bytes))) }
        let subject = try DistinguishedName {
            OrganizationName(clusterID)
            OrganizationalUnitName(role.certificateOU)
            CommonName(nodeID)
        }
        let caKeyID = try? certificate.extensions.subjectKeyIdentifier?.keyIdentifier
        let leaf = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: csr.publicKey,
            notValidBefore: now.addingTimeInterval(-Self.backdate),
            notValidAfter: now.addingTimeInterval(validity),
            issuer: certificate.subject,
            subject: subject,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
                SubjectAlternativeNames(names)
                SubjectKeyIdentifier(hash: csr.publicKey)
                if let caKeyID {
                    AuthorityKeyIdentifier(keyIdentifier: caKeyID)
                }
            },
            issuerPrivateKey: Certificate.PrivateKey(privateKey))
        return try leaf.pkiPEM
    }

    /// A fresh random ID in Docker's form: 25 base-36 characters (128 random bits).
    public static func newID() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return Base36.encode(bytes, width: 25)
    }

    static func isValidID(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 64 && Base36.isBase36(Substring(id))
    }
}
