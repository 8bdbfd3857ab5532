import ClusterManager
import Foundation
import IPsecKeys
import OverlayDriver

extension OverlayDaemon {
    /// A key tag from the clock (seconds), so a restarted manager's keys are newer than the old ones.
    static func keyTagNow() -> UInt32 { UInt32(truncatingIfNeeded: Int(Date().timeIntervalSince1970)) }

    /// Three fresh keys, oldest first (the middle one is primary).
    static func freshIPsecKeyring() throws -> IPsecKeyring {
        let t = keyTagNow()
        do {
            return try IPsecKeyring(keys: [IPsecKey.random(tag: t &- 2), IPsecKey.random(tag: t &- 1), IPsecKey.random(tag: t)])
        } catch {
            throw APIError(500, "cannot make the encrypted networks' keys: \(error)")
        }
    }

    /// Gives the keyring to the data plane (in rotation order; it keeps it in memory only).
    func applyIPsecKeys(_ ring: IPsecKeyring) {
        guard let agent else { return }
        if ipsecKeys == ring { return }
        ipsecKeys = ring
        agent.driver.setIPsecKeys(ring)
        log(.encryption).info("encrypted networks: keyring with tags \(ring.tags) in force (primary \(ring.primary.tag))")
    }

    /// This node's own word on encryption, for `node ls`: `ok`, `no keys`, or what failed.
    func encryptionStatus() -> String {
        guard let agent else { return "no swarm" }
        if ipsecKeys == nil { return "no keys" }
        let status = agent.driver.userspaceDatapath.encryptionStatus(vni: nil)
        return status == .ok ? "ok" : status.description
    }

    /// One encrypted network's state on this node, for `network inspect`.
    func networkEncryption(_ name: String) -> String {
        guard let agent else { return "not in a swarm" }
        guard let status = try? agent.driver.encryptionStatus(network: name) else {
            return ipsecKeys == nil ? "no IPsec keys yet, sending nothing" : "ok (no local endpoint)"
        }
        return status.description
    }
}
