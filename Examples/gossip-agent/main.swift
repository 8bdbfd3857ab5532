// gossip-agent: a tiny gossip member built on the Gossip library, to try interop with serf.
//
//   swift run gossip-agent --name swift-1 --bind 127.0.0.10:7946 --join 127.0.0.2:7946 \
//       [--key BASE64] [--label L] [--tag role=overlay] [--seconds 30]
//
// It prints membership events and the member list, then leaves gracefully (announcing a serf
// leave intent first so serf agents report it as "left").
import Foundation
import Gossip
import OverlayCrypto
import OverlayModel

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("gossip-agent: \(message)\n".utf8))
    exit(2)
}

func parseAddress(_ s: String) -> NodeAddress {
    // "1.2.3.4:7946" or "[::1]:7946"
    guard let colon = s.lastIndex(of: ":"), let port = UInt16(s[s.index(after: colon)...]) else {
        fail("\(s): expected IP:PORT")
    }
    let host = s[..<colon].trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
    guard let ip = IPAddress(host) else { fail("\(host): not an IP address") }
    return NodeAddress(ip: ip, port: port)
}

var name = "gossip-agent"
var bind: NodeAddress?
var seeds: [NodeAddress] = []
var key: SecretKey?
var label = ""
var tags: [String: String] = [:]
var seconds: Int?
var args = CommandLine.arguments.dropFirst()
while let flag = args.popFirst() {
    guard let value = args.popFirst() else { fail("\(flag) needs a value") }
    switch flag {
    case "--name": name = value
    case "--bind": bind = parseAddress(value)
    case "--join": seeds.append(parseAddress(value))
    case "--key":
        guard let data = Data(base64Encoded: value) else { fail("--key: not base64") }
        key = SecretKey(bytes: data)
    case "--label": label = value
    case "--tag":
        let kv = value.split(separator: "=", maxSplits: 1).map(String.init)
        guard kv.count == 2 else { fail("--tag: expected key=value") }
        tags[kv[0]] = kv[1]
    case "--seconds": seconds = Int(value)
    default: fail("unknown flag \(flag)")
    }
}
guard let bind else { fail("--bind IP:PORT is required") }

let swim = SwimConfig(name: name, advertise: bind, meta: tags.isEmpty ? [] : SerfTags.encode(tags))
var config = GossipConfiguration(swim: swim, keyring: try key.map { try Keyring(primary: $0) })
config.label = label
config.userMessage = { bytes in print("user message: \(bytes.count) bytes") }

let node = try GossipNode(configuration: config)
try await node.start()
if !seeds.isEmpty {
    let answered = try await node.join(seeds)
    print("joined through \(answered) seed(s)")
}
let watcher = Task {
    for await event in node.events { print("event:", event) }
}
let deadline = seconds.map { ContinuousClock.now + .seconds($0) }
while deadline.map({ ContinuousClock.now < $0 }) ?? true {
    try await Task.sleep(for: .seconds(5))
    print("members:", try await node.members().map(\.description).joined(separator: ", "))
}
try await node.broadcastUserMessage(SerfIntent.leave(node: name, lamportTime: 1))
try await Task.sleep(for: .milliseconds(500))
try await node.leave()
print("counters:", try await node.counters())
try await node.shutdown()
watcher.cancel()
