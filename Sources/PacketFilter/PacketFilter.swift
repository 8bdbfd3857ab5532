import CNFTables
import Dispatch
import Glibc

/// An nftables address family (`nft`'s spelling).
public enum NFTFamily: String, Hashable, Sendable, CaseIterable, Codable {
    case ip, ip6, inet, arp, bridge, netdev
}

/// One table an owner replaces as a whole: family, name, and the text between its braces.
public struct NFTTable: Hashable, Sendable {
    /// The table's family.
    public var family: NFTFamily
    /// The table's name (letters, digits and `_`, starting with a letter or `_`, at most 64 bytes).
    public var name: String
    /// The table's contents in nft syntax (chains, sets, maps), without the enclosing `table X { }`.
    public var body: String

    /// Makes a table description.
    public init(family: NFTFamily, name: String, body: String) {
        self.family = family
        self.name = name
        self.body = body
    }
}

/// A libnftables context: runs nft ruleset text in the network namespace of the calling thread and
/// returns nft's output, turning failures into ``PacketFilterError``s carrying nft's error text.
///
/// Each owner (the gateway bridge, the load balancer) keeps its rules in tables of its own and
/// replaces them whole, atomically, with ``replaceTable(family:name:body:)`` or
/// ``replaceTables(_:)``: one nft transaction, so the kernel sees either the old table or the new
/// one, never a half-written one, and a ruleset with an error leaves the old table in place.
///
/// The context acts in the namespace of the thread that uses it. To work in another namespace,
/// create and use it inside that namespace's `run` closure (Netlink's `NetworkNamespace.run`):
///
/// ```swift
/// try hostNamespace.run {
///     let nft = try PacketFilter()
///     try nft.replaceTable(family: .ip, name: "demo", body: """
///         chain post {
///             type nat hook postrouting priority srcnat; policy accept;
///             ip saddr 172.18.0.0/16 oifname != "br0" masquerade
///         }
///         """)
/// }
/// ```
///
/// Not `Sendable`: a context belongs to one thread (and so one namespace). The C handle is freed
/// in `deinit`.
public final class PacketFilter {
    private let context: OpaquePointer

    /// Makes a context with output and errors captured in memory (nothing goes to stdout/stderr).
    public init() throws(PacketFilterError) {
        guard let ctx = nft_ctx_new(UInt32(NFT_CTX_DEFAULT)) else {
            throw PacketFilterError(.system, operation: "create nftables context", reason: "libnftables returned no context (out of memory?)")
        }
        guard nft_ctx_buffer_output(ctx) == 0, nft_ctx_buffer_error(ctx) == 0 else {
            nft_ctx_free(ctx)
            throw PacketFilterError(.system, operation: "create nftables context", reason: "libnftables could not buffer its output")
        }
        context = ctx
    }

    // Freeing a context closes its netlink socket, and the kernel waits for an RCU grace period
    // there (about 15 ms here): done on a queue of its own, off the caller's path.
    deinit {
        let handle = ContextHandle(pointer: context)
        PacketFilter.reaper.async { nft_ctx_free(handle.pointer) }
    }

    private static let reaper = DispatchQueue(label: "packet-filter.free")
    /// A context no one uses any more, on its way to being freed.
    private struct ContextHandle: @unchecked Sendable { let pointer: OpaquePointer }

    // MARK: Running commands

    /// Runs `commands` (what `nft -f` would read: one or more commands, one transaction) and
    /// returns nft's output. Throws `.rejected` (or `.notFound`) with nft's error text on failure;
    /// then nothing of `commands` took effect.
    @discardableResult
    public func run(_ commands: String, json: Bool = false) throws(PacketFilterError) -> String {
        try run(commands, json: json, operation: "nft " + PacketFilter.summary(commands))
    }

    @discardableResult
    private func run(_ commands: String, json: Bool, operation: String) throws(PacketFilterError) -> String {
        if commands.utf8.contains(0) {
            throw PacketFilterError(.invalidArgument, operation: operation, reason: "the ruleset contains a NUL byte")
        }
        let flags = nft_ctx_output_get_flags(context)
        let jsonFlag = UInt32(NFT_CTX_OUTPUT_JSON)
        if json { nft_ctx_output_set_flags(context, flags | jsonFlag) }
        defer { if json { nft_ctx_output_set_flags(context, flags) } }
        let rc = PacketFilter.execute(context, commands)
        let output = nft_ctx_get_output_buffer(context).map { String(cString: $0) } ?? ""
        var errors = nft_ctx_get_error_buffer(context).map { String(cString: $0) } ?? ""
        errors = PacketFilter.withLineNumbers(errors)
        guard rc == 0 else {
            let text = PacketFilter.oneLine(errors)
            let code: PacketFilterError.Code =
                errors.contains("No such file or directory") ? .notFound : .rejected
            throw PacketFilterError(code, operation: operation, reason: text.isEmpty ? "nft failed (status \(rc))" : text)
        }
        return output
    }

    // MARK: Tables

    /// Replaces table `family name` with one whose contents are `body`, atomically: one transaction
    /// `add table; delete table; table { body }`. Creates the table when it does not exist. When
    /// `body` has an error, nothing changes and the error carries nft's text.
    public func replaceTable(family: NFTFamily, name: String, body: String) throws(PacketFilterError) {
        try replaceTables([NFTTable(family: family, name: name, body: body)])
    }

    /// Replaces several tables in one transaction: all of them change, or none does.
    public func replaceTables(_ tables: [NFTTable]) throws(PacketFilterError) {
        let what = tables.map { "\($0.family.rawValue) \($0.name)" }.joined(separator: ", ")
        let op = "replace table\(tables.count == 1 ? "" : "s") \(what)"
        guard !tables.isEmpty else { throw PacketFilterError(.invalidArgument, operation: op, reason: "no table given") }
        var seen = Set<String>()
        var text = ""
        for t in tables {
            try PacketFilter.validateName(t.name, op)
            guard seen.insert("\(t.family.rawValue) \(t.name)").inserted else {
                throw PacketFilterError(.invalidArgument, operation: op, reason: "table \(t.family.rawValue) \(t.name) is given twice")
            }
            text += PacketFilter.replacement(t)
        }
        try run(text, json: false, operation: op)
    }

    /// The nft text that replaces `table` in one transaction (for logs and for batching).
    public static func replacement(_ table: NFTTable) -> String {
        let id = "\(table.family.rawValue) \(table.name)"
        return "add table \(id)\ndelete table \(id)\ntable \(id) {\n\(table.body)\n}\n"
    }

    /// Deletes table `family name`. Returns false (and changes nothing) when there was none.
    @discardableResult
    public func deleteTable(family: NFTFamily, name: String) throws(PacketFilterError) -> Bool {
        let op = "delete table \(family.rawValue) \(name)"
        try PacketFilter.validateName(name, op)
        do {
            try run("delete table \(family.rawValue) \(name)", json: false, operation: op)
            return true
        } catch where error.code == .notFound {
            return false
        }
    }

    /// Whether table `family name` exists.
    public func tableExists(family: NFTFamily, name: String) throws(PacketFilterError) -> Bool {
        try PacketFilter.validateName(name, "find table \(family.rawValue) \(name)")
        return try tables(family: family).contains { $0.name == name }
    }

    /// The tables that exist, as (family, name), optionally of one family.
    public func tables(family: NFTFamily? = nil) throws(PacketFilterError) -> [(family: NFTFamily, name: String)] {
        let command = "list tables" + (family.map { " \($0.rawValue)" } ?? "")
        let out = try run(command, json: false, operation: command)
        var result: [(family: NFTFamily, name: String)] = []
        for line in out.split(separator: "\n") {
            let words = line.split(separator: " ")
            guard words.count == 3, words[0] == "table", let f = NFTFamily(rawValue: String(words[1])) else { continue }
            result.append((f, String(words[2])))
        }
        return result
    }

    /// Table `family name` as nft text (`nft list table`), or as nft's JSON (`nft -j list table`).
    public func listTable(family: NFTFamily, name: String, json: Bool = false) throws(PacketFilterError) -> String {
        let op = "list table \(family.rawValue) \(name)"
        try PacketFilter.validateName(name, op)
        return try run(op, json: json, operation: op)
    }

    /// The whole ruleset of this namespace as nft text or JSON (`nft [-j] list ruleset`).
    public func listRuleset(json: Bool = false) throws(PacketFilterError) -> String {
        try run("list ruleset", json: json, operation: "list ruleset")
    }

    // MARK: Helpers

    /// Runs `commands` as one transaction. libnftables 1.0.6 quotes the first line of a buffer
    /// in its error messages whatever line the error is on, so the text goes through a temporary
    /// file read with `nft_run_cmd_from_filename`, which quotes the right line and gives
    /// its number; `nft_run_cmd_from_buffer` is the fallback when no such file can be made.
    /// (The file is unlinked as soon as it is open: nothing is left behind, even after a crash
    /// between the two calls only an empty `/tmp/ovl-nft-*` could remain.)
    static func execute(_ context: OpaquePointer, _ commands: String) -> Int32 {
        var template = Array("/tmp/ovl-nft-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { return nft_run_cmd_from_buffer(context, commands) }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        defer { close(fd) }
        let bytes = Array(commands.utf8)
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, $0.count - written) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return nft_run_cmd_from_buffer(context, commands) }
            written += n
        }
        return nft_run_cmd_from_filename(context, "/proc/self/fd/\(fd)")
    }

    /// Replaces the temporary file's path at the start of nft's error lines with `line `
    /// (`/proc/self/fd/7:5:24-38: Error: ...` becomes `line 5:24-38: Error: ...`).
    static func withLineNumbers(_ text: String) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            guard line.hasPrefix("/proc/self/fd/"), let colon = line.dropFirst(14).firstIndex(of: ":") else { return String(line) }
            return "line " + line[line.index(after: colon)...]
        }.joined(separator: "\n")
    }

    /// Checks a table, chain or set name: 1 to 64 bytes of letters, digits and `_`, not starting
    /// with a digit (nft accepts more, but these never need quoting and never collide with keywords'
    /// syntax).
    public static func isValidName(_ name: String) -> Bool {
        guard let first = name.utf8.first, name.utf8.count <= 64 else { return false }
        func letter(_ c: UInt8) -> Bool { (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || c == 95 }
        return letter(first) && name.utf8.allSatisfy { letter($0) || ($0 >= 48 && $0 <= 57) }
    }

    static func validateName(_ name: String, _ op: String) throws(PacketFilterError) {
        guard isValidName(name) else {
            throw PacketFilterError(
                .invalidArgument, operation: op,
                reason: "'\(name)' is not a usable table name (1 to 64 letters, digits or '_', not starting with a digit)")
        }
    }

    /// nft's error text on one line: lines joined with " | ", the caret lines dropped.
    static func oneLine(_ text: String) -> String {
        text.split(separator: "\n")
            .map { $0.trimmingCharacters() }
            .filter { !$0.isEmpty && !$0.allSatisfy { $0 == "^" || $0 == " " || $0 == "~" } }
            .joined(separator: " | ")
    }

    ///
    /// It looks at the first line only, and at no more of it than it needs: a full load balancer
    /// table is megabytes of JSON on one line, and splitting all of it into characters cost more
    /// than a third of a second on every full apply.
    static func summary(_ commands: String) -> String {
        let bytes = commands.utf8
        let newline = UInt8(ascii: "\n")
        guard let start = bytes.firstIndex(where: { $0 != newline }) else { return "" }
        let end = bytes[start...].firstIndex(of: newline) ?? bytes.endIndex
        var line = commands[start..<end]
        while let c = line.first, c == " " || c == "\t" { line.removeFirst() }
        let head = line.prefix(60)
        let rest = line[head.endIndex...]
        if rest.utf8.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }) {
            return Substring(head).trimmingCharacters()
        }
        return String(head) + "..."
    }
}

extension Substring {
    fileprivate func trimmingCharacters() -> String {
        var s = self
        while let c = s.first, c == " " || c == "\t" { s.removeFirst() }
        while let c = s.last, c == " " || c == "\t" { s.removeLast() }
        return String(s)
    }
}
