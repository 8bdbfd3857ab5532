import Foundation
import IPAM
import IPsecKeys
import OverlayAPI

/// What only a manager holds: the global IPAM, the join secrets, the gossip keyring.
package struct ManagerState: Sendable {
    package var ipam: IPAM
    /// The store revision the IPAM was read from or written at (its entry's `modified`).
    package var ipamRevision: UInt64 = 0
    package var settings: ManagerSettings
    /// The encrypted networks' keyring: in memory only. A restarted manager makes a new one and
    /// every node moves to it in rotation order (nodes that restart get it from the manager).
    package var ipsec: IPsecKeyring
    /// What each node last said about its encryption (`ok`, `no keys`, an error).
    package var encryptionStatus: [String: String] = [:]
    /// What each node last said about its tasks, and their addresses (network -> address).
    package var taskStates: [String: String] = [:]
    package var taskAddresses: [String: [String: String]] = [:]
    /// Since when each node has not been ready (the scheduler moves its tasks after a while).
    package var notReadySince: [String: Date] = [:]
    /// Each node's gateway bridge subnet, as the node reported it.
    package var gatewaySubnets: [String: String] = [:]
    /// Each node's ports published by standalone containers (`run -p`), as the node reported them:
    /// "proto/port" -> container name.
    package var standalonePorts: [String: [String: String]] = [:]
    /// When this manager started (no task moves in its first seconds, while gossip finds everyone).
    package var started = Date()
    /// When the next key rotation after a node's removal is due, and how many are left.
    package var removalRotationDue: Date?
    package var removalRotationsLeft = 0
    /// Allocations that nodes' reports leave out (given back once confirmed).
    package var orphans = OrphanedAddresses()

    /// A manager's state at its start: nothing reported yet.
    package init(ipam: IPAM, settings: ManagerSettings, ipsec: IPsecKeyring, started: Date = Date()) {
        self.ipam = ipam
        self.settings = settings
        self.ipsec = ipsec
        self.started = started
    }
}

/// A manager's persisted secrets and settings.
package struct ManagerSettings: Codable, Sendable {
    /// The worker and manager join tokens (their secrets rotate; the CA digest stays).
    package var workerToken: String
    package var managerToken: String
    /// Gossip keys, base64, oldest first; the primary is the middle one (Docker's rule: a new key is
    /// installed everywhere before it is used).
    package var gossipKeys: [String]
    package var keysRotatedAt: Date
    package var rotationSeconds: Int
    package var pools: [String]
    package var maskLength: Int

    /// Settings of a new swarm.
    package init(workerToken: String, managerToken: String, gossipKeys: [String], keysRotatedAt: Date, rotationSeconds: Int,
                 pools: [String], maskLength: Int) {
        self.workerToken = workerToken
        self.managerToken = managerToken
        self.gossipKeys = gossipKeys
        self.keysRotatedAt = keysRotatedAt
        self.rotationSeconds = rotationSeconds
        self.pools = pools
        self.maskLength = maskLength
    }

    /// The two join tokens, parsed.
    package func tokens() throws -> JoinToken.Pair {
        try JoinToken.Pair(worker: JoinToken.parse(workerToken), manager: JoinToken.parse(managerToken))
    }
}

/// A PKI failure as an API error: 400 for a malformed token, 403 for a refused one, 502 for a
/// manager that could not be trusted.
package func apiError(_ e: PKIError, prefix: String = "") -> APIError {
    switch e.code {
    case .tokenShape, .tokenPrefix, .tokenVersion, .tokenDigest, .tokenSecret:
        return APIError(400, "invalid join token: \(e.message)")
    case .tokenRejected: return APIError(403, "invalid join token: \(e.message)")
    default: return APIError(e.code == .invalidCSR || e.code == .invalidInput ? 400 : 502, prefix + e.message)
    }
}

/// Why a gossip key rotation is due.
package enum KeyRotationReason: Sendable, Equatable {
    /// The rotation interval (`--key-rotation`, 12 hours by default) has passed.
    case scheduled
    /// One of the rotations that follow a node's removal.
    case afterNodeRemoval
}

extension ManagerSettings {
    /// The gossip ring after one rotation: `newKey` appended, the oldest dropped past three. The
    /// primary is the middle key, so a new key is installed everywhere one rotation before it is
    /// used, and a dropped key stopped being primary a rotation earlier (Docker's rule).
    package static func rotated(_ keys: [String], adding newKey: String) -> [String] {
        var keys = keys + [newKey]
        while keys.count > 3 { keys.removeFirst() }
        return keys
    }
}

extension ManagerState {
    /// After a node's removal: one rotation now (the caller's), and two more `spacing` apart. The
    /// second makes primary a key every node got in the first and the removed node never had;
    /// the third drops the removed node's last key.
    package mutating func scheduleRotationsAfterRemoval(now: Date, spacing: TimeInterval) {
        removalRotationsLeft = 2
        removalRotationDue = now.addingTimeInterval(spacing)
    }

    /// Whether a rotation is due at `now`, and why; a removal rotation taken here is counted (the
    /// next, if any, is due `spacing` later).
    package mutating func takeDueRotation(now: Date, spacing: TimeInterval) -> KeyRotationReason? {
        if let due = removalRotationDue, now >= due {
            removalRotationDue = removalRotationsLeft > 1 ? now.addingTimeInterval(spacing) : nil
            removalRotationsLeft -= 1
            return .afterNodeRemoval
        }
        if now.timeIntervalSince(settings.keysRotatedAt) >= Double(settings.rotationSeconds) { return .scheduled }
        return nil
    }
}
