import ClusterManager
import Foundation
import NodeAgent
import OverlayAPI

/// `service logs` as Docker's swarm does it: the manager asks each node that runs a task of the
/// service for its output, and puts the answers together. Workers open no port, so the request
/// rides the node's long poll (`GET /v1/state?logs=`) and the answer comes back as a call
/// (`POST /v1/logs`).
struct LogBroker: Sendable {
    /// Manager: requests waiting for answers, by ID.
    var pending: [UInt64: PendingLogs] = [:]
    /// Manager: the next request's ID. It starts at the start time in milliseconds, so a
    /// restarted manager's requests are newer than any a node has taken.
    var next = UInt64(Date().timeIntervalSince1970 * 1000)
    /// Node: the newest request it has taken.
    var taken: UInt64 = 0

    /// How long the manager waits for the nodes' answers.
    static let answerTimeout: Duration = .seconds(10)
    /// The most output a node sends back for one request (the manager port takes 4 MiB bodies).
    static let answerBytes = 3 << 20
}

/// One `service logs` call waiting on the manager.
struct PendingLogs: Sendable {
    /// The nodes not heard from yet, and what each was asked.
    var waiting: [String: LogRequest]
    var answers: [TaskLog] = []
    var done: CheckedContinuation<Void, Never>?
}

extension OverlayDaemon {
    /// Manager: every task's output of service `name` (the last `tail` lines of each), asked of
    /// the nodes that run them; a node that does not answer within 10 s is named in `errors`.
    func serviceLogs(_ name: String, tail: Int?) async throws -> ServiceLogs {
        _ = try requireManager()
        let s = try service(named: name)
        let tasks = allTasks().filter { $0.serviceID == s.id && $0.desiredState == .running }
        guard !tasks.isEmpty else { return ServiceLogs(tasks: [], errors: []) }
        let me = swarm?.nodeID
        var answers: [TaskLog] = []
        var errors: [String] = []
        if let me {
            answers += localTaskLogs(LogRequest(id: 0, tasks: tasks.filter { $0.nodeID == me }.map(\.id), tail: tail))
        }
        var waiting: [String: LogRequest] = [:]
        let id = logBroker.next
        logBroker.next += 1
        for (node, theirs) in Dictionary(grouping: tasks.filter { $0.nodeID != me }, by: \.nodeID) {
            waiting[node] = LogRequest(id: id, tasks: theirs.map(\.id), tail: tail)
        }
        let hostnames = Dictionary(cluster.nodes.map { ($0.id, $0.hostname) }, uniquingKeysWith: { a, _ in a })
        if !waiting.isEmpty {
            logBroker.pending[id] = PendingLogs(waiting: waiting)
            // The nodes asked answer their next poll at once.
            wakeStateWaiters()
            let timeout = Task { [weak self] in
                try? await Task.sleep(for: LogBroker.answerTimeout)
                await self?.finishLogRequest(id)
            }
            // Registered before the actor runs anything else: no answer can slip in between.
            await withCheckedContinuation { logBroker.pending[id]?.done = $0 }
            timeout.cancel()
            if let p = logBroker.pending.removeValue(forKey: id) {
                answers += p.answers
                for node in p.waiting.keys.sorted() {
                    errors.append("node \(hostnames[node] ?? node) did not answer within \(LogBroker.answerTimeout.components.seconds) s: the output of its \(p.waiting[node]!.tasks.count) task(s) is missing")
                }
            }
        }
        let byID = Dictionary(answers.map { ($0.taskID, $0) }, uniquingKeysWith: { a, _ in a })
        var out: [ServiceLogs.TaskOutput] = []
        var warnings: [String] = []
        for t in tasks.sorted(by: { ($0.slot, $0.nodeID, $0.created) < ($1.slot, $1.nodeID, $1.created) }) {
            guard let a = byID[t.id] else { continue }
            let name = t.slot == 0 ? "\(t.serviceName).\(t.nodeID.prefix(12))" : "\(t.serviceName).\(t.slot)"
            let node = hostnames[t.nodeID] ?? t.nodeID
            if let note = a.note {
                if a.log.isEmpty { errors.append("\(name).\(t.id.prefix(12))@\(node): \(note)") } else {
                    warnings.append("\(name).\(t.id.prefix(12))@\(node): \(note)")
                }
            }
            out.append(ServiceLogs.TaskOutput(Name: name, ID: t.id, Node: node, Log: a.log))
        }
        return ServiceLogs(tasks: out, errors: errors, warnings: warnings)
    }

    /// Manager: ends a wait for answers (all came, or the time is up).
    func finishLogRequest(_ id: UInt64) {
        logBroker.pending[id]?.done?.resume()
        logBroker.pending[id]?.done = nil
    }

    /// Manager: the log requests for `node` newer than the one it has taken.
    func logRequests(for node: String, after taken: UInt64) -> [LogRequest] {
        logBroker.pending.values.compactMap { $0.waiting[node] }.filter { $0.id > taken }.sorted { $0.id < $1.id }
    }

    /// Manager: a node's answer. Only what it was asked is kept; an answer too late, repeated, or
    /// for a request it was not sent is dropped (and says so).
    func receiveLogs(_ answer: LogAnswer, from node: String) -> Bool {
        guard var p = logBroker.pending[answer.request], let asked = p.waiting[node] else { return false }
        let wanted = Set(asked.tasks)
        var seen = Set<String>()
        p.answers += answer.logs.filter { wanted.contains($0.taskID) && seen.insert($0.taskID).inserted }
        p.waiting[node] = nil
        logBroker.pending[answer.request] = p
        if p.waiting.isEmpty { finishLogRequest(answer.request) }
        return true
    }

    /// Node: takes the requests newer than the last one taken, and answers each in the
    /// background (reading output can take a moment; the poll goes on).
    func takeLogRequests(_ requests: [LogRequest]) {
        for r in requests.sorted(by: { $0.id < $1.id }) where r.id > logBroker.taken {
            logBroker.taken = r.id
            let answer = LogAnswer(request: r.id, logs: localTaskLogs(r))
            Task { [weak self] in
                guard let self else { return }
                do {
                    let client = try await self.managerClient(timeout: .seconds(10))
                    _ = try await client.call(ManagerAPI.logs, body: answer, group: self.group)
                } catch {
                    self.log(.swarm, ["request": "\(answer.request)"]).warning("cannot send the output of \(answer.logs.count) task(s) to the manager: \(error)")
                }
            }
        }
    }

    /// The output of this node's tasks in `request`: each task's container's log (the last `tail`
    /// lines), all of them together cut to `LogBroker.answerBytes` (each keeps its last part).
    func localTaskLogs(_ request: LogRequest) -> [TaskLog] {
        guard !request.tasks.isEmpty else { return [] }
        let containers = (try? store.all(.container, as: ContainerRecord.self)) ?? []
        let byTask = Dictionary(containers.compactMap { c in c.taskID.map { ($0, c) } }, uniquingKeysWith: { a, _ in a })
        let share = max(16 << 10, LogBroker.answerBytes / request.tasks.count)
        return request.tasks.prefix(10_000).map { id in
            guard let c = byTask[id] else { return TaskLog(taskID: id, log: "", note: "no container for this task on its node (not started yet, or removed)") }
            do {
                var log = try containerLogs(c.name, tail: request.tail)["log"] ?? ""
                var note: String?
                if log.utf8.count > share {
                    let tailBytes = Array(log.utf8.suffix(share))
                    let start = tailBytes.firstIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? 0
                    log = String(decoding: tailBytes[start...], as: UTF8.self)
                    note = "output cut to its last \(log.utf8.count) bytes (use --tail)"
                }
                return TaskLog(taskID: id, log: log, note: note)
            } catch {
                return TaskLog(taskID: id, log: "", note: (error as? APIError)?.message ?? "\(error)")
            }
        }
    }
}
