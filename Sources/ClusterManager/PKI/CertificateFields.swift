import Crypto
import Foundation
import X509

extension DistinguishedName {
    /// The first value of the attribute `type` (e.g. `.RDNAttributeType.commonName`), as text.
    func pkiFirstValue(_ matches: (RelativeDistinguishedName.Attribute) -> Bool) -> String? {
        for rdn in self {
            for attribute in rdn where matches(attribute) {
                return String(attribute.value)
            }
        }
        return nil
    }

    var pkiCommonName: String? { pkiFirstValue { $0.type == .RDNAttributeType.commonName } }
    var pkiOrganizationalUnit: String? { pkiFirstValue { $0.type == .RDNAttributeType.organizationalUnitName } }
    var pkiOrganization: String? { pkiFirstValue { $0.type == .RDNAttributeType.organizationName } }
}

extension Certificate {
    /// The DER encoding.
    var pkiDER: [UInt8] {
        get throws { try serializeAsPEM().derBytes }
    }

    /// The PEM encoding.
    var pkiPEM: String {
        get throws { try serializeAsPEM().pemString }
    }

    /// Parses one PEM certificate, failing with an actionable error naming `what`.
    static func pkiParse(pem: String, what: String) throws(PKIError) -> Certificate {
        do {
            return try Certificate(pemEncoded: pem)
        } catch {
            throw PKIError(.invalidCertificate, "\(what) is not a PEM X.509 certificate (\(error)); check the file or message it came from")
        }
    }

    /// `date` truncated to whole seconds, as certificates store it.
    static func pkiWholeSeconds(_ date: Date) -> Date {
        Date(timeIntervalSince1970: date.timeIntervalSince1970.rounded(.down))
    }

    /// The SHA-256 of the DER encoding.
    var pkiDigest: [UInt8] {
        get throws { Array(SHA256.hash(data: try pkiDER)) }
    }
}

/// The checks every cluster certificate must pass: signed by the CA, in its validity period, carrying
/// the cluster ID, a node ID and a role. Returns who the certificate names.
enum ClusterCertificateCheck {
    static func verify(leaf: Certificate, ca: Certificate, now: Date) throws(PKIError) -> ClusterTLS.PeerIdentity {
        guard leaf.issuer == ca.subject, ca.publicKey.isValidSignature(leaf.signature, for: leaf) else {
            throw PKIError(
                .untrustedCertificate,
                "the certificate for \(leaf.subject) was not issued by this cluster's CA (\(ca.subject)); the node must join this cluster again to get a certificate")
        }
        // Whole seconds: certificate times have no fractions.
        let seconds = Certificate.pkiWholeSeconds(now)
        if seconds < leaf.notValidBefore {
            throw PKIError(
                .certificateNotYetValid,
                "the certificate for \(leaf.subject) is valid only from \(leaf.notValidBefore); check the clocks of both machines")
        }
        if seconds > leaf.notValidAfter {
            throw PKIError(
                .certificateExpired,
                "the certificate for \(leaf.subject) expired at \(leaf.notValidAfter); the node must renew it in time or join the cluster again")
        }
        if let constraints = try? leaf.extensions.basicConstraints, constraints != .notCertificateAuthority {
            throw PKIError(.untrustedCertificate, "the certificate for \(leaf.subject) is a CA certificate, not a node certificate")
        }
        guard let clusterID = ca.subject.pkiOrganization, leaf.subject.pkiOrganization == clusterID else {
            throw PKIError(.untrustedCertificate, "the certificate for \(leaf.subject) belongs to another cluster")
        }
        guard let nodeID = leaf.subject.pkiCommonName, !nodeID.isEmpty,
            let role = leaf.subject.pkiOrganizationalUnit.flatMap(NodeIdentity.Role.init(certificateOU:))
        else {
            throw PKIError(.invalidCertificate, "the certificate for \(leaf.subject) lacks a node ID (CN) or a role (OU swarm-manager/swarm-worker)")
        }
        return ClusterTLS.PeerIdentity(nodeID: nodeID, role: role, clusterID: clusterID)
    }
}
