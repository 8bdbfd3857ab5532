import ArgumentParser
import Foundation

/// `--format`: `table` (the default), `json` (a list: one JSON object per line, as Docker's
/// `--format json`), or a template such as `'{{.Name}}\t{{.ID}}'` (Go template syntax for the
/// common case: `{{.Field}}`, `{{.Field.Sub}}`, `{{json .Field}}`, `{{json .}}`; field names as
/// `--format json` shows them, in any case).
struct FormatOption: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "table (default), json (one object per line), or a template, e.g. '{{.Name}}\\t{{.ID}}'.",
        discussion: "Template fields are the names --format json shows, in any case; {{json .Field}} prints one as JSON."))
    var format = "table"

    func validate() throws {
        guard ["table", "json"].contains(format) || format.contains("{{") else {
            throw ValidationError("--format \(format): use table, json or a template such as '{{.Name}}'")
        }
        if let template { _ = try Template(template) }
    }

    var json: Bool { format == "json" }
    var template: String? { format.contains("{{") ? format : nil }

    /// Prints `items` as asked (JSON lines or the template, one line each); false for the table,
    /// which the command prints itself.
    func emit<T: Encodable>(_ items: [T]) throws -> Bool {
        if json {
            for item in items { print(String(decoding: try JSONFields.encoder.encode(item), as: UTF8.self)) }
            return true
        }
        guard let template else { return false }
        let t = try Template(template)
        for item in items { print(try t.render(try JSONFields.object(item))) }
        return true
    }
}

/// `--filter KEY=VALUE` (repeatable, Docker's): `name=` (part of the name), `id=` (a prefix),
/// `label=KEY` or `label=KEY=VALUE`, or any other field `--format json` shows (its whole value,
/// dashes and case aside: `desired-state=running`). Filters on one key: any may hold; on
/// different keys: all must.
struct FilterOption: ParsableArguments {
    @Option(name: [.customShort("f"), .long], help: ArgumentHelp(
        "Only the items with KEY=VALUE: name=PART, id=PREFIX, label=KEY[=VALUE], or a field --format json shows (repeatable).",
        valueName: "KEY=VALUE"))
    var filter: [String] = []

    func validate() throws {
        for f in filter where !f.contains("=") || f.hasPrefix("=") {
            throw ValidationError("--filter \(f): use KEY=VALUE, e.g. name=web or label=env=prod")
        }
    }

    /// The items every filter lets through.
    func apply<T: Encodable>(_ items: [T]) throws -> [T] {
        guard !filter.isEmpty else { return items }
        var byKey: [String: [String]] = [:]
        for f in filter {
            let parts = f.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            byKey[String(parts[0]).lowercased(), default: []].append(String(parts[1]))
        }
        let objects = try items.map { try JSONFields.object($0) }
        // A field no item has is a mistake (a field only some items have is simply not matched).
        for key in byKey.keys where !["name", "id", "label"].contains(key) && !objects.isEmpty {
            guard objects.contains(where: { JSONFields.field(key, in: $0) != nil }) else {
                let fields = Set(objects.flatMap(\.keys)).sorted().joined(separator: ", ")
                throw ValidationError("--filter \(key)=\(byKey[key]![0]): these items have no field \(key); fields: \(fields)")
            }
        }
        return zip(items, objects).filter { _, object in
            byKey.allSatisfy { key, values in values.contains { Self.holds(key, $0, in: object) } }
        }.map(\.0)
    }

    static func holds(_ key: String, _ value: String, in object: [String: Any]) -> Bool {
        switch key {
        case "name":
            let name = JSONFields.field("name", in: object) ?? JSONFields.field("hostname", in: object)
            return (name as? String)?.contains(value) ?? false
        case "id":
            return (JSONFields.field("id", in: object) as? String)?.hasPrefix(value) ?? false
        case "label":
            let labels = JSONFields.field("labels", in: object) as? [String: Any] ?? [:]
            let kv = value.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            guard let have = labels[kv[0]] else { return false }
            return kv.count == 1 || "\(have)" == kv[1]
        default:
            guard let field = JSONFields.field(key, in: object) else { return false }
            return JSONFields.text(field).caseInsensitiveCompare(value) == .orderedSame
        }
    }
}

/// Items as the JSON objects `--format json` prints, and their fields by name in any case.
enum JSONFields {
    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        e.dateEncodingStrategy = .iso8601
        return e
    }()

    static func object<T: Encodable>(_ item: T) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: try encoder.encode(item)) as? [String: Any] ?? [:]
    }

    /// The field `name` of `object`, matched without regard to case, dashes or underscores.
    static func field(_ name: String, in object: [String: Any]) -> Any? {
        if let exact = object[name] { return exact }
        let wanted = normalized(name)
        return object.first { normalized($0.key) == wanted }?.value
    }

    static func normalized(_ s: String) -> String { s.lowercased().filter { $0 != "-" && $0 != "_" } }

    /// A field as a template prints it: strings as they are, numbers and booleans as JSON writes
    /// them, anything else as compact JSON.
    static func text(_ value: Any) -> String {
        switch value {
        case let s as String: return s
        case let n as NSNumber: return String(cString: n.objCType) == "c" ? (n.boolValue ? "true" : "false") : n.stringValue
        case is NSNull: return "<no value>"
        default: return json(value)
        }
    }

    static func json(_ value: Any) -> String {
        guard JSONSerialization.isValidJSONObject(value),
              let d = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .withoutEscapingSlashes]) else {
            if let s = value as? String { return "\"\(s)\"" }
            return text(value)
        }
        return String(decoding: d, as: UTF8.self)
    }
}

/// The part of Go's text/template `--format` needs: literal text and `{{.A.B}}`, `{{json .A}}`,
/// `{{json .}}` actions; `\t` and `\n` in the text are a tab and a newline, as Docker's.
struct Template {
    enum Piece {
        case text(String)
        case field([String], json: Bool)
    }
    let pieces: [Piece]

    init(_ source: String) throws {
        var pieces: [Piece] = []
        var rest = Substring(source.replacingOccurrences(of: "\\t", with: "\t").replacingOccurrences(of: "\\n", with: "\n"))
        while let open = rest.range(of: "{{") {
            if open.lowerBound > rest.startIndex { pieces.append(.text(String(rest[..<open.lowerBound]))) }
            guard let close = rest[open.upperBound...].range(of: "}}") else {
                throw ValidationError("--format: '{{' without '}}' in \(source)")
            }
            var action = rest[open.upperBound..<close.lowerBound].trimmingCharacters(in: .whitespaces)
            var json = false
            if action.hasPrefix("json ") {
                json = true
                action = String(action.dropFirst(5)).trimmingCharacters(in: .whitespaces)
            }
            guard action.hasPrefix(".") else {
                throw ValidationError("--format: {{\(action)}} is not a field: use {{.Field}} or {{json .Field}}")
            }
            let path = action == "." ? [] : action.dropFirst().split(separator: ".").map(String.init)
            pieces.append(.field(path, json: json))
            rest = rest[close.upperBound...]
        }
        if !rest.isEmpty { pieces.append(.text(String(rest))) }
        self.pieces = pieces
    }

    func render(_ object: [String: Any]) throws -> String {
        var out = ""
        for piece in pieces {
            switch piece {
            case .text(let t): out += t
            case .field(let path, let json):
                var value: Any = object
                for name in path {
                    guard let o = value as? [String: Any], let next = JSONFields.field(name, in: o) else {
                        let fields = (value as? [String: Any]).map { $0.keys.sorted().joined(separator: ", ") } ?? "none"
                        throw CLIError("--format: no field .\(path.joined(separator: ".")) (fields here: \(fields))", code: 64)
                    }
                    value = next
                }
                out += json ? JSONFields.json(value) : JSONFields.text(value)
            }
        }
        return out
    }
}
