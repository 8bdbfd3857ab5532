// libFuzzer harness for NetworkDB's endpoint records as gossip delivers them (a table value,
// JSON), followed into the endpoint index, the DNS name table and the resolver's answers. See
// Documentation/Fuzzing.md.
import Discovery
import Foundation
import NodeAgent
import OverlayModel

/// A fixed generator, so that a crash input replays the same way.
struct Counter: RandomNumberGenerator {
    var state: UInt64 = 0x9e37_79b9_7f4a_7c15
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        return state
    }
}

/// Runs one table value: what decodes must round-trip; a valid endpoint goes into an index and a
/// name table, every name it carries is asked of the resolver, and every answer must encode to
/// a DNS message that decodes. Bad input must be refused, never crash.
func fuzzRecords(_ bytes: [UInt8]) {
    guard let record = EndpointRecord.decode(bytes) else { return }
    guard EndpointRecord.decode(record.encoded()) == record else { fatalError("an endpoint record changed on a round trip: \(bytes)") }
    _ = record.signedMessage(network: "n1", owner: "node1")
    _ = record.peer
    guard let endpoint = Endpoint(record) else { return }
    let upsert = EndpointEvent.upsert(network: "n1", key: record.id, owner: "node1", endpoint: endpoint)
    let index = EndpointIndex()
    index.apply(upsert)
    _ = index.endpoints(network: "n1")
    let vteps = NodeVTEPs()
    _ = vteps.replace(with: ["node1": endpoint.vtep])
    guard vteps.vouches(owner: "node1", for: endpoint) else { fatalError("a node does not vouch for its own VTEP's record: \(bytes)") }
    var table = NameTable()
    table.apply(upsert)
    var reverse: String
    switch endpoint.address {
    case .v4(let a):
        reverse = a.description.split(separator: ".").reversed().joined(separator: ".") + ".in-addr.arpa"
    case .v6:
        reverse = "ip6.arpa"
    }
    let names = [endpoint.name, "tasks." + (endpoint.service ?? endpoint.name), endpoint.name + ".n1", reverse] + endpoint.aliases
    var rng = Counter()
    let client = ResolverClient(networks: ["n1"])
    for (i, name) in names.enumerated() {
        guard let q = DNSName(name) else { continue }
        for type in [DNSType.a, .aaaa, .srv, .ptr] {
            let query = DNSMessage(id: UInt16(i), recursionDesired: true, questions: [DNSQuestion(name: q, type: type)])
            guard case .answer(let reply) = Resolver().resolve(query, client: client, table: table, rng: &rng) else { continue }
            let wire = reply.encode(limit: 512)
            guard (try? DNSMessage.decode(wire)) != nil else { fatalError("an answer for \(name) does not decode: \(bytes)") }
        }
    }
    table.apply(.remove(network: "n1", key: record.id))
    guard table.endpoints(on: "n1").isEmpty else { fatalError("a removed endpoint is still named: \(bytes)") }
}

/// The libFuzzer entry point.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    fuzzRecords(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

/// Under Scripts/fuzz.sh (-DFUZZING) runs libFuzzer; in a plain build replays the files named as
/// arguments (a corpus or a crash input) through the same function.
@main struct Main {
    static func main() {
        #if FUZZING
        runLibFuzzer(fuzzOneInput)
        #else
        replayFiles(name: "fuzz-records", fuzzRecords)
        #endif
    }
}
