import Foundation
import IPsecKeys
import Logging
import NodeAgent
import OverlayAPI
import Synchronization
import Testing

/// A worker following its manager, against a scripted manager: what it asks for, which states it
/// hands on, and how it rides out failures.
@Suite(.timeLimit(.minutes(2))) struct ManagerFollowerTests {
    struct Unreachable: Error {}

    /// Answers the polls from a script (a state, or a failure); past its end, says so on
    /// `exhausted` and holds the poll until cancelled (a manager with nothing new).
    final class ScriptedManager: ManagerLink {
        let script: Mutex<[Result<ClusterState, Unreachable>]>
        let asked = Mutex<[UInt64]>([])
        let reports = Mutex(0)
        let exhausted: AsyncStream<Void>
        private let signal: AsyncStream<Void>.Continuation
        init(_ script: [Result<ClusterState, Unreachable>]) {
            self.script = Mutex(script)
            (exhausted, signal) = AsyncStream.makeStream(of: Void.self)
        }

        func report() async { reports.withLock { $0 += 1 } }

        func state(since: UInt64, wait: Int) async throws -> ClusterState {
            asked.withLock { $0.append(since) }
            guard let next = script.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) else {
                signal.yield()
                try await Task.sleep(for: .seconds(3600))
                throw CancellationError()
            }
            return try next.get()
        }
    }

    final class Held: Sendable {
        let state: Mutex<ClusterState>
        let applied = Mutex<[UInt64]>([])
        init(_ s: ClusterState) { state = Mutex(s) }
    }

    let ring = try! IPsecKeyring(keys: [IPsecKey.random(tag: 1), IPsecKey.random(tag: 2)])

    func state(_ version: UInt64, keys: Bool = true) -> ClusterState {
        var s = ClusterState(version: version, networks: [], nodes: [], gossipKeys: [])
        if keys { s.ipsecKeys = ring }
        return s
    }

    @Test func asksFromWhatItHoldsAndHandsOnOnlyChanges() async throws {
        let manager = ScriptedManager([.success(state(3)), .success(state(3)), .failure(Unreachable()), .success(state(5))])
        let held = Held(state(0, keys: false))
        let follower = ManagerFollower(link: manager, wait: 25, retryDelay: .milliseconds(1), logger: Logger(label: "test"))
        let task = Task {
            await follower.run(held: { held.state.withLock { $0 } }, apply: { s in
                held.state.withLock { $0 = s }
                held.applied.withLock { $0.append(s.version) }
            })
        }
        // Until the script is played out (no clock: a busy machine only makes it slower).
        for await _ in manager.exhausted { break }
        task.cancel()
        await task.value
        // Without IPsec keys (a fresh start) it asks from 0; then from what it holds, the same
        // version again after a failure; the repeated version 3 is not handed on. A report
        // goes before each poll.
        #expect(manager.asked.withLock { $0 } == [0, 3, 3, 3, 5])
        #expect(held.applied.withLock { $0 } == [3, 5])
        #expect(manager.reports.withLock { $0 } == 5)
    }

    @Test func otherIPsecKeysAreAChangeAtTheSameVersion() throws {
        let a = state(7), b = state(7, keys: false)
        var c = a
        c.ipsecKeys = try IPsecKeyring(keys: [IPsecKey.random(tag: 3), IPsecKey.random(tag: 4)])
        #expect(ManagerFollower.isChange(a, from: b) && ManagerFollower.isChange(c, from: a) && !ManagerFollower.isChange(a, from: a))
        #expect(ManagerFollower.since(b) == 0 && ManagerFollower.since(a) == 7)
    }
}
