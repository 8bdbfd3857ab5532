import Crypto
import Foundation
import Glibc
import OverlayModel
import Testing
import X509

@testable import ClusterManager
import OverlayAPI

/// A fresh temporary directory, removed by the caller's `defer`.
func pkiTemporaryDirectory() -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("ovlt-pki-\(UUID().uuidString)").path
    return path
}

/// A node identity issued by `ca` through the real CSR path.
func pkiMakeIdentity(
    ca: ClusterCA, role: NodeIdentity.Role, nodeID: String = ClusterCA.newID(), dnsNames: [String] = [],
    ipAddresses: [IPAddress] = [], validity: TimeInterval = ClusterCA.defaultNodeValidity, now: Date = Date()
) throws -> NodeIdentity {
    let request = try NodeIdentity.Request()
    let pem = try ca.issue(
        csrPEM: request.csrPEM, nodeID: nodeID, role: role, dnsNames: dnsNames, ipAddresses: ipAddresses,
        validity: validity, now: now)
    return try NodeIdentity(request: request, certificatePEM: pem, caCertificatePEM: ca.certificatePEM)
}

func pkiFileMode(_ path: String) -> mode_t {
    var info = stat()
    guard stat(path, &info) == 0 else { return 0 }
    return info.st_mode & 0o777
}

/// Expects `body` to throw a PKIError with `code`; returns it for message checks.
@discardableResult
func expectPKIError(_ code: PKIError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) -> PKIError? {
    do {
        try body()
        Issue.record("expected PKIError \(code), nothing was thrown", sourceLocation: sourceLocation)
        return nil
    } catch let error as PKIError {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        return error
    } catch {
        Issue.record("expected PKIError \(code), got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

@Suite struct PKICATests {
    @Test func base36MatchesDockersEncoding() {
        #expect(Base36.encode([0x01, 0x00], width: 0) == "74")
        #expect(Base36.encode([0x01, 0x00], width: 5) == "00074")
        #expect(Base36.encode([], width: 3) == "000")
        #expect(Base36.encode([UInt8](repeating: 0xFF, count: 32), width: 50) == "6dp5qcb22im238nr3wvp0ic7q99w035jmy2iw7i6n43d37jtof")
        // SHA-256("abc") as Docker would put it in a token (computed independently with Python's int(hex, 16)).
        #expect(
            Base36.encode(Array(SHA256.hash(data: Array("abc".utf8))), width: 50)
                == "4nb7oofka9ml8nasnokxxc1unhmtpr1wxsuwhpd9km3vt5as31")
    }

    @Test func newCAHasTheRootFields() throws {
        let now = Date()
        let ca = try ClusterCA.create(clusterID: "cluster1", now: now)
        let cert = ca.certificate
        #expect(cert.subject == cert.issuer)
        #expect(cert.subject.pkiCommonName == "swift-overlay-ca")
        #expect(ca.clusterID == "cluster1")
        #expect(try cert.extensions.basicConstraints == .isCertificateAuthority(maxPathLength: 0))
        let usage = try #require(try cert.extensions.keyUsage)
        #expect(usage.keyCertSign && usage.cRLSign && !usage.digitalSignature)
        let years = cert.notValidAfter.timeIntervalSince(now) / (365.25 * 86_400)
        #expect(abs(years - 20) < 0.01)
        #expect(cert.publicKey.isValidSignature(cert.signature, for: cert))
        #expect(P256.Signing.PublicKey(cert.publicKey) != nil)
    }

    @Test func saveAndLoadRoundTripWithPrivateKeyFile() throws {
        let directory = pkiTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ca = try ClusterCA.create()
        try ca.save(to: directory)
        #expect(pkiFileMode(directory + "/ca.key") == 0o600)
        #expect(pkiFileMode(directory + "/ca.crt") == 0o600)
        #expect(pkiFileMode(directory) == 0o700)
        let loaded = try ClusterCA.load(from: directory)
        #expect(loaded.certificate == ca.certificate)
        #expect(loaded.digest == ca.digest)
        #expect(loaded.clusterID == ca.clusterID)
        // The loaded key is the same key: what it issues verifies under the original certificate.
        let node = try pkiMakeIdentity(ca: loaded, role: .worker)
        #expect(ca.certificate.publicKey.isValidSignature(node.certificate.signature, for: node.certificate))
        // Saving again over existing files keeps the permissions.
        try loaded.save(to: directory)
        #expect(pkiFileMode(directory + "/ca.key") == 0o600)
    }

    @Test func loadRefusesMismatchedKeyAndMissingFiles() throws {
        let a = try ClusterCA.create(), b = try ClusterCA.create()
        expectPKIError(.keyMismatch) {
            _ = try ClusterCA(certificatePEM: a.certificatePEM, privateKeyPEM: b.privateKey.pemRepresentation)
        }
        expectPKIError(.invalidCertificate) {
            _ = try ClusterCA(certificatePEM: "not a certificate", privateKeyPEM: a.privateKey.pemRepresentation)
        }
        expectPKIError(.storage) { _ = try ClusterCA.load(from: "/nonexistent/ovlt-pki") }
    }

    @Test func digestIsSHA256OfDERAndStable() throws {
        let ca = try ClusterCA.create()
        let der = try ca.certificate.serializeAsPEM().derBytes
        #expect(ca.digest == Array(SHA256.hash(data: der)))
        #expect(ca.tokenDigest.count == 50)
        #expect(ca.tokenDigest == Base36.encode(ca.digest, width: 50))
        // Stable through PEM re-parsing.
        let reparsed = try ClusterCA(certificatePEM: ca.certificatePEM, privateKeyPEM: ca.privateKey.pemRepresentation)
        #expect(reparsed.tokenDigest == ca.tokenDigest)
        #expect(try ClusterCA.create().tokenDigest != ca.tokenDigest)
    }
}

@Suite struct PKIJoinTokenTests {
    let digest = String(repeating: "a", count: 49) + "0"
    let secret = String(repeating: "b", count: 24) + "9"

    @Test func generateAndParseRoundTrip() throws {
        let ca = try ClusterCA.create()
        let token = JoinToken.generate(caDigest: ca.tokenDigest)
        #expect(token.encoded.hasPrefix("SWMTKN-1-\(ca.tokenDigest)-"))
        #expect(token.encoded.count == "SWMTKN-1-".count + 50 + 1 + 25)
        let parsed = try JoinToken.parse(token.encoded)
        #expect(parsed == token)
        #expect(parsed.matches(ca: ca))
        #expect(!parsed.matches(ca: try ClusterCA.create()))
        #expect(try JoinToken.parse("  \(token.encoded)\n") == token)
        #expect(!token.description.contains(token.secret))
        #expect(JoinToken.generate(caDigest: ca.tokenDigest) != token)
    }

    @Test func eachMalformedPartIsRefusedWithItsMessage() {
        let cases: [(String, PKIError.Code, String)] = [
            ("SWMTKN-1-\(digest)", .tokenShape, "four parts"),
            ("SWMTKN-1-\(digest)-\(secret)-x", .tokenShape, "four parts"),
            ("", .tokenShape, "four parts"),
            ("SWMTKX-1-\(digest)-\(secret)", .tokenPrefix, "starts with SWMTKN"),
            ("SWMTKN-2-\(digest)-\(secret)", .tokenVersion, "version \"2\""),
            ("SWMTKN-1-\(digest.dropLast())-\(secret)", .tokenDigest, "49 characters, not 50"),
            ("SWMTKN-1-\(digest)0-\(secret)", .tokenDigest, "51 characters, not 50"),
            ("SWMTKN-1-\(digest.dropLast())A-\(secret)", .tokenDigest, "only 0-9 and a-z"),
            ("SWMTKN-1-\(digest)-\(secret.dropLast())", .tokenSecret, "24 characters, not 25"),
            ("SWMTKN-1-\(digest)-\(secret.dropLast())_", .tokenSecret, "only 0-9 and a-z"),
        ]
        for (text, code, phrase) in cases {
            let error = expectPKIError(code) { _ = try JoinToken.parse(text) }
            #expect(error?.message.contains(phrase) == true, "\(text): \(String(describing: error))")
        }
        #expect((try? JoinToken.parse("SWMTKN-1-\(digest)-\(secret)")) != nil)
    }

    @Test func roleIsDecidedBySecretAndRotationRevokes() throws {
        let ca = try ClusterCA.create()
        var pair = JoinToken.Pair(ca: ca)
        let worker = try JoinToken.parse(pair.worker.encoded)
        let manager = try JoinToken.parse(pair.manager.encoded)
        #expect(pair.role(of: worker) == .worker)
        #expect(pair.role(of: manager) == .manager)
        #expect(try pair.authorize(manager) == .manager)
        #expect(pair.token(for: .worker) == worker)
        // Same secret, other CA digest: refused.
        let other = try ClusterCA.create()
        let forged = try JoinToken.parse("SWMTKN-1-\(other.tokenDigest)-\(worker.secret)")
        #expect(pair.role(of: forged) == nil)
        pair.rotate(.worker)
        #expect(pair.role(of: worker) == nil)
        #expect(pair.role(of: pair.worker) == .worker)
        #expect(pair.role(of: manager) == .manager)
        expectPKIError(.tokenRejected) { _ = try pair.authorize(worker) }
        // Restoring from storage keeps the roles; mixed CAs are refused.
        let restored = try JoinToken.Pair(worker: pair.worker, manager: pair.manager)
        #expect(restored == pair)
        expectPKIError(.invalidInput) { _ = try JoinToken.Pair(worker: pair.worker, manager: forged) }
    }
}

@Suite struct PKIIssueTests {
    @Test func issuedCertificateHasNodeFields() throws {
        let now = Date()
        let ca = try ClusterCA.create(clusterID: "c0ffee", now: now)
        let node = try pkiMakeIdentity(
            ca: ca, role: .manager, nodeID: "node1abc", dnsNames: ["mgr.example"],
            ipAddresses: [IPAddress("192.0.2.7")!, IPAddress("2001:db8::1")!], now: now)
        let cert = node.certificate
        #expect(cert.subject.pkiCommonName == "node1abc")
        #expect(cert.subject.pkiOrganizationalUnit == "swarm-manager")
        #expect(cert.subject.pkiOrganization == "c0ffee")
        #expect(cert.issuer == ca.certificate.subject)
        #expect(node.nodeID == "node1abc" && node.role == .manager && node.clusterID == "c0ffee")
        let whole = Date(timeIntervalSince1970: now.timeIntervalSince1970.rounded(.down))
        #expect(node.notAfter == whole.addingTimeInterval(90 * 86_400))
        #expect(node.notBefore == whole.addingTimeInterval(-300))
        let eku = try #require(try cert.extensions.extendedKeyUsage)
        #expect(eku.contains(.serverAuth) && eku.contains(.clientAuth))
        #expect(try cert.extensions.basicConstraints == .notCertificateAuthority)
        let san = try #require(try cert.extensions.subjectAlternativeNames)
        #expect(san.contains(.dnsName("mgr.example")) && san.contains(.dnsName("node1abc")) && san.contains(.dnsName("swarm-manager")))
        #expect(san.contains(.ipAddress(.init(contentBytes: [192, 0, 2, 7]))))
        #expect(san.contains(.ipAddress(.init(contentBytes: ArraySlice(IPAddress("2001:db8::1")!.bytes)))))

        let worker = try pkiMakeIdentity(ca: ca, role: .worker, validity: 3600, now: now)
        #expect(worker.certificate.subject.pkiOrganizationalUnit == "swarm-worker")
        #expect(worker.notAfter == whole.addingTimeInterval(3600))
    }

    @Test func badCSRIsRefused() throws {
        let ca = try ClusterCA.create()
        let garbage = expectPKIError(.invalidCSR) {
            _ = try ca.issue(csrPEM: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----", nodeID: "n1", role: .worker)
        }
        #expect(garbage?.message.contains("not a PEM PKCS#10 request") == true)

        // A well-formed CSR whose subject was altered after signing: the signature no longer verifies.
        let request = try NodeIdentity.Request()
        var der = try CertificateSigningRequest(pemEncoded: request.csrPEM).serializeAsPEM().derBytes
        let marker = Array("swift-overlay-node".utf8)
        let at = try #require(der.indices.first { der[$0...].starts(with: marker) })
        der[at] = UInt8(ascii: "S")
        let tampered = "-----BEGIN CERTIFICATE REQUEST-----\n\(Data(der).base64EncodedString(options: .lineLength64Characters))\n-----END CERTIFICATE REQUEST-----"
        #expect((try? CertificateSigningRequest(pemEncoded: tampered)) != nil)
        let badSignature = expectPKIError(.invalidCSR) { _ = try ca.issue(csrPEM: tampered, nodeID: "n1", role: .worker) }
        #expect(badSignature?.message.contains("signature does not verify") == true)

        // A non-P-256 key is refused.
        let p384 = try CertificateSigningRequest(
            version: .v1, subject: try DistinguishedName { CommonName("x") },
            privateKey: Certificate.PrivateKey(P384.Signing.PrivateKey()), attributes: .init(),
            signatureAlgorithm: .ecdsaWithSHA384)
        expectPKIError(.invalidCSR) { _ = try ca.issue(csrPEM: p384.serializeAsPEM().pemString, nodeID: "n1", role: .worker) }

        // Bad node IDs are refused, not embedded.
        expectPKIError(.invalidInput) { _ = try ca.issue(csrPEM: request.csrPEM, nodeID: "", role: .worker) }
        expectPKIError(.invalidInput) { _ = try ca.issue(csrPEM: request.csrPEM, nodeID: "Node/1", role: .worker) }
        expectPKIError(.invalidInput) { _ = try ca.issue(csrPEM: request.csrPEM, nodeID: "n1", role: .worker, validity: 0) }
    }

    @Test func identityRefusesCertificateForAnotherKeyOrCA() throws {
        let ca = try ClusterCA.create(), other = try ClusterCA.create()
        let request = try NodeIdentity.Request(), stranger = try NodeIdentity.Request()
        let pem = try ca.issue(csrPEM: request.csrPEM, nodeID: "n1", role: .worker)
        expectPKIError(.keyMismatch) {
            _ = try NodeIdentity(request: stranger, certificatePEM: pem, caCertificatePEM: ca.certificatePEM)
        }
        expectPKIError(.untrustedCertificate) {
            _ = try NodeIdentity(request: request, certificatePEM: pem, caCertificatePEM: other.certificatePEM)
        }
    }

    @Test func identitySaveLoadRoundTrip() throws {
        let directory = pkiTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ca = try ClusterCA.create()
        let node = try pkiMakeIdentity(ca: ca, role: .worker, nodeID: "w1")
        try node.save(to: directory)
        #expect(pkiFileMode(directory + "/node.key") == 0o600)
        #expect(pkiFileMode(directory + "/node.crt") == 0o600)
        let loaded = try NodeIdentity.load(from: directory)
        #expect(loaded.certificate == node.certificate)
        #expect(loaded.caCertificate == ca.certificate)
        #expect(loaded.nodeID == "w1" && loaded.role == .worker)
        #expect(loaded.renewalPoint == node.renewalPoint)
        // Renewal with the same key: the CA accepts the identity's own CSR.
        let renewedPEM = try ca.issue(csrPEM: loaded.makeCSR(), nodeID: "w1", role: .worker)
        let renewed = try NodeIdentity(
            privateKeyPEM: loaded.privateKey.pemRepresentation, certificatePEM: renewedPEM,
            caCertificatePEM: ca.certificatePEM)
        #expect(renewed.certificate.serialNumber != node.certificate.serialNumber)
    }

    @Test func renewalPointIsInTheWindowAndDeterministic() throws {
        let ca = try ClusterCA.create()
        var fractions: Set<Double> = []
        for _ in 0..<8 {
            let node = try pkiMakeIdentity(ca: ca, role: .worker)
            let fraction = node.renewalFraction
            #expect(fraction >= 0.5 && fraction < 0.8)
            fractions.insert(fraction)
            let lifetime = node.notAfter.timeIntervalSince(node.notBefore)
            #expect(abs(node.renewalPoint.timeIntervalSince(node.notBefore) - lifetime * fraction) < 0.001)
            #expect(!node.renewalDue(now: node.notBefore.addingTimeInterval(lifetime * 0.49)))
            #expect(!node.renewalDue(now: node.renewalPoint.addingTimeInterval(-1)))
            #expect(node.renewalDue(now: node.renewalPoint))
            #expect(node.renewalDue(now: node.notBefore.addingTimeInterval(lifetime * 0.81)))
            #expect(!node.renewalDue())
            // Same certificate, same point.
            let again = try NodeIdentity(
                privateKeyPEM: node.privateKey.pemRepresentation, certificatePEM: node.certificatePEM,
                caCertificatePEM: node.caCertificatePEM)
            #expect(again.renewalFraction == fraction)
        }
        // Points are spread, not one fixed fraction (8 random serials colliding is ~impossible).
        #expect(fractions.count > 1)
    }
}

/// A node's key signs its endpoint records; the manager hands out the public half.
@Suite struct PKISigningTests {
    @Test func aRecordSignedWithTheNodesKeyVerifiesWithTheKeyItsRequestCarried() throws {
        let request = try NodeIdentity.Request()
        #expect(NodeIdentity.signingKey(ofCSR: request.csrPEM) == request.signingKey)
        #expect(NodeIdentity.signingKey(ofCSR: "not a CSR") == nil)
        let ca = try ClusterCA.create(clusterID: "c1")
        let identity = try NodeIdentity(request: request, certificatePEM: try ca.issue(csrPEM: request.csrPEM, nodeID: "n1", role: .worker),
                                        caCertificatePEM: ca.certificatePEM)
        #expect(identity.signingKey == request.signingKey)
        // A renewal's request keeps the key.
        #expect(NodeIdentity.signingKey(ofCSR: try identity.makeCSR()) == identity.signingKey)
        let message = Array("swift-overlay endpoint record 1\nweb\nn1\n{}".utf8)
        let signature = try identity.sign(message)
        #expect(signature.count == 64)
        #expect(NodeIdentity.verify(signature, of: message, signingKey: identity.signingKey))
        // Another message, another key, a damaged signature or key: no.
        #expect(!NodeIdentity.verify(signature, of: message + [0], signingKey: identity.signingKey))
        #expect(!NodeIdentity.verify(signature, of: message, signingKey: try NodeIdentity.Request().signingKey))
        var damaged = signature
        damaged[10] ^= 1
        #expect(!NodeIdentity.verify(damaged, of: message, signingKey: identity.signingKey))
        #expect(!NodeIdentity.verify(signature, of: message, signingKey: "AAAA"))
        #expect(!NodeIdentity.verify([1, 2, 3], of: message, signingKey: identity.signingKey))
    }
}
