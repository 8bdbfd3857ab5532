import Foundation
import Ingress
import Netlink
import OverlayModel
import OverlayTestKit
import PacketFilter
import Testing

private func ip(_ s: String) -> IPv4Address { IPv4Address(s)! }
private let lbOptions = LoadBalancerOptions(tableName: "ovl_lb", portMatch: .address(ip("10.0.0.2")), snat: ip("10.0.0.2"))

/// `count` services `svc<i>` with VIPs 10.1.x.y and `backends` backends each in 10.2.0.0/16.
private func services(_ count: Int, backends: Int) -> [VIPEntry] {
    (0..<count).map { i in
        VIPEntry(
            service: "svc\(i)", vip: IPv4Address(0x0A01_0000 + UInt32(i)),
            backends: (0..<backends).map { IPv4Address(0x0A02_0000 + UInt32(i * backends + $0)) })
    }
}

@Suite struct RulesetValidation {
    @Test func duplicateVIPNamesBothServices() {
        let vip = ip("10.0.1.10")
        do {
            _ = try LoadBalancerRuleset(
                options: lbOptions,
                vips: [VIPEntry(service: "a", vip: vip, backends: []), VIPEntry(service: "b", vip: vip, backends: [ip("10.0.1.3")])],
                ports: [])
            Issue.record("a duplicate VIP was accepted")
        } catch {
            #expect(error.code == .duplicateVIP)
            #expect(error.message.contains("'a'") && error.message.contains("'b'") && error.message.contains("10.0.1.10"))
        }
    }

    @Test func duplicateProtocolPortIsRefusedButSamePortOtherProtocolIsNot() throws {
        let t = [LBTarget(ip("10.0.1.3"), port: 80)]
        do {
            _ = try LoadBalancerRuleset(
                options: lbOptions,
                vips: [],
                ports: [
                    PortEntry(service: "a", protocol: .tcp, port: 8080, targets: t),
                    PortEntry(service: "b", protocol: .tcp, port: 8080, targets: t),
                ])
            Issue.record("a duplicate port was accepted")
        } catch {
            #expect(error.code == .duplicatePort)
            #expect(error.message.contains("tcp port 8080"))
        }
        let ok = try LoadBalancerRuleset(
            options: lbOptions, vips: [],
            ports: [
                PortEntry(service: "a", protocol: .tcp, port: 8080, targets: t),
                PortEntry(service: "b", protocol: .udp, port: 8080, targets: t),
            ])
        #expect(ok.ports.count == 2)
    }

    @Test(arguments: ["", "1abc", "has space", "a-b", String(repeating: "x", count: 65)])
    func badTableNamesAreRefused(_ name: String) {
        #expect(throws: IngressError.self) {
            try LoadBalancerRuleset(options: LoadBalancerOptions(tableName: name), vips: [], ports: [])
        }
    }

    @Test func portZeroIsRefused() {
        #expect(throws: IngressError.self) {
            try LoadBalancerRuleset(
                options: lbOptions, vips: [],
                ports: [PortEntry(service: "a", protocol: .udp, port: 0, targets: [LBTarget(ip("10.0.0.3"), port: 53)])])
        }
        #expect(throws: IngressError.self) {
            try LoadBalancerRuleset(
                options: lbOptions, vips: [],
                ports: [PortEntry(service: "a", protocol: .udp, port: 53, targets: [LBTarget(ip("10.0.0.3"), port: 0)])])
        }
    }

    @Test func entriesAreNormalisedSoOrderDoesNotMatter() throws {
        let a = try LoadBalancerRuleset(
            options: lbOptions,
            vips: [
                VIPEntry(service: "x", vip: ip("10.0.1.20"), backends: [ip("10.0.0.5"), ip("10.0.0.4"), ip("10.0.0.5")]),
                VIPEntry(service: "y", vip: ip("10.0.1.10"), backends: [ip("10.0.0.7")]),
            ], ports: [])
        let b = try LoadBalancerRuleset(
            options: lbOptions,
            vips: [
                VIPEntry(service: "y", vip: ip("10.0.1.10"), backends: [ip("10.0.0.7")]),
                VIPEntry(service: "x", vip: ip("10.0.1.20"), backends: [ip("10.0.0.4"), ip("10.0.0.5")]),
            ], ports: [])
        #expect(a == b)
        #expect(a.vips.map(\.vip) == [ip("10.0.1.10"), ip("10.0.1.20")])
        #expect(b.commands(from: a) == "")
    }
}

@Suite struct RulesetRendering {
    @Test func fullTextHasOneChainPerBackendCountAndNoEmptyService() throws {
        let r = try LoadBalancerRuleset(
            options: lbOptions,
            vips: services(3, backends: 2) + [VIPEntry(service: "empty", vip: ip("10.9.9.9"), backends: [])]
                + [VIPEntry(service: "three", vip: ip("10.1.1.1"), backends: [ip("10.2.9.1"), ip("10.2.9.2"), ip("10.2.9.3")])],
            ports: [PortEntry(service: "web", protocol: .tcp, port: 8080, targets: [LBTarget(ip("10.0.0.3"), port: 80)])])
        let text = r.fullText
        #expect(text.hasPrefix("add table ip ovl_lb\ndelete table ip ovl_lb\ntable ip ovl_lb {"))
        #expect(text.components("chain vip_2 {") == 1)
        #expect(text.components("chain vip_3 {") == 1)
        #expect(text.components("chain tcp_1 {") == 1)
        #expect(text.components("chain vs") == 3)
        #expect(text.components("map vip_slot") == 3)
        #expect(text.components("chain tcp_s") == 1)
        #expect(!text.contains("udp_") && !text.contains("sctp_"))
        #expect(text.contains("numgen random mod 3 vmap { 0 : goto vs0, 1 : goto vs1, 2 : goto vs2 }"))
        #expect(!text.contains("10.9.9.9"))
        #expect(text.contains("\n10.1.1.1 : 10.2.9.3\n"))
        #expect(text.contains("\n8080 : 10.0.0.3\n") && text.contains("\n8080 : 80\n"))
        let json = r.fullJSON
        #expect(json.contains("[\"10.1.1.1\",\"10.2.9.3\"]"))
        #expect(json.contains("[8080,\"10.0.0.3\"]") && json.contains("[8080,80]"))
        #expect(!json.contains("10.9.9.9"))
        #expect((try? JSONSerialization.jsonObject(with: Data(json.utf8))) != nil)
        #expect(text.contains("ct status dnat snat to 10.0.0.2"))
        #expect(text.contains("ip daddr 10.0.0.2 meta l4proto . th dport vmap @ports"))
        #expect(text.contains("meta l4proto { tcp, udp, sctp } ip daddr vmap @vips"))
        #expect(r.fullCount == 2 /* chains vip_2, vip_3 */ + 3 /* vs0-2 */ + 2 /* tcp_1, tcp_s0 */ + 3 * 3 + 4 + (1 + 2))
    }

    @Test func hostModeMatchesLocalAddressesInOutputTooAndHasNoSNAT() throws {
        let r = try LoadBalancerRuleset(
            options: LoadBalancerOptions(tableName: "ovl_host"), vips: [],
            ports: [PortEntry(service: "web", protocol: .udp, port: 53, targets: [LBTarget(ip("10.0.0.3"), port: 5353)])])
        #expect(r.fullText.contains("fib daddr type local meta l4proto . th dport vmap @ports"))
        #expect(r.fullText.contains("ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @ports"))
        #expect(!r.fullText.contains("snat"))
    }

    @Test func diffTouchesOnlyTheChangedService() throws {
        let before = services(50, backends: 3)
        var after = before
        after[17].backends[1] = ip("10.3.0.1")
        let old = try LoadBalancerRuleset(options: lbOptions, vips: before, ports: [])
        let new = try LoadBalancerRuleset(options: lbOptions, vips: after, ports: [])
        let text = new.commands(from: old)
        let vip = after[17].vip
        let lines = text.split(separator: "\n")
        // The new backend takes the replaced one's slot: one delete, one add, nothing else.
        #expect(lines == ["delete element ip ovl_lb vip_slot1 { \(vip) }", "add element ip ovl_lb vip_slot1 { \(vip) : 10.3.0.1 }"])
        for other in before.indices where other != 17 {
            #expect(!text.contains("\(before[other].vip) "))
        }
        #expect(new.commands(from: new) == "")
    }

    @Test func backendCountChangeMovesTheDispatchAndMakesAndDropsChains() throws {
        let old = try LoadBalancerRuleset(options: lbOptions, vips: services(2, backends: 2), ports: [])
        var vips = services(2, backends: 2)
        vips[0].backends.append(ip("10.3.0.1"))
        let grown = try LoadBalancerRuleset(options: lbOptions, vips: vips, ports: [])
        let up = grown.commands(from: old)
        #expect(up.contains("add chain ip ovl_lb vip_3\n"))
        #expect(up.contains("add map ip ovl_lb vip_slot2 { type ipv4_addr : ipv4_addr; size 1024; }\n"))
        #expect(up.contains("add chain ip ovl_lb vs2\n"))
        #expect(up.contains("delete element ip ovl_lb vips { \(vips[0].vip) }"))
        #expect(up.contains("\(vips[0].vip) : jump vip_3"))
        #expect(up.contains("add element ip ovl_lb vip_slot2 { \(vips[0].vip) : 10.3.0.1 }"))
        #expect(!up.contains("delete chain"))
        #expect(!up.contains("\(vips[1].vip)"))
        vips[1].backends.append(ip("10.3.0.2"))
        let both = try LoadBalancerRuleset(options: lbOptions, vips: vips, ports: [])
        #expect(both.commands(from: grown).contains("delete chain ip ovl_lb vip_2\n"))
        let none = try LoadBalancerRuleset(options: lbOptions, vips: [], ports: [])
        let down = none.commands(from: both)
        #expect(down.contains("delete chain ip ovl_lb vip_3"))
        #expect(down.contains("delete chain ip ovl_lb vs2") && down.contains("delete map ip ovl_lb vip_slot2"))
        #expect(!down.contains("add "))
    }

    @Test func removingABackendMovesOnlyTheLastSlot() throws {
        let b = (1...5).map { IPv4Address(10, 0, 0, UInt8($0)) }
        let old = try LoadBalancerRuleset(options: lbOptions, vips: [VIPEntry(service: "s", vip: ip("10.1.0.1"), backends: b)], ports: [])
        let new = try LoadBalancerRuleset(
            options: lbOptions, vips: [VIPEntry(service: "s", vip: ip("10.1.0.1"), backends: b.filter { $0 != b[1] })], ports: [])
        // 10.0.0.5 moves from slot 4 into slot 1; slots 0, 2, 3 stay.
        #expect(new.aligned(to: old).vips[0].backends == [b[0], b[4], b[2], b[3]])
        let text = new.commands(from: old)
        #expect(text.contains("delete element ip ovl_lb vip_slot1 { 10.1.0.1 }"))
        #expect(text.contains("delete element ip ovl_lb vip_slot4 { 10.1.0.1 }"))
        #expect(text.contains("add element ip ovl_lb vip_slot1 { 10.1.0.1 : 10.0.0.5 }"))
        #expect(!text.contains("vip_slot0") && !text.contains("vip_slot2") && !text.contains("vip_slot3"))
    }

    @Test func alignmentKeepsEverySurvivingSlotItCan() throws {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            let pool = (1...12).map { IPv4Address(10, 0, 0, UInt8($0)) }
            let before = Array(pool.shuffled(using: &rng).prefix(Int.random(in: 0...8, using: &rng)))
            let after = Array(pool.shuffled(using: &rng).prefix(Int.random(in: 0...8, using: &rng)))
            let old = try LoadBalancerRuleset(options: lbOptions, vips: [VIPEntry(service: "s", vip: ip("10.1.0.1"), backends: before)], ports: [])
            let new = try LoadBalancerRuleset(options: lbOptions, vips: [VIPEntry(service: "s", vip: ip("10.1.0.1"), backends: after)], ports: [])
            let oldSlots = old.vips[0].backends
            let slots = new.aligned(to: old).vips[0].backends
            #expect(slots.sorted() == after.sorted())
            // Every backend that stays and had a slot that still exists keeps it.
            for (i, b) in oldSlots.enumerated() where i < slots.count && after.contains(b) {
                #expect(slots[i] == b)
            }
            // Changed slots: only those whose backend left or that are new or freed.
            let changed = (0..<max(slots.count, oldSlots.count)).filter {
                ($0 < slots.count ? slots[$0] : nil) != ($0 < oldSlots.count ? oldSlots[$0] : nil)
            }.count
            let stayed = oldSlots.prefix(slots.count).filter { after.contains($0) }.count
            #expect(changed == max(slots.count, oldSlots.count) - stayed)
        }
    }

    @Test func optionChangeGivesTheFullText() throws {
        let a = try LoadBalancerRuleset(options: lbOptions, vips: services(2, backends: 1), ports: [])
        let b = try LoadBalancerRuleset(
            options: LoadBalancerOptions(tableName: "ovl_lb", portMatch: .address(ip("10.0.0.2")), snat: nil),
            vips: services(2, backends: 1), ports: [])
        #expect(b.commands(from: a) == b.fullText)
    }
}

/// Kernel checks of the rendering alone: the full JSON and text load, every diff loads, and a table
/// built by diffs equals one built from scratch (JSON), which equals one from the full text.
@Suite(.serialized) struct RulesetInKernel {
    @Test func fullTextAndDiffsLoadAndDiffsReachTheSameTable() throws {
        let name = "ovlt-ing-" + String(UInt32.random(in: 0...0xFFFFF), radix: 16)
        let a = try NetworkNamespace.create(named: name + "a")
        defer { try? NetworkNamespace.delete(named: name + "a") }
        let b = try NetworkNamespace.create(named: name + "b")
        defer { try? NetworkNamespace.delete(named: name + "b") }
        let c = try NetworkNamespace.create(named: name + "c")
        defer { try? NetworkNamespace.delete(named: name + "c") }

        var vips = services(20, backends: 3)
        var ports = [
            PortEntry(service: "web", protocol: .tcp, port: 80, targets: [LBTarget(ip("10.0.0.3"), port: 8080)]),
            PortEntry(service: "dns", protocol: .udp, port: 53, targets: [LBTarget(ip("10.0.0.3"), port: 53), LBTarget(ip("10.0.0.4"), port: 53)]),
            PortEntry(service: "diam", protocol: .sctp, port: 3868, targets: [LBTarget(ip("10.0.0.5"), port: 3869)]),
        ]
        var state = try LoadBalancerRuleset(options: lbOptions, vips: vips, ports: ports)
        _ = try a.run { try PacketFilter().run(state.fullJSON, json: true) }
        // A sequence of changes: grow, shrink, replace, empty, delete, add.
        var rng = SystemRandomNumberGenerator()
        for step in 0..<14 {
            let i = Int.random(in: 0..<vips.count, using: &rng)
            switch step == 13 ? 6 : step % 6 {
            case 6:
                // Every service down to at most 2 backends: the slot maps and chains above go.
                for j in vips.indices { vips[j].backends = Array(vips[j].backends.prefix(2)) }
                ports[2].targets = Array(ports[2].targets.prefix(1))
            case 0: vips[i].backends.append(IPv4Address(0x0A04_0000 + UInt32(step)))
            case 1: vips[i].backends.removeFirst(min(2, vips[i].backends.count))
            case 2: vips[i].backends = [IPv4Address(0x0A05_0000 + UInt32(step)), IPv4Address(0x0A05_0100 + UInt32(step))]
            case 3: vips[i].backends = []
            case 4: vips.remove(at: i); ports[1].targets.removeLast()
            default:
                vips.append(VIPEntry(service: "new\(step)", vip: IPv4Address(0x0A06_0000 + UInt32(step)), backends: [ip("10.7.0.1")]))
                ports[2].targets.append(LBTarget(ip("10.0.0.6"), port: UInt16(3870 + step)))
                ports[0].targets = []
            }
            let next = try LoadBalancerRuleset(options: lbOptions, vips: vips, ports: ports)
            let text = next.commands(from: state)
            _ = try a.run { try PacketFilter().run(text) }
            state = next.aligned(to: state)
        }
        _ = try b.run { try PacketFilter().run(state.fullJSON, json: true) }
        _ = try c.run { try PacketFilter().run(state.fullText) }
        let viaDiffs = try a.run { try PacketFilter().listTable(family: .ip, name: "ovl_lb") }
        let fromScratch = try b.run { try PacketFilter().listTable(family: .ip, name: "ovl_lb") }
        let fromText = try c.run { try PacketFilter().listTable(family: .ip, name: "ovl_lb") }
        let shapeA = tableShape(viaDiffs), shapeB = tableShape(fromScratch), shapeC = tableShape(fromText)
        #expect(shapeA == shapeB, "diffs: \(shapeA.subtracting(shapeB)); JSON: \(shapeB.subtracting(shapeA))")
        #expect(shapeC == shapeB, "text: \(shapeC.subtracting(shapeB)); JSON: \(shapeB.subtracting(shapeC))")
        #expect(shapeA.count > 60)
        #expect(shapeA.contains("sctp_addr0: 3868 : 10.0.0.5") && shapeA.contains("sctp_port0: 3868 : 3869"))
        #expect(shapeA.contains("map vip_slot1") && !shapeA.contains("map vip_slot2") && !shapeA.contains("chain vs2"))
        #expect(shapeA.contains("vip_2: numgen random mod 2 vmap { 0 : goto vs0, 1 : goto vs1 }"))
    }
}

extension String {
    func components(_ s: String) -> Int { components(separatedBy: s).count - 1 }
}
