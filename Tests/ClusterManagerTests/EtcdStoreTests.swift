import Foundation
import NIOCore
import Testing

@testable import ClusterManager

/// The etcd store against real etcd 3.4 members on loopback (``EtcdLab``): the shared store's
/// checks, paging, history (replay, compaction), leases, TLS with client certificates, and a
/// 3-member cluster losing its quorum. A test that hangs fails after a minute (its etcd is
/// killed all the same).
@Suite(.timeLimit(.minutes(1)))
struct EtcdStoreTests {
    // MARK: The shared store's behaviour

    @Test func conditionsDecideWhetherACommitHappens() async throws {
        try await withEtcd { lab in
            try await using(try lab.store()) { store in try await SharedStoreChecks.conditions("etcd", store) }
        }
    }

    /// Three managers, each with its own client, hand out addresses from one pool at once.
    @Test func concurrentAllocationsNeverCollide() async throws {
        try await withEtcd { lab in
            let stores = try (0..<3).map { _ in try lab.store(clusterID: "pool") }
            do {
                try await SharedStoreChecks.concurrentAllocations("etcd", stores)
            } catch {
                for s in stores { try? await s.shutdown() }
                throw error
            }
            for s in stores { try await s.shutdown() }
        }
    }

    /// Order, deletes, filtering by kind; and the watch's end closes its request on the server.
    @Test func aWatchSeesEveryCommitOfItsKindsInOrder() async throws {
        try await withEtcd { lab in
            try await using(try lab.store()) { store in
                try await SharedStoreChecks.watchOrder("etcd", store)
                // The watch above ended when its loop broke: etcd has no watcher left.
                #expect(try await Self.noWatchersLeft(lab), "etcd still has watchers")
            }
        }
    }

    /// A watch from an old revision replays what came after it, each change at its own
    /// revision; one from a view's revision starts after it.
    @Test func aWatchReplaysHistoryFromAnOlderRevision() async throws {
        try await withEtcd { lab in
            try await using(try lab.store()) { store in
                let before = try await store.load([.task]).revision
                var revisions: [UInt64] = []
                for i in 0..<5 { revisions.append(try await store.commit([], [.set(.task, "t\(i)", i), .set(.node, "n\(i)", i)]).revision) }
                _ = try await store.commit([], [.delete(.task, "t0")])
                var view = StoreSnapshot(revision: before)
                var events: [StoreEvent] = []
                for try await batch in store.watch([.task], after: before) {
                    events += batch.events
                    view.apply(batch.events)
                    view.advance(to: batch.revision)
                    if view.revision >= revisions[4] + 1 { break }
                }
                #expect(events.map(\.key) == ["t0", "t1", "t2", "t3", "t4", "t0"], "\(events)")
                #expect(events.dropLast().map(\.revision) == revisions)
                #expect(view.all(.task).map(\.key) == ["t1", "t2", "t3", "t4"])
                #expect(try view.get(.task, "t3", as: Int.self) == 3)
                let fresh = try await store.load([.task])
                #expect(fresh.all(.task).map(\.key) == view.all(.task).map(\.key) && fresh.revision == view.revision)
            }
        }
    }

    /// A watch from a revision etcd compacted away ends, saying to load again; loads still work.
    @Test func aWatchFromACompactedRevisionSaysLoadAgain() async throws {
        try await withEtcd { lab in
            try await using(try lab.store()) { store in
                let first = try await store.commit([], [.set(.network, "a", 1)]).revision
                for i in 0..<4 { _ = try await store.commit([], [.set(.network, "a", i)]) }
                let now = try await store.load([.network]).revision
                try await store.client.compact(Int64(now))
                var failure: (any Error)?
                do { for try await _ in store.watch([.network], after: first) {} } catch { failure = error }
                #expect("\(failure.map { "\($0)" } ?? "no error")".contains("load again"), "\(String(describing: failure))")
                #expect(try await store.load([.network]).revision == now)
            }
        }
    }

    /// A load of more keys than a page reads them all, in pages at one revision.
    @Test func aLoadReadsPageAfterPage() async throws {
        try await withEtcd { lab in
            try await using(try lab.store(pageSize: 3)) { store in
                let changes = try (0..<10).map { try StoreChange.set(.network, "n/\($0)", $0) } + [.set(.node, "x", 1)]
                let r = try await store.commit([], changes)
                let view = try await store.load([.network, .node, .service])
                #expect(view.count(.network) == 10 && view.count(.node) == 1 && view.count(.service) == 0)
                #expect(view.revision == r.revision)
                #expect(try view.all(.network, as: Int.self).sorted() == Array(0..<10))
                #expect(view.all(.network).map(\.key) == (0..<10).map { "n/\($0)" })
            }
        }
    }

    /// etcd's limits and a key changed twice in one transaction; the key layout.
    @Test func transactionsFitEtcd() async throws {
        try await withEtcd { lab in
            try await using(try lab.store(clusterID: "layout")) { store in
                let many = try (0..<129).map { try StoreChange.set(.task, "t\($0)", $0) }
                await #expect(throws: StoreError.self) { try await store.commit([], many) }
                let exactly = try (0..<128).map { try StoreChange.set(.task, "t\($0)", $0) }
                #expect(try await store.commit([], exactly).committed)
                // The same key twice: its last change wins, as in the memory model.
                _ = try await store.commit([], [.set(.setting, "k", 1), .set(.setting, "k", 2), .delete(.task, "t1"), .set(.task, "t1", 9)])
                let view = try await store.load([.setting, .task])
                #expect(try view.get(.setting, "k", as: Int.self) == 2 && view.get(.task, "t1", as: Int.self) == 9)
                let raw = try await store.client.range(EtcdRangeRequest(key: Data("/swift-overlay/layout/setting/k".utf8)))
                #expect(raw.kvs.count == 1 && raw.kvs[0].value == Data("2".utf8))
            }
        }
    }

    // MARK: Leases

    @Test func keysOnALeaseGoWhenItEnds() async throws {
        try await withEtcd { lab in
            try await using(try lab.store()) { store in
                let lease = try await EtcdLease.grant(ttl: 2, on: store)
                #expect(lease.ttl >= 2)
                #expect(try await store.commit([.absent(.setting, "leader")], [.set(.setting, "leader", "m1")], lease: lease).committed)
                // Kept alive past its TTL, it stays.
                var alive = 0
                for await renewal in lease.keepAlive(every: .milliseconds(700)) {
                    if case .alive = renewal { alive += 1 }
                    if alive == 5 { break }
                }
                #expect(try await store.load([.setting]).entry(.setting, "leader") != nil, "a lease kept alive keeps its keys")
                // Left alone, it expires, and its key with it.
                try await Task.sleep(for: .seconds(3.5))
                #expect(try await store.load([.setting]).entry(.setting, "leader") == nil, "an expired lease's key is deleted")
                #expect(await lease.renew() == .expired)
                await #expect(throws: StoreError.self) { try await store.commit([], [.set(.setting, "late", 1)], lease: lease) }
                // Revoked, its keys go at once.
                let second = try await EtcdLease.grant(ttl: 30, on: store)
                _ = try await store.commit([], [.set(.node, "presence/m1", 1), .set(.node, "presence/m2", 1)], lease: second)
                try await second.revoke()
                #expect(try await store.load([.node]).count(.node) == 0)
                try await second.revoke()
            }
        }
    }

    // MARK: TLS

    /// Client certificates: a client with one works (reads, writes, watches); one without, or
    /// trusting another CA, is refused with a line that says TLS.
    @Test func tlsWithClientCertificates() async throws {
        try await withEtcd(tls: true) { lab in
            let files = try #require(lab.tls)
            try await using(try lab.store(clusterID: "tls")) { store in
                let r = try await store.commit([.absent(.network, "a")], [.set(.network, "a", 1)])
                #expect(r.committed)
                do {
                    var it = store.watch([.network], after: 0).makeAsyncIterator()
                    #expect(try await it.next()?.events.map(\.key) == ["a"])
                    #expect(try Self.watchers(lab, 0) == 1)
                }
                // Over TLS the watch is an HTTP/2 stream: dropping it resets the stream, which
                // ends the watcher on the server too.
                #expect(try await Self.noWatchersLeft(lab), "etcd still has watchers")
            }
            var config = lab.configuration()
            config.tls = .init(caFile: files.ca)
            try await using(try EtcdStore(config, clusterID: "tls")) { store in
                let error = await #expect(throws: StoreUnavailable.self) { try await store.commit([], [.set(.network, "b", 1)]) }
                let line = error.map { "\($0)" } ?? ""
                #expect(line.contains("TLS") && !line.contains("\n"), "\(line)")
            }
            config.tls = .init(caFile: files.otherCA, certificateFile: files.clientCertificate, keyFile: files.clientKey)
            try await using(try EtcdStore(config, clusterID: "tls")) { store in
                let error = await #expect(throws: StoreUnavailable.self) { try await store.load([.network]) }
                #expect("\(error.map { "\($0)" } ?? "")".contains("TLS"))
            }
            config.tls = .init(caFile: "\(lab.dir)/missing.crt")
            #expect(throws: StoreError.self) { try EtcdStore(config, clusterID: "tls") }
        }
    }

    // MARK: Unavailability

    /// Nothing listens: the call fails at once, in one line, and says nothing was changed.
    @Test func noMemberAnswering() async throws {
        let ports = PortPool.take(2)
        let store = try EtcdStore(EtcdConfiguration(endpoints: ports.map { "http://127.0.0.1:\($0)" }), clusterID: "none")
        try await using(store) { store in
            let start = ContinuousClock.now
            let error = await #expect(throws: StoreUnavailable.self) { try await store.commit([], [.set(.network, "a", 1)]) }
            #expect(ContinuousClock.now - start < .seconds(1))
            #expect(
                error?.message
                    == "cluster store unavailable: no etcd member answers at 127.0.0.1:\(ports[0]),127.0.0.1:\(ports[1]) (connection refused): the change was not made")
            var failure: (any Error)?
            do { for try await _ in store.watch([.network], after: 0) {} } catch { failure = error }
            #expect(failure is StoreUnavailable)
        }
    }

    /// A call its caller cancels (a lease renewal stopped while etcd elects a leader) failed for
    /// that alone: the next call asks etcd instead of being refused for a second as if no member
    /// had answered.
    @Test func aCancelledCallDoesNotMarkTheClusterDown() async throws {
        // A member that accepts connections and says nothing.
        let port = PortPool.take(1)[0]
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        try #require(bound == 0 && listen(fd, 16) == 0)
        var configuration = EtcdConfiguration(endpoints: ["http://127.0.0.1:\(port)"])
        configuration.requestTimeout = .milliseconds(600)
        try await using(try EtcdStore(configuration, clusterID: "cancel")) { store in
            let call = Task { try await store.load([.network]) }
            try await Task.sleep(for: .milliseconds(200))
            call.cancel()
            _ = await call.result
            let start = ContinuousClock.now
            let error = await #expect(throws: StoreUnavailable.self) { try await store.load([.network]) }
            let took = ContinuousClock.now - start
            let line = error?.message ?? ""
            #expect(took >= .milliseconds(550), "refused after \(took), without asking: \(line)")
            #expect(line.contains("does not answer (request timed out after 0.6 seconds; 1 of 1 members answer nothing in time"), "\(line)")
        }
    }

    /// Three members, two killed: a commit fails within the request timeout with one line,
    /// the next at once; with the members back, commits work again.
    @Test func aClusterThatLosesQuorumFailsFastAndRecovers() async throws {
        try await withEtcd(members: 3) { lab in
            try await using(try lab.store(clusterID: "quorum")) { store in
                #expect(try await store.commit([], [.set(.network, "before", 1)]).committed)
                let lease = try await EtcdLease.grant(ttl: 10, on: store)
                lab.kill(1)
                lab.kill(2)
                var start = ContinuousClock.now
                let first = await #expect(throws: StoreUnavailable.self) { try await store.commit([], [.set(.network, "during", 1)]) }
                let took = ContinuousClock.now - start
                let line = first?.message ?? ""
                #expect(took < .seconds(5), "took \(took)")  // the 3 s request timeout, then a /health probe
                #expect(line.hasPrefix("cluster store unavailable: etcd at \(store.members) has no quorum ("), "\(line)")
                #expect(line.contains("may have been made") && !line.contains("\n"), "\(line)")
                // The next calls fail at once, sending nothing.
                start = ContinuousClock.now
                let second = await #expect(throws: StoreUnavailable.self) { try await store.commit([], [.set(.network, "during2", 1)]) }
                #expect(ContinuousClock.now - start < .seconds(1), "no request timeout")
                #expect(second?.message.hasSuffix(": the change was not made") == true, "\(second?.message ?? "")")
                await #expect(throws: StoreUnavailable.self) { try await store.load([.network]) }
                if case .unconfirmed = await lease.renew() {} else { Issue.record("a keepalive without quorum is unconfirmed") }
                // Members back: commits work again (the first ones may fail fast while they elect).
                try lab.start(1)
                try lab.start(2)
                try await lab.waitHealthy([0, 1, 2])
                let deadline = ContinuousClock.now + .seconds(10)
                var after: StoreCommit?
                while after == nil && ContinuousClock.now < deadline {
                    do { after = try await store.commit([], [.set(.network, "after", 1)]) } catch is StoreUnavailable {
                        try await Task.sleep(for: .milliseconds(200))
                    }
                }
                #expect(after?.committed == true)
                let view = try await store.load([.network])
                #expect(view.entry(.network, "after") != nil && view.entry(.network, "during2") == nil)
            }
        }
    }

    /// The member a watch reads from stops: the watch goes on from another, from the revision
    /// after its last batch, missing nothing.
    @Test func aWatchMovesToAnotherMemberWhenItsMemberStops() async throws {
        try await withEtcd(members: 3) { lab in
            try await using(try lab.store(clusterID: "move")) { store in
                let start = try await store.commit([], [.set(.network, "a", 1)]).revision
                var it = store.watch([.network], after: start).makeAsyncIterator()
                _ = try await store.commit([], [.set(.network, "b", 1)])
                #expect(try await it.next()?.events.map(\.key) == ["b"])
                lab.kill(0)  // the member both the store and its watch use
                // Writes go on through the others (after their election).
                let deadline = ContinuousClock.now + .seconds(10)
                var written = false
                while !written && ContinuousClock.now < deadline {
                    do { written = try await store.commit([], [.set(.network, "c", 1)]).committed } catch is StoreUnavailable {
                        try await Task.sleep(for: .milliseconds(200))
                    }
                }
                #expect(written)
                _ = try await store.commit([], [.delete(.network, "a")])
                var events: [StoreEvent] = []
                while events.count < 2, let batch = try await it.next() { events += batch.events }
                #expect(events.map(\.key) == ["c", "a"] && events.last.map { if case .delete = $0 { true } else { false } } == true, "\(events)")
            }
        }
    }

    // MARK: Helpers

    /// Whether member 0's count of open watchers drops to 0 within 5 s.
    static func noWatchersLeft(_ lab: EtcdLab) async throws -> Bool {
        for _ in 0..<50 {
            if try watchers(lab, 0) == 0 { return true }
            try await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    /// etcd's count of open watchers (`etcd_debugging_mvcc_watcher_total` in /metrics).
    static func watchers(_ lab: EtcdLab, _ member: Int) throws -> Int {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        p.arguments = ["-s", "--max-time", "2", "\(lab.endpoints[member])/metrics"]
        if let tls = lab.tls { p.arguments! += ["--cacert", tls.ca, "--cert", tls.clientCertificate, "--key", tls.clientKey] }
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let line = String(decoding: data, as: UTF8.self).split(separator: "\n").first { $0.hasPrefix("etcd_debugging_mvcc_watcher_total ") }
        return line.flatMap { Int(Double($0.split(separator: " ")[1]) ?? -1) } ?? -1
    }
}

/// The gateway's JSON and the client's rules, without etcd: fixed answers captured from etcd
/// 3.4.23 (omitted defaults), the stream's framing cut at every byte, endpoint rotation and
/// the fail-fast window with a fake clock.
struct EtcdWireTests {
    static let header = #""header":{"cluster_id":"207178541904385096","member_id":"13261777605803939071","revision":"12","raft_term":"2"}"#

    @Test func answersWithOmittedDefaultsDecode() throws {
        let d = JSONDecoder()
        // A failed compare: no "succeeded", no "responses".
        let failed = try d.decode(EtcdTxnResponse.self, from: Data("{\(Self.header)}".utf8))
        #expect(!failed.succeeded && failed.header.revision == 12 && failed.header.memberID == "13261777605803939071")
        let ok = try d.decode(EtcdTxnResponse.self, from: Data(#"{"header":{"revision":"11"},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"11"}}}]}"#.utf8))
        #expect(ok.succeeded && ok.header.revision == 11)
        // A range that found nothing: no kvs, no count.
        let none = try d.decode(EtcdRangeResponse.self, from: Data("{\(Self.header)}".utf8))
        #expect(none.kvs.isEmpty && !none.more && none.count == 0)
        let page = try d.decode(
            EtcdRangeResponse.self,
            from: Data(#"{"header":{"revision":"6"},"kvs":[{"key":"L2FwcC9h","create_revision":"2","mod_revision":"3","version":"2"}],"more":true,"count":"2"}"#.utf8))
        #expect(page.more && page.count == 2 && page.kvs == [EtcdKeyValue(key: Data("/app/a".utf8), createRevision: 2, modRevision: 3, version: 2)])
        // Watch: PUT has no type, DELETE only key and mod_revision; compaction's header has no revision.
        let events = try d.decode(
            EtcdWatchResponse.self,
            from: Data(
                #"{"header":{"revision":"22"},"events":[{"kv":{"key":"L3cvYQ==","create_revision":"19","mod_revision":"20","version":"2","value":"Mg=="}},{"type":"DELETE","kv":{"key":"L3cvYg==","mod_revision":"22"}}]}"#.utf8))
        #expect(
            events.events == [
                EtcdEvent(isDelete: false, kv: EtcdKeyValue(key: Data("/w/a".utf8), value: Data("2".utf8), createRevision: 19, modRevision: 20, version: 2)),
                EtcdEvent(isDelete: true, kv: EtcdKeyValue(key: Data("/w/b".utf8), modRevision: 22)),
            ])
        let compacted = try d.decode(
            EtcdStreamLine<EtcdWatchResponse>.self,
            from: Data(#"{"result":{"header":{"cluster_id":"1","member_id":"2","raft_term":"2"},"canceled":true,"compact_revision":"3"}}"#.utf8))
        #expect(compacted.result?.canceled == true && compacted.result?.compactRevision == 3 && compacted.result?.header.revision == 0)
        // A keepalive of a lease that is gone: no TTL.
        let gone = try d.decode(EtcdStreamLine<EtcdLeaseResponse>.self, from: Data(#"{"result":{"header":{"revision":"9"},"ID":"1513106437380471848"}}"#.utf8))
        #expect(gone.result?.id == 1_513_106_437_380_471_848 && gone.result?.ttl == 0)
    }

    @Test func errorsOfBothShapesAreRead() {
        let unary = EtcdClient.error(status: 400, ByteBuffer(string: #"{"error":"etcdserver: mvcc: required revision has been compacted","message":"etcdserver: mvcc: required revision has been compacted","code":11}"#))
        #expect(unary.code == 11 && unary.isCompacted && EtcdClient.unavailability(unary) == nil)
        let stream = EtcdClient.error(status: 503, ByteBuffer(string: #"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#))
        #expect(stream == EtcdError(status: 503, code: 14, message: "etcdserver: no leader") && EtcdClient.unavailability(stream) == false)
        let timedOut = EtcdClient.error(status: 503, ByteBuffer(string: #"{"error":"etcdserver: request timed out","message":"etcdserver: request timed out","code":14}"#))
        #expect(EtcdClient.unavailability(timedOut) == true, "a timed-out write may still be applied")
        let text = EtcdClient.error(status: 404, ByteBuffer(string: "404 page not found\n"))
        #expect(text.message == "HTTP 404: 404 page not found" && EtcdClient.unavailability(text) == nil)
    }

    @Test func requestsUseTheGatewaysFieldNames() throws {
        let e = JSONEncoder()
        e.outputFormatting = .sortedKeys
        let store = try EtcdStore(EtcdConfiguration(endpoints: ["http://127.0.0.1:1"]), clusterID: "c1")
        defer { Task { try? await store.shutdown() } }
        let txn = try store.transaction(
            [.absent(.allocation, "n/10.0.0.2"), .unchanged(.node, "a", modified: 7), .created(.setting, "leader", at: 3)],
            [.put(.allocation, "n/10.0.0.2", Data("1".utf8)), .delete(.node, "a")], lease: 42)
        let json = String(decoding: try e.encode(txn), as: UTF8.self)
        let k = { (s: String) in Data(s.utf8).base64EncodedString() }
        #expect(
            json == #"{"compare":[{"create_revision":0,"key":"\#(k("/swift-overlay/c1/allocation/n/10.0.0.2"))","result":"EQUAL","target":"CREATE"},"#
                + #"{"key":"\#(k("/swift-overlay/c1/node/a"))","mod_revision":7,"result":"EQUAL","target":"MOD"},"#
                + #"{"create_revision":3,"key":"\#(k("/swift-overlay/c1/setting/leader"))","result":"EQUAL","target":"CREATE"}],"failure":[],"#
                + #""success":[{"request_put":{"key":"\#(k("/swift-overlay/c1/allocation/n/10.0.0.2"))","lease":42,"value":"MQ=="}},"#
                + #"{"request_delete_range":{"key":"\#(k("/swift-overlay/c1/node/a"))"}}]}"#, "\(json)")
        #expect(String(decoding: try e.encode(EtcdLeaseGrantRequest(ttl: 3)), as: UTF8.self) == #"{"ID":0,"TTL":3}"#)
        #expect(store.parse(Data("/swift-overlay/c1/allocation/n/10.0.0.2".utf8)).map { "\($0.0)|\($0.1)" } == "allocation|n/10.0.0.2")
        #expect(store.parse(Data("/swift-overlay/c2/allocation/x".utf8)) == nil)
        #expect(Data("/app/".utf8).etcdPrefixEnd == Data("/app0".utf8))
        #expect(Data([0x61, 0xff]).etcdPrefixEnd == Data([0x62]) && Data([0xff]).etcdPrefixEnd == Data([0]))
    }

    /// The watch stream's framing: the same messages come out however the bytes are cut.
    @Test func linesSurviveEveryCut() throws {
        let stream = """
            {"result":{\(Self.header),"created":true}}
            {"result":{\(Self.header),"events":[{"kv":{"key":"L3cvYQ==","mod_revision":"12","value":"MQ=="}}]}}

            {"result":{"header":{"revision":"13"}}}
            """ + "\n"
        let bytes = Array(stream.utf8)
        func lines(_ chunks: [[UInt8]]) throws -> [String] {
            var framer = EtcdLineFramer()
            var out: [String] = []
            for c in chunks {
                framer.append(ByteBuffer(bytes: c))
                while let line = try framer.next() { out.append(String(buffer: line)) }
            }
            if let last = framer.finish() { out.append(String(buffer: last)) }
            return out
        }
        let whole = try lines([bytes])
        #expect(whole.count == 3)
        for cut in 0...bytes.count {
            #expect(try lines([Array(bytes[..<cut]), Array(bytes[cut...])]) == whole, "cut at \(cut)")
        }
        #expect(try lines(bytes.map { [$0] }) == whole)
        // A last message without its newline still counts; a line past the limit is an error.
        #expect(try lines([Array(#"{"result":{}}"#.utf8)]) == [#"{"result":{}}"#])
        var small = EtcdLineFramer(maximum: 8)
        small.append(ByteBuffer(string: "0123456789"))
        #expect(throws: EtcdError.self) { try small.next() }
        // Each message decodes.
        let decoded = try whole.map { try EtcdWatchStream.AsyncIterator.decode(ByteBuffer(string: $0)) }
        #expect(decoded.map(\.created) == [true, false, false] && decoded[1].events.count == 1 && decoded[2].header.revision == 13)
    }

    /// Rotation and the fail-fast window, with a fake clock.
    @Test func membersAreAskedInTurnAndAFailureIsRememberedBriefly() {
        let t0 = ContinuousClock.now
        var e = EtcdEndpoints(count: 3, failFast: .seconds(1))
        #expect(e.admission(now: t0) == .ask([0, 1, 2]))
        e.skip(0)
        #expect(e.admission(now: t0) == .ask([1, 2, 0]))
        e.skip(2)  // not the preferred one: no change
        #expect(e.order == [1, 2, 0])
        e.answered(by: 2)
        #expect(e.order == [2, 0, 1])
        let down = EtcdUnreachable.noQuorum("request timed out")
        e.failed(down, now: t0)
        #expect(e.admission(now: t0 + .milliseconds(999)) == .refuse(down))
        #expect(e.admission(now: t0 + .seconds(1)) == .probe([2, 0, 1]))
        #expect(e.probed(healthy: [1]) == [1, 2, 0])
        #expect(e.admission(now: t0 + .seconds(1)) == .ask([1, 2, 0]))
        #expect(
            down.phrase("127.0.0.1:1,127.0.0.1:2") == "etcd at 127.0.0.1:1,127.0.0.1:2 has no quorum (request timed out)")
        #expect(EtcdClient.reason([.noLeader, .noAnswer("connection refused"), .noAnswer("connection refused")]) == .noQuorum("1 of 3 members answer, none has a leader"))
        #expect(EtcdClient.reason([.noAnswer("connection refused"), .noAnswer("connection refused")]) == .noAnswer("connection refused"))
        // Members that answer nothing in time (their leader just died, or a cut): the next call
        // probes them at once instead of being refused, since they may serve a moment later.
        let silent = EtcdClient.reason([.noAnswer("connection refused"), .silent, .silent], after: "request timed out after 1.0 seconds")
        #expect(silent == .silent("request timed out after 1.0 seconds; 2 of 3 members answer nothing in time: electing a leader, overloaded or cut off"))
        #expect(EtcdClient.reason([.silent, .noLeader]) == .noQuorum("1 of 2 members answer, none has a leader"))
        #expect(EtcdClient.reason([.noAnswer("connection refused")], after: "request timed out after 3.0 seconds")
                == .noAnswer("request timed out after 3.0 seconds; connection refused"))
        #expect(EtcdClient.reason([.noAnswer(""), .noAnswer("")], after: "request timed out after 3.0 seconds")
                == .noAnswer("request timed out after 3.0 seconds; no member answers"))
        e.failed(silent, now: t0)
        #expect(e.admission(now: t0 + .milliseconds(1)) == .probe([1, 2, 0]))
        e.failed(down, now: t0)
        #expect(e.admission(now: t0 + .milliseconds(1)) == .refuse(down))
    }

    @Test func endpointsAreChecked() throws {
        #expect(try EtcdEndpoint("http://127.0.0.1:2379/").base == "http://127.0.0.1:2379")
        #expect(try EtcdEndpoint("https://etcd-1").address == "etcd-1:2379")
        #expect(try EtcdEndpoint("https://etcd-1").isTLS)
        #expect(throws: StoreError.self) { try EtcdEndpoint("etcd-1:2379") }
        #expect(throws: StoreError.self) { try EtcdEndpoint("http://etcd-1:2379/v3") }
        #expect(throws: StoreError.self) { try EtcdStore(EtcdConfiguration(endpoints: []), clusterID: "c") }
    }
}
