import Glibc
import Netlink
import OverlayTestKit
import PacketFilter
import Testing

/// A fresh network namespace `ovlt-pf-<random>` pinned in a temporary directory of its own;
/// `cleanup()` removes it (call it in a `defer`).
final class FilterNamespace {
    let directory: String
    let namespace: NetworkNamespace

    init() throws {
        var template = Array("/tmp/ovlt-pf-XXXXXX".utf8CString)
        guard let dir = mkdtemp(&template) else { throw LabError("mkdtemp failed") }
        directory = String(cString: dir)
        do {
            namespace = try NetworkNamespace.create(
                named: "ovlt-pf-" + String(UInt32.random(in: 0...0xFF_FFFF), radix: 16), handleDirectory: directory)
        } catch {
            try? NetworkNamespace.removeHandleDirectory(directory)
            throw error
        }
    }

    /// Runs `body` with a PacketFilter inside the namespace.
    func nft<T>(_ body: (PacketFilter) throws -> T) throws -> T {
        try namespace.run { try body(try PacketFilter()) }
    }

    func cleanup() { try? NetworkNamespace.removeHandleDirectory(directory) }
}

let natBody = """
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr 172.18.0.0/16 oifname != "br0" masquerade
    }
    """

@Suite("PacketFilter", .serialized)
struct PacketFilterTests {
    @Test func replaceCreatesThenReplacesTheWholeTable() throws {
        let ns = try FilterNamespace()
        defer { ns.cleanup() }
        try ns.nft { nft in
            #expect(try nft.tableExists(family: .ip, name: "ovlt_owner") == false)
            try nft.replaceTable(family: .ip, name: "ovlt_owner", body: natBody)
            #expect(try nft.tableExists(family: .ip, name: "ovlt_owner"))
            let first = try nft.listTable(family: .ip, name: "ovlt_owner")
            #expect(first.contains("172.18.0.0/16"))
            #expect(first.contains("masquerade"))

            // The second replace leaves only the new contents: no chain of the first survives.
            try nft.replaceTable(family: .ip, name: "ovlt_owner", body: """
                chain other {
                    type filter hook forward priority filter; policy accept;
                    ip daddr 10.9.9.9 counter drop
                }
                """)
            let second = try nft.listTable(family: .ip, name: "ovlt_owner")
            #expect(second.contains("10.9.9.9"))
            #expect(!second.contains("postrouting"))
            #expect(!second.contains("172.18.0.0/16"))
        }
    }

    @Test func aBrokenRulesetLeavesThePreviousTableIntact() throws {
        let ns = try FilterNamespace()
        defer { ns.cleanup() }
        try ns.nft { nft in
            try nft.replaceTable(family: .ip, name: "ovlt_owner", body: natBody)
            let before = try nft.listTable(family: .ip, name: "ovlt_owner")

            // A syntax error: refused by the parser, nothing sent.
            let syntax = #expect(throws: PacketFilterError.self) {
                try nft.replaceTable(family: .ip, name: "ovlt_owner", body: "chain c { this is not nft }")
            }
            #expect(syntax?.code == .rejected)
            #expect(syntax?.message.contains("syntax error") == true)
            #expect(try nft.listTable(family: .ip, name: "ovlt_owner") == before)

            // Parses, but the kernel rejects it (a jump to a chain that does not exist): the whole
            // transaction, including the delete of the old table, is rolled back.
            let kernel = #expect(throws: PacketFilterError.self) {
                try nft.replaceTable(family: .ip, name: "ovlt_owner", body: """
                    chain c {
                        type filter hook input priority filter; policy accept;
                        jump nowhere
                    }
                    """)
            }
            #expect(kernel?.code == .rejected || kernel?.code == .notFound)
            #expect(kernel?.operation == "replace table ip ovlt_owner")
            // nft's text names the line at fault and quotes it.
            #expect(kernel?.reason.contains("line 6:") == true, "\(kernel?.reason ?? "")")
            #expect(kernel?.reason.contains("jump nowhere") == true, "\(kernel?.reason ?? "")")
            #expect(try nft.listTable(family: .ip, name: "ovlt_owner") == before)
        }
    }

    @Test func severalTablesChangeTogetherOrNotAtAll() throws {
        let ns = try FilterNamespace()
        defer { ns.cleanup() }
        try ns.nft { nft in
            let bridge = NFTTable(family: .bridge, name: "ovlt_owner", body: """
                chain forward {
                    type filter hook forward priority filter; policy accept;
                    iifname { "a1", "a2" } oifname { "a1", "a2" } drop
                }
                """)
            try nft.replaceTables([NFTTable(family: .ip, name: "ovlt_owner", body: natBody), bridge])
            #expect(try nft.tableExists(family: .bridge, name: "ovlt_owner"))
            #expect(try nft.tableExists(family: .ip, name: "ovlt_owner"))
            let before = try nft.listRuleset()

            var broken = bridge
            broken.body = "chain forward { type filter hook forward priority filter; jump nowhere\n}"
            #expect(throws: PacketFilterError.self) {
                try nft.replaceTables([NFTTable(family: .ip, name: "ovlt_owner", body: "chain x {\n}"), broken])
            }
            #expect(try nft.listRuleset() == before)
        }
    }

    @Test func deleteRemovesTheTableAndReportsAMissingOne() throws {
        let ns = try FilterNamespace()
        defer { ns.cleanup() }
        try ns.nft { nft in
            try nft.replaceTable(family: .inet, name: "ovlt_owner", body: natBody)
            try nft.replaceTable(family: .ip, name: "ovlt_other", body: natBody)
            #expect(try nft.deleteTable(family: .inet, name: "ovlt_owner"))
            #expect(try nft.tableExists(family: .inet, name: "ovlt_owner") == false)
            #expect(try nft.deleteTable(family: .inet, name: "ovlt_owner") == false)
            // Another owner's table is untouched.
            #expect(try nft.tableExists(family: .ip, name: "ovlt_other"))
            let error = #expect(throws: PacketFilterError.self) { try nft.listTable(family: .inet, name: "ovlt_owner") }
            #expect(error?.code == .notFound)
        }
    }

    @Test func listsAsJSON() throws {
        let ns = try FilterNamespace()
        defer { ns.cleanup() }
        try ns.nft { nft in
            try nft.replaceTable(family: .ip, name: "ovlt_owner", body: natBody)
            let json = try nft.listTable(family: .ip, name: "ovlt_owner", json: true)
            #expect(json.hasPrefix("{\"nftables\""))
            #expect(json.contains("\"masquerade\""))
            // JSON was only for that call.
            #expect(!(try nft.listTable(family: .ip, name: "ovlt_owner")).hasPrefix("{"))
            #expect(try nft.listRuleset(json: true).contains("\"ovlt_owner\""))
        }
    }

    @Test func badInputIsRefusedWithAReadableError() throws {
        let ns = try FilterNamespace()
        defer { ns.cleanup() }
        try ns.nft { nft in
            for bad in ["", "1abc", "a b", "x;flush ruleset", String(repeating: "a", count: 65)] {
                let error = #expect(throws: PacketFilterError.self) { try nft.replaceTable(family: .ip, name: bad, body: natBody) }
                #expect(error?.code == .invalidArgument)
                #expect(error?.message.contains("not a usable table name") == true)
            }
            #expect(throws: PacketFilterError.self) { try nft.replaceTables([]) }
            let error = #expect(throws: PacketFilterError.self) { try nft.run("add rule ip nope c accept") }
            #expect(error?.message.contains("No such file or directory") == true)
            #expect(error?.message.contains("\n") == false)
            let remaining = try nft.tables()
            #expect(remaining.isEmpty)
        }
    }

    /// An error names what was run by its first non-empty line, trimmed and cut at 60 characters.
    @Test func anErrorNamesTheFirstLineOfWhatRan() throws {
        let ns = try FilterNamespace()
        defer { ns.cleanup() }
        try ns.nft { nft in
            let multi = #expect(throws: PacketFilterError.self) { try nft.run("\n\n   add rule ip nope c accept  \nadd rule ip nope d accept\n") }
            #expect(multi?.operation == "nft add rule ip nope c accept")
            let long = "add rule ip nope c ip saddr { " + (1...400).map { "10.0.0.\($0 % 250)" }.joined(separator: ", ") + " } accept"
            let cut = #expect(throws: PacketFilterError.self) { try nft.run(long) }
            #expect(cut?.operation == "nft " + String(long.prefix(60)) + "...")
            let exact = String(repeating: "x", count: 60)
            let fits = #expect(throws: PacketFilterError.self) { try nft.run(exact + " \t ") }
            #expect(fits?.operation == "nft " + exact)
        }
    }

    @Test func actsOnlyInTheCallingThreadsNamespace() throws {
        let a = try FilterNamespace()
        defer { a.cleanup() }
        let b = try FilterNamespace()
        defer { b.cleanup() }
        try a.nft { try $0.replaceTable(family: .ip, name: "ovlt_owner", body: natBody) }
        #expect(try a.nft { try $0.tableExists(family: .ip, name: "ovlt_owner") })
        #expect(try b.nft { try $0.tableExists(family: .ip, name: "ovlt_owner") } == false)
    }
}
