/// An etcd lease: keys put with it (``EtcdStore/commit(_:_:lease:)``) are deleted, all in one
/// revision, when it ends, by ``revoke()`` or because no keepalive came within its TTL. What a
/// manager's presence and its leadership hang on.
///
/// ```swift
/// let lease = try await EtcdLease.grant(ttl: 3, on: store)
/// _ = try await store.commit([.absent(leader, "leader")], [.set(leader, "leader", me)], lease: lease)
/// for await renewal in lease.keepAlive(every: .seconds(1)) {
///     if case .expired = renewal { break }   // leadership is over
/// }
/// ```
public struct EtcdLease: Sendable, Hashable {
    /// The lease's ID in etcd.
    public let id: Int64
    /// The TTL etcd granted, in seconds (it may raise a smaller one to its minimum).
    public let ttl: Int64
    let client: EtcdClient

    /// What one keepalive found.
    public enum Renewal: Sendable, Equatable {
        /// etcd has the lease, with `ttl` seconds left, as acknowledged at `at`.
        case alive(ttl: Int64, at: ContinuousClock.Instant)
        /// No answer (no quorum, no member, a timeout): the lease may still be alive, until the
        /// TTL after the last acknowledgement. `message` says why.
        case unconfirmed(String)
        /// etcd does not have the lease any more (expired or revoked): its keys are gone.
        case expired
    }

    /// Grants a lease of `ttl` seconds on `store`'s etcd cluster.
    public static func grant(ttl: Int64, on store: EtcdStore) async throws -> EtcdLease {
        do {
            let (id, granted) = try await store.client.grantLease(ttl: ttl)
            return EtcdLease(id: id, ttl: granted, client: store.client)
        } catch let e as EtcdError {
            throw StoreError("etcd refused a lease of \(ttl) s: \(e.message)")
        }
    }

    /// One keepalive: whether etcd still has the lease, waiting at most `timeout` for the answer.
    public func renew(timeout: Duration = .seconds(1)) async -> Renewal {
        do {
            let left = try await client.keepAlive(lease: id, timeout: timeout)
            return left > 0 ? .alive(ttl: left, at: .now) : .expired
        } catch let e as EtcdError where e.code == 5 {
            return .expired
        } catch {
            return .unconfirmed("\(error)")
        }
    }

    /// Renews the lease every `interval` (each keepalive waits at most `timeout`), reporting
    /// each outcome; ends after ``Renewal/expired``, or when the consumer stops. A consumer that
    /// must not outlive the lease (a leader) steps down when `now - last acknowledgement`
    /// nears the TTL, since a keepalive without quorum just gets no answer.
    public func keepAlive(every interval: Duration = .seconds(1), timeout: Duration = .seconds(1)) -> AsyncStream<Renewal> {
        let (stream, continuation) = AsyncStream.makeStream(of: Renewal.self)
        let task = Task {
            while !Task.isCancelled {
                let started = ContinuousClock.now
                let renewal = await renew(timeout: timeout)
                continuation.yield(renewal)
                if renewal == .expired { break }
                try? await Task.sleep(until: started + interval, clock: .continuous)
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    /// Ends the lease now; its keys are deleted at once. A lease already gone is fine.
    public func revoke() async throws {
        do {
            try await client.revokeLease(id)
        } catch let e as EtcdError {
            throw StoreError("etcd refused to revoke lease \(id): \(e.message)")
        }
    }

    /// Two leases are the same when their IDs are.
    public static func == (a: EtcdLease, b: EtcdLease) -> Bool { a.id == b.id }
    /// Hashes the ID.
    public func hash(into hasher: inout Hasher) { hasher.combine(id) }
}
